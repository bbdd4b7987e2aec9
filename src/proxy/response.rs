//! The response's way out: tollgate's headers on every upstream answer,
//! and an upstream 4xx/5xx turned into the envelope.

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, TRANSFER_ENCODING, VARY};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::{Ctx, NormalizedError, SentError};
use super::headers::{self, X_ITEM_ERRORS};

/// A digest of the upstream's bytes, wrong once the body is replaced.
static CONTENT_MD5: http::HeaderName = http::HeaderName::from_static("content-md5");
use super::{patched, request};
use crate::errors::items::{is_json_media_type, Finished, HeldBody, Hold};
use crate::errors::{CollectedError, Source};

/// What becomes of an upstream error's body.
pub enum EnvelopeTiming {
    /// Gathered from the body as it arrives, sent at its end (or nothing
    /// to send: a HEAD).
    AtEndOfBody,
    /// The upstream declared an empty body, so no body hook will run: this
    /// envelope goes out now, with the header.
    Now(Bytes),
}

/// Ready an upstream 4xx/5xx's header for the envelope that replaces its
/// body: no length, encoding or validators of the old body, JSON, chunked
/// over HTTP/1 (the envelope's length is known only at the end).
pub fn begin_envelope(
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<EnvelopeTiming> {
    let header = |name| resp.headers.get(name);
    // A HEAD answer has no body to gather.
    let collected = (!ctx.head).then(|| {
        CollectedError::new(
            resp.status.as_u16(),
            header(CONTENT_TYPE),
            header(CONTENT_ENCODING),
            ctx.rt.max_error_body,
        )
    });
    let empty = resp
        .headers
        .get(CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"0");
    ctx.error_format = request::error_format(session, ctx);
    // The envelope's length is known only at its end.
    let chunked = collected.is_some() && !empty && !session.is_http2();
    let content_type = HeaderValue::from_static(ctx.error_format.content_type());
    headers::edit_response(resp, |headers| {
        for name in [CONTENT_LENGTH, CONTENT_ENCODING, ETAG] {
            headers.remove(name);
        }
        headers.remove(&CONTENT_MD5);
        headers.insert(CONTENT_TYPE, content_type);
        vary_on_accept(headers);
        if chunked {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    })?;
    let Some(collected) = collected else {
        return Ok(EnvelopeTiming::AtEndOfBody);
    };
    ctx.collecting = Some(Box::new(collected));
    if empty {
        let body = finish_envelope(ctx).unwrap_or_default();
        resp.insert_header(CONTENT_LENGTH, body.len())?;
        return Ok(EnvelopeTiming::Now(body));
    }
    Ok(EnvelopeTiming::AtEndOfBody)
}

/// Add `Accept` to the upstream's `Vary` (the error's form follows it),
/// unless it is already there or the upstream varies on everything.
fn vary_on_accept(headers: &mut http::HeaderMap) {
    let listed = headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|token| token == b"*" || token.eq_ignore_ascii_case(b"accept"))
    });
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Accept"));
    }
}

