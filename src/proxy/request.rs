//! The request's way in: who is asking, the limiter's decision, the body
//! limit.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, FORWARDED};
use http::{HeaderName, HeaderValue, Method};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::answer::GatewayAnswer;
use super::ctx::Ctx;
use super::headers::{X_FORWARDED_FOR, X_REQUEST_ID};
use crate::client::RequestId;
use crate::rate_limit::{Decision, Outcome, Pending};

/// Who is asking, for what: request id, client address, route. Starts
/// loading the client's buckets into the cache for the decision.
pub fn identify(session: &Session, ctx: &mut Ctx) {
    let rt = &ctx.rt;
    let req = session.req_header();
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.client_ip = peer.map(|p| {
        // Looked up only if `resolve` asks: not at all for an untrusted peer.
        let values = |name: &'static HeaderName| {
            std::iter::once(name)
                .flat_map(|n| req.headers.get_all(n))
                .map(HeaderValue::as_bytes)
        };
        rt.client_ip
            .resolve(p, values(&X_FORWARDED_FOR), values(&FORWARDED))
    });
    // The client's buckets load while the rest of this runs; with many
    // clients they are in DRAM, not the cache (bucket_table::Prefetcher).
    if let Some(ip) = ctx.client_ip {
        let key = rt.client_ip.key(ip);
        rt.limiter
            .prefetch(req.method.as_str(), req.uri.path(), &key);
    }
    ctx.head = req.method == Method::HEAD;
    ctx.request_id = RequestId::reuse_or_generate(req.headers.get(&X_REQUEST_ID));
    ctx.route = rt.routes.find(req.method.as_str(), req.uri.path());
}

/// Ask the limiter about this request (no decision without a client
/// address).
pub fn decide<'a>(session: &'a Session, ctx: &'a Ctx) -> Pending<'a> {
    let Some(ip) = ctx.client_ip else {
        return Pending::Ready(Outcome::Decided(Decision::default()));
    };
    let req = session.req_header();
    let key = ctx.rt.client_ip.key(ip);
    ctx.rt
        .limiter
        .decide(req.method.as_str(), req.uri.path(), key)
}

/// Record the decision; the answer when it refuses the request (429, or
/// 503 when the shared backend is down under `on_backend_error = "deny"`).
pub fn refusal(ctx: &mut Ctx, outcome: Outcome) -> Option<GatewayAnswer> {
    ctx.decision = match outcome {
        Outcome::Decided(d) => d,
        Outcome::Unavailable => return Some(GatewayAnswer::limiter_unavailable()),
    };
    let denial = ctx.decision.denied?;
    if let Some(c) = ctx.rt.rate_limited.get(denial.state.rule) {
        c.inc();
    }
    Some(GatewayAnswer::rate_limited(denial.retry_after_secs))
}

/// 413 for a declared body over the limit; a body of unknown length is
/// held until it is known to fit (see [`hold_body`]).
pub fn check_body_size(session: &mut Session, ctx: &mut Ctx) -> Option<GatewayAnswer> {
    let limit = ctx.rt.max_request_body;
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => {
            // The body is not read: the connection cannot be reused.
            session.set_keepalive(None);
            Some(GatewayAnswer::body_too_large(limit))
        }
        Some(_) => None,
        None => {
            ctx.request_body.hold = !session.is_body_empty();
            None
        }
    }
}

/// Count a piece of the request body against the limit (413 past it) and,
/// for a body of unknown length, hold it until the end.
pub fn hold_body(ctx: &mut Ctx, body: &mut Option<Bytes>, end_of_stream: bool) -> Result<()> {
    let held = &mut ctx.request_body;
    if let Some(b) = body.as_ref() {
        held.received += b.len() as u64;
    }
    if held.received > ctx.rt.max_request_body {
        return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
    }
    if held.hold {
        if let Some(b) = body.take() {
            held.held.extend_from_slice(&b);
        }
        // An empty chunk sends nothing; `None` would end the body.
        *body = if !end_of_stream {
            Some(Bytes::new())
        } else if held.held.is_empty() {
            None
        } else {
            Some(held.held.split().freeze())
        };
    }
    Ok(())
}
