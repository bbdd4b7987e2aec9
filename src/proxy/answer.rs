//! The answers the gateway makes itself instead of the upstream's (429,
//! 413, 503 before proxying; 502, 504, 400, 408, 500 when proxying
//! fails), and the one way they are sent: the envelope with tollgate's
//! own headers, whichever path sends it.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::server::{HEAD_TIMEOUT, HEAD_TOO_LARGE};
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, OrErr, Result};

use super::ctx::{Ctx, SentError};
use super::headers::{insert_own_headers, write_own_fields};
use super::{patched, request};
use crate::errors::{reason_phrase, ErrorFormat};
use crate::observe::{ClientErrorKind, FailureKind};
use crate::rate_limit::headers::int_value;

/// An error answer made by the gateway (docs/errors.md, "The gateway's
/// own errors").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAnswer {
    pub status: u16,
    pub message: Cow<'static, str>,
    /// A 429's `details.retry_after`, in seconds.
    pub retry_after: Option<u64>,
    /// The connection cannot carry another request after this answer
    /// (the body was not read, or the framing cannot be trusted).
    pub close: bool,
    /// Counted in `tollgate_client_errors_total` under this kind.
    pub client_error: Option<ClientErrorKind>,
}

impl GatewayAnswer {
    /// 429: a rule's bucket is empty.
    pub fn rate_limited(retry_after_secs: u64) -> GatewayAnswer {
        GatewayAnswer {
            retry_after: Some(retry_after_secs),
            ..GatewayAnswer::plain(
                429,
                "Too many requests; retry after the time in Retry-After.",
            )
        }
    }

    /// 503: the shared backend is down under `on_backend_error = "deny"`.
    pub fn limiter_unavailable() -> GatewayAnswer {
        GatewayAnswer::plain(503, "Rate limiting is unavailable; try again shortly.")
    }

    /// 503: no `upstream.max_in_flight` slot freed up within
    /// `upstream.queue_timeout`.
    pub fn upstream_busy(queue_timeout: std::time::Duration) -> GatewayAnswer {
        GatewayAnswer {
            message: format!(
                "The upstream is busy: no request slot freed up within {} ms; try again shortly.",
                queue_timeout.as_millis()
            )
            .into(),
            ..GatewayAnswer::plain(503, "")
        }
    }

    /// 413: the declared body is over `server.max_request_body_bytes`. It
    /// is not read, so the connection closes.
    pub fn body_too_large(max_request_body: u64) -> GatewayAnswer {
        GatewayAnswer {
            message: format!(
                "The request body is larger than the {max_request_body} bytes this gateway accepts."
            )
            .into(),
            close: true,
            ..GatewayAnswer::plain(413, "")
        }
    }

    /// 405: CONNECT (tunnels) is not proxied. The connection closes: what
    /// follows a CONNECT is not HTTP.
    pub fn connect_refused() -> GatewayAnswer {
        GatewayAnswer {
            close: true,
            ..GatewayAnswer::plain(405, "CONNECT is not supported by this gateway.")
        }
    }

    /// 400: the request breaks HTTP/1.1's framing rules (docs/security.md),
    /// so nothing after it on the connection can be trusted.
    pub fn malformed(what: &'static str) -> GatewayAnswer {
        GatewayAnswer {
            close: true,
            client_error: Some(ClientErrorKind::Malformed),
            ..GatewayAnswer::plain(400, what)
        }
    }

