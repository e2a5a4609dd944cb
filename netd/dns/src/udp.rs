//! UDP listener loop: one task per socket, datagrams taken and answered in batches.
//!
//! `recvmmsg` takes up to [`BATCH`] queries per system call and `sendmmsg` sends their replies
//! in one, so under load the per-query cost is the fast path's few hundred nanoseconds plus the
//! kernel's per-packet work, with no task spawned and no cross-thread wakeup per query. Queries
//! the fast path leaves (forwarding misses, odd messages) run the hickory handler in a task of
//! their own, like hickory-server's listener does for every query; their replies come back to
//! this loop over a channel, so only the loop ever touches the socket and aborting it closes the
//! socket at once.
//!
//! Replies of one batch that go to the same client and have the same size leave as one UDP GSO
//! message (`UDP_SEGMENT`): the kernel routes, filters, bridges and forwards them over the veth
//! once, as one packet, and cuts it into the separate datagrams only at the client's socket. On
//! a veth that path is most of a UDP server's CPU per reply (the sender's core also runs the
//! receiver's network stack), and a resolver under load answers a client's burst of queries
//! with runs of equal-sized replies. If the kernel refuses GSO, the socket falls back to plain
//! datagrams for good. Under load the loop pauses briefly between batches so that they fill
//! up (see [`COALESCE`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::fast::{self, Outcome};
use crate::handler::{answer_udp_slow, answerable, Handler};

/// Datagrams per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 64;
/// Receive buffer per datagram, hickory's size: longer queries are cut like hickory cuts them.
const BUF: usize = 4096;
/// Batches handled before yielding to other tasks on this worker when they come one query at
/// a time (no pause); a batch that ends in a pause (see [`COALESCE`]) yields before it anyway.
const BATCHES_PER_YIELD: usize = 16;
/// A batch of at least this many queries means load: the next read waits [`COALESCE`] first.
const COALESCE_AFTER: usize = 2;
/// Pause before reading again under load, so that queries arrive in batches and their replies
/// leave together (GSO) — interrupt moderation in a NIC does the same. Measured (dnsperf, 100
/// outstanding, one client): server CPU per query 8.3 µs without it, 2.5–2.9 µs with it, and more
/// queries per second at a lower average latency, because the client too is woken once per
/// batch instead of once per reply. What a batch costs beyond its queries (waking the client's
/// core, the pause itself, the system calls) is most of the CPU at a client's pace of ~85 k
/// queries/s: 100 µs instead of 50 took 4–14 % off the CPU per query at the same queries/s
/// (`dnsab.py`); 150 µs took more off but cost throughput. A single query (no load) is never
/// delayed. The sleep blocks this thread, which the API shares: every pause is preceded by a
/// yield, so a ready API request waits for one batch, not for a run of them (`netctl connect`
/// during saturating DNS load: 56.8 ms p50 with 50 µs and a yield every 16 batches, 11.9 ms
/// with this; 6.4 ms idle).
const COALESCE: std::time::Duration = std::time::Duration::from_micros(100);

/// Receive side of a batch: buffers and source addresses.
struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    srcs: [Option<SocketAddr>; BATCH],
}

/// Largest reply sent as a GSO segment (fits a 1500-byte MTU with IPv6 and UDP headers).
const GSO_MAX_SEGMENT: usize = 1400;
/// Segments per GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 before Linux 6.9).
const GSO_MAX_SEGMENTS: usize = 64;

/// Send side of a batch: encoded replies and their destinations.
struct Replies {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: [libc::socklen_t; BATCH],
    n: usize,
    /// Cleared when the kernel refuses a GSO message; plain datagrams from then on.
    gso: bool,
}

/// One message of a `sendmmsg`: replies `order[first..first + count]`, to one destination;
/// more than one means equal-sized replies sent as a GSO message.
#[derive(Clone, Copy, Default)]
struct Msg {
    first: usize,
    count: usize,
}

/// Groups replies into messages: with GSO, runs of equal size to the same destination.
fn plan(replies: &Replies, order: &mut [usize; BATCH], msgs: &mut Vec<Msg>) {
    msgs.clear();
    let mut taken = [false; BATCH];
    let mut k = 0;
    for i in 0..replies.n {
        if taken[i] {
            continue;
        }
        let first = k;
        order[k] = i;
        k += 1;
        let len = replies.bufs[i].len();
        if replies.gso && len <= GSO_MAX_SEGMENT {
            for (j, taken_j) in taken.iter_mut().enumerate().take(replies.n).skip(i + 1) {
                if k - first == GSO_MAX_SEGMENTS {
                    break;
                }
                if !*taken_j
                    && replies.bufs[j].len() == len
                    && replies.addr_lens[j] == replies.addr_lens[i]
                    && same_addr(&replies.addrs[i], &replies.addrs[j], replies.addr_lens[i])
                {
                    *taken_j = true;
                    order[k] = j;
                    k += 1;
                }
            }
        }
        msgs.push(Msg {
            first,
            count: k - first,
        });
    }
}

