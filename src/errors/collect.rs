//! An upstream error body gathered for the normalizer, bounded: past
//! `errors.max_body_bytes` nothing more is kept, the response still goes
//! on, and the envelope says `{"truncated": true}`.

use bytes::Bytes;
use http::HeaderValue;

use super::{normalize, ErrorTable, Normalized, UpstreamError};

/// The body so far: one piece is kept as it came (no copy; an error body
/// usually arrives whole), more are joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Gathered {
    #[default]
    Nothing,
    One(Bytes),
    Joined(Vec<u8>),
}

impl Gathered {
    fn as_slice(&self) -> &[u8] {
        match self {
            Gathered::Nothing => &[],
            Gathered::One(b) => b,
            Gathered::Joined(v) => v,
        }
    }

    fn add(&mut self, piece: Bytes) {
        *self = match std::mem::take(self) {
            Gathered::Nothing => Gathered::One(piece),
            Gathered::One(first) => Gathered::Joined([&first[..], &piece[..]].concat()),
            Gathered::Joined(mut v) => {
                v.extend_from_slice(&piece);
                Gathered::Joined(v)
            }
        };
    }
}

/// An upstream 4xx/5xx whose body is being gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedError {
    status: u16,
    /// Header values are shared, not copied: a clone is a reference count.
    content_type: Option<HeaderValue>,
    content_encoding: Option<HeaderValue>,
    body: Gathered,
    /// Most bytes kept (as received, compressed or not).
    max_body: usize,
    /// More than `max_body` arrived, or the body broke off.
    truncated: bool,
}

impl CollectedError {
    pub fn new(
        status: u16,
        content_type: Option<&HeaderValue>,
        content_encoding: Option<&HeaderValue>,
        max_body: usize,
    ) -> CollectedError {
        CollectedError {
            status,
            content_type: content_type.cloned(),
            content_encoding: content_encoding.cloned(),
            body: Gathered::Nothing,
            max_body,
            truncated: false,
        }
    }

    /// Keep one piece of the body; past the bound the body is dropped
    /// whole (a prefix of a compressed or JSON body is of no use).
    pub fn push(&mut self, piece: Bytes) {
        if self.truncated {
            return;
        }
        if self.body.as_slice().len() + piece.len() > self.max_body {
            self.truncated = true;
            self.body = Gathered::Nothing;
        } else {
            self.body.add(piece);
        }
    }

    /// The body ended before the upstream finished it.
    pub fn broke_off(&mut self) {
        self.truncated = true;
    }

    /// The envelope for what arrived.
    pub fn normalize(&self, request_id: &str, table: &ErrorTable) -> Normalized {
        let err = UpstreamError {
            status: self.status,
            content_type: self.content_type.as_ref().and_then(|v| v.to_str().ok()),
            content_encoding: self.content_encoding.as_ref().and_then(|v| v.to_str().ok()),
            body: self.body.as_slice(),
            truncated: self.truncated,
        };
        normalize(&err, request_id, table, self.max_body)
    }

    pub fn status(&self) -> u16 {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_within_the_bound_is_normalized_whole() {
        let mut c = CollectedError::new(
            422,
            Some(&HeaderValue::from_static("application/json")),
            None,
            64,
        );
        c.push(Bytes::from_static(br#"{"message":"#));
        c.push(Bytes::from_static(br#""bad"}"#));
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.message, "bad");
    }

    #[test]
    fn past_the_bound_nothing_is_kept_and_the_envelope_says_so() {
        let mut c = CollectedError::new(
            500,
            Some(&HeaderValue::from_static("application/json")),
            None,
            8,
        );
        c.push(Bytes::from_static(b"12345"));
        c.push(Bytes::from_static(b"6789"));
        c.push(Bytes::from_static(b"x"));
        assert!(c.body.as_slice().is_empty());
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.details, json!({"truncated": true}));
    }

    #[test]
    fn a_broken_body_is_flagged() {
        let mut c = CollectedError::new(502, None, None, 64);
        c.push(Bytes::from_static(b"{\"message\":\"half"));
        c.broke_off();
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.details, json!({"truncated": true}));
        assert_eq!(c.status(), 502);
    }
}
