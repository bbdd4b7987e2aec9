//! The Pingora `ProxyHttp` glue: one hook per concern, each calling into
//! the pure modules. Data flows one way: client IP → limiter → upstream →
//! normalizer → metrics and log.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, FORWARDED, TRANSFER_ENCODING,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};

use crate::access_log::{self, AccessRecord};
use crate::client_ip;
use crate::metrics::FailureKind;
use crate::normalize::{self, Envelope, ErrorTable, Source, UpstreamError};
use crate::rate_limit::Decision;
use crate::rate_limit_headers;
use crate::redis_limiter::Outcome;
use crate::reload::Live;
use crate::request_id::RequestId;
use crate::routes::RouteId;
use crate::runtime::Runtime;

/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Header names tollgate adds, parsed at compile time.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub struct Gateway {
    live: Arc<Live>,
}

impl Gateway {
    pub fn new(live: Arc<Live>) -> Self {
        Gateway { live }
    }
}

/// An upstream error response whose body is being collected.
struct PendingError {
    status: u16,
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: Vec<u8>,
    truncated: bool,
}

/// An upstream error as the client received it, for the log.
struct NormalizedError {
    envelope: Envelope,
    source: Source,
    upstream_ref: Option<String>,
}

/// What error the client was told, for the log.
enum SentError {
    // Boxed: rare, and a `Ctx` is moved with every request.
    Normalized(Box<NormalizedError>),
    /// An answer the gateway made itself: its type and code follow from
    /// the status (the error table), so only the message is kept.
    Gateway {
        status: u16,
        message: Cow<'static, str>,
    },
}

impl SentError {
    /// The envelope's type, code and message, for the log.
    fn describe<'a>(&'a self, table: &ErrorTable) -> (Cow<'a, str>, Cow<'a, str>, &'a str) {
        match self {
            SentError::Normalized(n) => {
                let e = &n.envelope;
                (Cow::Borrowed(&e.kind), Cow::Borrowed(&e.code), &e.message)
            }
            SentError::Gateway { status, message } => {
                let (kind, code) = table.type_and_code(*status);
                (kind, code, message)
            }
        }
    }
}

pub struct Ctx {
    /// The config this request runs under, start to end, even if a reload
    /// swaps it meanwhile.
    rt: Arc<Runtime>,
    start: Instant,
    request_id: RequestId,
    client_ip: Option<IpAddr>,
    route: RouteId,
    decision: Decision,
    head: bool,
    /// Hold a body of unknown length until it is known to fit the limit.
    hold_request_body: bool,
    request_body: BytesMut,
    request_bytes: u64,
    upstream_sent: Option<Instant>,
    upstream_status: Option<u16>,
    // Boxed: rare, and a `Ctx` is moved with every request.
    pending: Option<Box<PendingError>>,
    sent: Option<SentError>,
    failure: Option<FailureKind>,
    fail_code: u16,
}

/// Add `X-Request-Id` and the rate-limit headers to an upstream response.
///
/// Pingora keeps a second map with each header name's original case and
/// parses every inserted name; that made these four inserts ~8% of a
/// proxied request's instructions. So the response drops the case map
/// (upstream header names then go out lower-case, as Envoy sends them;
/// standard ones title-cased) and tollgate's names go in pre-parsed, after
/// one reservation.
fn add_response_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    // Only an upstream's own wording needs keeping (and allocating).
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    insert_own_headers(&mut parts.headers, ctx, 0);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// tollgate's own response headers, `X-Request-Id` then the rate-limit
/// headers, handed to `out` with pre-parsed names.
fn own_headers(ctx: &Ctx, mut out: impl FnMut(HeaderName, HeaderValue)) {
    out(X_REQUEST_ID.clone(), ctx.request_id.header_value());
    ctx.rt
        .rate_limit_headers
        .render(&ctx.decision, &ctx.rt.rules, out);
}

/// [`own_headers`] into a header map, with one reservation (room for
/// `more` headers besides).
fn insert_own_headers(headers: &mut http::HeaderMap, ctx: &Ctx, more: usize) {
    headers.reserve(1 + ctx.rt.rate_limit_headers.count(&ctx.decision) + more);
    own_headers(ctx, |name, value| {
        headers.insert(name, value);
    });
}

