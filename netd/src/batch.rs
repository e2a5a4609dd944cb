//! Batching: work handed to one thread, which takes everything queued while it was busy as one
//! batch. What concurrent requests share this way (one store transaction and fsync, one
//! nftables batch) is paid once per batch, and the callers wait without holding a thread.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// A thread that runs queued jobs in batches; dropping the last handle lets it finish what is
/// queued, then joins it.
pub(crate) struct Batcher<J: Send + 'static> {
    shared: Arc<Shared<J>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    /// Wakes the thread: a job was queued, or the batcher is closing.
    work: Condvar,
}

struct State<J> {
    queued: Vec<J>,
    closing: bool,
    /// Tests hold the thread so that jobs queue up behind it.
    #[cfg(test)]
    held: bool,
}

impl<J> State<J> {
    /// Something to run (and, in tests, the thread not held).
    fn ready(&self) -> bool {
        #[cfg(test)]
        if self.held {
            return false;
        }
        !self.queued.is_empty()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<J: Send + 'static> Batcher<J> {
    /// Starts thread `name`, which calls `run` with every batch. A job `run` leaves unfinished
    /// because it panicked is dropped (its caller must notice, e.g. by a closed channel); the
    /// thread goes on with the next batch.
    pub(crate) fn spawn(
        name: &str,
        mut run: impl FnMut(Vec<J>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queued: Vec::new(),
                closing: false,
                #[cfg(test)]
                held: false,
            }),
            work: Condvar::new(),
        });
        let thread = std::thread::Builder::new().name(name.into()).spawn({
            let shared = shared.clone();
            move || loop {
                let jobs = {
                    let mut st = lock(&shared.state);
                    loop {
                        if st.ready() {
                            break std::mem::take(&mut st.queued);
                        }
                        if st.closing && st.queued.is_empty() {
                            return;
                        }
                        st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(jobs)));
            }
        })?;
        Ok(Batcher {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a job for the next batch.
    pub(crate) fn submit(&self, job: J) {
        lock(&self.shared.state).queued.push(job);
        self.shared.work.notify_one();
    }

    /// Holds (or releases) the thread: queued jobs wait until it is released.
    #[cfg(test)]
    pub(crate) fn hold(&self, held: bool) {
        lock(&self.shared.state).held = held;
        self.shared.work.notify_one();
    }

    /// Jobs queued and not yet taken.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        lock(&self.shared.state).queued.len()
    }
}

impl<J: Send + 'static> Drop for Batcher<J> {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            // If the last handle ever went inside a job, joining would wait for ever.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_queued_while_held_run_as_one_batch_and_a_panic_spares_the_next() {
        let (tx, rx) = mpsc::channel::<Vec<u32>>();
        let b = Batcher::spawn("batch-test", move |jobs: Vec<u32>| {
            assert!(!jobs.contains(&99), "job 99 panics");
            tx.send(jobs).unwrap();
        })
        .unwrap();
        b.hold(true);
        for j in 0..5 {
            b.submit(j);
        }
        assert_eq!(b.queued(), 5);
        b.hold(false);
        assert_eq!(rx.recv().unwrap(), vec![0, 1, 2, 3, 4]);
        // A batch whose run panics loses its jobs, not the thread.
        b.hold(true);
        b.submit(99);
        b.submit(7);
        b.hold(false);
        while b.queued() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        b.submit(8);
        assert_eq!(rx.recv().unwrap(), vec![8]);
        // Dropping the handle runs what is queued, then ends the thread.
        let (tx2, rx2) = mpsc::channel();
        let b2 = Batcher::spawn("batch-test2", move |jobs: Vec<u32>| {
            tx2.send(jobs.len()).unwrap();
        })
        .unwrap();
        b2.hold(true);
        b2.submit(1);
        b2.submit(2);
        lock(&b2.shared.state).held = false;
        drop(b2);
        assert_eq!(rx2.iter().sum::<usize>(), 2);
    }
}
