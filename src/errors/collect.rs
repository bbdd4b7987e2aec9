//! An upstream error body gathered for the normalizer, bounded: past
//! `errors.max_body_bytes` nothing more is kept, the response still goes
//! on, and the envelope says `{"truncated": true}`.

use super::{normalize, ErrorTable, Normalized, UpstreamError};

/// An upstream 4xx/5xx whose body is being gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedError {
    status: u16,
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: Vec<u8>,
    /// Most bytes kept (as received, compressed or not).
    max_body: usize,
    /// More than `max_body` arrived, or the body broke off.
    truncated: bool,
}

impl CollectedError {
    pub fn new(
        status: u16,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        max_body: usize,
    ) -> CollectedError {
        CollectedError {
            status,
            content_type: content_type.map(str::to_owned),
            content_encoding: content_encoding.map(str::to_owned),
            body: Vec::new(),
            max_body,
            truncated: false,
        }
    }

    /// Keep one piece of the body; past the bound the body is dropped
    /// whole (a prefix of a compressed or JSON body is of no use).
    pub fn push(&mut self, piece: &[u8]) {
        if self.truncated {
            return;
        }
        if self.body.len() + piece.len() > self.max_body {
            self.truncated = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(piece);
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
            content_type: self.content_type.as_deref(),
            content_encoding: self.content_encoding.as_deref(),
            body: &self.body,
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
        let mut c = CollectedError::new(422, Some("application/json"), None, 64);
        c.push(br#"{"message":"#);
        c.push(br#""bad"}"#);
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.message, "bad");
    }

    #[test]
    fn past_the_bound_nothing_is_kept_and_the_envelope_says_so() {
        let mut c = CollectedError::new(500, Some("application/json"), None, 8);
        c.push(b"12345");
        c.push(b"6789");
        c.push(b"x");
        assert!(c.body.is_empty());
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.details, json!({"truncated": true}));
    }

    #[test]
    fn a_broken_body_is_flagged() {
        let mut c = CollectedError::new(502, None, None, 64);
        c.push(b"{\"message\":\"half");
        c.broke_off();
        let n = c.normalize("req_1", &ErrorTable::default());
        assert_eq!(n.envelope.details, json!({"truncated": true}));
        assert_eq!(c.status(), 502);
    }
}
