//! Error normalization: whatever dialect the upstream used for a 4xx/5xx,
//! the client gets one canonical envelope (SPEC §1), and nothing the
//! upstream said is lost: fields the mapping does not use go to `details`.
//!
//! Pure functions over bytes; the proxy layer buffers the body (up to
//! `errors.max_body_bytes`) and calls [`normalize`] once at end of stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::StatusOverride;

/// The canonical envelope, `{"error": {...}}`.
///
/// Type, code and message borrow the gateway's fixed text (the status
/// table, its own messages) and own only what came from the upstream or
/// an override: a 429 allocates none of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub request_id: String,
    pub details: Value,
}

impl Envelope {
    /// The JSON bytes the client receives: `{"error":{"type":…,"code":…,
    /// "message":…,"request_id":…,"details":…}}`, compact, in that order.
    ///
    /// Written piece by piece rather than through `serde_json::to_vec` of
    /// a wrapper: serde_json writes each key, quote and punctuation mark as
    /// its own small write and escapes byte by byte, ~2,400 instructions
    /// for a 429's envelope (a tenth of the whole 429). Strings that need
    /// no escaping (nearly all) go in with one copy; others, and
    /// `details`, still go through serde_json, so the bytes are the same
    /// (`to_json_matches_serde_json` checks it).
    pub fn to_json(&self) -> Vec<u8> {
        let strings = self.kind.len() + self.code.len() + self.message.len();
        let mut out = Vec::with_capacity(96 + strings + self.request_id.len());
        write_envelope(
            &mut out,
            [&self.kind, &self.code, &self.message, &self.request_id],
            |out| {
                // Writing a `Value` into a Vec cannot fail.
                if serde_json::to_writer(&mut *out, &self.details).is_err() {
                    out.extend_from_slice(b"null");
                }
            },
        );
        out
    }
}

