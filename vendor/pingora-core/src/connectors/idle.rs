// tollgate patch 15: the idle upstream connections, kept without a task
// or a timer each (vendor/PATCHES.md).
//
// Pingora's pool spawned a task to watch every connection it took back,
// with a lock, a notifier, an LRU entry and a timer of its own, all made
// again for every request. Here an idle connection is just kept, newest
// last. A connection the upstream closed while idle is found out when it
// would be reused (the connector reads it without waiting first, as it
// always did) and dropped then; past the store's size the oldest is
// dropped. One sweep a second, on one task for the whole store, closes
// those idle past their timeout and those the upstream closed; `take`
// never hands out one past its timeout in between.
// Guarded by tollgate's e2e tests (vendor/PATCHES.md, row 15).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections of one connector, oldest first.
pub(crate) struct IdleStreams<S> {
    size: usize,
    streams: Mutex<VecDeque<Idle<S>>>,
}

struct Idle<S> {
    /// The peer's reuse hash.
    key: u64,
    stream: S,
    since: Instant,
    timeout: Option<Duration>,
}

impl<S> Idle<S> {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

/// How long a connection closed without being reused had been idle.
pub(crate) type IdleFor = Duration;

impl<S> IdleStreams<S> {
    pub(crate) fn new(size: usize) -> Self {
        IdleStreams {
            size,
            streams: Mutex::new(VecDeque::new()),
        }
    }

    /// The newest idle connection for `key` that has not timed out, and
    /// the idle times of those dropped on the way.
    pub(crate) fn take(&self, key: u64) -> (Option<S>, Vec<IdleFor>) {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let mut expired = Vec::new();
        while let Some(at) = streams.iter().rposition(|idle| idle.key == key) {
            let Some(idle) = streams.remove(at) else {
                break;
            };
            if idle.expired(now) {
                expired.push(now.saturating_duration_since(idle.since));
                continue;
            }
            return (Some(idle.stream), expired);
        }
        (None, expired)
    }

    /// Keep `stream` for reuse. Returns the idle times of the oldest
    /// connections this dropped to stay within the store's size.
    pub(crate) fn put(&self, key: u64, stream: S, timeout: Option<Duration>) -> Vec<IdleFor> {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = Vec::new();
        if self.size == 0 {
            return dropped;
        }
        while streams.len() >= self.size {
            if let Some(oldest) = streams.pop_front() {
                dropped.push(now.saturating_duration_since(oldest.since));
            }
        }
        streams.push_back(Idle {
            key,
            stream,
            since: now,
            timeout,
        });
        dropped
    }

    /// Drop every connection past its timeout or for which `alive` says
    /// no; returns their idle times.
    pub(crate) fn sweep(&self, mut alive: impl FnMut(&mut S) -> bool) -> Vec<IdleFor> {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = Vec::new();
        streams.retain_mut(|idle| {
            let keep = !idle.expired(now) && alive(&mut idle.stream);
            if !keep {
                dropped.push(now.saturating_duration_since(idle.since));
            }
            keep
        });
        dropped
    }
}