fn same_addr(a: &libc::sockaddr_storage, b: &libc::sockaddr_storage, len: libc::socklen_t) -> bool {
    let len = len as usize;
    // SAFETY: both are sockaddr_storage, at least `len` (≤ its size) bytes long.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts((a as *const libc::sockaddr_storage).cast::<u8>(), len),
            std::slice::from_raw_parts((b as *const libc::sockaddr_storage).cast::<u8>(), len),
        )
    };
    a == b
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
        gso: true,
    };
    // The load hook is rate-limited: under load the read loop ends every few hundred µs.
    let mut told_load = Instant::now() - crate::LOAD_HOOK_EVERY;
    loop {
        tokio::select! {
            ready = sock.readable() => {
                if let Err(e) = ready {
                    warn!(cause = %e, "DNS udp listener stopped");
                    return;
                }
                let mut rounds = 0;
                let mut last = 0;
                let mut loaded = false;
                loop {
                    if last >= COALESCE_AFTER {
                        // Under load: let the next queries gather (see COALESCE). The pause
                        // blocks the thread, so whatever else is ready on it (an API request)
                        // runs first instead of waiting out a run of batches.
                        tokio::task::yield_now().await;
                        std::thread::sleep(COALESCE);
                    }
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
                    last = n;
                    loaded |= n >= COALESCE_AFTER;
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
                if let Some(hook) = handler.0.on_load.as_ref().filter(|_| loaded) {
                    if told_load.elapsed() >= crate::LOAD_HOOK_EVERY {
                        told_load = Instant::now();
                        (hook.0)();
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
    let mut order = [0; BATCH];
    let mut msgs = Vec::with_capacity(BATCH);
    plan(replies, &mut order, &mut msgs);
    let mut done = 0;
    while done < msgs.len() {
        let sent = sock
            .async_io(Interest::WRITABLE, || {
                send_batch(sock, replies, &order, &msgs[done..])
            })
            .await;
        match sent {
            Ok(n) => done += n,
            Err(e) if msgs[done].count > 1 => {
                // No UDP GSO here (old kernel, or an egress device without checksum offload):
                // send the rest as plain datagrams, now and from now on.
                debug!(cause = %e, "UDP GSO refused; sending DNS replies one by one");
                replies.gso = false;
                let rest: Vec<Msg> = msgs[done..]
                    .iter()
                    .flat_map(|m| (m.first..m.first + m.count).map(|f| Msg { first: f, count: 1 }))
                    .collect();
                msgs.truncate(done);
                msgs.extend(rest);
            }
            Err(e) => {
                // The first message failed (e.g. no route back to that client): skip it.
                debug!(cause = %e, "sending DNS reply");
                done += 1;
            }
        }
    }
    replies.n = 0;
}

/// `cmsghdr` + one u16, as `CMSG_SPACE(2)` lays it out (8-byte aligned).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct GsoCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// One `sendmmsg` of `msgs`; returns how many messages were sent.
fn send_batch(
    sock: &UdpSocket,
    replies: &mut Replies,
    order: &[usize; BATCH],
    msgs: &[Msg],
) -> io::Result<usize> {
    // SAFETY: pointers refer to buffers owned by `replies` and to the arrays below, alive and
    // unmoved during the call; the kernel only reads them.
    unsafe {
        let mut iovs: [libc::iovec; BATCH] = zeroed();
        let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
        let mut cmsgs: [GsoCmsg; BATCH] = zeroed();
        for (j, m) in msgs.iter().enumerate() {
            for k in m.first..m.first + m.count {
                let buf = &mut replies.bufs[order[k]];
                iovs[k].iov_base = buf.as_mut_ptr().cast();
                iovs[k].iov_len = buf.len();
            }
            let lead = order[m.first];
            let h = &mut hdrs[j].msg_hdr;
            h.msg_iov = &mut iovs[m.first];
            h.msg_iovlen = m.count;
            h.msg_name = (&mut replies.addrs[lead] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = replies.addr_lens[lead];
            if m.count > 1 {
                let c = &mut cmsgs[j];
                c.hdr.cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                c.hdr.cmsg_level = libc::SOL_UDP;
                c.hdr.cmsg_type = libc::UDP_SEGMENT;
                c.segment = replies.bufs[lead].len() as u16;
                h.msg_control = (c as *mut GsoCmsg).cast();
                h.msg_controllen = size_of::<GsoCmsg>();
            }
        }
        let n = libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
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