/// Send the header and an envelope that is ready now. Pingora then skips
/// its own copy of the header (one WARN) and the connection stays
/// reusable.
pub async fn write_now(session: &mut Session, resp: &ResponseHeader, body: Bytes) -> Result<()> {
    session
        .write_response_header(Box::new(resp.clone()), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Gather a piece of an upstream error's body; at its end, replace it with
/// the envelope. Other bodies pass untouched.
pub fn gather_error_body(ctx: &mut Ctx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(collecting) = ctx.collecting.as_mut() else {
        return;
    };
    if let Some(piece) = body.take() {
        collecting.push(piece);
    }
    if end_of_stream {
        *body = finish_envelope(ctx);
    }
}

/// Hold a 2xx JSON body for its items' errors, on a route with
/// `item_errors`: its header waits for the body (patch 11). Every other
/// response streams untouched.
pub fn hold_for_items(session: &mut Session, resp: &ResponseHeader, ctx: &mut Ctx) {
    let status = resp.status.as_u16();
    if ctx.rt.routes.item_errors(ctx.route).is_empty()
        || !(200..300).contains(&status)
        || matches!(status, 204 | 205)
        || ctx.head
    {
        return;
    }
    let header = |name| resp.headers.get(name).and_then(|v| v.to_str().ok());
    let declared_empty = header(CONTENT_LENGTH).is_some_and(|v| v.trim() == "0");
    if declared_empty || !header(CONTENT_TYPE).is_some_and(is_json_media_type) {
        return;
    }
    let held = HeldBody::new(header(CONTENT_ENCODING), ctx.rt.max_error_body);
    ctx.items = Some(Box::new(held));
    patched::hold_response_header(session);
}

/// Keep a piece of a held 2xx body; at its end, send the body with its
/// failed items rewritten and its header set for it. Past
/// `errors.max_body_bytes` what was held goes out and the rest streams.
pub fn gather_item_body(
    session: &mut Session,
    ctx: &mut Ctx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
) {
    let Some(held) = ctx.items.as_mut() else {
        return;
    };
    if let Some(piece) = body.take() {
        if let Hold::GiveBack(bytes) = held.push(&piece) {
            ctx.items = None;
            *body = Some(bytes.into());
            patched::release_response_header(session);
            return;
        }
    }
    if !end_of_stream {
        return;
    }
    let Some(held) = ctx.items.take() else {
        return;
    };
    let arrays = ctx.rt.routes.item_errors(ctx.route);
    match held.finish(arrays, ctx.request_id.as_str(), &ctx.rt.errors) {
        Finished::Checked(checked) => {
            let route = ctx.rt.route_metrics.get(ctx.route);
            if let Some(counter) = route.and_then(|r| r.item_errors.as_ref()) {
                counter.inc_by(checked.failed);
            }
            if let Some(resp) = patched::held_response_header(session) {
                set_item_headers(resp, checked.body.len(), checked.failed);
            }
            *body = Some(checked.body.into());
        }
        Finished::Untouched(bytes) => *body = Some(bytes.into()),
    }
    patched::release_response_header(session);
}

/// The header of a body whose items were checked: its exact length, no
/// encoding or validators of the upstream's bytes, and the failed count.
fn set_item_headers(resp: &mut ResponseHeader, len: usize, failed: u64) {
    for name in [CONTENT_ENCODING, TRANSFER_ENCODING, ETAG] {
        resp.remove_header(&name);
    }
    resp.remove_header(&CONTENT_MD5);
    // Inserting a length or a number cannot fail.
    let _ = resp.insert_header(CONTENT_LENGTH, len);
    let _ = resp.insert_header(X_ITEM_ERRORS.clone(), failed);
}

/// An upstream error body broke off after its header went out: send the
/// envelope of what arrived, flagged as truncated.
pub async fn finish_broken_envelope(session: &mut Session, ctx: &mut Ctx) {
    if session.response_written().is_none() {
        return;
    }
    let Some(collecting) = ctx.collecting.as_mut() else {
        return;
    };
    collecting.broke_off();
    if let Some(body) = finish_envelope(ctx) {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

/// Normalize what was gathered: the envelope's bytes, counted in the
/// metrics and kept for the log.
fn finish_envelope(ctx: &mut Ctx) -> Option<Bytes> {
    let collected = ctx.collecting.take()?;
    let n = collected.normalize(ctx.request_id.as_str(), &ctx.rt.errors);
    let status = collected.status();
    ctx.rt.metrics.normalized(n.source, status);
    let from_problem = n.source == Source::Problem;
    let body = n.envelope.to_bytes(status, ctx.error_format, from_problem);
    // Exact size, so `Bytes` takes the buffer without allocating a shared
    // header for its spare capacity.
    let body = Bytes::from(body.into_boxed_slice());
    ctx.sent = Some(SentError::Normalized(Box::new(NormalizedError {
        envelope: n.envelope,
        source: n.source,
        upstream_ref: n.upstream_ref,
    })));
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary_after(existing: &[&str]) -> Vec<String> {
        let mut headers = http::HeaderMap::new();
        for v in existing {
            headers.append(VARY, HeaderValue::from_str(v).unwrap());
        }
        vary_on_accept(&mut headers);
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn accept_joins_the_upstreams_vary_once() {
        assert_eq!(vary_after(&[]), ["Accept"]);
        assert_eq!(vary_after(&["Origin"]), ["Origin", "Accept"]);
        assert_eq!(vary_after(&["Origin, accept"]), ["Origin, accept"]);
        assert_eq!(vary_after(&["Origin", "ACCEPT"]), ["Origin", "ACCEPT"]);
        assert_eq!(vary_after(&["*"]), ["*"]);
        assert_eq!(
            vary_after(&["Accept-Encoding"]),
            ["Accept-Encoding", "Accept"]
        );
    }
}