/// [`own_headers`] as HTTP/1 header lines.
fn write_own_fields(out: &mut Vec<u8>, ctx: &Ctx) {
    own_headers(ctx, |name, value| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// The `X-Forwarded-For` chain for the upstream: the values the request
/// came with (those that are text), then the peer's address. Built in one
/// exact-size allocation, with IPv4 written without `core::fmt` (which
/// cost ~1,000 instructions per request).
fn forwarded_for(headers: &http::HeaderMap, peer: IpAddr) -> Result<HeaderValue> {
    let mut ip_buf = [0u8; 45];
    let ip = client_ip::ip_text(peer, &mut ip_buf);
    let values = headers.get_all(&X_FORWARDED_FOR);
    let prior = || values.iter().filter_map(|v| v.to_str().ok()).map(str::trim);
    let len = prior().map(|p| p.len() + 2).sum::<usize>() + ip.len();
    let mut chain = Vec::with_capacity(len);
    for p in prior() {
        chain.extend_from_slice(p.as_bytes());
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(ip);
    // Length equal to capacity: `Bytes` takes the buffer as it is.
    HeaderValue::from_maybe_shared(Bytes::from(chain))
        .or_err(ErrorType::InternalError, "invalid X-Forwarded-For")
}

fn header_str(h: &ResponseHeader, name: http::header::HeaderName) -> Option<&str> {
    h.headers.get(name).and_then(|v| v.to_str().ok())
}

impl Gateway {
    /// Answer with a gateway-made error envelope (429, 413, 503).
    ///
    /// Over HTTP/1 the header fields are written straight to bytes and the
    /// whole response leaves through `write_prepared_response` (vendor
    /// patch 7): no header map is built, filled and serialized again, which
    /// was most of a 429's cost. Over HTTP/2 it goes through a
    /// `ResponseHeader`. The bytes on the wire are the same either way.
    async fn respond(&self, session: &mut Session, ctx: &mut Ctx, refusal: Refusal) -> Result<()> {
        let status = refusal.status();
        let code = http::StatusCode::from_u16(status)
            .or_err(ErrorType::InternalError, "gateway status")?;
        let message = refusal.message(ctx.rt.max_request_body);
        // One buffer: the envelope, then the header fields after it.
        let mut buf = Vec::with_capacity(512);
        ctx.rt.errors.write_gateway_error(
            &mut buf,
            status,
            &message,
            ctx.request_id.as_str(),
            refusal.retry_after(),
        );
        let body_len = buf.len();
        write_own_fields(&mut buf, ctx);
        buf.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        buf.extend_from_slice(b"\r\n");
        ctx.sent = Some(SentError::Gateway { status, message });
        let (body, fields) = buf.split_at(body_len);
        if session
            .downstream_session
            .write_prepared_response(code, fields, body)
            .await?
        {
            return Ok(());
        }
        let body = Bytes::copy_from_slice(body);
        // HTTP/2: plain `http` parts (no case map, names pre-parsed, see
        // `add_response_headers`). Pingora adds Date.
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = code;
        insert_own_headers(&mut parts.headers, ctx, 2);
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        parts
            .headers
            .insert(CONTENT_LENGTH, rate_limit_headers::int_value(body.len()));
        let h = ResponseHeader::from(parts);
        if ctx.head {
            session.write_response_header(Box::new(h), true).await
        } else {
            session.write_response_header(Box::new(h), false).await?;
            session.write_response_body(Some(body), true).await
        }
    }

    fn finish_pending(&self, ctx: &mut Ctx) -> Option<Bytes> {
        let p = ctx.pending.take()?;
        let err = UpstreamError {
            status: p.status,
            content_type: p.content_type.as_deref(),
            content_encoding: p.content_encoding.as_deref(),
            body: &p.body,
            truncated: p.truncated,
        };
        let n = normalize::normalize(
            &err,
            ctx.request_id.as_str(),
            &ctx.rt.errors,
            ctx.rt.max_error_body,
        );
        ctx.rt.metrics.normalized(n.source, p.status);
        let body = Bytes::from(n.envelope.to_json());
        ctx.sent = Some(SentError::Normalized(Box::new(NormalizedError {
            envelope: n.envelope,
            source: n.source,
            upstream_ref: n.upstream_ref,
        })));
        Some(body)
    }
}

/// Map a proxy error to (status, failure kind, message). Status 0: the
/// client is gone and nothing can be sent.
fn classify(e: &Error) -> (u16, Option<FailureKind>, &'static str) {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return (*code, None, normalize::reason_phrase(*code));
    }
    match e.esource() {
        ErrorSource::Downstream => match e.etype() {
            ReadError | WriteError | ConnectionClosed => (0, None, ""),
            ReadTimedout => (408, None, "The request was not received in time."),
            _ => (400, None, "The request could not be read."),
        },
        ErrorSource::Upstream => match e.etype() {
            ConnectTimedout | TLSHandshakeTimedout => (
                504,
                Some(FailureKind::Timeout),
                "The upstream did not accept the connection in time.",
            ),
            ReadTimedout | WriteTimedout => (
                504,
                Some(FailureKind::Timeout),
                "The upstream did not respond in time.",
            ),
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
            | TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup
            | ConnectProxyFailure => (
                502,
                Some(FailureKind::Connect),
                "The upstream could not be reached.",
            ),
            ConnectionClosed | ReadError | WriteError => (
                502,
                Some(FailureKind::Reset),
                "The upstream closed the connection before a complete response.",
            ),
            _ => (
                502,
                Some(FailureKind::Invalid),
                "The upstream sent an invalid response.",
            ),
        },
        ErrorSource::Internal | ErrorSource::Unset => {
            (500, None, "The gateway failed to handle the request.")
        }
    }
}

/// Who is asking, for what: request id, client address, route.
fn identify(session: &Session, ctx: &mut Ctx) {
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
    if let (Some(ip), None) = (ctx.client_ip, &rt.redis) {
        let key = rt.client_ip.key(ip);
        rt.limiter
            .prefetch(req.method.as_str(), req.uri.path(), &key);
    }
    ctx.head = req.method == Method::HEAD;
    ctx.request_id = RequestId::reuse_or_generate(req.headers.get(&X_REQUEST_ID));
    ctx.route = rt.routes.find(req.method.as_str(), req.uri.path());
}

/// Why the gateway answers a request itself instead of proxying it.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// 429: a rule's bucket is empty.
    RateLimited { retry_after: u64 },
    /// 503: the shared backend is down under `on_backend_error = "deny"`.
    LimiterUnavailable,
    /// 413: the declared body is over `max_request_body`.
    BodyTooLarge,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Refusal::RateLimited { .. } => 429,
            Refusal::LimiterUnavailable => 503,
            Refusal::BodyTooLarge => 413,
        }
    }

    fn message(self, max_request_body: u64) -> Cow<'static, str> {
        match self {
            Refusal::RateLimited { .. } => {
                "Too many requests; retry after the time in Retry-After.".into()
            }
            Refusal::LimiterUnavailable => {
                "Rate limiting is unavailable; try again shortly.".into()
            }
            Refusal::BodyTooLarge => format!(
                "The request body is larger than the {max_request_body} bytes this gateway accepts."
            )
            .into(),
        }
    }

    fn retry_after(self) -> Option<u64> {
        match self {
            Refusal::RateLimited { retry_after } => Some(retry_after),
            _ => None,
        }
    }
}

