//! The calls tollgate makes to APIs that exist only in its patched
//! Pingora (vendor/PATCHES.md). The rest of the crate calls these, so it
//! does not need to know which calls are patches; moving to an unpatched
//! Pingora means rewriting this file only.

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use pingora::apps::HttpServerOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::server::ClientLimits;
use pingora::protocols::http::v2::server::DOWNSTREAM_H2_ABUSE;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::DOWNSTREAM_HANDSHAKE_FAILURES;
use pingora::Result;

/// Every ready connection is served before any is served twice, and
/// timers are checked between rounds (docs/behaviour.md, "Scheduling under
/// load"). Patch 13.
pub fn serve_ready_connections_in_turn(conf: &mut ServerConf) {
    conf.runtime_fair_scheduling = true;
}

/// Limits on HTTP/1 request heads: an idle timeout between requests that
/// a client cannot lengthen, a deadline for a whole head from its first
/// byte, and a size cap (docs/configuration.md, `[server]`). Patch 9.
pub fn limit_clients(
    options: &mut HttpServerOptions,
    keepalive_timeout: Duration,
    head_timeout: Duration,
    max_head_bytes: usize,
) {
    options.h1_client_limits = Some(ClientLimits {
        idle_timeout_secs: keepalive_timeout.as_secs(),
        head_timeout,
        max_head_bytes,
    });
}

/// Write a whole response whose header fields are already serialized
/// (`Name: value\r\n` lines, without `Date` and `Connection`, which
/// Pingora adds) and its body, in one write; HEAD gets no body. Patch 7.
///
/// Returns `false`, having written nothing, when the session is not
/// HTTP/1: the caller then writes a `ResponseHeader` instead.
pub async fn write_prepared_response(
    session: &mut ServerSession,
    status: StatusCode,
    fields: &[u8],
    body: &[u8],
) -> Result<bool> {
    session.write_prepared_response(status, fields, body).await
}

/// Failed or timed-out TLS handshakes with clients since the start. Patch
/// 10: Pingora logs each and tells the application nothing.
pub fn tls_handshake_failures() -> u64 {
    DOWNSTREAM_HANDSHAKE_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// HTTP/2 client connections ended with a GOAWAY for a protocol violation
/// since the start. Patch 10, as for the handshakes.
pub fn h2_abuse_ended() -> u64 {
    DOWNSTREAM_H2_ABUSE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Make room for `n` more headers in a request bound upstream, in both
/// of Pingora's maps at once. Patch 3.
pub fn reserve_request_headers(request: &mut RequestHeader, n: usize) -> Result<()> {
    request.reserve_headers(n)
}

/// Add a header to a request bound upstream with its name parsed once
/// (`wire` is the name as sent). Patch 3: Pingora's `insert_header` parses
/// each name again and grows both of its maps one insert at a time. A
/// `wire` name in title case keeps the case map unmade (patch 21).
pub fn insert_request_header(
    request: &mut RequestHeader,
    name: &HeaderName,
    wire: &'static str,
    value: HeaderValue,
) -> Result<()> {
    request.insert_parsed_header(name, wire, value)
}

/// Hold back the final response header being filtered (`response_filter`)
/// until [`release_response_header`]; meanwhile the body filter keeps every
/// body piece. Patch 11: Pingora sends the header before any body hook
/// runs.
pub fn hold_response_header(session: &mut Session) {
    session.hold_response_header();
}

/// The held header, to change before it leaves. Patch 11.
pub fn held_response_header(session: &mut Session) -> Option<&mut ResponseHeader> {
    session.held_response_header_mut()
}

/// Send the held header ahead of the body piece now being filtered.
/// Patch 11.
pub fn release_response_header(session: &mut Session) {
    session.release_response_header();
}

/// The client has sent nothing, not even its close, since its request
/// head was read: its socket's readiness says so without a system call.
/// `false` when something arrived, or when the session cannot tell
/// (HTTP/2; TLS streams). Patch 19.
pub fn client_quiet(session: &mut Session) -> bool {
    // A waker that does nothing: this is a look, not a wait. (A look
    // refused by tokio's task budget also reads as quiet: the request is
    // then sent as it would be without the look.)
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    session
        .as_downstream_mut()
        .poll_read_ready(&mut cx)
        .is_pending()
}
