//! The adaptive in-flight limit's arithmetic (`upstream.adaptive_in_flight`,
//! docs/behaviour.md, "An adaptive limit"): from how long slots were held,
//! window by window, the number of slots the next window gets. No clock,
//! no threads: the caller hands in each window's figures and the time.
//!
//! The idea is the gradient controller Envoy's adaptive concurrency filter
//! uses. Now and then the limit drops to a few slots for a moment and the
//! time a slot is held then is the *ideal* time. Between those probes the
//! limit follows `limit × ideal × (1 + buffer) ÷ measured` plus a headroom
//! of √limit: when slots are held longer than the ideal, requests are
//! waiting somewhere (in the upstream, or in this gateway's own run queue)
//! and fewer slots lose no throughput; when they are not, the limit grows.
//!
//! Why a probe and not a plain gradient: when this gateway is what is
//! saturated, a slot's time grows with the limit itself (Little's law:
//! held time = slots ÷ throughput), so no latency ever rises "above normal"
//! for a plain gradient to react to. Measured with few slots, the ideal
//! time is what the limit is compared with.

use std::time::{Duration, Instant};

/// The controller's constants. [`Settings::new`] gives the gateway's.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The fewest slots: the limit during a probe, and its floor.
    pub min_limit: usize,
    /// `upstream.max_in_flight`: the limit never goes above it.
    pub max_limit: usize,
    /// Fewest held times that make a window worth a decision; a quieter
    /// window's figures are carried into the next.
    pub min_samples: u64,
    /// Held times a probe gathers before it ends...
    pub probe_samples: u64,
    /// ...unless it has lasted this long and gathered at least one.
    pub probe_longest: Duration,
    /// Time between probes (a random tenth more is added, so that replicas
    /// started together do not probe together).
    pub probe_every: Duration,
    /// Slots held this much longer than the ideal still count as ideal.
    pub buffer: f64,
}

impl Settings {
    /// The gateway's constants for a ceiling of `max_limit` slots.
    pub fn new(max_limit: usize) -> Settings {
        Settings {
            min_limit: 4.min(max_limit),
            max_limit,
            min_samples: 8,
            probe_samples: 32,
            probe_longest: Duration::from_secs(1),
            probe_every: Duration::from_secs(30),
            buffer: 0.25,
        }
    }
}

/// Slot times gathered over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldTimes {
    pub count: u64,
    pub total: Duration,
}

impl HeldTimes {
    fn add(&mut self, other: HeldTimes) {
        self.count += other.count;
        self.total += other.total;
    }

    fn mean(&self) -> Option<Duration> {
        let count = u32::try_from(self.count).ok().filter(|&c| c > 0)?;
        Some(self.total / count)
    }
}

#[derive(Debug)]
enum Phase {
    /// At `min_limit` slots, measuring the ideal held time.
    Probing {
        started: Instant,
        /// The first window after the drop still sees slots taken under
        /// the old limit; it is not counted.
        settled: bool,
        gathered: HeldTimes,
        /// The limit to go back to when the probe ends.
        resume_at: usize,
    },
    Tracking {
        ideal: Duration,
        next_probe: Instant,
        /// Windows in a row that ended at `min_limit`: five, and the ideal
        /// is measured again (it may have been taken in a lucky moment).
        windows_at_floor: u32,
    },
}

/// The limit, window by window.
#[derive(Debug)]
pub struct Gradient {
    settings: Settings,
    limit: usize,
    phase: Phase,
    /// Held times of quiet windows, not yet decided on.
    pending: HeldTimes,
}

impl Gradient {
    /// Starts with a probe, at `min_limit`: the ideal time is not known yet.
    pub fn new(settings: Settings, now: Instant) -> Gradient {
        Gradient {
            settings,
            limit: settings.min_limit,
            phase: probe(now, settings.max_limit),
            pending: HeldTimes::default(),
        }
    }

    /// Slots in force now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The ideal held time, once a probe has measured it.
    pub fn ideal(&self) -> Option<Duration> {
        match self.phase {
            Phase::Tracking { ideal, .. } => Some(ideal),
            Phase::Probing { .. } => None,
        }
    }

    /// One window's held times in; the limit for the next window out.
    pub fn on_window(&mut self, now: Instant, held: HeldTimes) -> usize {
        let s = self.settings;
        match &mut self.phase {
            Phase::Probing {
                started,
                settled,
                gathered,
                resume_at,
            } => {
                if !*settled {
                    *settled = true;
                    return self.limit;
                }
                gathered.add(held);
                let long_enough = now.duration_since(*started) >= s.probe_longest;
                let done = gathered.count >= s.probe_samples || (long_enough && gathered.count > 0);
                if let (true, Some(ideal)) = (done, gathered.mean()) {
                    self.limit = *resume_at;
                    self.phase = Phase::Tracking {
                        ideal,
                        next_probe: next_probe(now, s.probe_every),
                        windows_at_floor: 0,
                    };
                }
            }
            Phase::Tracking {
                ideal,
                next_probe,
                windows_at_floor,
            } => {
                self.pending.add(held);
                if self.pending.count < s.min_samples {
                    return self.limit;
                }
                let Some(measured) = self.pending.mean() else {
                    return self.limit;
                };
                self.pending = HeldTimes::default();
                self.limit = next_limit(&s, self.limit, *ideal, measured);
                *windows_at_floor = if self.limit == s.min_limit {
                    *windows_at_floor + 1
                } else {
                    0
                };
                if now >= *next_probe || *windows_at_floor >= 5 {
                    self.phase = probe(now, self.limit);
                    self.limit = s.min_limit;
                }
            }
        }
        self.limit
    }
}

