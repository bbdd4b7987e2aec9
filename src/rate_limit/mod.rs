//! Rate limiting: the rules, the decision for one request, and the one
//! [`Limiter`] the gateway asks.
//!
//! - [`Limiter`] owns the choice of backend and the failure policy: the
//!   gateway asks one question per request ([`Limiter::decide`]) and gets
//!   one [`Outcome`]. With the local backend the answer is ready at once
//!   (no future, no await); with Redis it is a boxed future.
//! - [`local`]: governor GCRA buckets in this process, kept in a bounded
//!   [`bucket_table`].
//! - [`redis`]: the same buckets in Redis, shared by replicas.
//! - [`headers`]: the response headers a [`Decision`] renders.
//!
//! Approximations and their bounds are stated where they arise: the local
//! table's cap and sweep in [`local`] and [`bucket_table`], the shared
//! backend's failures in [`redis`] and `docs/replicas.md`.

pub mod bucket_table;
pub mod headers;
pub mod local;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::client::{ClientKey, Exemptions, KeyHasher};
use crate::routes::RequestMatcher;

pub use headers::HeaderStyle;
pub use local::LocalLimiter;
pub use redis::{RedisLimiter, RedisTarget};

/// Longest time a rule's full burst may take to refill. The limiter keeps
/// time in u64 nanoseconds (584 years); a bucket that takes longer than a
/// century to refill is a typo, not a policy, and is refused at load.
pub const MAX_REFILL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One rule, as the limiter needs it (defaults already applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// Also the `rule` label of the metrics and the IETF policy name.
    pub name: String,
    /// Which requests the rule counts.
    pub applies_to: RequestMatcher,
    /// Requests per `period` in the long run.
    pub limit: u32,
    pub period: Duration,
    /// Requests a client may make at once from a full bucket.
    pub burst: u32,
    /// Whether a denial refuses the request or is only counted.
    pub mode: RuleMode,
    /// What the rule's buckets are keyed by.
    pub key: RuleKey,
}

/// `key` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RuleKey {
    /// The client address (the IPv6 /64 by default).
    #[default]
    Ip,
    /// A request header's value, hashed (an API key); the client address
    /// when the request has none.
    Header(http::HeaderName),
}

/// What one request is counted under: its client's address key, and its
/// headers for header-keyed rules.
#[derive(Clone, Copy)]
pub struct RequestKeys<'a> {
    pub ip: ClientKey,
    pub headers: Option<&'a http::HeaderMap>,
    /// The limiter's hasher ([`Limiter::key_hasher`]).
    pub hasher: &'a KeyHasher,
}

impl RequestKeys<'_> {
    /// The key `rule` counts this request under: the keyed hash of its
    /// header's first value, else the address.
    pub fn for_rule(&self, rule: &RuleSpec) -> ClientKey {
        match (&rule.key, self.headers) {
            (RuleKey::Header(name), Some(headers)) => {
                let values = headers.get_all(name).into_iter().map(|v| v.as_bytes());
                self.hasher.key(values).unwrap_or(self.ip)
            }
            _ => self.ip,
        }
    }

    /// Keys for a request counted by its address only.
    pub fn ip_only(ip: ClientKey) -> RequestKeys<'static> {
        RequestKeys {
            ip,
            headers: None,
            hasher: KeyHasher::process(),
        }
    }
}

/// `mode` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// A denial refuses the request with 429.
    #[default]
    Enforce,
    /// The rule decides exactly as when enforced (its bucket fills and
    /// drains the same way), but a denial is only counted: the request goes
    /// on, and the rule adds nothing to the client's headers.
    Shadow,
}

impl RuleSpec {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.applies_to.matches(method, path)
    }

    /// Seconds in the window, for the IETF `w` parameter.
    pub fn window_secs(&self) -> u64 {
        self.period.as_secs_f64().ceil() as u64
    }

    /// Time an empty bucket takes to fill again (`period / limit × burst`),
    /// unclamped: what config checks against [`MAX_REFILL`].
    pub fn full_refill(&self) -> Duration {
        (self.period / self.limit.max(1)).saturating_mul(self.burst.max(1))
    }

    /// Time between two tokens, at least 1 ns, clamped so a full burst
    /// refills within [`MAX_REFILL`] (config refuses longer ones; this
    /// guards other callers from governor's overflow).
    pub fn replenish_interval(&self) -> Duration {
        let limit = self.limit.max(1);
        let longest = MAX_REFILL / self.burst.max(1);
        (self.period / limit).clamp(
            Duration::from_nanos(1),
            longest.max(Duration::from_nanos(1)),
        )
    }
}

