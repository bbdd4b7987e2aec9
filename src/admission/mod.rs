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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub mod gradient;

use gradient::{Gradient, HeldTimes, Settings};

/// How often the adaptive limit is decided anew.
pub const ADAPTIVE_WINDOW: Duration = Duration::from_millis(100);

/// The slots, shared by every request of the process.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    /// With `upstream.adaptive_in_flight`: what the requests tell the
    /// controller, and the slots it has still to take back.
    adaptive: Option<Arc<Adaptive>>,
}

/// What requests and the adaptive limit's controller share.
#[derive(Debug, Default)]
struct Adaptive {
    /// Slots to take back: a slot given back while this is above zero is
    /// retired instead of freed (a semaphore can only forget free permits).
    to_retire: AtomicUsize,
    /// Slot times since the controller last looked.
    held_count: AtomicU64,
    held_nanos: AtomicU64,
}

impl Adaptive {
    fn take_window(&self) -> HeldTimes {
        HeldTimes {
            count: self.held_count.swap(0, Ordering::Relaxed),
            total: Duration::from_nanos(self.held_nanos.swap(0, Ordering::Relaxed)),
        }
    }

    /// Whether a slot given back now is to be retired (and counts it).
    fn retire_one(&self) -> bool {
        self.to_retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A request's place among those waiting on the upstream; the slot frees
/// when this drops.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    timing: Option<Timing>,
}

/// When an adaptive limit's slot was taken, to tell how long it was held.
#[derive(Debug)]
struct Timing {
    adaptive: Arc<Adaptive>,
    taken: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(Timing { adaptive, taken }) = self.timing.take() else {
            return;
        };
        let held = u64::try_from(taken.elapsed().as_nanos()).unwrap_or(u64::MAX);
        adaptive.held_count.fetch_add(1, Ordering::Relaxed);
        adaptive.held_nanos.fetch_add(held, Ordering::Relaxed);
        if adaptive.retire_one() {
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

/// No slot freed up within the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimedOut;

impl Admission {
    /// `max_in_flight` slots (at least 1; the config checks it).
    pub fn new(max_in_flight: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            adaptive: None,
        }
    }

    /// At most `max_in_flight` slots, as many of them in force as
    /// [`Admission::start_adapting`]'s controller decides.
    pub fn adaptive(max_in_flight: usize) -> Admission {
        Admission {
            adaptive: Some(Arc::default()),
            ..Admission::new(max_in_flight)
        }
    }

    /// A slot that is free now. While requests wait in line none is: a
    /// freed slot goes to the longest-waiting request first.
    pub fn try_admit(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// Wait in line for a slot, at most `queue_timeout`.
    pub async fn admit(&self, queue_timeout: Duration) -> Result<Slot, QueueTimedOut> {
        match tokio::time::timeout(queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(self.slot(permit)),
            // The semaphore is never closed; treat it as a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(QueueTimedOut),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        let timing = self.adaptive.as_ref().map(|adaptive| Timing {
            adaptive: adaptive.clone(),
            taken: Instant::now(),
        });
        Slot {
            permit: Some(permit),
            timing,
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// With an adaptive limit, a thread that decides it every
    /// [`ADAPTIVE_WINDOW`] and tells `on_change` each new value. `None`
    /// for a fixed limit.
    pub fn start_adapting(
        &self,
        max_in_flight: usize,
        on_change: impl Fn(usize) + Send + 'static,
    ) -> Option<std::thread::JoinHandle<()>> {
        let mut limiter = Limiter {
            slots: self.slots.clone(),
            adaptive: self.adaptive.clone()?,
            in_force: max_in_flight,
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-adaptive-limit".into())
            .spawn(move || {
                let mut gradient = Gradient::new(Settings::new(max_in_flight), Instant::now());
                loop {
                    limiter.set(gradient.limit());
                    on_change(gradient.limit());
                    std::thread::sleep(ADAPTIVE_WINDOW);
                    let held = limiter.adaptive.take_window();
                    let ideal_before = gradient.ideal();
                    gradient.on_window(Instant::now(), held);
                    if let Some(ideal) = gradient.ideal().filter(|_| ideal_before.is_none()) {
                        tracing::debug!(
                            ?ideal,
                            limit = gradient.limit(),
                            "adaptive in-flight limit: probe ended"
                        );
                    }
                }
            });
        // Without the thread the limit stays fixed at its ceiling.
        thread.ok()
    }
}

/// Changes how many slots are in force.
#[derive(Debug)]
struct Limiter {
    slots: Arc<Semaphore>,
    adaptive: Arc<Adaptive>,
    /// Slots in force: free, held, or held and due to retire count as
    /// held until they do. Only this limiter changes it.
    in_force: usize,
}

impl Limiter {
    fn set(&mut self, limit: usize) {
        if limit > self.in_force {
            let more = limit - self.in_force;
            // Slots still due to retire stay instead, then new ones.
            let cancelled = self
                .adaptive
                .to_retire
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(more))
                })
                .map_or(0, |before| before.min(more));
            self.slots.add_permits(more - cancelled);
        } else if limit < self.in_force {
            let fewer = self.in_force - limit;
            let forgotten = self.slots.forget_permits(fewer);
            self.adaptive
                .to_retire
                .fetch_add(fewer - forgotten, Ordering::AcqRel);
        }
        self.in_force = limit;
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

    fn limiter(a: &Admission, in_force: usize) -> Limiter {
        Limiter {
            slots: a.slots.clone(),
            adaptive: a.adaptive.clone().expect("an adaptive admission"),
            in_force,
        }
    }

    #[test]
    fn a_smaller_limit_retires_held_slots_as_they_come_back() {
        let a = Admission::adaptive(4);
        let mut limit = limiter(&a, 4);
        let held: Vec<Slot> = (0..3)
            .map(|_| a.try_admit().expect("a free slot"))
            .collect();
        limit.set(2);
        assert_eq!(a.free(), 0, "the free slot is gone at once");
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(a.free(), 0, "the first slot back retires");
        drop(held.next());
        assert_eq!(a.free(), 1, "two in force: one held, one free");
        let taken = a.try_admit().expect("the freed slot");
        assert!(a.try_admit().is_none(), "two in force");
        drop((held, taken));
        assert_eq!(a.free(), 2);
    }

    #[test]
    fn a_larger_limit_first_keeps_slots_due_to_retire() {
        let a = Admission::adaptive(8);
        let mut limit = limiter(&a, 8);
        let held: Vec<Slot> = (0..8)
            .map(|_| a.try_admit().expect("a free slot"))
            .collect();
        limit.set(2);
        limit.set(5);
        drop(held);
        assert_eq!(a.free(), 5, "three of the six due to retire stayed");
        limit.set(8);
        assert_eq!(a.free(), 8);
    }

    #[test]
    fn an_adaptive_slot_reports_how_long_it_was_held() {
        let a = Admission::adaptive(2);
        let slot = a.try_admit().expect("a free slot");
        std::thread::sleep(Duration::from_millis(5));
        drop(slot);
        let window = a.adaptive.as_ref().expect("adaptive").take_window();
        assert_eq!(window.count, 1);
        assert!(window.total >= Duration::from_millis(5), "{window:?}");
        let fixed = Admission::new(2);
        assert!(
            fixed.start_adapting(2, |_| {}).is_none(),
            "a fixed limit stays"
        );
    }
}
