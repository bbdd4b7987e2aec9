//! tollgate's own headers (docs/headers.md): `X-Request-Id` and the
//! rate-limit headers on every answer, `X-Request-Id` and
//! `X-Forwarded-For` on every request sent upstream.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr, Result};

use super::ctx::Ctx;
use super::patched;
use crate::client;

/// Header names tollgate adds, parsed at compile time.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Failed items in a 2xx body (routes with `item_errors`).
pub static X_ITEM_ERRORS: HeaderName = HeaderName::from_static("x-item-errors");

/// tollgate's own response headers, `X-Request-Id` then the rate-limit
/// headers, handed to `out` with pre-parsed names. Every answer's header
/// set comes from here, whichever way it is written.
pub fn own_headers(ctx: &Ctx, mut out: impl FnMut(HeaderName, HeaderValue)) {
    out(X_REQUEST_ID.clone(), ctx.request_id.header_value());
    ctx.rt
        .rate_limit_headers
        .render(&ctx.decision, ctx.rt.limiter.rules(), out);
}

/// [`own_headers`] into a header map, with one reservation (room for
/// `more` headers besides).
pub fn insert_own_headers(headers: &mut http::HeaderMap, ctx: &Ctx, more: usize) {
    headers.reserve(1 + ctx.rt.rate_limit_headers.count(&ctx.decision) + more);
    own_headers(ctx, |name, value| {
        headers.insert(name, value);
    });
}

/// [`own_headers`] as HTTP/1 header lines.
pub fn write_own_fields(out: &mut Vec<u8>, ctx: &Ctx) {
    own_headers(ctx, |name, value| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Add [`own_headers`] to an upstream's response.
pub fn add_to_response(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    edit_response(resp, |headers| insert_own_headers(headers, ctx, 0))
}

/// Edit an upstream response's headers as a plain `http::HeaderMap`.
///
/// Pingora keeps a second map with each header name's original case and
/// parses every inserted name, which made tollgate's inserts a large share
/// of a proxied request's cost (docs/performance-history.md). So the
/// response drops the case map (upstream header names then go out
/// lower-case, as Envoy sends them; standard ones title-cased) and the
/// edit works on the map of values alone, with names parsed at compile
/// time.
pub fn edit_response(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut http::HeaderMap),
) -> Result<()> {
    // Only an upstream's own wording needs keeping (and allocating).
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// Add `X-Request-Id` and `X-Forwarded-For` to the request bound upstream,
/// their names in title case: a request whose names are all title case (what
/// client libraries send) keeps no second map of their case (vendor patch 21).
pub fn add_to_upstream_request(
    upstream: &mut RequestHeader,
    peer: Option<IpAddr>,
    ctx: &Ctx,
) -> Result<()> {
    patched::reserve_request_headers(upstream, 2)?;
    patched::insert_request_header(
        upstream,
        &X_REQUEST_ID,
        "X-Request-Id",
        ctx.request_id.header_value(),
    )?;
    if let Some(peer) = peer {
        let chain = xff_chain(&upstream.headers, peer)?;
        patched::insert_request_header(upstream, &X_FORWARDED_FOR, "X-Forwarded-For", chain)?;
    }
    Ok(())
}

/// The `X-Forwarded-For` chain for the upstream: the values the request
/// came with (those that are text), then the peer's address. Built in one
/// exact-size allocation, the address written by [`client::ip_text`].
pub fn xff_chain(headers: &http::HeaderMap, peer: IpAddr) -> Result<HeaderValue> {
    let mut ip_buf = [0u8; 45];
    let ip = client::ip_text(peer, &mut ip_buf);
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
            let v = xff_chain(&headers, peer).unwrap();
            assert_eq!(v.to_str().unwrap(), peer.to_string());
        }
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static(" 203.0.113.9 "));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        headers.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        let v = xff_chain(&headers, peers[1]).unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            "203.0.113.9, 10.0.0.1, 10.0.0.2, 192.168.100.254",
            "text values kept in order, others dropped, the peer last"
        );
    }
}
