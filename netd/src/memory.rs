//! Keeps the daemon's heap small: one malloc arena, and freed pages handed back to the kernel
//! once the API has gone quiet.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core); netd's short-lived
//! blocking-pool threads each left one behind with ~0.9 MiB touched, and a burst of attaches
//! and detaches leaves free pages inside the heap that glibc only returns on `malloc_trim`.
//! Measured with 1,000 endpoints: anonymous memory 6.4 → 4.2 MiB (docs/benchmarks.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::debug;

/// Limits malloc to one arena; call before the first thread is spawned.
pub fn one_arena() {
    // SAFETY: mallopt only changes allocator parameters; no allocation is in flight on another
    // thread because none exists yet.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Trims the heap once no request has arrived for a while.
#[derive(Clone)]
pub struct IdleTrim {
    poked: Arc<Notify>,
}

impl IdleTrim {
    /// Starts the trimming task on the current runtime; it sleeps until poked.
    pub fn spawn(quiet: Duration) -> IdleTrim {
        let poked = Arc::new(Notify::new());
        let waiter = poked.clone();
        tokio::spawn(async move {
            loop {
                waiter.notified().await;
                // Every poke restarts the quiet period: trim after the burst, not during it.
                while tokio::time::timeout(quiet, waiter.notified()).await.is_ok() {}
                trim();
            }
        });
        IdleTrim { poked }
    }

    /// Records activity (a finished request): a trim follows after the quiet period.
    pub fn poke(&self) {
        self.poked.notify_one();
    }
}

/// Returns the heap's free pages to the kernel.
fn trim() {
    let started = Instant::now();
    // SAFETY: malloc_trim takes the allocator's own locks; it is safe from any thread.
    #[cfg(target_env = "gnu")]
    let released = unsafe { libc::malloc_trim(0) } != 0;
    #[cfg(not(target_env = "gnu"))]
    let released = false;
    debug!(released, took = ?started.elapsed(), "trimmed the heap after the API went quiet");
}
