//! The shared rate-limit backend: the same GCRA buckets as the local
//! limiter, kept in Redis so every replica spends from one bucket per client.
//!
//! - One atomic Lua script per request decides every matching rule (in file
//!   order, stopping at the first denial, as the local limiter does). It is
//!   sent with EVALSHA and re-loaded on NOSCRIPT (`redis::Script`).
//! - Time comes from Redis (`TIME`), so replicas with skewed clocks agree.
//! - A bucket key expires when its bucket would be full again (`PX`), so
//!   Redis memory is bounded by the clients active within one refill period,
//!   with no sweeper.
//! - All of a request's keys share one hash tag (the client), so a decision
//!   touches one slot in Redis Cluster.
//! - A decision that fails or takes longer than `redis_timeout` is
//!   [`Unreachable`], and the [`Limiter`](super::Limiter) applies
//!   `on_backend_error`; after a failure Redis is skipped for
//!   [`RETRY_AFTER_FAILURE`] so a dead Redis costs requests nothing, then
//!   tried again: recovery needs no restart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::{Decision, Denial, RequestKeys, RuleMode, RuleSet, RuleSpec, RuleState};
use crate::client::ClientKey;

/// How long Redis is left alone after a failed decision.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// KEYS: one bucket per matching rule. ARGV: interval (µs), burst and
/// shadow (1/0) per rule. Returns 4 numbers per rule checked: allowed (1,
/// 0, or 2 for a shadow rule's denial, which does not stop the checks),
/// remaining, µs until allowed again, µs until the bucket is full.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local shadow = ARGV[3 * i] == '1'
  local tau = interval * burst
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tau
  if allow_at > now then
    out[#out + 1] = shadow and 2 or 0
    out[#out + 1] = 0
    out[#out + 1] = allow_at - now
    out[#out + 1] = tat - now
    if not shadow then return out end
  else
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now + tau - new_tat) / interval)
    out[#out + 1] = 0
    out[#out + 1] = new_tat - now
  end
end
return out
"#;

/// Where the buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

/// A client, and its connection made on first use (inside the runtime;
/// retried on the next decision until it works). One per runtime, so the
/// variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Single(redis::Client, OnceCell<ConnectionManager>),
    Cluster(redis::cluster::ClusterClient, OnceCell<ClusterConnection>),
}

/// Redis did not decide: it failed, timed out, or is being left alone
/// after a recent failure. Counted and logged here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

pub struct RedisLimiter {
    target: RedisTarget,
    conn: Conn,
    script: redis::Script,
    timeout: Duration,
    errors: prometheus::IntCounter,
    degraded: AtomicBool,
    /// Milliseconds after `epoch` before which Redis is not tried.
    skip_until_ms: AtomicU64,
    epoch: Instant,
}

impl RedisLimiter {
    /// Set up the client; nothing connects until the first decision.
    pub fn new(
        target: RedisTarget,
        timeout: Duration,
        errors: prometheus::IntCounter,
    ) -> Result<RedisLimiter, String> {
        let conn = match &target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                Conn::Single(client, OnceCell::new())
            }
            RedisTarget::Cluster(nodes) => {
                let client =
                    redis::cluster::ClusterClient::new(nodes.clone()).map_err(|e| e.to_string())?;
                Conn::Cluster(client, OnceCell::new())
            }
        };
        Ok(RedisLimiter {
            target,
            conn,
            script: redis::Script::new(GCRA_SCRIPT),
            timeout,
            errors,
            degraded: AtomicBool::new(false),
            skip_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// True while decisions fall back to `on_backend_error`.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Decide the `matched` rules for one request, each under its key.
    pub async fn decide(
        &self,
        keys: &RequestKeys<'_>,
        rules: &[RuleSpec],
        matched: RuleSet,
    ) -> Result<Decision, Unreachable> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if now_ms >= self.skip_until_ms.load(Ordering::Relaxed) {
            let runs = runs_by_key(keys, rules, matched);
            let call = tokio::time::timeout(self.timeout, self.eval_runs(&runs, rules)).await;
            let failure = match call {
                Ok(Ok(decision)) => {
                    self.mark_healthy();
                    return Ok(decision);
                }
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {:?}", self.timeout),
            };
            self.mark_failed(&failure);
        }
        self.errors.inc();
        Err(Unreachable)
    }

    fn mark_healthy(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(target = ?self.target, "redis rate-limit backend is back; shared limits apply again");
        }
    }

    fn mark_failed(&self, why: &str) {
        let until = self.epoch.elapsed() + RETRY_AFTER_FAILURE;
        self.skip_until_ms
            .store(until.as_millis() as u64, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target = ?self.target,
                error = why,
                "redis rate-limit backend unavailable; applying on_backend_error until it answers again"
            );
        }
    }

    /// One script per run of rules under one key, in rule order, stopping
    /// at the first denial as the local limiter does.
    async fn eval_runs(&self, runs: &[KeyRun], rules: &[RuleSpec]) -> Result<Decision, String> {
        let mut decision = Decision::default();
        for run in runs {
            let part = self.eval(&run.key, rules, run.rules).await?;
            if decision.merge(part) {
                break;
            }
        }
        Ok(decision)
    }

    async fn eval(
        &self,
        key: &ClientKey,
        rules: &[RuleSpec],
        matched: RuleSet,
    ) -> Result<Decision, String> {
        let client = bucket_tag(key);
        let mut inv = self.script.prepare_invoke();
        for i in matched.iter() {
            let r = &rules[i];
            let interval_us = r.replenish_interval().as_micros().max(1) as u64;
            inv.key(format!(
                "tollgate:{{{client}}}:{}:{}",
                r.name,
                rule_version(r)
            ));
            let shadow = u8::from(r.mode == RuleMode::Shadow);
            inv.arg(interval_us).arg(r.burst.max(1)).arg(shadow);
        }
        let raw: Vec<i64> = match &self.conn {
            Conn::Single(client, cell) => {
                let manager = cell
                    .get_or_try_init(|| async {
                        let slow = self.timeout.max(Duration::from_millis(100));
                        let config = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(slow))
                            .set_response_timeout(Some(slow))
                            .set_number_of_retries(1)
                            .set_max_delay(Duration::from_millis(200));
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let mut c = manager.clone();
                inv.invoke_async(&mut c).await.map_err(|e| e.to_string())?
            }
            Conn::Cluster(client, cell) => {
                let conn = cell
                    .get_or_try_init(|| client.get_async_connection())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut c = conn.clone();
                inv.invoke_async(&mut c).await.map_err(|e| e.to_string())?
            }
        };
        Ok(decision_from(&raw, rules, matched))
    }
}

/// Matching rules in rule order, cut where the key changes: IP-keyed rules
/// share the client's slot, a header-keyed rule has its key's. All of one
/// run's buckets share a hash tag, so one script decides them in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRun {
    key: ClientKey,
    rules: RuleSet,
}

fn runs_by_key(keys: &RequestKeys<'_>, rules: &[RuleSpec], matched: RuleSet) -> Vec<KeyRun> {
    let mut runs: Vec<KeyRun> = Vec::with_capacity(1);
    for i in matched.iter() {
        let key = keys.for_rule(&rules[i]);
        match runs.last_mut() {
            Some(run) if run.key == key => run.rules.insert(i),
            _ => runs.push(KeyRun {
                key,
                rules: [i].into_iter().collect(),
            }),
        }
    }
    runs
}

/// The hash tag of a client's keys.
fn bucket_tag(key: &ClientKey) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(34);
    match key {
        ClientKey::V4(b) => {
            s.push('4');
            b.iter().for_each(|x| {
                let _ = write!(s, "{x:02x}");
            });
        }
        ClientKey::V6(b) => {
            s.push('6');
            b.iter().for_each(|x| {
                let _ = write!(s, "{x:02x}");
            });
        }
        ClientKey::Hashed(b) => {
            s.push('h');
            b.iter().for_each(|x| {
                let _ = write!(s, "{x:02x}");
            });
        }
    }
    s
}

