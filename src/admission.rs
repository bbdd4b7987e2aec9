//! Admission to the upstream: at most `upstream.max_in_flight` requests
//! wait for the upstream's answer at once; the others wait for a slot in
//! arrival order, each for at most `upstream.queue_timeout`
//! (docs/behaviour.md, "Requests in flight to the upstream").
//!
//! Why a gateway queues at all: each request waiting on the upstream
//! holds its whole proxying state; one waiting here holds only what
//! reading its head took. Past some number at once, that is the
//! difference between a gateway whose memory and tail stay bounded and
//! one whose state no longer fits its caches (docs/performance.md).
//!
//! A slot is held from the moment the request is admitted until the
//! upstream's response header arrives (or the request ends): only the
//! upstream's pace can hold one, never a client's.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots, shared by every request of the process.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
}

/// A request's place among those waiting on the upstream; the slot frees
/// when this drops.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// No slot freed up within the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimedOut;

impl Admission {
    /// `max_in_flight` slots (at least 1; the config checks it).
    pub fn new(max_in_flight: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// A slot that is free now. While requests wait in line none is: a
    /// freed slot goes to the longest-waiting request first.
    pub fn try_admit(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(Slot { _permit: permit })
    }

    /// Wait in line for a slot, at most `queue_timeout`.
    pub async fn admit(&self, queue_timeout: Duration) -> Result<Slot, QueueTimedOut> {
        match tokio::time::timeout(queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; treat it as a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(QueueTimedOut),
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let a = Admission::new(2);
        let first = a.try_admit().expect("a free slot");
        let second = a.try_admit().expect("a second free slot");
        assert!(a.try_admit().is_none(), "two slots only");
        drop(first);
        assert_eq!(a.free(), 1);
        let third = a.try_admit().expect("the freed slot");
        drop((second, third));
        assert_eq!(a.free(), 2);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_next_freed_slot_or_times_out() {
        let a = Arc::new(Admission::new(1));
        let held = a.try_admit().expect("the only slot");
        let short = Duration::from_millis(20);
        assert_eq!(a.admit(short).await.unwrap_err(), QueueTimedOut);

        let timeout = Duration::from_secs(5);

        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.admit(timeout).await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(a.try_admit().is_none(), "the freed slot is the waiter's");
        assert!(waiter.await.unwrap(), "admitted once the slot freed");
    }

    #[tokio::test]
    async fn waiters_are_admitted_in_arrival_order() {
        let a = Arc::new(Admission::new(1));
        let held = a.try_admit().expect("the only slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..5 {
            let (a, tx) = (a.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = a.admit(Duration::from_secs(5)).await.expect("a slot");
                tx.send(n).expect("the test listens");
            });
            // Each waiter is in line before the next one starts.
            tokio::task::yield_now().await;
        }
        drop((held, tx));
        let mut order = Vec::new();
        while let Some(n) = rx.recv().await {
            order.push(n);
        }
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }
}
