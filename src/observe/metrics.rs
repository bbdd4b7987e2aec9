//! The Prometheus registry (docs/metrics.md). Labels are bounded: route and rule
//! names from the config, status codes, and fixed kinds; never paths, IPs
//! or ids. Families with label values known in advance start at zero so
//! `rate()` and alerts work before the first event.

use std::ops::RangeInclusive;
use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::errors::Source;

/// Upstream failure kinds (`tollgate_upstream_failures_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    Timeout,
    Reset,
    Invalid,
}

impl FailureKind {
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Invalid => "invalid",
        }
    }
}

/// Requests refused because of how the client sent them
/// (`tollgate_client_errors_total{kind}`, docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorKind {
    /// The request head did not arrive whole within `header_timeout`.
    HeaderTimeout,
    /// The request head was over `max_header_bytes`.
    HeaderTooLarge,
    /// The request broke HTTP/1.1's framing rules.
    Malformed,
    /// An HTTP/2 connection ended for abusing the protocol.
    H2Abuse,
    /// A TLS handshake failed.
    TlsHandshake,
}

impl ClientErrorKind {
    pub const ALL: [ClientErrorKind; 5] = [
        ClientErrorKind::HeaderTimeout,
        ClientErrorKind::HeaderTooLarge,
        ClientErrorKind::Malformed,
        ClientErrorKind::H2Abuse,
        ClientErrorKind::TlsHandshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientErrorKind::HeaderTimeout => "header_timeout",
            ClientErrorKind::HeaderTooLarge => "header_too_large",
            ClientErrorKind::Malformed => "malformed",
            ClientErrorKind::H2Abuse => "h2_abuse",
            ClientErrorKind::TlsHandshake => "tls_handshake",
        }
    }
}

/// Bucket bounds for a sidecar: 250µs to 30s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Statuses whose normalized-error series are exported at zero.
const KNOWN_ERROR_STATUSES: &[u16] = &[
    400, 401, 403, 404, 405, 409, 410, 413, 422, 429, 500, 502, 503, 504,
];

/// Per-route handles, resolved once so a request does no label lookup:
/// the histograms up front, the request counter per status on first use.
#[derive(Clone)]
pub struct RouteMetrics {
    pub name: String,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    /// `tollgate_item_errors_total{route}`, for a route with `item_errors`.
    pub item_errors: Option<IntCounter>,
    /// `tollgate_requests_total{route, status}`.
    requests: ByStatus,
}

impl RouteMetrics {
    /// Count one answered request.
    pub fn count(&self, status: u16) {
        self.requests.inc(status);
    }
}

/// The counters of a family labelled `{<one fixed value>, status}`, each
/// resolved on its first use, so counting does no label lookup (which
/// hashes the labels and takes a lock) within `statuses`, and one outside.
#[derive(Clone)]
struct ByStatus {
    family: IntCounterVec,
    label: String,
    first: u16,
    counters: Box<[OnceLock<IntCounter>]>,
}

impl ByStatus {
    fn new(family: &IntCounterVec, label: &str, statuses: RangeInclusive<u16>) -> ByStatus {
        ByStatus {
            family: family.clone(),
            label: label.to_string(),
            first: *statuses.start(),
            counters: statuses.map(|_| OnceLock::new()).collect(),
        }
    }