/// `{"error":{"type":…,"code":…,"message":…,"request_id":…,"details":…}}`
/// from the four strings in that order, `details` written by the caller.
fn write_envelope(out: &mut Vec<u8>, strings: [&str; 4], details: impl FnOnce(&mut Vec<u8>)) {
    let [kind, code, message, request_id] = strings;
    out.extend_from_slice(br#"{"error":{"type":"#);
    push_json_str(out, kind);
    out.extend_from_slice(br#","code":"#);
    push_json_str(out, code);
    out.extend_from_slice(br#","message":"#);
    push_json_str(out, message);
    out.extend_from_slice(br#","request_id":"#);
    push_json_str(out, request_id);
    out.extend_from_slice(br#","details":"#);
    details(out);
    out.extend_from_slice(b"}}");
}

/// `s` as a JSON string: one copy when nothing in it needs escaping,
/// serde_json's escaping otherwise.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether JSON needs any byte of `s` escaped (control, `"` or `\`).
///
/// In blocks of 16 (the last one padded with spaces) OR-ed into 16 lanes,
/// with no early exit: the compiler makes each block a handful of SIMD
/// instructions and reduces the lanes once at the end. A byte-by-byte
/// `any` costs ~10 instructions a byte; a fold over the slice still walks
/// its tail byte by byte (~170 instructions per string of a 429).
fn needs_escape(s: &[u8]) -> bool {
    fn mark(lanes: &mut [u8; 16], block: &[u8]) {
        for (lane, &c) in lanes.iter_mut().zip(block) {
            *lane |= u8::from((c < 0x20) | (c == b'"') | (c == b'\\'));
        }
    }
    let mut lanes = [0u8; 16];
    let mut blocks = s.chunks_exact(16);
    for block in &mut blocks {
        mark(&mut lanes, block);
    }
    let rest = blocks.remainder();
    let mut last = [b' '; 16];
    last[..rest.len()].copy_from_slice(rest);
    mark(&mut lanes, &last);
    lanes.iter().fold(0, |any, &lane| any | lane) != 0
}

/// Which dialect the upstream spoke (the `source` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Canonical,
    Flat,
    Message,
    Problem,
    Text,
    Html,
    Empty,
    Other,
}

impl Source {
    pub const ALL: [Source; 8] = [
        Source::Canonical,
        Source::Flat,
        Source::Message,
        Source::Problem,
        Source::Text,
        Source::Html,
        Source::Empty,
        Source::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Canonical => "canonical",
            Source::Flat => "flat",
            Source::Message => "message",
            Source::Problem => "problem",
            Source::Text => "text",
            Source::Html => "html",
            Source::Empty => "empty",
            Source::Other => "other",
        }
    }
}

/// Status → (`type`, `code`): the SPEC §1 defaults plus config overrides.
#[derive(Debug, Clone, Default)]
pub struct ErrorTable {
    overrides: BTreeMap<u16, StatusOverride>,
}

impl ErrorTable {
    pub fn new(overrides: BTreeMap<u16, StatusOverride>) -> Self {
        ErrorTable { overrides }
    }

    pub fn type_and_code(&self, status: u16) -> (Cow<'static, str>, Cow<'static, str>) {
        if let Some(o) = self.overrides.get(&status) {
            return (o.kind.clone().into(), o.code.clone().into());
        }
        let (t, c) = match status {
            400 => ("invalid_request_error", "bad_request"),
            401 => ("authentication_error", "unauthorized"),
            403 => ("permission_error", "forbidden"),
            404 => ("not_found_error", "not_found"),
            405 => ("invalid_request_error", "method_not_allowed"),
            409 => ("conflict_error", "conflict"),
            410 => ("invalid_request_error", "gone"),
            413 => ("invalid_request_error", "payload_too_large"),
            422 => ("validation_error", "invalid_request"),
            429 => ("rate_limit_error", "rate_limit_exceeded"),
            500 => ("api_error", "internal_error"),
            502 => ("upstream_error", "bad_gateway"),
            503 => ("upstream_error", "service_unavailable"),
            504 => ("upstream_error", "gateway_timeout"),
            _ if status < 500 => {
                return (
                    "invalid_request_error".into(),
                    format!("http_{status}").into(),
                )
            }
            _ => return ("api_error".into(), format!("http_{status}").into()),
        };
        (t.into(), c.into())
    }

    /// The envelope of an error the gateway makes itself, appended to
    /// `out`: `details` is `{"retry_after":N}` for a 429, `null` otherwise.
    /// Written straight to bytes (no [`Envelope`], no `Value` for the
    /// details): a 429 is answered this way for every refused request.
    pub fn write_gateway_error(
        &self,
        out: &mut Vec<u8>,
        status: u16,
        message: &str,
        request_id: &str,
        retry_after: Option<u64>,
    ) {
        let (kind, code) = self.type_and_code(status);
        write_envelope(
            out,
            [&kind, &code, message, request_id],
            |out| match retry_after {
                Some(n) => {
                    out.extend_from_slice(br#"{"retry_after":"#);
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.push(b'}');
                }
                None => out.extend_from_slice(b"null"),
            },
        );
    }
}

/// The reason phrase for a status, `"Error"` when it has none.
pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// What the proxy saw of an upstream error response.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamError<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// The (possibly compressed) body, at most `max_body_bytes` of it.
    pub body: &'a [u8],
    /// The upstream sent more than `max_body_bytes` (compressed or not).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub envelope: Envelope,
    pub source: Source,
    /// The upstream's own reference (e.g. `eventID`), when it differs from
    /// the gateway's request id.
    pub upstream_ref: Option<String>,
}

/// Longest plain-text body that is used as the message.
const MAX_TEXT_MESSAGE: usize = 512;

/// Map an upstream error to the canonical envelope.
pub fn normalize(
    err: &UpstreamError<'_>,
    request_id: &str,
    table: &ErrorTable,
    max_body_bytes: usize,
) -> Normalized {
    let status = err.status;
    let reason = reason_phrase(status);
    let fallback = |source: Source, details: Value| {
        let (kind, code) = table.type_and_code(status);
        Normalized {
            envelope: Envelope {
                kind,
                code,
                message: reason.into(),
                request_id: request_id.to_string(),
                details,
            },
            source,
            upstream_ref: None,
        }
    };
    if err.truncated {
        return fallback(Source::Other, serde_json::json!({ "truncated": true }));
    }
    let decoded = match decode(err.body, err.content_encoding, max_body_bytes) {
        Decoded::Plain(b) => b,
        Decoded::TooLarge => {
            return fallback(Source::Other, serde_json::json!({ "truncated": true }))
        }
        Decoded::Failed => return fallback(Source::Other, Value::Null),
    };
    let body: &[u8] = decoded.as_ref();
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return fallback(Source::Empty, Value::Null);
    }
    let ctype = err.content_type.unwrap_or("").to_ascii_lowercase();
    if ctype.contains("html") || trimmed.starts_with(b"<") {
        return fallback(Source::Html, Value::Null);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(trimmed) {
        let is_problem = ctype.contains("problem+json");
        return from_json(value, is_problem, status, request_id, table);
    }
    let looks_json =
        ctype.contains("json") || trimmed.starts_with(b"{") || trimmed.starts_with(b"[");
    if let Some(text) = short_text(trimmed).filter(|_| !looks_json) {
        let (kind, code) = table.type_and_code(status);
        return Normalized {
            envelope: Envelope {
                kind,
                code,
                message: text.to_string().into(),
                request_id: request_id.to_string(),
                details: Value::Null,
            },
            source: Source::Text,
            upstream_ref: None,
        };
    }
    fallback(Source::Other, Value::Null)
}

enum Decoded<'a> {
    Plain(std::borrow::Cow<'a, [u8]>),
    TooLarge,
    Failed,
}

/// Undo `Content-Encoding` (gzip, deflate, br; several in order), never
/// producing more than `limit` bytes: a zip bomb stops at the limit.
fn decode<'a>(body: &'a [u8], encoding: Option<&str>, limit: usize) -> Decoded<'a> {
    let codings: Vec<String> = encoding
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() || body.is_empty() {
        return Decoded::Plain(body.into());
    }
    let mut data: Vec<u8> = body.to_vec();
    for coding in codings.iter().rev() {
        let out = match coding.as_str() {
            "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit),
            "deflate" => read_bounded(flate2::read::ZlibDecoder::new(&data[..]), limit)
                .or_else(|_| read_bounded(flate2::read::DeflateDecoder::new(&data[..]), limit)),
            "br" => read_bounded(brotli::Decompressor::new(&data[..], 4096), limit),
            _ => return Decoded::Failed,
        };
        match out {
            Ok(Some(d)) => data = d,
            Ok(None) => return Decoded::TooLarge,
            Err(()) => return Decoded::Failed,
        }
    }
    Decoded::Plain(data.into())
}

/// Read at most `limit` bytes; `Ok(None)` if there was more.
fn read_bounded(r: impl Read, limit: usize) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out).map_err(|_| ())?;
    if out.len() > limit {
        Ok(None)
    } else {
        Ok(Some(out))
    }
}