/// Rule names in rule order: the `rule` label values.
pub fn rule_names(rules: &[RuleSpec]) -> Vec<String> {
    rules.iter().map(|r| r.name.clone()).collect()
}

/// The state of one rule's bucket after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleState {
    /// Index of the rule in the limiter's rules.
    pub rule: usize,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (rounded up).
    pub reset_secs: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The bucket of the rule that refused it.
    pub state: RuleState,
    /// Whole seconds until the request would be allowed (rounded up, at
    /// least 1): the `Retry-After` value.
    pub retry_after_secs: u64,
}

/// A set of rule indices; a config has at most [`RuleSet::CAPACITY`]
/// rules, so a request's matching rules fit one word (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleSet(u64);

impl RuleSet {
    pub const CAPACITY: usize = 64;

    pub fn insert(&mut self, i: usize) {
        if i < Self::CAPACITY {
            self.0 |= 1 << i;
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Indices in increasing order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }

    /// The rules among `rules` that apply to a request.
    pub fn matching(rules: &[RuleSpec], method: &str, path: &str) -> RuleSet {
        (0..rules.len())
            .filter(|&i| rules[i].matches(method, path))
            .collect()
    }
}

impl FromIterator<usize> for RuleSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = RuleSet::default();
        iter.into_iter().for_each(|i| set.insert(i));
        set
    }
}

/// The outcome for one request, built the same way by every backend:
/// rules are checked in file order, the first denial ends the decision,
/// and the rule with the least room left is the one the headers show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Set when the request is refused.
    pub denied: Option<Denial>,
    /// The rule with the least remaining capacity, for the headers.
    pub tightest: Option<RuleState>,
    /// Every enforced rule that matched, for `RateLimit-Policy`.
    pub matched: RuleSet,
    /// Shadow rules that would have refused the request.
    pub shadowed: RuleSet,
}

impl Decision {
    /// A rule let the request through: it becomes the tightest when it has
    /// less room left than the tightest so far (fewer remaining, then the
    /// lower limit).
    pub fn allow(&mut self, state: RuleState) {
        let tighter = self
            .tightest
            .is_none_or(|t| (state.remaining, state.limit) < (t.remaining, t.limit));
        if tighter {
            self.tightest = Some(state);
        }
    }

    /// A rule refused the request: it is the tightest and the decision is
    /// final.
    pub fn deny(&mut self, denial: Denial) {
        self.tightest = Some(denial.state);
        self.denied = Some(denial);
    }

    /// Add the decision of later rules (another backend call); `true` when
    /// it refused the request, so nothing after it is checked.
    pub fn merge(&mut self, later: Decision) -> bool {
        self.matched = RuleSet(self.matched.0 | later.matched.0);
        self.shadowed = RuleSet(self.shadowed.0 | later.shadowed.0);
        if let Some(denial) = later.denied {
            self.deny(denial);
            return true;
        }
        if let Some(state) = later.tightest {
            self.allow(state);
        }
        false
    }

    /// The rule that decided the request, for the log: the one that refused
    /// it, else the tightest.
    pub fn deciding_rule(&self) -> Option<usize> {
        self.denied
            .map(|d| d.state.rule)
            .or(self.tightest.map(|t| t.rule))
    }
}

/// What to do with a request when the shared backend cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    /// Decide with this replica's own buckets.
    Local,
    /// Let the request through unlimited.
    Allow,
    /// Refuse it with 503.
    Deny,
}

/// The Redis backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBackend {
    pub target: RedisTarget,
    /// Longest wait for one decision before `on_error` applies.
    pub timeout: Duration,
    pub on_error: OnBackendError,
}

/// Everything the limiter is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterSettings {
    pub rules: Vec<RuleSpec>,
    /// Most clients each rule's local table holds.
    pub max_keys: usize,
    /// `None`: the local buckets decide.
    pub shared: Option<SharedBackend>,
    /// `rate_limit.key_secret`: the HMAC key of header values, shared by
    /// replicas; `None`: a secret of this process.
    pub key_secret: Option<String>,
}

/// The `[rate_limit]` section, as the gateway runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub limiter: LimiterSettings,
    pub headers: HeaderStyle,
    /// Clients no rule limits.
    pub exempt: Exemptions,
    /// How often idle keys are swept from the local tables.
    pub sweep_interval: Duration,
}

