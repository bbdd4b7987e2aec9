//! The calls tollgate makes to APIs that exist only in its patched
//! Pingora (vendor/PATCHES.md). The rest of the crate calls these, so it
//! does not need to know which calls are patches; moving to an unpatched
//! Pingora means rewriting this file only.

use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Write a whole response whose header fields are already serialized
/// (`Name: value\r\n` lines, without `Date` and `Connection`, which
/// Pingora adds) and its body, in one write; HEAD gets no body. Patch 7.
///
/// Returns `false`, having written nothing, when the session is not
/// HTTP/1: the caller then writes a `ResponseHeader` instead.
pub async fn write_prepared_response(
    session: &mut Session,
    status: StatusCode,
    fields: &[u8],
    body: &[u8],
) -> Result<bool> {
    session
        .downstream_session
        .write_prepared_response(status, fields, body)
        .await
}

/// A header for a request bound upstream, its name parsed once.
pub struct ParsedHeader {
    pub name: &'static HeaderName,
    /// The name as it goes on the wire.
    pub wire: &'static str,
    pub value: HeaderValue,
}

/// Add headers to a request bound upstream, with one reservation for all
/// of them. Patch 3: Pingora's `insert_header` parses each name again and
/// grows both of its maps one insert at a time.
pub fn insert_request_headers<const N: usize>(
    request: &mut RequestHeader,
    headers: [Option<ParsedHeader>; N],
) -> Result<()> {
    request.reserve_headers(N)?;
    for h in headers.into_iter().flatten() {
        request.insert_parsed_header(h.name, h.wire, h.value)?;
    }
    Ok(())
}
