//! Drift watch: a dedicated thread in the firewall's network namespace listens to the
//! nftables netlink monitor group (`NFNLGRP_NFTABLES`, what `nft monitor` uses). Every change
//! to a table named like ours that was not made through our own socket (the notification
//! carries the sender's netlink port id) is drift: after a short quiet period the callback
//! runs, and the daemon re-syncs from its state. A periodic existence check covers lost
//! notifications (monitor socket overflow is treated as drift too).
//!
//! The kernel tells every listener about every commit, our own included (one per attach). A
//! socket filter drops the datagrams our own socket caused before they are queued, so netd's
//! own batches never wake this thread; and the thread sleeps until a notification, its next
//! check or its stop signal (an eventfd), not in short polls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::apply::{header, poll_in, AlignedBuf, NlSocket};
use crate::{Firewall, FirewallError};

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;

/// Why the drift callback ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftReason {
    /// Someone else changed one of our tables (first foreign message type seen, e.g.
    /// `DELTABLE`).
    ForeignChange(String),
    /// The periodic check found a table missing.
    TableMissing,
    /// The monitor socket overflowed: changes may have been missed.
    MonitorOverflow,
}

/// Tuning of the drift watch.
#[derive(Debug, Clone, Copy)]
pub struct DriftWatchOptions {
    /// Quiet period after the last foreign change before calling back (a `nft -f` reload
    /// produces a burst of notifications).
    pub debounce: Duration,
    /// Interval of the table existence check.
    pub verify_interval: Duration,
}

impl Default for DriftWatchOptions {
    fn default() -> Self {
        DriftWatchOptions {
            debounce: Duration::from_millis(100),
            verify_interval: Duration::from_secs(5),
        }
    }
}