    /// The answer to a request head that could not be read, when the
    /// client is to blame: 408 past `server.header_timeout`, 431 past
    /// `server.max_header_bytes`, 400 for a head the parser refuses. `None`:
    /// the connection broke and nothing can be sent.
    pub fn for_broken_head(e: &Error, max_header_bytes: usize) -> Option<GatewayAnswer> {
        let (status, message, kind): (u16, Cow<'static, str>, _) = match e.etype() {
            t if *t == HEAD_TIMEOUT => (
                408,
                "The request head was not received in time.".into(),
                ClientErrorKind::HeaderTimeout,
            ),
            t if *t == HEAD_TOO_LARGE => (
                431,
                format!(
                    "The request head is larger than the {max_header_bytes} bytes this gateway accepts."
                )
                .into(),
                ClientErrorKind::HeaderTooLarge,
            ),
            ErrorType::InvalidHTTPHeader => (
                400,
                "The request head is malformed.".into(),
                ClientErrorKind::Malformed,
            ),
            _ => return None,
        };
        Some(GatewayAnswer {
            message,
            close: true,
            client_error: Some(kind),
            ..GatewayAnswer::plain(status, "")
        })
    }

    fn plain(status: u16, message: &'static str) -> GatewayAnswer {
        GatewayAnswer {
            status,
            message: message.into(),
            retry_after: None,
            close: false,
            client_error: None,
        }
    }
}

/// What a failed attempt to proxy means for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFailure {
    /// The client's connection broke: nothing can be sent.
    ClientGone,
    Answer {
        answer: GatewayAnswer,
        /// Why the upstream gave no usable answer, when it is to blame.
        upstream: Option<FailureKind>,
    },
}

/// The client closed or broke its connection: nothing can be sent, and
/// the failure is not the gateway's or the upstream's.
pub fn client_gone(e: &Error) -> bool {
    use ErrorType::*;
    *e.esource() == ErrorSource::Downstream
        && matches!(e.etype(), ReadError | WriteError | ConnectionClosed)
}

/// Map a proxy error to what the client is told.
pub fn classify(e: &Error) -> ProxyFailure {
    use ErrorType::*;
    if client_gone(e) {
        return ProxyFailure::ClientGone;
    }
    let answer = |status, message, upstream| ProxyFailure::Answer {
        answer: GatewayAnswer::plain(status, message),
        upstream,
    };
    if let HTTPStatus(code) = e.etype() {
        return answer(*code, reason_phrase(*code), None);
    }
    match e.esource() {
        ErrorSource::Downstream => match e.etype() {
            ReadTimedout => answer(408, "The request was not received in time.", None),
            _ => ProxyFailure::Answer {
                answer: GatewayAnswer {
                    client_error: Some(ClientErrorKind::Malformed),
                    ..GatewayAnswer::plain(400, "The request could not be read.")
                },
                upstream: None,
            },
        },
        ErrorSource::Upstream => match e.etype() {
            ConnectTimedout | TLSHandshakeTimedout => answer(
                504,
                "The upstream did not accept the connection in time.",
                Some(FailureKind::Timeout),
            ),
            ReadTimedout | WriteTimedout => answer(
                504,
                "The upstream did not respond in time.",
                Some(FailureKind::Timeout),
            ),
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
            | TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup
            | ConnectProxyFailure => answer(
                502,
                "The upstream could not be reached.",
                Some(FailureKind::Connect),
            ),
            ConnectionClosed | ReadError | WriteError => answer(
                502,
                "The upstream closed the connection before a complete response.",
                Some(FailureKind::Reset),
            ),
            _ => answer(
                502,
                "The upstream sent an invalid response.",
                Some(FailureKind::Invalid),
            ),
        },
        ErrorSource::Internal | ErrorSource::Unset => {
            answer(500, "The gateway failed to handle the request.", None)
        }
    }
}

/// An answer ready to write: the envelope, then the HTTP/1 header
/// fields, in one buffer.
struct Prepared {
    code: StatusCode,
    buf: Vec<u8>,
    body_len: usize,
}

impl Prepared {
    fn body(&self) -> &[u8] {
        &self.buf[..self.body_len]
    }

    fn fields(&self) -> &[u8] {
        &self.buf[self.body_len..]
    }
}