fn probe(now: Instant, resume_at: usize) -> Phase {
    Phase::Probing {
        started: now,
        settled: false,
        gathered: HeldTimes::default(),
        resume_at,
    }
}

fn next_probe(now: Instant, every: Duration) -> Instant {
    let jitter = every.mul_f64(fastrand::f64() / 10.0);
    now + every + jitter
}

/// `limit × gradient + √(limit × gradient)`, the gradient being the ideal
/// time (with its buffer) over the measured one, kept within ½ and 2 so
/// one odd window moves the limit by at most a factor of two.
fn next_limit(s: &Settings, limit: usize, ideal: Duration, measured: Duration) -> usize {
    let allowed = ideal.as_secs_f64() * (1.0 + s.buffer);
    let gradient = (allowed / measured.as_secs_f64().max(1e-9)).clamp(0.5, 2.0);
    let scaled = limit as f64 * gradient;
    let next = (scaled + scaled.sqrt()).round() as usize;
    next.clamp(s.min_limit, s.max_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    /// Runs `windows` windows against a model of where slot time goes:
    /// `held(limit)` is the held time at that limit, and every slot is
    /// busy all window long (a queue is always waiting).
    fn run(
        g: &mut Gradient,
        start: Instant,
        windows: u32,
        held: impl Fn(usize) -> Duration,
    ) -> Instant {
        let mut now = start;
        for _ in 0..windows {
            now += WINDOW;
            let time = held(g.limit());
            let count = (WINDOW.as_secs_f64() / time.as_secs_f64() * g.limit() as f64) as u64;
            let window = HeldTimes {
                count,
                total: time * u32::try_from(count).unwrap(),
            };
            g.on_window(now, window);
        }
        now
    }

    /// This gateway saturated: 20,000 answers a second whatever the limit,
    /// so a slot is held limit ÷ 20,000 s.
    fn gateway_bound(limit: usize) -> Duration {
        Duration::from_secs_f64(limit as f64 / 20_000.0)
    }

    #[test]
    fn a_saturated_gateway_settles_on_a_few_slots() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(256), start);
        assert_eq!(g.limit(), 4, "starts with a probe");
        run(&mut g, start, 50, gateway_bound);
        assert!(g.ideal().is_some(), "the probe ended");
        assert!((5..=12).contains(&g.limit()), "limit {}", g.limit());
    }

    #[test]
    fn a_slow_upstream_that_is_not_saturated_gets_every_slot() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(256), start);
        // 20 ms an answer however many wait: the limit only caps throughput.
        run(&mut g, start, 40, |_| Duration::from_millis(20));
        assert_eq!(g.limit(), 256);
    }

    #[test]
    fn an_upstream_that_saturates_past_some_slots_keeps_at_least_those() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(256), start);
        // 1 ms an answer up to 40 at once; past that, 40,000 a second.
        let model = |limit: usize| Duration::from_secs_f64((limit as f64 / 40_000.0).max(0.001));
        run(&mut g, start, 100, model);
        assert!((40..=80).contains(&g.limit()), "limit {}", g.limit());
    }

    #[test]
    fn the_ideal_time_is_measured_again_every_probe_interval() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(256), start);
        let now = run(&mut g, start, 10, |_| Duration::from_millis(1));
        assert_eq!(g.ideal(), Some(Duration::from_millis(1)));
        // The upstream got slower; the next probe (within 33 s) sees it.
        run(&mut g, now, 350, |_| Duration::from_millis(5));
        assert_eq!(g.ideal(), Some(Duration::from_millis(5)));
        assert_eq!(g.limit(), 256);
    }

    #[test]
    fn a_probe_ends_after_its_longest_time_with_few_answers() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(64), start);
        let slow = HeldTimes {
            count: 1,
            total: Duration::from_millis(900),
        };
        g.on_window(start + WINDOW, slow); // the settling window
        g.on_window(start + 2 * WINDOW, slow);
        assert_eq!(g.ideal(), None, "one answer, 200 ms in: still probing");
        g.on_window(start + Duration::from_millis(1100), slow);
        assert_eq!(g.ideal(), Some(Duration::from_millis(900)));
        assert_eq!(g.limit(), 64, "back to the limit before the probe");
    }

    #[test]
    fn quiet_windows_are_carried_until_there_are_enough_answers() {
        let start = Instant::now();
        let mut g = Gradient::new(Settings::new(256), start);
        let now = run(&mut g, start, 10, |_| Duration::from_millis(1));
        let before = g.limit();
        let one = HeldTimes {
            count: 1,
            total: Duration::from_millis(50),
        };
        for n in 1..8 {
            g.on_window(now + WINDOW * n, one);
            assert_eq!(g.limit(), before, "no decision on {n} answers");
        }
        g.on_window(now + WINDOW * 8, one);
        assert!(g.limit() < before, "eight slow answers halve the limit");
    }
}