/// Handle of a running drift watch; dropping it stops the thread.
pub struct DriftWatch {
    /// Written once to wake the thread and stop it.
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DriftWatch {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: valid eventfd, 8-byte buffer (an eventfd counter cannot overflow from one add).
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the eventfd that stops a watch thread.
fn stop_signal() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is ours alone.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches a classic BPF program to the monitor socket that drops every datagram whose first
/// message was sent by port `own` (all notifications of one commit share one datagram sender).
fn ignore_own_commits(mon: &NlSocket, own: u32) -> std::io::Result<()> {
    // `ld [12]` loads the nlmsg_pid in network byte order; compare with ours read the same way.
    let own_be = u32::from_be_bytes(own.to_ne_bytes());
    let mut prog = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 12,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: own_be,
        },
        // Ours: drop.
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // Anyone else's (or the kernel's): keep it whole.
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: valid fd; the program outlives the call (the kernel copies it).
    let r = unsafe {
        libc::setsockopt(
            mon.fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn msg_name(ty: u16) -> String {
    const NAMES: [&str; 16] = [
        "NEWTABLE",
        "GETTABLE",
        "DELTABLE",
        "NEWCHAIN",
        "GETCHAIN",
        "DELCHAIN",
        "NEWRULE",
        "GETRULE",
        "DELRULE",
        "NEWSET",
        "GETSET",
        "DELSET",
        "NEWSETELEM",
        "GETSETELEM",
        "DELSETELEM",
        "NEWGEN",
    ];
    NAMES
        .get(usize::from(ty))
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("nft message {ty}"))
}

/// Table name attribute (type 1 in table, chain, rule, set and element messages).
fn table_attr(body: &[u8]) -> Option<&[u8]> {
    let mut b = body;
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        if ty == 1 {
            let v = &b[4..len];
            return Some(v.split(|c| *c == 0).next().unwrap_or(v));
        }
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    None
}

impl Firewall {
    /// Starts the drift watch. `on_drift` runs on the watch thread; it typically calls
    /// [`Firewall::sync`] with the daemon's state (our own changes never trigger it).
    pub fn spawn_drift_watch<F>(
        &self,
        opts: DriftWatchOptions,
        mut on_drift: F,
    ) -> Result<DriftWatch, FirewallError>
    where
        F: FnMut(DriftReason) + Send + 'static,
    {
        let netns = self.netns().try_clone().map_err(FirewallError::Watch)?;
        let own = self.portid();
        let table = self.table().to_string();
        let stop = stop_signal().map_err(FirewallError::Watch)?;
        let stop_fd = stop.as_raw_fd();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("nft-drift-{table}"))
            .spawn(move || {
                // This thread is ours alone: entering the namespace cannot leak into others.
                // SAFETY: valid namespace fd.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                    return;
                }
                let opened = NlSocket::open_group(NFNLGRP_NFTABLES)
                    .and_then(|m| ignore_own_commits(&m, own).map(|()| m))
                    .and_then(|m| NlSocket::open().map(|c| (m, c)));
                let (mon, check) = match opened {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                watch_loop(&mon, &check, own, &table, opts, stop_fd, &mut on_drift);
            })
            .map_err(FirewallError::Watch)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DriftWatch {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(FirewallError::Watch(e))
            }
            Err(_) => Err(FirewallError::Watch(std::io::Error::other(
                "drift watch thread exited",
            ))),
        }
    }
}

fn watch_loop(
    mon: &NlSocket,
    check: &NlSocket,
    own: u32,
    table: &str,
    opts: DriftWatchOptions,
    stop: i32,
    on_drift: &mut dyn FnMut(DriftReason),
) {
    let mut buf = AlignedBuf::new(1 << 20);
    let mut pending: Option<(DriftReason, Instant)> = None;
    let mut next_verify = Instant::now() + opts.verify_interval;
    loop {
        // Sleep until the debounce of a pending change ends or the next check is due.
        let due = pending.as_ref().map_or(next_verify, |(_, at)| {
            (*at + opts.debounce).min(next_verify)
        });
        // Rounded up: a deadline 0.4 ms away must not turn into a busy loop of zero timeouts.
        let wait = due.saturating_duration_since(Instant::now());
        let ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        match poll_in([mon.fd(), stop], ms) {
            Ok([_, true]) => return,
            Ok([true, false]) => match mon.recv(&mut buf) {
                Ok(n) => {
                    for msg in mnl::NlMessages::new(&buf.as_mut()[..n]).flatten() {
                        let (ty, _, _, pid) = header(msg);
                        if ty >> 8 != NFNL_SUBSYS_NFTABLES || pid == own || msg.len() < 20 {
                            continue;
                        }
                        let kind = ty & 0xff;
                        if kind == NFT_MSG_NEWGEN {
                            continue;
                        }
                        let family = msg[16];
                        if family != NFPROTO_INET && family != NFPROTO_BRIDGE {
                            continue;
                        }
                        if table_attr(&msg[20..]) != Some(table.as_bytes()) {
                            continue;
                        }
                        let reason = DriftReason::ForeignChange(msg_name(kind));
                        debug!(%table, change = %msg_name(kind), pid, "foreign change to our table");
                        let first = pending.take().map(|(r, _)| r).unwrap_or(reason);
                        pending = Some((first, Instant::now()));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    pending = Some((DriftReason::MonitorOverflow, Instant::now()));
                }
                Err(e) => {
                    warn!(cause = %e, "nftables monitor receive failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            },
            Ok([false, false]) => {}
            Err(e) => {
                warn!(cause = %e, "nftables monitor poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some((_, at)) = &pending {
            if at.elapsed() >= opts.debounce {
                let (reason, _) = pending.take().expect("checked");
                warn!(%table, ?reason, "nftables drift detected; asking for a re-sync");
                on_drift(reason);
                next_verify = Instant::now() + opts.verify_interval;
            }
        }
        if Instant::now() >= next_verify {
            next_verify = Instant::now() + opts.verify_interval;
            let missing = [nftnl::ProtoFamily::Inet, nftnl::ProtoFamily::Bridge]
                .into_iter()
                .any(|f| matches!(check.table_exists(f, table), Ok(false)));
            if missing {
                warn!(%table, "nftables table missing; asking for a re-sync");
                on_drift(DriftReason::TableMissing);
            }
        }
    }
}