/// Changes when a rule's quota changes, so a reloaded rule with a new
/// quota starts with fresh buckets, as the local limiter does.
fn rule_version(r: &RuleSpec) -> String {
    format!("{}-{}-{}", r.limit, r.period.as_millis(), r.burst)
}

fn ceil_secs_us(us: i64) -> u64 {
    let us = us.max(0) as u64;
    us.div_ceil(1_000_000)
}

/// Turn the script's numbers into a [`Decision`].
fn decision_from(raw: &[i64], rules: &[RuleSpec], matched: RuleSet) -> Decision {
    let mut d = Decision {
        matched: super::enforced(rules, matched),
        ..Decision::default()
    };
    for (chunk, i) in raw.chunks_exact(4).zip(matched.iter()) {
        if rules[i].mode == RuleMode::Shadow {
            if chunk[0] == 2 {
                d.shadowed.insert(i);
            }
            continue;
        }
        let state = RuleState {
            rule: i,
            limit: rules[i].limit,
            remaining: u32::try_from(chunk[1].max(0)).unwrap_or(u32::MAX),
            reset_secs: ceil_secs_us(chunk[3]),
        };
        if chunk[0] == 0 {
            d.deny(Denial {
                state,
                retry_after_secs: ceil_secs_us(chunk[2]).max(1),
            });
            return d;
        }
        d.allow(state);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<RuleSpec> {
        let r = |name: &str, limit| RuleSpec {
            name: name.into(),
            applies_to: crate::routes::RequestMatcher::any(),
            limit,
            period: Duration::from_secs(60),
            burst: limit,
            mode: RuleMode::Enforce,
            key: Default::default(),
        };
        vec![r("a", 100), r("b", 5)]
    }

    #[test]
    fn script_numbers_become_a_decision() {
        let d = decision_from(
            &[1, 99, 0, 600_000, 1, 4, 0, 12_000_000],
            &rules(),
            [0, 1].into_iter().collect(),
        );
        assert!(d.denied.is_none());
        assert_eq!(d.tightest.unwrap().rule, 1);
        assert_eq!(d.tightest.unwrap().remaining, 4);
        assert_eq!(d.tightest.unwrap().reset_secs, 12);

        let d = decision_from(
            &[1, 99, 0, 600_000, 0, 0, 11_500_001, 60_000_000],
            &rules(),
            [0, 1].into_iter().collect(),
        );
        let Denial {
            state,
            retry_after_secs,
        } = d.denied.unwrap();
        assert_eq!(
            (state.rule, retry_after_secs, state.reset_secs),
            (1, 12, 60)
        );
    }

    #[test]
    fn shadow_denials_are_noted_and_the_checks_go_on() {
        let mut rules = rules();
        rules[0].mode = RuleMode::Shadow;
        let d = decision_from(
            &[2, 0, 5_000_000, 60_000_000, 1, 4, 0, 12_000_000],
            &rules,
            [0, 1].into_iter().collect(),
        );
        assert_eq!(d.shadowed.iter().collect::<Vec<_>>(), vec![0]);
        assert!(d.denied.is_none());
        assert_eq!(
            d.tightest.map(|t| t.rule),
            Some(1),
            "only the enforced rule"
        );
        assert_eq!(d.matched.iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn rules_run_in_order_one_script_per_key() {
        let header = |name: &str| {
            let mut r = rules()[0].clone();
            r.name = name.into();
            r.key = super::super::RuleKey::Header(http::HeaderName::from_static("x-api-key"));
            r
        };
        let rules = vec![
            rules()[0].clone(),
            header("h1"),
            header("h2"),
            rules()[1].clone(),
        ];
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", "k".parse().unwrap());
        let hasher = crate::client::KeyHasher::with_secret(b"s");
        let ip = ClientKey::V4([10, 0, 0, 1]);
        let keys = RequestKeys {
            ip,
            headers: Some(&headers),
            hasher: &hasher,
        };
        let all: RuleSet = (0..4).collect();
        let runs = runs_by_key(&keys, &rules, all);
        let sets: Vec<Vec<usize>> = runs.iter().map(|r| r.rules.iter().collect()).collect();
        assert_eq!(
            sets,
            vec![vec![0], vec![1, 2], vec![3]],
            "cut where the key changes"
        );
        assert_eq!(runs[0].key, ip);
        assert!(matches!(runs[1].key, ClientKey::Hashed(_)));
        assert!(bucket_tag(&runs[1].key).starts_with('h'));
        // Without the header every rule is the client's: one script.
        let keys = RequestKeys::ip_only(ip);
        assert_eq!(runs_by_key(&keys, &rules, all).len(), 1);
    }

    #[test]
    fn keys_of_one_client_share_a_hash_tag() {
        assert_eq!(bucket_tag(&ClientKey::V4([10, 0, 0, 1])), "40a000001");
        assert_eq!(bucket_tag(&ClientKey::V6([0xff; 16])).len(), 33);
    }
}
