//! Everything a request needs, built once from a validated [`Config`], so
//! nothing is re-parsed or looked up by name per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::client_ip::ClientIpResolver;
use crate::config::{Backend, Config};
use crate::metrics::{Metrics, RouteMetrics};
use crate::normalize::ErrorTable;
use crate::rate_limit::{RateLimiter, RuleSpec};
use crate::rate_limit_headers;
use crate::redis_limiter::{RedisLimiter, RedisTarget};
use crate::routes::RouteTable;

/// How to reach the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub addr: SocketAddr,
    pub tls: bool,
    pub sni: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

pub struct Runtime {
    pub upstream: UpstreamSettings,
    pub client_ip: ClientIpResolver,
    /// The local buckets: the limiter itself with `backend = "local"`, the
    /// fallback for `on_backend_error = "local"` with Redis.
    pub limiter: RateLimiter,
    /// The shared backend, with `backend = "redis"`.
    pub redis: Option<Arc<RedisLimiter>>,
    pub rules: Vec<RuleSpec>,
    /// Per rule, in rule order.
    pub rate_limited: Vec<prometheus::IntCounter>,
    pub rate_limit_headers: rate_limit_headers::Renderer,
    pub errors: ErrorTable,
    pub max_error_body: usize,
    pub max_request_body: u64,
    pub routes: RouteTable,
    /// Per route, indexed by [`crate::routes::RouteId`].
    pub route_metrics: Vec<RouteMetrics>,
    pub log_all: bool,
    pub metrics: Arc<Metrics>,
}

fn rule_specs(cfg: &Config) -> Vec<RuleSpec> {
    cfg.file
        .rate_limit
        .rules
        .iter()
        .map(|r| RuleSpec {
            name: r.name.get_ref().clone(),
            path_prefix: r.path_prefix.clone(),
            methods: r.methods.clone(),
            limit: *r.limit.get_ref(),
            period: r.period.0,
            burst: r
                .burst
                .as_ref()
                .map_or(*r.limit.get_ref(), |b| *b.get_ref()),
        })
        .collect()
}

impl Runtime {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Runtime {
        let rules = rule_specs(cfg);
        let limiter = RateLimiter::new(rules.clone(), cfg.file.rate_limit.max_keys);
        Runtime::build(cfg, metrics, rules, limiter)
    }

    /// The runtime for a reloaded config: unchanged rules keep their
    /// buckets (see [`RateLimiter::reconfigure`]). Also returns the names
    /// of the kept rules.
    pub fn reconfigured(&self, cfg: &Config) -> (Runtime, Vec<String>) {
        let rules = rule_specs(cfg);
        let (limiter, kept) = self
            .limiter
            .reconfigure(rules.clone(), cfg.file.rate_limit.max_keys);
        let mut next = Runtime::build(cfg, self.metrics.clone(), rules, limiter);
        // Keep the Redis connection when its settings did not change.
        if let (Some(old), Some(new)) = (&self.redis, &next.redis) {
            let same = old.target() == new.target()
                && old.timeout() == new.timeout()
                && old.policy() == new.policy();
            if same {
                next.redis = Some(old.clone());
            }
        }
        (next, kept)
    }

    fn build(
        cfg: &Config,
        metrics: Arc<Metrics>,
        rules: Vec<RuleSpec>,
        limiter: RateLimiter,
    ) -> Runtime {
        let f = &cfg.file;
        let routes = RouteTable::new(f.routes.iter().map(|r| {
            (
                r.name.get_ref().clone(),
                r.path_prefix.clone(),
                r.methods.clone(),
            )
        }));
        let route_metrics = routes.names().iter().map(|n| metrics.route(n)).collect();
        let rate_limited = rules
            .iter()
            .map(|r| metrics.rate_limited_counter(&r.name))
            .collect();
        let sni = if f.upstream.sni.is_empty() {
            cfg.upstream_host.clone()
        } else {
            f.upstream.sni.clone()
        };
        let redis = (f.rate_limit.backend == Backend::Redis)
            .then(|| {
                let rl = &f.rate_limit;
                let target = if rl.redis_cluster_nodes.is_empty() {
                    RedisTarget::Single(rl.redis_url.clone())
                } else {
                    RedisTarget::Cluster(rl.redis_cluster_nodes.clone())
                };
                let errors = metrics.backend_errors.with_label_values(&["redis"]);
                RedisLimiter::new(target, rl.redis_timeout.0, rl.on_backend_error, errors)
                    .map_err(|e| tracing::error!(error = %e, "redis backend not set up; limiting locally"))
                    .ok()
                    .map(Arc::new)
            })
            .flatten();
        let rate_limit_headers = rate_limit_headers::Renderer::new(f.rate_limit.headers, &rules);
        Runtime {
            redis,
            upstream: UpstreamSettings {
                addr: cfg.upstream_addr,
                tls: f.upstream.tls,
                sni,
                connect_timeout: f.upstream.connect_timeout.0,
                read_timeout: f.upstream.read_timeout.0,
            },
            client_ip: ClientIpResolver::new(
                f.client_ip.trusted_proxies.clone(),
                f.client_ip.ipv6_prefix,
            ),
            limiter,
            rules,
            rate_limited,
            rate_limit_headers,
            errors: ErrorTable::new(cfg.status_overrides.clone()),
            max_error_body: f.errors.max_body_bytes,
            max_request_body: f.server.max_request_body_bytes,
            routes,
            route_metrics,
            log_all: f.log.all_requests,
            metrics,
        }
    }

    /// Rule names in rule order (the metric labels).
    pub fn rule_names(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.name.clone()).collect()
    }

    /// Copy the limiter's key counts into the metrics (at scrape time).
    pub fn export_limiter_state(&self) {
        self.metrics.set_limiter_state(
            &self.rule_names(),
            &self.limiter.key_counts(),
            &self.limiter.overflow_totals(),
        );
    }
}