/// Everything every gateway answer does besides writing itself: count it
/// when the client is to blame, make its envelope and header fields, and
/// keep what it said for the log.
fn prepare(ctx: &mut Ctx, answer: GatewayAnswer, format: ErrorFormat) -> Result<Prepared> {
    let GatewayAnswer {
        status,
        message,
        retry_after,
        close: _,
        client_error,
    } = answer;
    if let Some(kind) = client_error {
        ctx.rt.metrics.client_error(kind);
    }
    let code = StatusCode::from_u16(status).or_err(ErrorType::InternalError, "gateway status")?;
    let mut buf = Vec::with_capacity(512);
    ctx.rt.errors.write_gateway_error(
        &mut buf,
        format,
        status,
        &message,
        ctx.request_id.as_str(),
        retry_after,
    );
    let body_len = buf.len();
    write_own_fields(&mut buf, ctx);
    buf.extend_from_slice(b"Vary: Accept\r\nContent-Type: ");
    buf.extend_from_slice(format.content_type().as_bytes());
    buf.extend_from_slice(b"\r\nContent-Length: ");
    buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    buf.extend_from_slice(b"\r\n");
    ctx.sent = Some(SentError::Gateway { status, message });
    Ok(Prepared {
        code,
        buf,
        body_len,
    })
}

