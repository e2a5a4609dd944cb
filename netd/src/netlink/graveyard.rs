//! Interfaces retired for deletion in bulk. Deleting one veth pair keeps the caller ~20 ms
//! inside the system call while the kernel waits for RCU grace periods, and it waits once per
//! unregister batch, not per interface. So a detach only takes the host end down and off its
//! bridge and moves it into [`RETIRED_GROUP`] (one short request, ~0.6 ms against ~18 ms),
//! and a reaper deletes the whole group with one `RTM_DELLINK` (as `ip link delete
//! group N` does): one batch for everything retired meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::warn;

use super::Netlink;

/// Link group of interfaces waiting for deletion (ASCII "nd", then 0xde1: no default or
/// `/etc/iproute2/group` number). The kernel deletes only interfaces that can be deleted over
/// netlink (a physical NIC put in this group makes the deletion fail, it is never deleted).
pub const RETIRED_GROUP: u32 = 0x6e64_0de1;

/// Handle on the reaper task; dropping it lets the task delete what is left and end.
#[derive(Debug)]
pub(super) struct Graveyard {
    wake: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

impl Graveyard {
    /// Starts the reaper, which deletes through `deleter` (a socket on a thread of its own).
    /// Needs a tokio runtime.
    pub(super) fn start(deleter: Arc<Netlink>) -> Graveyard {
        let wake = Arc::new(Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        let (w, c) = (wake.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                // A wake-up that arrives while a batch is being deleted is kept as a permit:
                // what was retired meanwhile goes in the next batch.
                w.notified().await;
                if let Err(e) = deleter.delete_group(RETIRED_GROUP).await {
                    warn!(cause = %e, "deleting retired interfaces failed; retrying at the next retirement");
                }
                if c.load(Ordering::Acquire) {
                    break;
                }
            }
        });
        Graveyard { wake, closed }
    }

    /// Tells the reaper there is work.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Graveyard {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}
