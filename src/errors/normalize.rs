//! An upstream's error, in whatever dialect it speaks, → the canonical
//! envelope; nothing the upstream said is lost: fields the mapping does not
//! use go to `details`.
//!
//! Pure functions over bytes; the proxy gathers the body (up to
//! `errors.max_body_bytes`, see [`super::collect`]) and calls
//! [`normalize`] once at the end of the stream.

use serde_json::{Map, Value};

use super::decode::{decode, Decoded};
use super::{reason_phrase, Envelope, ErrorClass, ErrorTable};

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
        let ErrorClass { kind, code } = table.type_and_code(status);
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
    let ctype = err.content_type.unwrap_or("");
    if contains_ignoring_case(ctype, "html") || trimmed.starts_with(b"<") {
        return fallback(Source::Html, Value::Null);
    }
    // One UTF-8 check of the whole body: parsing from bytes checks each
    // string on its own, at several times the cost. A body that is not
    // UTF-8 is not JSON either.
    let text = std::str::from_utf8(trimmed).ok();
    if let Some(value) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        let is_problem = contains_ignoring_case(ctype, "problem+json");
        return from_json(value, is_problem, status, request_id, table);
    }
    let looks_json = contains_ignoring_case(ctype, "json")
        || trimmed.starts_with(b"{")
        || trimmed.starts_with(b"[");
    if let Some(text) = short_text(trimmed).filter(|_| !looks_json) {
        let ErrorClass { kind, code } = table.type_and_code(status);
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

/// Whether `haystack` contains `needle` (ASCII lower case), ignoring ASCII
/// case, without making a lower-cased copy.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
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

/// `obj[key]` taken out when it is a non-empty string (no copy made);
/// otherwise left where it is.
fn take_non_empty_str(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    if !matches!(obj.get(key), Some(Value::String(s)) if !s.trim().is_empty()) {
        return None;
    }
    match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
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
    let class = table.type_and_code(status);
    let mut out = Normalized {
        envelope: Envelope {
            kind: class.kind,
            code: class.code,
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
    // The fields used are moved out of the parsed body, not copied.
    if let Some(m) = take_non_empty_str(&mut obj, "message") {
        out.source = Source::Message;
        env.message = m.into();
        let mut details = Value::Null;
        if matches!(obj.get("validation_errors"), Some(Value::Array(_))) {
            if let Some(Value::Array(items)) = obj.remove("validation_errors") {
                let items = items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(s) => {
                            let mut one = Map::new();
                            one.insert("message".to_owned(), Value::String(s));
                            Value::Object(one)
                        }
                        other => other,
                    })
                    .collect();
                details = Value::Array(items);
            }
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
mod tests;