/// One line of printable UTF-8 text, at most 512 bytes.
fn short_text(body: &[u8]) -> Option<&str> {
    if body.len() > MAX_TEXT_MESSAGE {
        return None;
    }
    let s = std::str::from_utf8(body).ok()?;
    if s.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(s)
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A reference the upstream gave: a non-empty string or a number.
fn reference(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Number(n)) => Some(n.to_string()),
        other => non_empty_str(other),
    }
}

/// Put unused upstream fields under `details` without losing either side.
fn with_extras(details: Value, extras: Map<String, Value>) -> Value {
    if extras.is_empty() {
        return details;
    }
    match details {
        Value::Null => Value::Object(extras),
        Value::Object(mut obj) if !obj.contains_key("upstream") => {
            obj.insert("upstream".into(), Value::Object(extras));
            Value::Object(obj)
        }
        other => {
            let mut obj = Map::new();
            obj.insert("items".into(), other);
            obj.insert("upstream".into(), Value::Object(extras));
            Value::Object(obj)
        }
    }
}

fn looks_like_problem(obj: &Map<String, Value>) -> bool {
    let has_title = matches!(obj.get("title"), Some(Value::String(_)));
    let has_type = matches!(obj.get("type"), Some(Value::String(_)));
    let has_status = matches!(obj.get("status"), Some(Value::Number(_)));
    has_title && (has_type || has_status)
}

