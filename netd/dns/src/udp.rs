//! UDP listener loop: one task per socket, datagrams taken and answered in batches.
//!
//! `recvmmsg` takes up to [`BATCH`] queries per system call and `sendmmsg` sends their replies
//! in one, so under load the per-query cost is the fast path's few hundred nanoseconds plus the
//! kernel's per-packet work, with no task spawned and no cross-thread wakeup per query. Queries
//! the fast path leaves (forwarding misses, odd messages) run the hickory handler in a task of
//! their own, like hickory-server's listener does for every query; their replies come back to
//! this loop over a channel, so only the loop ever touches the socket and aborting it closes the
//! socket at once.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::fast::{self, Outcome};
use crate::handler::{answer_udp_slow, answerable, Handler};

/// Datagrams per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 32;
/// Receive buffer per datagram, hickory's size: longer queries are cut like hickory cuts them.
const BUF: usize = 4096;
/// Batches handled before yielding to other tasks on this worker.
const BATCHES_PER_YIELD: usize = 16;

/// Receive side of a batch: buffers and source addresses.
struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    srcs: [Option<SocketAddr>; BATCH],
}

/// Send side of a batch: encoded replies and their destinations.
struct Replies {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: [libc::socklen_t; BATCH],
    n: usize,
}

/// Serves queries on `sock` until the task is aborted.
pub(crate) async fn serve(sock: UdpSocket, handler: Handler) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
    let mut slow: JoinSet<()> = JoinSet::new();
    // SAFETY: sockaddr_storage is plain old data, valid when zeroed.
    let mut batch = Batch {
        bufs: vec![0; BATCH * BUF],
        addrs: vec![unsafe { zeroed() }; BATCH],
        lens: [0; BATCH],
        srcs: [None; BATCH],
    };
    let mut replies = Replies {
        bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
        // SAFETY: as above.
        addrs: vec![unsafe { zeroed() }; BATCH],
        addr_lens: [0; BATCH],
        n: 0,
    };
    loop {
        tokio::select! {
            ready = sock.readable() => {
                if let Err(e) = ready {
                    warn!(cause = %e, "DNS udp listener stopped");
                    return;
                }
                let mut rounds = 0;
                loop {
                    let got = sock.try_io(Interest::READABLE, || recv_batch(&sock, &mut batch));
                    let n = match got {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Readiness stays set after a real error: pause so a persistent one
                            // cannot spin the loop.
                            debug!(cause = %e, "receiving DNS queries");
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            break;
                        }
                    };
                    replies.n = 0;
                    for i in 0..n {
                        let Some(src) = batch.srcs[i].filter(|s| answerable(*s)) else {
                            continue;
                        };
                        let packet = &batch.bufs[i * BUF..i * BUF + batch.lens[i]];
                        let slot = replies.n;
                        match fast::answer(&handler.0, packet, src, &mut replies.bufs[slot]) {
                            Outcome::Reply => {
                                replies.addr_lens[slot] = to_storage(src, &mut replies.addrs[slot]);
                                replies.n += 1;
                            }
                            Outcome::Drop => {}
                            Outcome::Slow => {
                                let (handler, tx, packet) = (handler.clone(), tx.clone(), packet.to_vec());
                                slow.spawn(async move {
                                    if let Some(reply) = answer_udp_slow(&handler, &packet, src).await {
                                        let _ = tx.send((reply, src));
                                    }
                                });
                            }
                        }
                    }
                    send_all(&sock, &mut replies).await;
                    rounds += 1;
                    if rounds == BATCHES_PER_YIELD {
                        rounds = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
            Some((reply, dst)) = rx.recv() => {
                if let Err(e) = sock.send_to(&reply, dst).await {
                    debug!(%dst, cause = %e, "sending DNS reply");
                }
            }
        }
        while slow.try_join_next().is_some() {}
    }
}

/// One `recvmmsg` without waiting; returns how many datagrams arrived.
fn recv_batch(sock: &UdpSocket, batch: &mut Batch) -> io::Result<usize> {
    // SAFETY: every pointer refers to memory owned by `batch`, which outlives the call, and
    // each iovec/sockaddr slot is distinct.
    unsafe {
        let mut iovs: [libc::iovec; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        for i in 0..BATCH {
            iovs[i].iov_base = batch.bufs.as_mut_ptr().add(i * BUF).cast();
            iovs[i].iov_len = BUF;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        let n = libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            batch.lens[i] = (hdr.msg_len as usize).min(BUF);
            batch.srcs[i] = from_storage(&batch.addrs[i]);
        }
        Ok(n)
    }
}

/// Sends every reply of the batch, waiting for buffer space when the socket is full.
async fn send_all(sock: &UdpSocket, replies: &mut Replies) {
    let mut done = 0;
    while done < replies.n {
        let sent = sock
            .async_io(Interest::WRITABLE, || send_batch(sock, replies, done))
            .await;
        match sent {
            Ok(n) => done += n,
            Err(e) => {
                // The first message failed (e.g. no route back to that client): skip it.
                debug!(cause = %e, "sending DNS reply");
                done += 1;
            }
        }
    }
    replies.n = 0;
}

/// One `sendmmsg` of replies `from..n`; returns how many were sent.
fn send_batch(sock: &UdpSocket, replies: &mut Replies, from: usize) -> io::Result<usize> {
    let count = replies.n - from;
    // SAFETY: pointers refer to buffers owned by `replies`, alive and unmoved during the call;
    // the kernel only reads them.
    unsafe {
        let mut iovs: [libc::iovec; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        for j in 0..count {
            let i = from + j;
            iovs[j].iov_base = replies.bufs[i].as_mut_ptr().cast();
            iovs[j].iov_len = replies.bufs[i].len();
            hdrs[j].msg_hdr.msg_iov = &mut iovs[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
            hdrs[j].msg_hdr.msg_name =
                (&mut replies.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[j].msg_hdr.msg_namelen = replies.addr_lens[i];
        }
        let n = libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let a = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            a.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above.
            let a =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_flowinfo = v6.flowinfo().to_be();
            a.sin6_addr.s6_addr = v6.ip().octets();
            a.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
