//! The request's end: its metrics, and its access line when it failed.

use pingora::proxy::Session;

use super::answer::NO_RESPONSE;
use super::ctx::Ctx;
use crate::observe::access_log::{self, AccessRecord};
use crate::observe::FailureKind;

/// What the log says of a request's first line (nothing when its head
/// could not be read).
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
}

/// Count the request by route and status, and write its access line when
/// it is one to log.
pub fn finish(session: &Session, ctx: &Ctx) {
    let status = session
        .response_written()
        .map_or(ctx.failed_status.unwrap_or(NO_RESPONSE), |r| {
            r.status.as_u16()
        });
    let req = session.req_header();
    let line = RequestLine {
        method: req.method.as_str(),
        path: req.uri.path(),
    };
    record(status, &line, ctx);
}

/// [`finish`] for an answered request, from what is known of it.
pub fn record(status: u16, line: &RequestLine<'_>, ctx: &Ctx) {
    let rt = &ctx.rt;
    let route = &rt.route_metrics[ctx.route];
    let elapsed = ctx.start.elapsed();
    route.count(status);
    route.request_duration.observe(elapsed.as_secs_f64());
    if !access_log::wanted(status, rt.log_all) || !access_log::enabled() {
        return;
    }
    let rule = ctx
        .decision
        .deciding_rule()
        .and_then(|i| rt.limiter.rules().get(i))
        .map(|r| r.name.as_str());
    let error = ctx.sent.as_ref().map(|s| s.summary(&rt.errors));
    let normalized = ctx.sent.as_ref().and_then(|s| s.normalized());
    access_log::emit(&AccessRecord {
        method: line.method,
        path: line.path,
        status,
        route: &route.name,
        rule,
        client_ip: ctx.client_ip,
        request_id: ctx.request_id.as_str(),
        upstream_status: ctx.upstream.status,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        retry_after: ctx.decision.denied.map(|d| d.retry_after_secs),
        error_type: error.as_ref().map(|e| &*e.kind),
        error_code: error.as_ref().map(|e| &*e.code),
        error_message: error.as_ref().map(|e| e.message),
        upstream_ref: normalized.and_then(|n| n.upstream_ref.as_deref()),
        error_source: normalized.map(|n| n.source.as_str()),
        failure: ctx.failure.map(FailureKind::as_str),
    });
}
