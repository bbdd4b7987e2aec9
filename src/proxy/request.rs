//! The request's way in: who is asking, the limiter's decision, the body
//! limit.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, FORWARDED, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method};
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::answer::{self, GatewayAnswer, NO_RESPONSE};
use super::ctx::Ctx;
use super::headers::{X_FORWARDED_FOR, X_REQUEST_ID};
use super::log::{self, RequestLine};
use super::patched;
use crate::client::RequestId;
use crate::errors::{self, ErrorFormat};
use crate::rate_limit::{Decision, Outcome, Pending, RequestKeys};

/// Who is asking, for what: request id, client address, route. Starts
/// loading the client's buckets into the cache for the decision.
pub fn identify(session: &Session, ctx: &mut Ctx) {
    let rt = &ctx.rt;
    let req = session.req_header();
    ctx.client_ip = peer_ip(session).map(|p| {
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
    // An exempt client has no key: no rule counts it, no header is added.
    let exempt = ctx.client_ip.filter(|&ip| rt.exempt.contains(ip));
    if exempt.is_some() {
        rt.metrics.rate_limit_exempt.inc();
    }
    ctx.client_key = ctx
        .client_ip
        .filter(|_| exempt.is_none())
        .map(|ip| rt.client_ip.key(ip));
    if let Some(key) = &ctx.client_key {
        rt.limiter
            .prefetch(req.method.as_str(), req.uri.path(), key);
    }
    ctx.head = req.method == Method::HEAD;
    ctx.request_id = RequestId::reuse_or_generate(req.headers.get(&X_REQUEST_ID));
    ctx.route = rt.routes.find(req.method.as_str(), req.uri.path());
}

/// Serve HTTP/1.1 requests a client pipelines, in order, one after the
/// other (RFC 9112 §9.3.2), as NGINX does. Pingora's default answers the
/// first and closes the connection, dropping the rest. The setting carries
/// over to the connection's next requests.
pub fn allow_pipelining(session: &mut Session) {
    session.downstream_session.set_pipelining_enabled(true);
}

/// The form of this request's error bodies: what its `Accept` prefers,
/// `errors.format` on a tie.
pub fn error_format(session: &Session, ctx: &Ctx) -> ErrorFormat {
    let accept = session.req_header().headers.get_all(ACCEPT);
    // Most clients send `*/*` alone, or no `Accept`: the forms tie.
    if accept.iter().all(|v| v.as_bytes() == b"*/*") {
        return ctx.rt.error_format;
    }
    errors::negotiate(
        accept.iter().map(HeaderValue::as_bytes),
        ctx.rt.error_format,
    )
}

/// 400 for an HTTP/1 request whose body framing a server behind the
/// gateway might read differently (request smuggling): `Content-Length`
/// and `Transfer-Encoding` together. RFC 9112 lets a server drop the
/// length and go on; a gateway in front of servers of unknown parsing
/// refuses instead, as Envoy does by default. (Pingora itself refuses
/// differing or non-decimal lengths and a last coding other than
/// `chunked`.)
pub fn check_framing(session: &Session) -> Option<GatewayAnswer> {
    // Pingora would answer CONNECT with an empty 405 of its own; tollgate
    // lets it through to here (`allow_connect_method_proxying`) so the
    // refusal carries the envelope like every other.
    if session.req_header().method == Method::CONNECT {
        return Some(GatewayAnswer::connect_refused());
    }
    let chunked = session.req_header().headers.contains_key(TRANSFER_ENCODING);
    if !chunked || session.is_http2() {
        return None;
    }
    // Pingora has already dropped the `Content-Length` (RFC 9112 §6.3):
    // look at the head as it was sent. Only requests with a
    // `Transfer-Encoding` pay for this.
    let head = session.to_h1_raw();
    has_content_length(&head).then(|| {
        GatewayAnswer::malformed("Content-Length and Transfer-Encoding must not be sent together.")
    })
}

/// Whether a raw HTTP/1 request head has a `Content-Length` field. Pingora
/// refuses a head with whitespace before a colon, so a field's name is
/// everything before its first colon.
fn has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| line.split(|&b| b == b':').next())
        .any(|name| name.eq_ignore_ascii_case(b"content-length"))
}

/// A request head that could not be read: the gateway's own 400, 408 or
/// 431, counted and logged like any answer. Returns whether one was sent
/// (not when the connection broke).
pub async fn refuse_broken_head(session: &mut ServerSession, e: &Error, mut ctx: Ctx) -> bool {
    let max = ctx.rt.max_header_bytes;
    let Some(answer) = GatewayAnswer::for_broken_head(e, max) else {
        return false;
    };
    ctx.request_id = RequestId::generate();
    ctx.client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let status = answer.status;
    let sent = answer::send_to_broken_head(session, &mut ctx, answer).await;
    // No request line could be trusted: the log says so with empty ones.
    let line = RequestLine {
        method: "",
        path: "",
    };
    log::record(if sent { status } else { NO_RESPONSE }, &line, &ctx);
    sent
}

/// An HTTP/1 client has closed its connection: its socket's next read is
/// the end (peeked, without waiting or taking any bytes: a pipelined
/// request stays where it is). Over TLS a client's close alert reads as
/// data, so that close is noticed later, when the response is written.
/// HTTP/2 streams are watched for a reset instead (`upstream::admit`).
/// A client that has sent nothing since its head, the usual case, is
/// known from the socket's readiness alone, with no peek.
pub fn client_left(session: &mut Session) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    if patched::client_quiet(session) {
        return false;
    }
    let Some(stream) = session.as_downstream().stream() else {
        return false;
    };
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(recv(stream.id(), &mut byte, flags), Ok(0))
}

/// The TCP peer's address (none for a Unix socket).
pub fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Ask the limiter about this request (no decision without a client
/// address).
pub fn decide<'a>(session: &'a Session, ctx: &'a Ctx) -> Pending<'a> {
    let Some(key) = ctx.client_key else {
        return Pending::Ready(Outcome::Decided(Decision::default()));
    };
    let req = session.req_header();
    let keys = RequestKeys {
        ip: key,
        headers: Some(&req.headers),
        hasher: ctx.rt.limiter.key_hasher(),
    };
    ctx.rt
        .limiter
        .decide(req.method.as_str(), req.uri.path(), keys)
}

/// Record the decision; the answer when it refuses the request (429, or
/// 503 when the shared backend is down under `on_backend_error = "deny"`).
pub fn refusal(ctx: &mut Ctx, outcome: Outcome) -> Option<GatewayAnswer> {
    ctx.decision = match outcome {
        Outcome::Decided(d) => d,
        Outcome::Unavailable => return Some(GatewayAnswer::limiter_unavailable()),
    };
    for rule in ctx.decision.shadowed.iter() {
        if let Some(c) = ctx.rt.shadowed.get(rule) {
            c.inc();
        }
    }
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
        Some(n) if n > limit => Some(GatewayAnswer::body_too_large(limit)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_found_in_any_case_and_not_in_values() {
        let head = |fields: &str| format!("POST /x HTTP/1.1\r\nhost: t\r\n{fields}\r\n");
        assert!(has_content_length(head("Content-Length: 4\r\n").as_bytes()));
        assert!(has_content_length(head("CONTENT-LENGTH:4\r\n").as_bytes()));
        assert!(!has_content_length(
            head("x-note: content-length\r\n").as_bytes()
        ));
        assert!(!has_content_length(
            head("content-length-x: 4\r\n").as_bytes()
        ));
        assert!(!has_content_length(b"content-length /x HTTP/1.1\r\n\r\n"));
    }
}