/// Send a gateway answer: its envelope, `X-Request-Id` and the
/// rate-limit headers, `Content-Type` and `Content-Length`; count it when
/// the client is to blame, and close the connection after it when asked.
///
/// Over HTTP/1 the header fields are written straight to bytes and the
/// whole response leaves in one write (`patched::write_prepared_response`):
/// no header map is built, filled and serialized again, which was most of
/// a 429's cost. Over HTTP/2 it goes through a `ResponseHeader`. The bytes
/// on the wire are the same either way.
pub async fn send(session: &mut Session, ctx: &mut Ctx, answer: GatewayAnswer) -> Result<()> {
    if answer.close {
        session.set_keepalive(None);
    }
    let format = request::error_format(session, ctx);
    let prepared = prepare(ctx, answer, format)?;
    let (code, body, fields) = (prepared.code, prepared.body(), prepared.fields());
    let downstream = &mut session.downstream_session;
    if patched::write_prepared_response(downstream, code, fields, body).await? {
        return Ok(());
    }
    let body = Bytes::copy_from_slice(body);
    // HTTP/2: plain `http` parts (no case map, names pre-parsed, see
    // `headers::add_to_response`). Pingora adds Date.
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = code;
    insert_own_headers(&mut parts.headers, ctx, 3);
    parts
        .headers
        .insert(VARY, HeaderValue::from_static("Accept"));
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    parts.headers.insert(CONTENT_LENGTH, int_value(body.len()));
    let h = ResponseHeader::from(parts);
    if ctx.head {
        session.write_response_header(Box::new(h), true).await
    } else {
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

/// Send the answer to a request head that could not be read (HTTP/1
/// only; the connection closes after it). Returns whether it was sent.
pub async fn send_to_broken_head(
    session: &mut ServerSession,
    ctx: &mut Ctx,
    answer: GatewayAnswer,
) -> bool {
    session.set_keepalive(None);
    // Before the request is parsed there is no `Accept` to read.
    let format = ctx.rt.error_format;
    let Ok(prepared) = prepare(ctx, answer, format) else {
        return false;
    };
    let (body, fields) = (prepared.body(), prepared.fields());
    patched::write_prepared_response(session, prepared.code, fields, body)
        .await
        .unwrap_or(false)
}

/// The status Pingora and the metrics record for a request that got no
/// response at all (the client left first).
pub const NO_RESPONSE: u16 = 0;

/// After a failed attempt to proxy: count it, and send its answer if no
/// response has begun. Returns the status for the log and Pingora.
pub async fn send_failure(session: &mut Session, ctx: &mut Ctx, failure: ProxyFailure) -> u16 {
    let ProxyFailure::Answer { answer, upstream } = failure else {
        return NO_RESPONSE;
    };
    if let Some(kind) = upstream {
        ctx.rt.metrics.failure(kind);
        ctx.failure = Some(kind);
    }
    let status = answer.status;
    ctx.failed_status = Some(status);
    if session.response_written().is_none() {
        // The connection is not reused after a failure: say so.
        let answer = GatewayAnswer {
            close: true,
            ..answer
        };
        if let Err(e) = send(session, ctx, answer).await {
            tracing::debug!(error = %e, "the gateway's error answer could not be sent");
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: &Error) -> Option<(u16, Option<FailureKind>)> {
        match classify(e) {
            ProxyFailure::ClientGone => None,
            ProxyFailure::Answer { answer, upstream } => Some((answer.status, upstream)),
        }
    }

    #[test]
    fn proxy_errors_map_to_statuses_and_blame() {
        enum Side {
            Downstream,
            Upstream,
            Internal,
        }
        use ErrorType::*;
        use Side::*;
        let at = |side, etype| {
            let e = match side {
                Downstream => Error::new_down(etype),
                Upstream => Error::new_up(etype),
                Internal => Error::new_in(etype),
            };
            status_of(&e)
        };
        assert_eq!(at(Downstream, ConnectionClosed), None);
        assert_eq!(at(Downstream, ReadTimedout), Some((408, None)));
        assert_eq!(at(Downstream, InvalidHTTPHeader), Some((400, None)));
        let timeout = Some(FailureKind::Timeout);
        assert_eq!(at(Upstream, ConnectTimedout), Some((504, timeout)));
        assert_eq!(at(Upstream, ReadTimedout), Some((504, timeout)));
        let connect = Some(FailureKind::Connect);
        assert_eq!(at(Upstream, ConnectRefused), Some((502, connect)));
        let reset = Some(FailureKind::Reset);
        assert_eq!(at(Upstream, ConnectionClosed), Some((502, reset)));
        let invalid = Some(FailureKind::Invalid);
        assert_eq!(at(Upstream, InvalidHTTPHeader), Some((502, invalid)));
        assert_eq!(at(Internal, InternalError), Some((500, None)));
        assert_eq!(at(Upstream, HTTPStatus(413)), Some((413, None)));
    }

    #[test]
    fn broken_heads_get_their_own_answers_and_kinds() {
        let answer = |etype| GatewayAnswer::for_broken_head(&Error::new_down(etype), 4096);
        let timeout = answer(HEAD_TIMEOUT).unwrap();
        assert_eq!(timeout.status, 408);
        assert_eq!(timeout.client_error, Some(ClientErrorKind::HeaderTimeout));
        let large = answer(HEAD_TOO_LARGE).unwrap();
        assert_eq!(large.status, 431);
        assert!(large.message.contains("4096 bytes"));
        assert_eq!(large.client_error, Some(ClientErrorKind::HeaderTooLarge));
        let malformed = answer(ErrorType::InvalidHTTPHeader).unwrap();
        assert_eq!(malformed.status, 400);
        assert_eq!(malformed.client_error, Some(ClientErrorKind::Malformed));
        assert!([timeout, large, malformed].iter().all(|a| a.close));
        assert_eq!(
            answer(ErrorType::ConnectionClosed),
            None,
            "nothing to answer"
        );
        assert_eq!(answer(ErrorType::ReadError), None);
    }

    #[test]
    fn refusals_carry_their_status_and_retry_after() {
        assert_eq!(GatewayAnswer::rate_limited(7).status, 429);
        assert_eq!(GatewayAnswer::rate_limited(7).retry_after, Some(7));
        assert_eq!(GatewayAnswer::limiter_unavailable().status, 503);
        let too_large = GatewayAnswer::body_too_large(1024);
        assert_eq!(too_large.status, 413);
        assert!(too_large.message.contains("1024 bytes"));
    }
}
