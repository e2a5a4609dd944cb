//! Apply: sends a rendered batch over an `NETLINK_NETFILTER` socket (libmnl) in a single
//! `sendto` (the kernel only commits a batch whose BEGIN and END arrive in the same skb) and
//! collects the per-message acknowledgements, so an error names the step that failed.

use std::io;
use std::os::fd::AsRawFd;

use nftnl_sys as sys;

use crate::render::Rendered;

/// A netlink socket bound in the network namespace that was current when it was opened.
pub(crate) struct NlSocket {
    sock: mnl::Socket,
}

// SAFETY: an mnl socket is a file descriptor plus its bound address; it is only used under
// the firewall's mutex, never concurrently.
unsafe impl Send for NlSocket {}

/// Kernel answer to one message of a batch.
#[derive(Debug)]
pub(crate) struct NlError {
    /// Sequence number of the failing message.
    pub seq: u32,
    /// Positive errno.
    pub errno: i32,
}

const RECV_TIMEOUT_MS: i32 = 10_000;
/// After the first error the kernel may stop acknowledging the rest of an aborted batch.
const DRAIN_TIMEOUT_MS: i32 = 200;

/// Receive buffer for batch acknowledgements: two pages hold any single ack or error.
const ACK_BUF_BYTES: usize = 8192;

fn setsockopt_int(fd: i32, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: valid fd, pointer to a live int of the advertised size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable; false on timeout.
pub(crate) fn poll_readable(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    poll_in([fd], timeout_ms).map(|[r]| r)
}

/// Waits until one of `fds` is readable (or hung up), at most `timeout_ms`; says which are.
pub(crate) fn poll_in<const N: usize>(fds: [i32; N], timeout_ms: i32) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: N valid pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(pfds.map(|p| p.revents != 0));
    }
}

/// An 8-byte aligned receive buffer (netlink headers must be aligned).
pub(crate) struct AlignedBuf(Vec<u64>);

impl AlignedBuf {
    pub(crate) fn new(bytes: usize) -> Self {
        AlignedBuf(vec![0u64; bytes.div_ceil(8)])
    }
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: u64 storage reinterpreted as bytes, same length in bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 8) }
    }
}

/// Header of a netlink message at the start of `msg` (type, flags, seq, pid).
pub(crate) fn header(msg: &[u8]) -> (u16, u16, u32, u32) {
    let u16_at = |o: usize| u16::from_ne_bytes([msg[o], msg[o + 1]]);
    let u32_at = |o: usize| u32::from_ne_bytes(msg[o..o + 4].try_into().expect("4 bytes"));
    (u16_at(4), u16_at(6), u32_at(8), u32_at(12))
}

/// errno of an NLMSG_ERROR message (0 = ack).
fn error_code(msg: &[u8]) -> i32 {
    if msg.len() < 20 {
        return libc::EPROTO;
    }
    -i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes"))
}