impl Gateway {
    /// The in-process rate-limit decision (no await: the hook's future
    /// stays small, see `request_filter`).
    fn limit_locally(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        let ip = ctx.client_ip?;
        let rt = &ctx.rt;
        let req = session.req_header();
        let decision = rt
            .limiter
            .check(req.method.as_str(), req.uri.path(), &rt.client_ip.key(ip));
        self.apply(ctx, Outcome::Decided(decision))
    }

    /// The decision through the shared (Redis) backend.
    async fn limit_shared(&self, session: &Session, ctx: &mut Ctx) -> Option<Refusal> {
        let ip = ctx.client_ip?;
        let rt = ctx.rt.clone();
        let redis = rt.redis.as_ref()?;
        let req = session.req_header();
        let (method, path) = (req.method.as_str(), req.uri.path());
        let key = rt.client_ip.key(ip);
        let outcome = redis
            .decide(method, path, &key, &rt.rules, &rt.limiter)
            .await;
        self.apply(ctx, outcome)
    }

    /// Record a decision; a 429 when it refuses the request, or a 503 when
    /// the shared backend is down under `on_backend_error = "deny"`.
    fn apply(&self, ctx: &mut Ctx, outcome: Outcome) -> Option<Refusal> {
        ctx.decision = match outcome {
            Outcome::Decided(d) => d,
            Outcome::Unavailable => return Some(Refusal::LimiterUnavailable),
        };
        let (state, retry_after) = ctx.decision.denied?;
        if let Some(c) = ctx.rt.rate_limited.get(state.rule) {
            c.inc();
        }
        Some(Refusal::RateLimited { retry_after })
    }