/// What the gateway should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    /// `on_backend_error = "deny"` and the backend failed: answer 503.
    Unavailable,
}

/// A decision, ready now (local buckets) or on its way (Redis).
pub enum Pending<'a> {
    Ready(Outcome),
    Shared(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>),
}

impl Pending<'_> {
    /// The outcome, awaiting the shared backend only when there is one.
    /// (The gateway matches instead: an extra future per request costs
    /// more than the match.)
    pub async fn outcome(self) -> Outcome {
        match self {
            Pending::Ready(outcome) => outcome,
            Pending::Shared(future) => future.await,
        }
    }
}

/// The enforced rules among `set`.
fn enforced(rules: &[RuleSpec], set: RuleSet) -> RuleSet {
    set.iter()
        .filter(|&i| rules[i].mode == RuleMode::Enforce)
        .collect()
}

/// The shared backend in use and what to do when it fails.
struct Shared {
    redis: Arc<RedisLimiter>,
    on_error: OnBackendError,
}

/// The rate limiter the gateway asks.
pub struct Limiter {
    rules: Vec<RuleSpec>,
    /// Turns header values into bucket keys.
    key_hasher: KeyHasher,
    /// The buckets with the local backend; the fallback for
    /// `on_backend_error = "local"` with Redis.
    local: LocalLimiter,
    shared: Option<Shared>,
}

impl Limiter {
    /// `backend_errors` counts the shared backend's failed decisions.
    pub fn new(settings: &LimiterSettings, backend_errors: prometheus::IntCounter) -> Limiter {
        let local = LocalLimiter::new(settings.rules.clone(), settings.max_keys);
        Limiter::with_local(settings, local, None, backend_errors)
    }

    /// The limiter for a reloaded config: unchanged rules keep their
    /// buckets (see [`LocalLimiter::reconfigure`]), and the Redis
    /// connection is kept when its target and timeout are unchanged. Also
    /// returns the names of the rules that kept their buckets.
    pub fn reconfigured(
        &self,
        settings: &LimiterSettings,
        backend_errors: prometheus::IntCounter,
    ) -> (Limiter, Vec<String>) {
        let (local, kept) = self
            .local
            .reconfigure(settings.rules.clone(), settings.max_keys);
        let reuse = self.shared.as_ref().map(|s| &s.redis).filter(|old| {
            settings
                .shared
                .as_ref()
                .is_some_and(|new| *old.target() == new.target && old.timeout() == new.timeout)
        });
        let next = Limiter::with_local(settings, local, reuse.cloned(), backend_errors);
        (next, kept)
    }

    fn with_local(
        settings: &LimiterSettings,
        local: LocalLimiter,
        reuse: Option<Arc<RedisLimiter>>,
        backend_errors: prometheus::IntCounter,
    ) -> Limiter {
        let shared = settings.shared.as_ref().and_then(|s| {
            let redis = match reuse {
                Some(redis) => redis,
                None => RedisLimiter::new(s.target.clone(), s.timeout, backend_errors)
                    .map_err(|e| {
                        tracing::error!(error = %e, "redis backend not set up; limiting locally")
                    })
                    .ok()
                    .map(Arc::new)?,
            };
            Some(Shared {
                redis,
                on_error: s.on_error,
            })
        });
        let key_hasher = match &settings.key_secret {
            Some(secret) => KeyHasher::with_secret(secret.as_bytes()),
            None => KeyHasher::process().clone(),
        };
        Limiter {
            rules: settings.rules.clone(),
            key_hasher,
            local,
            shared,
        }
    }

