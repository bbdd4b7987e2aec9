//! Everything a request needs, built once from a validated [`Config`], so
//! nothing is re-parsed or looked up by name per request.

use std::sync::Arc;

use crate::client::{ClientIpResolver, Exemptions};
use crate::config::{Config, UpstreamSettings};
use crate::errors::{ErrorFormat, ErrorTable};
use crate::observe::{Metrics, RouteMetrics};
use crate::rate_limit::headers::Renderer;
use crate::rate_limit::{rule_names, Limiter};
use crate::routes::RouteTable;

pub struct Runtime {
    pub upstream: UpstreamSettings,
    pub client_ip: ClientIpResolver,
    /// Clients no rule limits (`rate_limit.exempt`).
    pub exempt: Exemptions,
    pub limiter: Limiter,
    /// 429s per rule, in rule order.
    pub rate_limited: Vec<prometheus::IntCounter>,
    /// Shadow denials per rule, in rule order.
    pub shadowed: Vec<prometheus::IntCounter>,
    pub rate_limit_headers: Renderer,
    pub errors: ErrorTable,
    /// `errors.format`: the form of an error body on a tie.
    pub error_format: ErrorFormat,
    pub max_error_body: usize,
    pub max_request_body: u64,
    /// `server.max_header_bytes`, for the 431's message.
    pub max_header_bytes: usize,
    pub routes: RouteTable,
    /// Per route, indexed by [`crate::routes::RouteId`].
    pub route_metrics: Vec<RouteMetrics>,
    pub log_all: bool,
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Runtime {
        let limiter = Limiter::new(&cfg.rate_limit.limiter, backend_errors(&metrics));
        Runtime::build(cfg, metrics, limiter)
    }

    /// The runtime for a reloaded config: unchanged rules keep their
    /// buckets and the Redis connection is kept (see
    /// [`Limiter::reconfigured`]). Also returns the names of the kept
    /// rules.
    pub fn reconfigured(&self, cfg: &Config) -> (Runtime, Vec<String>) {
        let (limiter, kept) = self
            .limiter
            .reconfigured(&cfg.rate_limit.limiter, backend_errors(&self.metrics));
        (Runtime::build(cfg, self.metrics.clone(), limiter), kept)
    }

    fn build(cfg: &Config, metrics: Arc<Metrics>, limiter: Limiter) -> Runtime {
        let routes = RouteTable::new(&cfg.routes);
        let route_metrics = routes
            .names()
            .iter()
            .enumerate()
            .map(|(id, n)| metrics.route(n, !routes.item_errors(id).is_empty()))
            .collect();
        let rate_limited = limiter
            .rules()
            .iter()
            .map(|r| metrics.rate_limited_counter(&r.name))
            .collect();
        let shadowed = limiter
            .rules()
            .iter()
            .map(|r| metrics.shadowed_counter(&r.name))
            .collect();
        Runtime {
            upstream: cfg.upstream.clone(),
            client_ip: cfg.client_ip.clone(),
            exempt: cfg.rate_limit.exempt.clone(),
            rate_limited,
            shadowed,
            rate_limit_headers: Renderer::new(cfg.rate_limit.headers, limiter.rules()),
            limiter,
            errors: cfg.errors.table.clone(),
            error_format: cfg.errors.format,
            max_error_body: cfg.errors.max_body_bytes,
            max_request_body: cfg.server.max_request_body_bytes,
            max_header_bytes: cfg.server.max_header_bytes,
            routes,
            route_metrics,
            log_all: cfg.log_all_requests,
            metrics,
        }
    }

    /// Copy the limiter's key counts into the metrics (at scrape time).
    pub fn export_limiter_state(&self) {
        self.metrics.set_limiter_state(
            &rule_names(self.limiter.rules()),
            &self.limiter.key_counts(),
            &self.limiter.overflow_totals(),
        );
    }
}

fn backend_errors(metrics: &Metrics) -> prometheus::IntCounter {
    metrics.backend_errors.with_label_values(&["redis"])
}