    fn inc(&self, status: u16) {
        let counter = || {
            let mut text = itoa::Buffer::new();
            self.family
                .with_label_values(&[self.label.as_str(), text.format(status)])
        };
        let cell = status
            .checked_sub(self.first)
            .and_then(|i| self.counters.get(usize::from(i)));
        match cell {
            Some(cell) => cell.get_or_init(counter).inc(),
            None => counter().inc(),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limit_shadowed: IntCounterVec,
    errors_normalized: IntCounterVec,
    /// `errors_normalized` by source (in `Source::ALL`'s order) and status.
    normalized_by_source: Box<[ByStatus]>,
    upstream_failures: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
    rate_limit_overflow: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub config_reloads: IntCounterVec,
    client_errors: IntCounterVec,
    /// `POST /reload` from a peer that is not loopback.
    pub admin_refused: IntCounter,
    /// Requests from a client in `rate_limit.exempt`.
    pub rate_limit_exempt: IntCounter,
    /// Requests waiting for an `upstream.max_in_flight` slot now.
    pub upstream_queued: IntGauge,
    /// Requests refused with 503 after `upstream.queue_timeout` in line.
    pub upstream_queue_timeouts: IntCounter,
    /// Slots in force: `upstream.max_in_flight`, or fewer as the adaptive
    /// limit decides.
    pub upstream_in_flight_limit: IntGauge,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    item_errors: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn unlabelled_counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn unlabelled_gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(reg: &Registry, name: &str, help: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h = HistogramVec::new(opts, &["route"]).expect("valid metric");
    reg.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family, known series at zero (a rule's come
    /// with [`Metrics::rate_limited_counter`]).
    pub fn new() -> Metrics {
        let reg = Registry::new();
        let requests = counter(
            &reg,
            "tollgate_requests_total",
            "Requests answered, by route and final status code.",
            &["route", "status"],
        );
        let request_duration = histogram(
            &reg,
            "tollgate_request_duration_seconds",
            "Time from the request's arrival to the end of the response, by route.",
        );
        let upstream_duration = histogram(
            &reg,
            "tollgate_upstream_duration_seconds",
            "Time from sending the request upstream to the upstream's response header, by route.",
        );
        let rate_limited = counter(
            &reg,
            "tollgate_rate_limited_total",
            "Requests refused with 429, by the rule that refused them.",
            &["rule"],
        );
        let rate_limit_shadowed = counter(
            &reg,
            "tollgate_rate_limit_shadowed_total",
            "Requests a shadow rule would have refused (mode = \"shadow\"), by rule; they went on.",
            &["rule"],
        );
        let errors_normalized = counter(
            &reg,
            "tollgate_errors_normalized_total",
            "Upstream 4xx/5xx responses rewritten to the canonical envelope, by upstream dialect and status.",
            &["source", "status"],
        );
        let upstream_failures = counter(
            &reg,
            "tollgate_upstream_failures_total",
            "Requests that got no usable upstream response, by failure kind.",
            &["kind"],
        );
        let rate_limit_keys = IntGaugeVec::new(
            Opts::new(
                "tollgate_rate_limit_keys",
                "Client keys currently held in each rule's bucket table.",
            ),
            &["rule"],
        )
        .expect("valid metric");
        reg.register(Box::new(rate_limit_keys.clone()))
            .expect("unique metric");
        let rate_limit_overflow = counter(
            &reg,
            "tollgate_rate_limit_overflow_total",
            "Decisions made on a rule's shared overflow bucket because its table was full (max_keys).",
            &["rule"],
        );
        let backend_errors = counter(
            &reg,
            "tollgate_rate_limit_backend_errors_total",
            "Rate-limit decisions the shared backend failed to make.",
            &["backend"],
        );
        let config_reloads = counter(
            &reg,
            "tollgate_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        );
        let client_errors = counter(
            &reg,
            "tollgate_client_errors_total",
            "Requests refused because of how the client sent them, by kind.",
            &["kind"],
        );
        let admin_refused = unlabelled_counter(
            &reg,
            "tollgate_admin_refused_total",
            "Admin requests refused: POST /reload from a peer that is not loopback.",
        );
        let rate_limit_exempt = unlabelled_counter(
            &reg,
            "tollgate_rate_limit_exempt_total",
            "Requests from clients in rate_limit.exempt, which no rule limits.",
        );
        let upstream_queued = unlabelled_gauge(
            &reg,
            "tollgate_upstream_queued",
            "Requests waiting in line for one of upstream.max_in_flight's slots.",
        );
        let upstream_queue_timeouts = unlabelled_counter(
            &reg,
            "tollgate_upstream_queue_timeouts_total",
            "Requests refused with 503: no upstream.max_in_flight slot freed up within upstream.queue_timeout.",
        );
        let upstream_in_flight_limit = unlabelled_gauge(
            &reg,
            "tollgate_upstream_in_flight_limit",
            "Requests that may wait on the upstream at once now: upstream.max_in_flight, or fewer under upstream.adaptive_in_flight.",
        );
        let item_errors = counter(
            &reg,
            "tollgate_item_errors_total",
            "Failed items rewritten inside 2xx bodies, by route (routes with item_errors).",
            &["route"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "tollgate_build_info",
                "Always 1; the version label names the build.",
            ),
            &["version"],
        )
        .expect("valid metric");
        reg.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            reg.register(Box::new(pc)).expect("unique metric");
        }

        for kind in FailureKind::ALL {
            upstream_failures.with_label_values(&[kind.as_str()]);
        }
        for kind in ClientErrorKind::ALL {
            client_errors.with_label_values(&[kind.as_str()]);
        }
        for source in Source::ALL {
            for status in KNOWN_ERROR_STATUSES {
                errors_normalized.with_label_values(&[source.as_str(), &status.to_string()]);
            }
        }
        for result in ["success", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        backend_errors.with_label_values(&["redis"]);

        let normalized_by_source = Source::ALL
            .iter()
            .map(|source| ByStatus::new(&errors_normalized, source.as_str(), 400..=599))
            .collect();
        Metrics {
            registry: reg,
            requests,
            rate_limited,
            rate_limit_shadowed,
            errors_normalized,
            normalized_by_source,
            upstream_failures,
            rate_limit_keys,
            rate_limit_overflow,
            backend_errors,
            config_reloads,
            client_errors,
            admin_refused,
            rate_limit_exempt,
            upstream_queued,
            upstream_queue_timeouts,
            upstream_in_flight_limit,
            request_duration,
            upstream_duration,
            item_errors,
        }
    }

    /// Handles for one route; its item-error counter is exported (at zero)
    /// only when the route rewrites items.
    pub fn route(&self, name: &str, rewrites_items: bool) -> RouteMetrics {
        RouteMetrics {
            item_errors: rewrites_items.then(|| self.item_errors.with_label_values(&[name])),
            name: name.to_string(),
            request_duration: self.request_duration.with_label_values(&[name]),
            upstream_duration: self.upstream_duration.with_label_values(&[name]),
            requests: ByStatus::new(&self.requests, name, 100..=599),
        }
    }

    /// The 429 counter of a rule; also puts the rule's other series at zero
    /// (for rules added by a reload).
    pub fn rate_limited_counter(&self, rule: &str) -> IntCounter {
        self.rate_limit_keys.with_label_values(&[rule]);
        self.rate_limit_overflow.with_label_values(&[rule]);
        self.rate_limited.with_label_values(&[rule])
    }

    /// The shadow-denial counter of a rule (at zero from its first load).
    pub fn shadowed_counter(&self, rule: &str) -> IntCounter {
        self.rate_limit_shadowed.with_label_values(&[rule])
    }

    pub fn failure(&self, kind: FailureKind) {
        self.upstream_failures
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub fn client_error(&self, kind: ClientErrorKind) {
        self.client_errors.with_label_values(&[kind.as_str()]).inc();
    }

    /// Bring a kind counted elsewhere (by Pingora) up to its `total`.
    pub fn client_errors_total(&self, kind: ClientErrorKind, total: u64) {
        let counter = self.client_errors.with_label_values(&[kind.as_str()]);
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// Count one upstream error rewritten from `source`'s dialect.
    pub fn normalized(&self, source: Source, status: u16) {
        let index = Source::ALL.iter().position(|s| *s == source);
        match index.and_then(|i| self.normalized_by_source.get(i)) {
            Some(counters) => counters.inc(status),
            // A source left out of `Source::ALL` is still counted.
            None => {
                let mut text = itoa::Buffer::new();
                self.errors_normalized
                    .with_label_values(&[source.as_str(), text.format(status)])
                    .inc();
            }
        }
    }

    /// Copy the limiter's own counts in (called at scrape time), per rule
    /// name in rule order. Key gauges of rules no longer configured go away.
    pub fn set_limiter_state(&self, rules: &[String], keys: &[usize], overflow: &[u64]) {
        let mut stale = Vec::new();
        for family in self.rate_limit_keys.collect() {
            for m in family.get_metric() {
                for l in m.get_label() {
                    if !rules.iter().any(|r| r == l.value()) {
                        stale.push(l.value().to_string());
                    }
                }
            }
        }
        for rule in stale {
            let _ = self.rate_limit_keys.remove_label_values(&[&rule]);
        }
        for (i, rule) in rules.iter().enumerate() {
            if let Some(&k) = keys.get(i) {
                let g: IntGauge = self.rate_limit_keys.with_label_values(&[rule]);
                g.set(i64::try_from(k).unwrap_or(i64::MAX));
            }
            if let Some(&o) = overflow.get(i) {
                let c = self.rate_limit_overflow.with_label_values(&[rule]);
                let seen = c.get();
                if o > seen {
                    c.inc_by(o - seen);
                }
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding families the registry produced cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_exported_at_zero() {
        let m = Metrics::new();
        for rule in ["default", "auth"] {
            m.rate_limited_counter(rule);
        }
        let text = String::from_utf8(m.render()).unwrap();
        for needle in [
            "tollgate_rate_limited_total{rule=\"auth\"} 0",
            "tollgate_rate_limit_keys{rule=\"default\"} 0",
            "tollgate_upstream_failures_total{kind=\"timeout\"} 0",
            "tollgate_errors_normalized_total{source=\"html\",status=\"502\"} 0",
            "tollgate_config_reloads_total{result=\"error\"} 0",
            "tollgate_rate_limit_backend_errors_total{backend=\"redis\"} 0",
            "tollgate_build_info{version=",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn limiter_state_is_copied() {
        let m = Metrics::new();
        for rule in ["r", "old"] {
            m.rate_limited_counter(rule);
        }
        let rules = ["r".to_string()];
        m.set_limiter_state(&rules, &[7], &[3]);
        m.set_limiter_state(&rules, &[5], &[4]);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("tollgate_rate_limit_keys{rule=\"r\"} 5"));
        assert!(text.contains("tollgate_rate_limit_overflow_total{rule=\"r\"} 4"));
        assert!(
            !text.contains("tollgate_rate_limit_keys{rule=\"old\"}"),
            "gone rule dropped"
        );
    }
}
