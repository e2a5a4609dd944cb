//! First come, first served for attaches that arrive together.
//!
//! netd runs on one thread, and most of an attach is kernel work done on that thread (each
//! netlink request runs in its `sendto`). Eight attaches arriving at once used to interleave
//! step by step, so each took about as long as all eight together: every container was ready
//! at the end of the burst. Taking turns in arrival order lets the first finish after one
//! attach's time, the second after two, and so on: the same work, with the median done
//! halfway through the burst instead of at its end (8 at once: p50 15.6 → 11.7 ms; the
//! plugins' start-up is the rest, docs/benchmarks.md). Detaches take turns the same way. An
//! attach starts its store write (another thread's work) before it waits for its turn; a
//! detach's turn ends before its store write.
//!
//! A turn is only a preference, never a lock anyone can hold for long: it ends after
//! [`TURN_MAX`] even if its attach has not finished (a slow container namespace, a request
//! the kernel is slow to answer), and the next attach starts beside it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Longest a turn lasts; an attach takes 1.5–3 ms of netd's thread when it has it alone.
pub(crate) const TURN_MAX: Duration = Duration::from_millis(10);

/// The queue of turns (tokio's semaphore hands permits out in request order).
#[derive(Debug)]
pub(crate) struct Turns {
    sem: Arc<Semaphore>,
}

/// The current turn; ends when dropped or after [`TURN_MAX`], whichever comes first.
pub(crate) struct Turn {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    expiry: JoinHandle<()>,
}

impl Turns {
    /// A queue with nobody in it.
    pub(crate) fn new() -> Self {
        Turns {
            sem: Arc::new(Semaphore::new(1)),
        }
    }

    /// Waits for this caller's turn.
    pub(crate) async fn take(&self) -> Turn {
        let permit = self
            .sem
            .clone()
            .acquire_owned()
            .await
            .expect("the turn semaphore is never closed");
        let permit = Arc::new(Mutex::new(Some(permit)));
        let held = Arc::clone(&permit);
        let expiry = tokio::spawn(async move {
            tokio::time::sleep(TURN_MAX).await;
            end(&held);
        });
        Turn { permit, expiry }
    }
}

fn end(permit: &Mutex<Option<OwnedSemaphorePermit>>) {
    permit.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// Runs a turn's own work (`ours`, on this thread) beside work another thread finishes for it
/// (`theirs`), both from the start. If `ours` is done first, the turn ends there instead of
/// being held idle while `theirs` is still on its way: the next attach starts its kernel work
/// meanwhile. The turn comes back only when `theirs` was ready first, to cover what follows.
pub(crate) async fn overlap<A: Future, B: Future>(
    turn: Turn,
    ours: A,
    theirs: B,
) -> (A::Output, B::Output, Option<Turn>) {
    tokio::pin!(ours, theirs);
    let mut early = None;
    let mine = loop {
        tokio::select! {
            biased;
            t = &mut theirs, if early.is_none() => early = Some(t),
            o = &mut ours => break o,
        }
    };
    match early {
        Some(t) => (mine, t, Some(turn)),
        None => {
            drop(turn);
            (mine, theirs.await, None)
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.expiry.abort();
        end(&self.permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_go_in_arrival_order() {
        let turns = Arc::new(Turns::new());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = turns.take().await;
        let mut waiting = Vec::new();
        for i in 0..4 {
            let (turns, order) = (Arc::clone(&turns), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let _turn = turns.take().await;
                order.lock().unwrap().push(i);
            }));
            // Each waiter queues before the next one is spawned.
            tokio::task::yield_now().await;
        }
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_turn_held_too_long_lets_the_next_one_in() {
        let turns = Turns::new();
        let stuck = turns.take().await;
        assert_eq!(
            turns.sem.available_permits(),
            0,
            "a turn is exclusive while it lasts"
        );
        let next = tokio::time::timeout(Duration::from_secs(5), turns.take())
            .await
            .expect("the next turn begins once the stuck one expires");
        drop(stuck);
        // The stuck turn's expiry gave its permit back once; dropping it must not give a
        // second one (two callers would then run side by side forever after).
        assert_eq!(turns.sem.available_permits(), 0);
        drop(next);
        assert_eq!(turns.sem.available_permits(), 1);
    }

    #[tokio::test]
    async fn overlap_ends_the_turn_while_the_other_thread_is_still_working() {
        let turns = Turns::new();
        let (done, theirs) = tokio::sync::oneshot::channel::<u32>();
        let turn = turns.take().await;
        let overlapped = tokio::spawn(async move {
            let ours = async { 1 };
            overlap(turn, ours, async { theirs.await.unwrap() }).await
        });
        // Our part is done and theirs is not: the turn is free at once (long before its
        // expiry), while theirs is still pending.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            turns.sem.available_permits(),
            1,
            "the turn ended when our part was done"
        );
        assert!(!overlapped.is_finished());
        done.send(2).unwrap();
        let (mine, other, kept) = overlapped.await.unwrap();
        assert_eq!((mine, other), (1, 2));
        assert!(kept.is_none(), "a turn already handed on is not given back");
    }

    #[tokio::test]
    async fn overlap_keeps_the_turn_when_the_other_thread_was_first() {
        let turns = Turns::new();
        let turn = turns.take().await;
        let ours = async {
            tokio::task::yield_now().await;
            "veth"
        };
        let (mine, other, kept) = overlap(turn, ours, async { "record" }).await;
        assert_eq!((mine, other), ("veth", "record"));
        assert!(kept.is_some(), "what follows still runs in this turn");
        assert_eq!(turns.sem.available_permits(), 0);
        drop(kept);
        assert_eq!(turns.sem.available_permits(), 1);
    }
}