fn from_json(
    value: Value,
    is_problem_type: bool,
    status: u16,
    request_id: &str,
    table: &ErrorTable,
) -> Normalized {
    let reason = reason_phrase(status);
    let (default_kind, default_code) = table.type_and_code(status);
    let mut out = Normalized {
        envelope: Envelope {
            kind: default_kind,
            code: default_code,
            message: reason.into(),
            request_id: request_id.to_string(),
            details: Value::Null,
        },
        source: Source::Other,
        upstream_ref: None,
    };
    let mut obj = match value {
        Value::Object(obj) => obj,
        other => {
            out.envelope.details = other;
            return out;
        }
    };
    let env = &mut out.envelope;

    // Already canonical: {"error": {...}}.
    if let Some(Value::Object(inner)) = obj.get_mut("error") {
        let mut inner = std::mem::take(inner);
        obj.remove("error");
        out.source = Source::Canonical;
        if let Some(t) = non_empty_str(inner.get("type")) {
            env.kind = t.into();
        }
        if let Some(c) = non_empty_str(inner.get("code")) {
            env.code = c.into();
        }
        if let Some(m) = non_empty_str(inner.get("message")) {
            env.message = m.into();
        }
        if let Some(r) = reference(inner.get("request_id")) {
            env.request_id = r;
        }
        let details = inner.remove("details").unwrap_or(Value::Null);
        for k in ["type", "code", "message", "request_id"] {
            // Keep a field we could not use (e.g. a numeric code).
            if let Some(v) = inner.remove(k) {
                let used = matches!(&v, Value::String(s) if !s.trim().is_empty())
                    || (k == "request_id" && v.is_number());
                if !used {
                    inner.insert(k.to_string(), v);
                }
            }
        }
        let mut extras = inner;
        extras.extend(obj);
        env.details = with_extras(details, extras);
        if env.request_id != request_id {
            out.upstream_ref = Some(env.request_id.clone());
        }
        return out;
    }

    // RFC 9457 problem details.
    if is_problem_type || looks_like_problem(&obj) {
        out.source = Source::Problem;
        if let Some(d) = non_empty_str(obj.get("detail")) {
            env.message = d.into();
            obj.remove("detail");
        } else if let Some(t) = non_empty_str(obj.get("title")) {
            env.message = t.into();
            obj.remove("title");
        }
        if obj.get("status").and_then(Value::as_u64) == Some(u64::from(status)) {
            obj.remove("status");
        }
        env.details = if obj.is_empty() {
            Value::Null
        } else {
            Value::Object(obj)
        };
        return out;
    }

    // Flat: {"error_code": ..., "error_message": ...}.
    if obj.contains_key("error_code") || obj.contains_key("error_message") {
        out.source = Source::Flat;
        if let Some(m) = non_empty_str(obj.get("error_message")) {
            env.message = m.into();
            obj.remove("error_message");
        }
        match obj.get("error_code") {
            Some(Value::Number(_)) => {
                obj.remove("error_code");
            }
            Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => {
                obj.remove("error_code");
            }
            Some(Value::String(s)) if !s.trim().is_empty() => {
                env.code = s.trim().to_ascii_lowercase().into();
                obj.remove("error_code");
            }
            _ => {}
        }
        env.details = with_extras(Value::Null, obj);
        return out;
    }

    // {"message": ..., optional "validation_errors", optional "eventID"}.
    if let Some(m) = non_empty_str(obj.get("message")) {
        out.source = Source::Message;
        env.message = m.into();
        obj.remove("message");
        let mut details = Value::Null;
        if let Some(Value::Array(items)) = obj.get("validation_errors") {
            let items = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => serde_json::json!({ "message": s }),
                    other => other.clone(),
                })
                .collect();
            details = Value::Array(items);
            obj.remove("validation_errors");
        }
        if let Some(r) = reference(obj.get("eventID")) {
            env.request_id = r.clone();
            out.upstream_ref = Some(r);
            obj.remove("eventID");
        }
        env.details = with_extras(details, obj);
        return out;
    }

    // Any other JSON object: a message-like string at the top, the rest in details.
    for k in ["message", "error", "detail", "title"] {
        if let Some(m) = non_empty_str(obj.get(k)) {
            env.message = m.into();
            break;
        }
    }
    env.details = Value::Object(obj);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    #[test]
    fn to_json_matches_serde_json() {
        #[derive(Serialize)]
        struct Wrapper<'a> {
            error: &'a Envelope,
        }
        let strings = [
            "",
            "plain",
            "Too many requests; retry after the time in Retry-After.",
            "quote \" and backslash \\ and slash /",
            "control \u{0} \u{1f} \n \t \r \u{7f}",
            "unicode é ü 日本 🦀 \u{2028} \u{2029}",
        ];
        for (i, s) in strings.iter().enumerate() {
            let e = Envelope {
                kind: s.to_string().into(),
                code: strings[(i + 1) % strings.len()].into(),
                message: strings[(i + 2) % strings.len()].into(),
                request_id: strings[(i + 3) % strings.len()].to_string(),
                details: json!({ "retry_after": 3, "s": s, "nested": [1, null, {"k": s}] }),
            };
            let serde = serde_json::to_vec(&Wrapper { error: &e }).unwrap();
            assert_eq!(
                String::from_utf8(e.to_json()).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        }
    }

    /// Every length around the 16-byte blocks, with each byte that needs
    /// escaping at every position, and none.
    #[test]
    fn needs_escape_finds_every_byte_at_every_position() {
        for len in 0..50 {
            let clean = vec![b'a'; len];
            assert!(!needs_escape(&clean), "len {len}");
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\'] {
                    let mut s = clean.clone();
                    s[at] = special;
                    assert!(needs_escape(&s), "len {len}, {special:#x} at {at}");
                }
                let mut s = clean.clone();
                s[at] = 0x7f;
                assert!(!needs_escape(&s), "DEL needs no escape in JSON");
            }
        }
    }

    const RID: &str = "req_test123";
    const MAX: usize = 65536;

    fn run(status: u16, ctype: Option<&str>, enc: Option<&str>, body: &[u8]) -> Normalized {
        let err = UpstreamError {
            status,
            content_type: ctype,
            content_encoding: enc,
            body,
            truncated: false,
        };
        normalize(&err, RID, &ErrorTable::default(), MAX)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    struct Case {
        name: &'static str,
        status: u16,
        ctype: Option<&'static str>,
        body: &'static str,
        source: Source,
        kind: &'static str,
        code: &'static str,
        message: &'static str,
        request_id: &'static str,
        details: Value,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "canonical kept",
                status: 402,
                ctype: Some("application/json"),
                body: r#"{"error":{"type":"card_error","code":"card_declined","message":"Declined","request_id":"up_1","details":{"decline_code":"x"}}}"#,
                source: Source::Canonical,
                kind: "card_error",
                code: "card_declined",
                message: "Declined",
                request_id: "up_1",
                details: json!({"decline_code": "x"}),
            },
            Case {
                name: "canonical missing code, extra fields kept",
                status: 404,
                ctype: Some("application/json"),
                body: r#"{"error":{"message":"No such doc","param":"id"},"trace":"t1"}"#,
                source: Source::Canonical,
                kind: "not_found_error",
                code: "not_found",
                message: "No such doc",
                request_id: RID,
                details: json!({"param": "id", "trace": "t1"}),
            },
            Case {
                name: "flat numeric code",
                status: 401,
                ctype: Some("application/json"),
                body: r#"{"error_code":"401","error_message":"Authentication Error: bad key"}"#,
                source: Source::Flat,
                kind: "authentication_error",
                code: "unauthorized",
                message: "Authentication Error: bad key",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "flat string code lowercased, extras kept",
                status: 400,
                ctype: Some("application/json"),
                body: r#"{"error_code":"INVALID_DOC","error_message":"Document is invalid","doc":7}"#,
                source: Source::Flat,
                kind: "invalid_request_error",
                code: "invalid_doc",
                message: "Document is invalid",
                request_id: RID,
                details: json!({"doc": 7}),
            },
            Case {
                name: "message with validation_errors",
                status: 422,
                ctype: Some("application/json"),
                body: r#"{"message":"One or more request parameters are invalid.","validation_errors":["ID is required","Name is too long"]}"#,
                source: Source::Message,
                kind: "validation_error",
                code: "invalid_request",
                message: "One or more request parameters are invalid.",
                request_id: RID,
                details: json!([{"message": "ID is required"}, {"message": "Name is too long"}]),
            },
            Case {
                name: "validation_errors plus extra field",
                status: 422,
                ctype: Some("application/json"),
                body: r#"{"message":"Invalid","validation_errors":["a"],"field_count":1}"#,
                source: Source::Message,
                kind: "validation_error",
                code: "invalid_request",
                message: "Invalid",
                request_id: RID,
                details: json!({"items": [{"message": "a"}], "upstream": {"field_count": 1}}),
            },
            Case {
                name: "eventID becomes request_id",
                status: 500,
                ctype: Some("application/json"),
                body: r#"{"eventID":"c3cc0f6e-1","message":"Failed to do something"}"#,
                source: Source::Message,
                kind: "api_error",
                code: "internal_error",
                message: "Failed to do something",
                request_id: "c3cc0f6e-1",
                details: Value::Null,
            },
            Case {
                name: "bare message",
                status: 403,
                ctype: Some("application/json"),
                body: r#"{"message":"Forbidden for this key"}"#,
                source: Source::Message,
                kind: "permission_error",
                code: "forbidden",
                message: "Forbidden for this key",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "problem+json",
                status: 409,
                ctype: Some("application/problem+json"),
                body: r#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":409,"detail":"Your balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc","balance":30}"#,
                source: Source::Problem,
                kind: "conflict_error",
                code: "conflict",
                message: "Your balance is 30, but that costs 50.",
                request_id: RID,
                details: json!({"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","instance":"/account/12345/msgs/abc","balance":30}),
            },
            Case {
                name: "problem without detail uses title",
                status: 410,
                ctype: Some("application/problem+json"),
                body: r#"{"type":"about:blank","title":"Gone for good"}"#,
                source: Source::Problem,
                kind: "invalid_request_error",
                code: "gone",
                message: "Gone for good",
                request_id: RID,
                details: json!({"type": "about:blank"}),
            },
            Case {
                name: "other json shape",
                status: 418,
                ctype: Some("application/json"),
                body: r#"{"error":"teapot","hint":"use coffee"}"#,
                source: Source::Other,
                kind: "invalid_request_error",
                code: "http_418",
                message: "teapot",
                request_id: RID,
                details: json!({"error":"teapot","hint":"use coffee"}),
            },
            Case {
                name: "json array",
                status: 400,
                ctype: Some("application/json"),
                body: r#"[1,2]"#,
                source: Source::Other,
                kind: "invalid_request_error",
                code: "bad_request",
                message: "Bad Request",
                request_id: RID,
                details: json!([1, 2]),
            },
            Case {
                name: "short text",
                status: 503,
                ctype: Some("text/plain"),
                body: "upstream connect error or disconnect/reset before headers\n",
                source: Source::Text,
                kind: "upstream_error",
                code: "service_unavailable",
                message: "upstream connect error or disconnect/reset before headers",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "html from a load balancer",
                status: 502,
                ctype: Some("text/html"),
                body: "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                source: Source::Html,
                kind: "upstream_error",
                code: "bad_gateway",
                message: "Bad Gateway",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "empty",
                status: 504,
                ctype: None,
                body: "",
                source: Source::Empty,
                kind: "upstream_error",
                code: "gateway_timeout",
                message: "Gateway Timeout",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "invalid json",
                status: 500,
                ctype: Some("application/json"),
                body: "{\"message\": \"unterminated\n\n",
                source: Source::Other,
                kind: "api_error",
                code: "internal_error",
                message: "Internal Server Error",
                request_id: RID,
                details: Value::Null,
            },
            Case {
                name: "other 5xx",
                status: 599,
                ctype: None,
                body: "multi\nline\ntext",
                source: Source::Other,
                kind: "api_error",
                code: "http_599",
                message: "Error",
                request_id: RID,
                details: Value::Null,
            },
        ]
    }

    fn check(case: &Case, got: &Normalized) {
        let e = &got.envelope;
        assert_eq!(got.source, case.source, "{}", case.name);
        assert_eq!(e.kind, case.kind, "{}", case.name);
        assert_eq!(e.code, case.code, "{}", case.name);
        assert_eq!(e.message, case.message, "{}", case.name);
        assert_eq!(e.request_id, case.request_id, "{}", case.name);
        assert_eq!(e.details, case.details, "{}", case.name);
    }

    #[test]
    fn every_dialect_plain() {
        for case in cases() {
            check(
                &case,
                &run(case.status, case.ctype, None, case.body.as_bytes()),
            );
        }
    }

    #[test]
    fn every_dialect_compressed() {
        for case in cases() {
            let raw = case.body.as_bytes();
            for (enc, body) in [
                ("gzip", gzip(raw)),
                ("deflate", deflate(raw)),
                ("br", brotli(raw)),
            ] {
                if raw.is_empty() {
                    continue;
                }
                check(&case, &run(case.status, case.ctype, Some(enc), &body));
            }
        }
    }

    #[test]
    fn upstream_ref_reported_when_it_differs() {
        let got = run(500, None, None, br#"{"eventID":"ev-9","message":"x"}"#);
        assert_eq!(got.upstream_ref.as_deref(), Some("ev-9"));
        let got = run(500, None, None, br#"{"message":"x"}"#);
        assert_eq!(got.upstream_ref, None);
    }

    #[test]
    fn zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < MAX, "the bomb itself fits the buffer");
        let got = run(500, Some("application/json"), Some("gzip"), &bomb);
        assert_eq!(got.envelope.details, json!({"truncated": true}));
        assert_eq!(got.envelope.message, "Internal Server Error");
    }

    #[test]
    fn truncated_body_is_flagged() {
        let err = UpstreamError {
            status: 502,
            content_type: Some("application/json"),
            content_encoding: None,
            body: b"{\"message\":",
            truncated: true,
        };
        let got = normalize(&err, RID, &ErrorTable::default(), MAX);
        assert_eq!(got.envelope.details, json!({"truncated": true}));
        assert_eq!(got.envelope.message, "Bad Gateway");
    }

    #[test]
    fn broken_compression_and_unknown_coding() {
        let got = run(500, None, Some("gzip"), b"not gzip at all");
        assert_eq!(got.envelope.message, "Internal Server Error");
        let got = run(500, None, Some("zstd"), b"\x28\xb5\x2f\xfd");
        assert_eq!(got.source, Source::Other);
    }

    #[test]
    fn binary_and_long_text_use_the_reason() {
        let got = run(
            500,
            Some("application/octet-stream"),
            None,
            &[0, 159, 146, 150],
        );
        assert_eq!(got.envelope.message, "Internal Server Error");
        let long = "x".repeat(600);
        let got = run(400, Some("text/plain"), None, long.as_bytes());
        assert_eq!(got.envelope.message, "Bad Request");
    }

    #[test]
    fn overrides_change_type_and_code() {
        let mut o = BTreeMap::new();
        o.insert(
            404,
            StatusOverride {
                kind: "missing".into(),
                code: "no_such_thing".into(),
            },
        );
        let t = ErrorTable::new(o);
        assert_eq!(
            t.type_and_code(404),
            ("missing".into(), "no_such_thing".into())
        );
        assert_eq!(t.type_and_code(400).1, "bad_request");
        assert_eq!(t.type_and_code(451).1, "http_451");
    }

    #[test]
    fn gateway_errors_are_whole_envelopes() {
        let table = ErrorTable::default();
        let cases = [
            (429, "Too many", Some(3), json!({"retry_after": 3})),
            (
                429,
                "Too many",
                Some(u64::MAX),
                json!({"retry_after": u64::MAX}),
            ),
            (413, "quote \" and \n", None, Value::Null),
            (504, "", None, Value::Null),
            (599, "odd", None, Value::Null),
        ];
        for (status, message, retry_after, details) in cases {
            let mut out = b"kept".to_vec();
            table.write_gateway_error(&mut out, status, message, RID, retry_after);
            assert_eq!(&out[..4], b"kept", "appends");
            let (kind, code) = table.type_and_code(status);
            let expected = Envelope {
                kind,
                code,
                message: message.to_string().into(),
                request_id: RID.to_string(),
                details,
            };
            assert_eq!(out[4..], expected.to_json(), "{status} {message}");
        }
        let mut out = Vec::new();
        table.write_gateway_error(&mut out, 429, "Too many", RID, Some(3));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                "message": "Too many", "request_id": RID, "details": {"retry_after": 3}}})
        );
    }
}