impl NlSocket {
    /// Opens a netfilter netlink socket in the current thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = sock.as_raw_fd();
        // Errors carry only the failing header, not the whole (possibly large) message.
        let _ = setsockopt_int(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        // Room for the acks of a full sync; FORCE works as root, plain is the fallback.
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        }
        Ok(NlSocket { sock })
    }

    /// Opens a socket subscribed to `group` (used by the drift watch).
    pub(crate) fn open_group(group: u32) -> io::Result<Self> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = sock.as_raw_fd();
        setsockopt_int(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            group as i32,
        )?;
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
        }
        Ok(NlSocket { sock })
    }

    /// Our netlink port id: kernel notifications caused by our batches carry it.
    pub(crate) fn portid(&self) -> u32 {
        self.sock.portid()
    }

    pub(crate) fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Receives one datagram into `buf`; returns its length.
    pub(crate) fn recv(&self, buf: &mut AlignedBuf) -> io::Result<usize> {
        self.sock.recv_raw(buf.as_mut())
    }

    /// Sends raw bytes (one datagram).
    pub(crate) fn send(&self, data: &[u8]) -> io::Result<()> {
        if data.len() > 200_000 {
            let want = i32::try_from(data.len() + 65536).unwrap_or(i32::MAX);
            if setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want).is_err() {
                let _ = setsockopt_int(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, want);
            }
        }
        let n = self.sock.send(data)?;
        if n != data.len() {
            return Err(io::Error::other("netlink sendto sent a partial batch"));
        }
        Ok(())
    }

    /// Sends the whole batch at once and waits for every acknowledgement. Returns the
    /// messages the kernel refused (empty = committed).
    pub(crate) fn send_batch(&self, rendered: &Rendered) -> io::Result<Vec<NlError>> {
        let bytes: Vec<u8> = rendered.batch.iter().flatten().copied().collect();
        self.send(&bytes)?;
        let mut pending: std::collections::BTreeSet<u32> =
            rendered.batch.sequence_numbers().collect();
        let mut errors = Vec::new();
        // Each acknowledgement is its own datagram of a few dozen bytes (NETLINK_CAP_ACK: an
        // error carries only the failing header); a 256 KiB buffer here cost a zeroed
        // allocation on every attach.
        let mut buf = AlignedBuf::new(ACK_BUF_BYTES);
        let portid = self.portid();
        while !pending.is_empty() {
            let timeout = if errors.is_empty() {
                RECV_TIMEOUT_MS
            } else {
                DRAIN_TIMEOUT_MS
            };
            if !poll_readable(self.fd(), timeout)? {
                if errors.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no acknowledgement for {} netlink message(s)",
                            pending.len()
                        ),
                    ));
                }
                break;
            }
            let n = self.recv(&mut buf)?;
            for msg in mnl::NlMessages::new(&buf.as_mut()[..n]) {
                let msg = msg?;
                let (ty, _flags, seq, pid) = header(msg);
                if pid != portid && pid != 0 {
                    continue;
                }
                if ty == libc::NLMSG_ERROR as u16 {
                    pending.remove(&seq);
                    let errno = error_code(msg);
                    if errno != 0 {
                        errors.push(NlError { seq, errno });
                    }
                }
            }
        }
        Ok(errors)
    }

    /// Asks whether table `name` of `family` exists.
    pub(crate) fn table_exists(&self, family: nftnl::ProtoFamily, name: &str) -> io::Result<bool> {
        let mut buf = vec![0u8; 4096];
        let seq = 1;
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: buffer larger than a GETTABLE message with one short name; table object
        // freed before return.
        let len = unsafe {
            let t = sys::nftnl_table_alloc();
            if t.is_null() {
                std::process::abort();
            }
            sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, cname.as_ptr());
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.as_mut_ptr().cast(),
                libc::NFT_MSG_GETTABLE as u16,
                family as u16,
                libc::NLM_F_ACK as u16,
                seq,
            );
            sys::nftnl_table_nlmsg_build_payload(hdr, t);
            sys::nftnl_table_free(t);
            (*hdr).nlmsg_len as usize
        };
        self.send(&buf[..len])?;
        let mut rbuf = AlignedBuf::new(64 * 1024);
        let mut found = false;
        loop {
            if !poll_readable(self.fd(), RECV_TIMEOUT_MS)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to GETTABLE",
                ));
            }
            let n = self.recv(&mut rbuf)?;
            for msg in mnl::NlMessages::new(&rbuf.as_mut()[..n]) {
                let msg = msg?;
                let (ty, _, s, _) = header(msg);
                if s != seq {
                    continue;
                }
                if ty == libc::NLMSG_ERROR as u16 {
                    return match error_code(msg) {
                        0 => Ok(found),
                        libc::ENOENT => Ok(false),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
                if ty & 0xff == libc::NFT_MSG_NEWTABLE as u16 {
                    found = true;
                }
            }
        }
    }
}
