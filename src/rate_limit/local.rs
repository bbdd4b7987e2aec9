//! The local backend: per-client GCRA token buckets (governor), one
//! bounded table per rule, in this process.
//!
//! Approximations, and their bounds:
//! - A request is checked against its matching rules in file order and
//!   stops at the first denial: rules before the denying one have spent a
//!   token, rules after it have not.
//! - `X-RateLimit-Reset` is derived from governor's remaining capacity, so
//!   it can be up to one replenish interval (`period / limit`) late.
//! - Memory: each table holds at most `max_keys` clients. When it is full,
//!   clients not already in it share one overflow bucket per rule (with the
//!   rule's own quota) until the sweeper frees room, so a flood of distinct
//!   addresses is limited as one client and never grows the table. Every
//!   such decision is counted (`overflow_total`). The table's layout and
//!   its costs are in [`super::bucket_table`].
//! - The sweeper drops keys whose bucket has been full again for at least
//!   one replenish interval (governor's `retain_recent`): such a key is
//!   indistinguishable from a new client, so sweeping never changes a
//!   decision.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::{NotUntil, Quota};

use super::bucket_table::{BucketTable, Prefetcher};
use super::{Decision, Denial, RequestKeys, RuleKey, RuleMode, RuleSpec, RuleState};
use crate::client::ClientKey;

