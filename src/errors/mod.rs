//! Errors: every 4xx/5xx leaving the gateway carries one canonical
//! envelope (docs/errors.md), whatever the upstream said and whether the
//! upstream or the gateway made the error.
//!
//! - [`table`]: status → `type`/`code`, with the config's overrides; the
//!   envelope of an error the gateway makes itself.
//! - [`mod@normalize`]: an upstream error body, in any dialect, → the envelope,
//!   losing nothing (unused fields go to `details`).
//! - [`decode`]: `Content-Encoding` undone within a byte bound.
//! - [`collect`]: an upstream error body gathered up to that bound.
//! - [`problem`]: the envelope or RFC 9457 problem details, written from
//!   one view of the error, and the choice by `Accept`.
//! - [`json`]: the JSON writing the envelope and the access log share.

pub mod collect;
pub mod decode;
pub mod items;
pub mod json;
pub mod normalize;
pub mod problem;
pub mod table;

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

pub use collect::CollectedError;
pub use normalize::{normalize, Normalized, Source, UpstreamError};
pub use problem::{negotiate, Details, ErrorFormat, ErrorView};
pub use table::{reason_phrase, ErrorClass, ErrorTable, StatusOverride};

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
    /// Written piece by piece through [`json`] rather than by serializing
    /// a wrapper, which is several times dearer for the same bytes
    /// (`to_json_matches_serde_json` checks they are the same).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len_hint());
        // The status only matters to the problem form.
        self.view(0, false).write(ErrorFormat::Envelope, &mut out);
        out
    }

    /// The body in `format` for a response with `status`;
    /// `from_upstream_problem` when the upstream answered with a problem
    /// (its `type`, `title` and `instance` are then in `details`).
    pub fn to_bytes(
        &self,
        status: u16,
        format: ErrorFormat,
        from_upstream_problem: bool,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len_hint());
        self.view(status, from_upstream_problem)
            .write(format, &mut out);
        out
    }

    fn json_len_hint(&self) -> usize {
        let strings = self.kind.len() + self.code.len() + self.message.len();
        128 + strings + self.request_id.len()
    }

    pub fn view(&self, status: u16, from_upstream_problem: bool) -> ErrorView<'_> {
        ErrorView {
            status,
            kind: &self.kind,
            code: &self.code,
            message: &self.message,
            request_id: &self.request_id,
            details: Details::Value(&self.details),
            from_upstream_problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