    /// 413 for a declared body over the limit; a body of unknown length is
    /// held until it is known to fit (see `request_body_filter`).
    fn check_body_size(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Refusal> {
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
                Some(Refusal::BodyTooLarge)
            }
            Some(_) => None,
            None => {
                ctx.hold_request_body = !session.is_body_empty();
                None
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No response modules. Pingora's default is a compression module
    /// set to off, which still gave every request a module context (an
    /// allocation) and a filter call per header and body piece; tollgate
    /// does not compress (2xx bodies pass untouched, envelopes are small).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.live.runtime(),
            start: Instant::now(),
            request_id: RequestId::default(),
            client_ip: None,
            route: 0,
            decision: Decision::default(),
            head: false,
            hold_request_body: false,
            request_body: BytesMut::new(),
            request_bytes: 0,
            upstream_sent: None,
            upstream_status: None,
            pending: None,
            sent: None,
            failure: None,
            fail_code: 0,
        }
    }

    /// Every request passes here and async_trait boxes this future each
    /// time, so it holds no large future inline: the shared backend's
    /// round trip and the writes of a refusal (~1.1 KB of state) are boxed
    /// on their own, only when they happen.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        identify(session, ctx);
        let refusal = match ctx.rt.redis {
            None => self.limit_locally(session, ctx),
            Some(_) => Box::pin(self.limit_shared(session, ctx)).await,
        };
        let Some(r) = refusal.or_else(|| self.check_body_size(session, ctx)) else {
            return Ok(false);
        };
        Box::pin(self.respond(session, ctx, r)).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let u = &ctx.rt.upstream;
        let mut peer = HttpPeer::new(u.addr, u.tls, u.sni.clone());
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.total_connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.read_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        ctx.upstream_sent = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Pre-parsed names and one reservation: through `insert_header` each
        // name is parsed and allocated, and both of Pingora's maps grow.
        upstream.reserve_headers(2)?;
        upstream.insert_parsed_header(
            &X_REQUEST_ID,
            "x-request-id",
            ctx.request_id.header_value(),
        )?;
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            let chain = forwarded_for(&upstream.headers, peer.ip())?;
            upstream.insert_parsed_header(&X_FORWARDED_FOR, "x-forwarded-for", chain)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body.as_ref() {
            ctx.request_bytes += b.len() as u64;
        }
        if ctx.request_bytes > ctx.rt.max_request_body {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
        }
        if ctx.hold_request_body {
            if let Some(b) = body.take() {
                ctx.request_body.extend_from_slice(&b);
            }
            // An empty chunk sends nothing; `None` would end the body.
            *body = if !end_of_stream {
                Some(Bytes::new())
            } else if ctx.request_body.is_empty() {
                None
            } else {
                Some(ctx.request_body.split().freeze())
            };
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.upstream_status = Some(resp.status.as_u16());
        if let Some(sent) = ctx.upstream_sent {
            ctx.rt.route_metrics[ctx.route]
                .upstream_duration
                .observe(sent.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        add_response_headers(resp, ctx)?;
        if status < 400 {
            return Ok(());
        }
        let content_type = header_str(resp, CONTENT_TYPE).map(str::to_owned);
        let content_encoding = header_str(resp, CONTENT_ENCODING).map(str::to_owned);
        let empty = resp
            .headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
        for name in [CONTENT_LENGTH, CONTENT_ENCODING, ETAG] {
            resp.remove_header(&name);
        }
        resp.remove_header("content-md5");
        resp.insert_header(CONTENT_TYPE, "application/json")?;
        if ctx.head {
            return Ok(());
        }
        ctx.pending = Some(Box::new(PendingError {
            status,
            content_type,
            content_encoding,
            body: Vec::new(),
            truncated: false,
        }));
        if empty {
            // `Content-Length: 0`: the body filter will not run, so the
            // envelope goes out now. Pingora then skips its own copy of
            // the header (one WARN) and the connection stays reusable.
            let body = self.finish_pending(ctx).unwrap_or_default();
            resp.insert_header(CONTENT_LENGTH, body.len())?;
            let header = Box::new(resp.clone());
            // Boxed: the writes' state would otherwise ride in this hook's
            // future on every response.
            return Box::pin(async move {
                session.write_response_header(header, false).await?;
                session.write_response_body(Some(body), true).await
            })
            .await;
        }
        if !session.is_http2() {
            resp.insert_header(TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let max = ctx.rt.max_error_body;
        let Some(p) = ctx.pending.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.take() {
            if !p.truncated {
                if p.body.len() + chunk.len() > max {
                    // Past the cap the body is not kept at all.
                    p.truncated = true;
                    p.body = Vec::new();
                } else {
                    p.body.extend_from_slice(&chunk);
                }
            }
        }
        if end_of_stream {
            *body = self.finish_pending(ctx);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let (code, kind, message) = classify(e);
        if let Some(kind) = kind {
            ctx.rt.metrics.failure(kind);
            ctx.failure = Some(kind);
        }
        ctx.fail_code = code;
        if let (Some(p), Some(_)) = (ctx.pending.as_mut(), session.response_written()) {
            // An upstream error body broke off after its header went out:
            // finish the envelope from what arrived, flagged as truncated.
            p.truncated = true;
            if let Some(body) = self.finish_pending(ctx) {
                let _ = session.write_response_body(Some(body), true).await;
            }
        }
        if code > 0 && session.response_written().is_none() {
            let mut body = Vec::with_capacity(256);
            ctx.rt.errors.write_gateway_error(
                &mut body,
                code,
                message,
                ctx.request_id.as_str(),
                None,
            );
            let body = Bytes::from(body);
            if let Ok(mut h) = ResponseHeader::build(code, Some(4)) {
                let _ = h.insert_header(CONTENT_TYPE, "application/json");
                let _ = h.insert_header(CONTENT_LENGTH, body.len());
                let _ = h.insert_header(X_REQUEST_ID.clone(), ctx.request_id.header_value());
                let body = if ctx.head { Bytes::new() } else { body };
                let _ = session.write_error_response(h, body).await;
            }
            ctx.sent = Some(SentError::Gateway {
                status: code,
                message: message.into(),
            });
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let rt = &ctx.rt;
        let status = session
            .response_written()
            .map_or(ctx.fail_code, |r| r.status.as_u16());
        let route = &rt.route_metrics[ctx.route];
        let elapsed = ctx.start.elapsed();
        route.count(status);
        route.request_duration.observe(elapsed.as_secs_f64());
        if !access_log::wanted(status, rt.log_all) || !access_log::enabled() {
            return;
        }
        let req = session.req_header();
        let rule = ctx
            .decision
            .denied
            .map(|(s, _)| s.rule)
            .or(ctx.decision.tightest.map(|t| t.rule))
            .and_then(|i| rt.rules.get(i))
            .map(|r| r.name.as_str());
        let error = ctx.sent.as_ref().map(|s| s.describe(&rt.errors));
        let normalized = match &ctx.sent {
            Some(SentError::Normalized(n)) => Some(n),
            _ => None,
        };
        access_log::emit(&AccessRecord {
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            route: &route.name,
            rule,
            client_ip: ctx.client_ip,
            request_id: ctx.request_id.as_str(),
            upstream_status: ctx.upstream_status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            retry_after: ctx.decision.denied.map(|(_, after)| after),
            error_type: error.as_ref().map(|e| &*e.0),
            error_code: error.as_ref().map(|e| &*e.1),
            error_message: error.as_ref().map(|e| e.2),
            upstream_ref: normalized.and_then(|n| n.upstream_ref.as_deref()),
            error_source: normalized.map(|n| n.source.as_str()),
            failure: ctx.failure.map(FailureKind::as_str),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_peer_as_std_writes_it() {
        let peers: [IpAddr; 5] = [
            "0.0.0.0".parse().unwrap(),
            "192.168.100.254".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
        ];
        let mut headers = http::HeaderMap::new();
        for peer in peers {
            let v = forwarded_for(&headers, peer).unwrap();
            assert_eq!(v.to_str().unwrap(), peer.to_string());
        }
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static(" 203.0.113.9 "));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        headers.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        let v = forwarded_for(&headers, peers[1]).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "203.0.113.9, 10.0.0.1, 10.0.0.2, 192.168.100.254",
            "text values kept in order, others dropped, the peer last"
        );
    }
}