    /// The hasher of header values for this limiter's header-keyed rules.
    pub fn key_hasher(&self) -> &KeyHasher {
        &self.key_hasher
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[RuleSpec] {
        &self.rules
    }

    /// Start loading this client's local buckets into the cache, for a
    /// [`decide`](Self::decide) a little later. Nothing with Redis.
    pub fn prefetch(&self, method: &str, path: &str, key: &ClientKey) {
        if self.shared.is_none() {
            self.local.prefetch(method, path, key);
        }
    }

    /// Decide for one request, each rule under its key.
    pub fn decide<'a>(
        &'a self,
        method: &'a str,
        path: &'a str,
        keys: RequestKeys<'a>,
    ) -> Pending<'a> {
        match &self.shared {
            None => Pending::Ready(Outcome::Decided(self.local.check_keys(method, path, &keys))),
            Some(shared) => {
                Pending::Shared(Box::pin(self.decide_shared(shared, method, path, keys)))
            }
        }
    }

    async fn decide_shared(
        &self,
        shared: &Shared,
        method: &str,
        path: &str,
        keys: RequestKeys<'_>,
    ) -> Outcome {
        let matched = RuleSet::matching(&self.rules, method, path);
        if matched.is_empty() {
            return Outcome::Decided(Decision::default());
        }
        match shared.redis.decide(&keys, &self.rules, matched).await {
            Ok(decision) => Outcome::Decided(decision),
            Err(redis::Unreachable) => match shared.on_error {
                OnBackendError::Local => {
                    Outcome::Decided(self.local.check_keys(method, path, &keys))
                }
                OnBackendError::Allow => Outcome::Decided(Decision {
                    matched: enforced(&self.rules, matched),
                    ..Decision::default()
                }),
                OnBackendError::Deny => Outcome::Unavailable,
            },
        }
    }

    /// `Some(true)` while the shared backend fails and `on_backend_error`
    /// applies; `None` without one.
    pub fn shared_backend_degraded(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.redis.is_degraded())
    }

    /// Drop idle local keys and give memory back (the janitor's tick).
    pub fn sweep(&self) {
        self.local.sweep();
    }

    /// Live local keys per rule, in rule order.
    pub fn key_counts(&self) -> Vec<usize> {
        self.local.key_counts()
    }

    /// Decisions made on each rule's overflow bucket, in rule order.
    pub fn overflow_totals(&self) -> Vec<u64> {
        self.local.overflow_totals()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rule: usize, limit: u32, remaining: u32) -> RuleState {
        RuleState {
            rule,
            limit,
            remaining,
            reset_secs: 1,
        }
    }

    #[test]
    fn the_tightest_rule_has_least_room_then_the_lower_limit() {
        let mut d = Decision::default();
        d.allow(state(0, 100, 50));
        d.allow(state(1, 20, 5));
        d.allow(state(2, 10, 5));
        d.allow(state(3, 30, 7));
        assert_eq!(d.tightest, Some(state(2, 10, 5)));
        assert_eq!(d.deciding_rule(), Some(2));
        d.deny(Denial {
            state: state(4, 50, 0),
            retry_after_secs: 3,
        });
        assert_eq!(d.tightest, Some(state(4, 50, 0)), "a denial is tightest");
        assert_eq!(d.denied.map(|x| x.retry_after_secs), Some(3));
        assert_eq!(d.deciding_rule(), Some(4));
    }

    #[test]
    fn a_later_decision_merges_and_its_denial_ends_it() {
        let mut d = Decision::default();
        d.allow(state(0, 100, 50));
        d.matched.insert(0);
        let mut later = Decision::default();
        later.allow(state(1, 10, 3));
        later.matched.insert(1);
        later.shadowed.insert(2);
        assert!(!d.merge(later), "no denial: go on");
        assert_eq!(d.tightest, Some(state(1, 10, 3)));
        assert_eq!(d.matched.iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(d.shadowed.iter().collect::<Vec<_>>(), vec![2]);
        let mut denied = Decision::default();
        denied.deny(Denial {
            state: state(3, 5, 0),
            retry_after_secs: 9,
        });
        assert!(d.merge(denied), "a denial ends the decision");
        assert_eq!(d.denied.map(|x| x.retry_after_secs), Some(9));
        assert_eq!(d.deciding_rule(), Some(3));
    }

    #[test]
    fn rule_sets_hold_indices_in_order() {
        let set: RuleSet = [5, 0, 63, 64, 5].into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert!(RuleSet::default().is_empty());
    }

    #[test]
    fn intervals_are_clamped_to_a_century_of_refill() {
        let rule = |period, limit, burst| RuleSpec {
            name: "r".into(),
            applies_to: RequestMatcher::any(),
            limit,
            period,
            burst,
            mode: RuleMode::Enforce,
            key: Default::default(),
        };
        assert_eq!(
            rule(Duration::from_secs(1), 5, 5).replenish_interval(),
            Duration::from_millis(200)
        );
        assert_eq!(
            rule(Duration::ZERO, 5, 5).replenish_interval(),
            Duration::from_nanos(1)
        );
        let huge = rule(Duration::MAX, 1, u32::MAX);
        assert!(huge.replenish_interval() * u32::MAX <= MAX_REFILL);
    }
}
