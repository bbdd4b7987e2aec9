//! Structured logs (SPEC §6): one JSON line per request that ends non-2xx
//! (or every request with `log.all_requests`). Only the fields below are
//! ever logged: never bodies, query strings, cookies or credentials.

use std::net::IpAddr;

use time::macros::format_description;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::EnvFilter;

/// What one request's log line says.
#[derive(Debug, Default)]
pub struct AccessRecord<'a> {
    pub method: &'a str,
    /// Path only: the query string is dropped by the caller.
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub rule: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub upstream_status: Option<u16>,
    pub duration_ms: f64,
    pub retry_after: Option<u64>,
    pub error_type: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub upstream_ref: Option<&'a str>,
    pub error_source: Option<&'a str>,
    pub failure: Option<&'a str>,
}

/// Should this request be logged?
pub fn wanted(status: u16, all_requests: bool) -> bool {
    all_requests || !(200..300).contains(&status)
}

/// Emit the line through `tracing` (target `tollgate::access`).
pub fn emit(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "tollgate::access",
        method = r.method,
        path = r.path,
        status = r.status,
        route = r.route,
        rule = r.rule,
        client_ip = r.client_ip.map(tracing::field::display),
        request_id = r.request_id,
        upstream_status = r.upstream_status,
        duration_ms = r.duration_ms,
        retry_after = r.retry_after,
        error_type = r.error_type,
        error_code = r.error_code,
        error_message = r.error_message,
        upstream_ref = r.upstream_ref,
        error_source = r.error_source,
        upstream_failure = r.failure,
        "request"
    );
}

const DEFAULT_FILTER: &str = "info,pingora_core::protocols::http::v1::server=error";

/// JSON lines on stderr, UTC RFC 3339 timestamps with milliseconds.
/// `TOLLGATE_LOG` (an `EnvFilter` directive) overrides the default.
///
/// The default silences Pingora's HTTP/1 server module below ERROR: its
/// only WARN is "Respond header is already sent", which tollgate causes on
/// purpose when it answers an upstream error with an empty body itself.
pub fn init() {
    let timer = UtcTime::new(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ));
    let filter =
        EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_timer(timer)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