/// governor's quota for a rule.
fn quota(spec: &RuleSpec) -> Quota {
    let limit = NonZeroU32::new(spec.limit.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(spec.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(spec.replenish_interval())
        .unwrap_or_else(|| Quota::per_second(limit))
        .allow_burst(burst)
}

type Buckets<C> = governor::RateLimiter<ClientKey, BucketTable, C, StateInformationMiddleware>;

struct Rule<C: Clock> {
    spec: RuleSpec,
    /// Shared with the limiter a reload replaced, when the rule is unchanged.
    buckets: Arc<Buckets<C>>,
    prefetcher: Prefetcher,
    interval: Duration,
    overflow: Arc<AtomicU64>,
    max_keys: usize,
}

impl<C: Clock> Rule<C> {
    /// Whether `spec` may keep this rule's bucket state across a reload.
    fn same_buckets(&self, spec: &RuleSpec, max_keys: usize) -> bool {
        self.spec.name == spec.name
            && self.spec.key == spec.key
            && self.spec.limit == spec.limit
            && self.spec.period == spec.period
            && self.spec.burst == spec.burst
            && self.max_keys == max_keys
    }
}

/// All rules' tables.
pub struct LocalLimiter<C: Clock = DefaultClock> {
    rules: Vec<Rule<C>>,
    clock: C,
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s.saturating_add(1)
    } else {
        s
    }
}

impl LocalLimiter<DefaultClock> {
    pub fn new(specs: Vec<RuleSpec>, max_keys: usize) -> Self {
        Self::with_clock(specs, max_keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    pub fn with_clock(specs: Vec<RuleSpec>, max_keys: usize, clock: C) -> Self {
        Self::build(specs, max_keys, clock, None)
    }

    /// A limiter for a reloaded rule set. Rules whose name, limit, period
    /// and burst (and `max_keys`) are unchanged keep their buckets; the
    /// others start fresh. Also returns the names of the kept rules.
    pub fn reconfigure(&self, specs: Vec<RuleSpec>, max_keys: usize) -> (Self, Vec<String>) {
        let next = Self::build(specs, max_keys, self.clock.clone(), Some(self));
        let kept = next
            .rules
            .iter()
            .filter(|r| {
                self.rules
                    .iter()
                    .any(|old| Arc::ptr_eq(&old.buckets, &r.buckets))
            })
            .map(|r| r.spec.name.clone())
            .collect();
        (next, kept)
    }

    fn build(specs: Vec<RuleSpec>, max_keys: usize, clock: C, previous: Option<&Self>) -> Self {
        let rules = specs
            .into_iter()
            .map(|spec| {
                let reuse =
                    previous.and_then(|p| p.rules.iter().find(|r| r.same_buckets(&spec, max_keys)));
                if let Some(old) = reuse {
                    return Rule {
                        spec,
                        buckets: old.buckets.clone(),
                        prefetcher: old.prefetcher.clone(),
                        interval: old.interval,
                        overflow: old.overflow.clone(),
                        max_keys,
                    };
                }
                let quota = quota(&spec);
                let overflow = Arc::new(AtomicU64::new(0));
                let store = BucketTable::new(max_keys, overflow.clone());
                let prefetcher = store.prefetcher();
                let buckets: Buckets<C> = governor::RateLimiter::new(quota, store, clock.clone());
                Rule {
                    interval: quota.replenish_interval(),
                    spec,
                    buckets: Arc::new(buckets),
                    prefetcher,
                    overflow,
                    max_keys,
                }
            })
            .collect();
        LocalLimiter { rules, clock }
    }

    pub fn rules(&self) -> impl ExactSizeIterator<Item = &RuleSpec> {
        self.rules.iter().map(|r| &r.spec)
    }

    /// Start loading this client's buckets of address-keyed rules into
    /// the cache, for a [`check`](Self::check) a little later (see
    /// [`Prefetcher`]).
    pub fn prefetch(&self, method: &str, path: &str, key: &ClientKey) {
        for rule in &self.rules {
            if rule.spec.key == RuleKey::Ip && rule.spec.matches(method, path) {
                rule.prefetcher.prefetch(key);
            }
        }
    }

    /// Check every matching rule for a client counted by its address.
    pub fn check(&self, method: &str, path: &str, key: &ClientKey) -> Decision {
        self.check_keys(method, path, &RequestKeys::ip_only(*key))
    }

    /// Check every matching rule, each under its own key for this request;
    /// stop at the first denial.
    pub fn check_keys(&self, method: &str, path: &str, keys: &RequestKeys<'_>) -> Decision {
        let mut decision = Decision::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.spec.matches(method, path) {
                continue;
            }
            let key = &keys.for_rule(&rule.spec);
            if rule.spec.mode == RuleMode::Shadow {
                // Decided as if enforced; only a denial is noted.
                if rule.buckets.check_key(key).is_err() {
                    decision.shadowed.insert(i);
                }
                continue;
            }
            decision.matched.insert(i);
            match rule.buckets.check_key(key) {
                Ok(snapshot) => decision.allow(self.allowed_state(i, rule, &snapshot)),
                Err(not_until) => {
                    decision.deny(self.denial(i, rule, &not_until));
                    return decision;
                }
            }
        }
        decision
    }

    fn allowed_state(&self, i: usize, rule: &Rule<C>, s: &StateSnapshot) -> RuleState {
        let remaining = s.remaining_burst_capacity();
        let used = rule.spec.burst.saturating_sub(remaining);
        RuleState {
            rule: i,
            limit: rule.spec.limit,
            remaining,
            reset_secs: ceil_secs(rule.interval.saturating_mul(used)),
        }
    }

    fn denial(&self, i: usize, rule: &Rule<C>, nu: &NotUntil<C::Instant>) -> Denial {
        let wait = nu.wait_time_from(self.clock.now());
        // Saturating: a period of centuries is valid config and must not panic.
        let full = wait.saturating_add(
            rule.interval
                .saturating_mul(rule.spec.burst.saturating_sub(1)),
        );
        let state = RuleState {
            rule: i,
            limit: rule.spec.limit,
            remaining: 0,
            reset_secs: ceil_secs(full),
        };
        Denial {
            state,
            retry_after_secs: ceil_secs(wait).max(1),
        }
    }

    /// Drop idle keys (those whose bucket is full again) and give memory back.
    pub fn sweep(&self) {
        for rule in &self.rules {
            rule.buckets.retain_recent();
            rule.buckets.shrink_to_fit();
        }
    }

    /// Live keys per rule, in rule order.
    pub fn key_counts(&self) -> Vec<usize> {
        self.rules.iter().map(|r| r.buckets.len()).collect()
    }

    /// Decisions made on the overflow bucket per rule, in rule order.
    pub fn overflow_totals(&self) -> Vec<u64> {
        self.rules
            .iter()
            .map(|r| r.overflow.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RequestMatcher;
    use governor::clock::FakeRelativeClock;

    fn rule(
        name: &str,
        prefix: &str,
        methods: &[&str],
        limit: u32,
        period_ms: u64,
        burst: u32,
    ) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            applies_to: RequestMatcher::new(prefix, methods),
            limit,
            period: Duration::from_millis(period_ms),
            burst,
            mode: RuleMode::Enforce,
            key: Default::default(),
        }
    }

    const A: ClientKey = ClientKey::V4([192, 0, 2, 1]);
    const B: ClientKey = ClientKey::V4([192, 0, 2, 2]);

    #[test]
    fn huge_periods_saturate_instead_of_panicking() {
        for period in [Duration::from_secs(u64::MAX / 4), Duration::MAX] {
            let spec = RuleSpec {
                period,
                ..rule("r", "/", &[], 1, 1000, u32::MAX)
            };
            let lim = LocalLimiter::new(vec![spec], 10);
            for _ in 0..3 {
                let d = lim.check("GET", "/", &A);
                let t = d.tightest.expect("the rule matched");
                assert!(t.reset_secs > 0);
            }
            let one = RuleSpec {
                period,
                ..rule("r", "/", &[], 1, 1000, 1)
            };
            let lim = LocalLimiter::new(vec![one], 10);
            assert!(lim.check("GET", "/", &A).denied.is_none());
            let Denial {
                state,
                retry_after_secs: retry,
            } = lim.check("GET", "/", &A).denied.expect("second is denied");
            assert!(retry > 1_000_000 && state.reset_secs >= retry);
        }
    }

    #[test]
    fn burst_then_denied_with_headers() {
        let clock = FakeRelativeClock::default();
        // 5 per second, burst 5: one token every 200ms.
        let lim =
            LocalLimiter::with_clock(vec![rule("r", "/", &[], 5, 1000, 5)], 100, clock.clone());
        for expected_remaining in (0..5).rev() {
            let d = lim.check("GET", "/x", &A);
            assert!(d.denied.is_none());
            let t = d.tightest.unwrap();
            assert_eq!(t.remaining, expected_remaining);
            assert_eq!(t.limit, 5);
        }
        let d = lim.check("GET", "/x", &A);
        let Denial {
            state,
            retry_after_secs: retry,
        } = d.denied.expect("sixth request is denied");
        assert_eq!(state.remaining, 0);
        assert_eq!(retry, 1, "200ms rounds up to 1s");
        assert_eq!(state.reset_secs, 1, "200ms + 4 x 200ms = 1s until full");
        // Another client has its own bucket.
        assert!(lim.check("GET", "/x", &B).denied.is_none());
    }

    #[test]
    fn refills_over_time() {
        let clock = FakeRelativeClock::default();
        let lim =
            LocalLimiter::with_clock(vec![rule("r", "/", &[], 1, 10_000, 2)], 100, clock.clone());
        assert!(lim.check("GET", "/", &A).denied.is_none());
        assert!(lim.check("GET", "/", &A).denied.is_none());
        let retry = lim.check("GET", "/", &A).denied.unwrap().retry_after_secs;
        assert_eq!(retry, 10);
        clock.advance(Duration::from_secs(9));
        let retry = lim.check("GET", "/", &A).denied.unwrap().retry_after_secs;
        assert_eq!(retry, 1);
        clock.advance(Duration::from_secs(1));
        let d = lim.check("GET", "/", &A);
        assert!(d.denied.is_none(), "one token back after 10s");
        assert!(lim.check("GET", "/", &A).denied.is_some(), "and only one");
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            lim.check("GET", "/", &A).tightest.unwrap().remaining,
            1,
            "full again"
        );
    }

    #[test]
    fn denials_consume_nothing() {
        let clock = FakeRelativeClock::default();
        let lim =
            LocalLimiter::with_clock(vec![rule("r", "/", &[], 1, 1000, 1)], 100, clock.clone());
        assert!(lim.check("GET", "/", &A).denied.is_none());
        for _ in 0..100 {
            assert!(lim.check("GET", "/", &A).denied.is_some());
        }
        clock.advance(Duration::from_secs(1));
        assert!(lim.check("GET", "/", &A).denied.is_none());
    }

    #[test]
    fn every_matching_rule_is_checked() {
        let clock = FakeRelativeClock::default();
        let lim = LocalLimiter::with_clock(
            vec![
                rule("default", "/", &[], 100, 1000, 100),
                rule("auth", "/v1/auth", &["POST"], 2, 60_000, 2),
            ],
            100,
            clock.clone(),
        );
        // GET on /v1/auth only matches default.
        for _ in 0..5 {
            let d = lim.check("GET", "/v1/auth/login", &A);
            assert!(d.denied.is_none());
            assert_eq!(d.matched.iter().collect::<Vec<_>>(), vec![0]);
        }
        let d = lim.check("POST", "/v1/auth/login", &A);
        assert_eq!(d.matched.iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(d.tightest.unwrap().rule, 1, "auth is tighter");
        assert_eq!(d.tightest.unwrap().remaining, 1);
        assert!(lim.check("POST", "/v1/auth/login", &A).denied.is_none());
        let Denial {
            state,
            retry_after_secs: retry,
        } = lim.check("POST", "/v1/auth/login", &A).denied.unwrap();
        assert_eq!(state.rule, 1);
        assert_eq!(retry, 30);
        // Other paths still pass for the same client.
        assert!(lim.check("POST", "/v1/docs", &A).denied.is_none());
    }

    #[test]
    fn sweep_drops_idle_keys_only() {
        let clock = FakeRelativeClock::default();
        let lim =
            LocalLimiter::with_clock(vec![rule("r", "/", &[], 1, 1000, 1)], 100, clock.clone());
        lim.check("GET", "/", &A);
        clock.advance(Duration::from_millis(2500));
        lim.check("GET", "/", &B);
        assert_eq!(lim.key_counts(), vec![2]);
        lim.sweep();
        assert_eq!(lim.key_counts(), vec![1], "A is full again, B is not");
        assert!(
            lim.check("GET", "/", &B).denied.is_some(),
            "B kept its state"
        );
    }

    #[test]
    fn table_never_grows_past_the_cap() {
        let clock = FakeRelativeClock::default();
        let lim =
            LocalLimiter::with_clock(vec![rule("r", "/", &[], 1, 60_000, 3)], 10, clock.clone());
        for i in 0..1000u32 {
            lim.check("GET", "/", &ClientKey::V4(i.to_be_bytes()));
        }
        let keys = lim.key_counts()[0];
        assert_eq!(keys, 10, "the overflow bucket is not a key");
        assert_eq!(lim.overflow_totals()[0], 990);
        // Overflow clients share one bucket: it is exhausted.
        let d = lim.check("GET", "/", &ClientKey::V4([9, 9, 9, 9]));
        assert!(d.denied.is_some());
        // Known clients keep their own bucket.
        let d = lim.check("GET", "/", &ClientKey::V4(0u32.to_be_bytes()));
        assert_eq!(d.denied, None);
    }

    #[test]
    fn reconfigure_keeps_unchanged_rules_only() {
        let clock = FakeRelativeClock::default();
        let a = rule("a", "/", &[], 1, 60_000, 1);
        let b = rule("b", "/", &[], 1, 60_000, 1);
        let lim = LocalLimiter::with_clock(vec![a.clone(), b.clone()], 100, clock.clone());
        lim.check("GET", "/", &A);
        // a is unchanged but for its prefix; b gets a new limit.
        let a2 = RuleSpec {
            applies_to: RequestMatcher::new("/x", &[]),
            ..a
        };
        let b2 = RuleSpec {
            limit: 2,
            burst: 2,
            ..b
        };
        let (next, kept) = lim.reconfigure(vec![b2, a2], 100);
        assert_eq!(kept, vec!["a".to_string()]);
        let d = next.check("GET", "/x", &A);
        assert_eq!(
            d.denied.map(|d| d.state.rule),
            Some(1),
            "a kept A's spent token"
        );
        assert!(
            next.check("GET", "/", &A).denied.is_none(),
            "b starts fresh"
        );
        let (fresh, kept) = next.reconfigure(next.rules().cloned().collect(), 50);
        assert!(kept.is_empty(), "a new max_keys starts every table fresh");
        assert!(fresh.check("GET", "/x", &A).denied.is_none());
    }

    /// A shadow rule's bucket drains and refills exactly as the same rule
    /// enforced, but it refuses nothing and shows in no header.
    #[test]
    fn a_shadow_rule_decides_as_if_enforced() {
        let clock = FakeRelativeClock::default();
        let enforced = rule("r", "/", &[], 1, 1000, 2);
        let shadow = RuleSpec {
            mode: RuleMode::Shadow,
            ..enforced.clone()
        };
        let e = LocalLimiter::with_clock(vec![enforced], 10, clock.clone());
        let s = LocalLimiter::with_clock(vec![shadow], 10, clock.clone());
        for step in 0..12 {
            if step % 4 == 3 {
                clock.advance(Duration::from_millis(700));
            }
            let would = e.check("GET", "/", &A);
            let did = s.check("GET", "/", &A);
            assert_eq!(
                would.denied.is_some(),
                !did.shadowed.is_empty(),
                "step {step}"
            );
            assert!(did.denied.is_none() && did.tightest.is_none() && did.matched.is_empty());
        }
    }

    /// API keys (hashed) live in the same bounded table as addresses: a
    /// flood of distinct keys shares the overflow bucket past `max_keys`,
    /// and a rule whose key kind changes on reload starts fresh.
    #[test]
    fn header_keys_are_bounded_like_addresses_and_a_new_key_kind_starts_fresh() {
        let clock = FakeRelativeClock::default();
        let spec = RuleSpec {
            key: RuleKey::Header(http::HeaderName::from_static("x-api-key")),
            ..rule("r", "/", &[], 1, 60_000, 3)
        };
        let lim = LocalLimiter::with_clock(vec![spec.clone()], 10, clock.clone());
        for i in 0..1000u32 {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            lim.check("GET", "/", &ClientKey::Hashed(key));
        }
        assert_eq!(lim.key_counts(), vec![10]);
        assert_eq!(lim.overflow_totals(), vec![990]);
        let (_, kept) = lim.reconfigure(vec![spec.clone()], 10);
        assert_eq!(kept, vec!["r".to_string()], "same key kind: kept");
        let by_ip = RuleSpec {
            key: RuleKey::Ip,
            ..spec
        };
        let (_, kept) = lim.reconfigure(vec![by_ip], 10);
        assert!(kept.is_empty(), "another key kind: fresh");
    }

    #[test]
    fn no_rules_no_limits() {
        let lim = LocalLimiter::new(vec![], 10);
        let d = lim.check("GET", "/", &A);
        assert_eq!(d, Decision::default());
    }
}
