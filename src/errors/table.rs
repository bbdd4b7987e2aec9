//! Status → `type`/`code` (the defaults of docs/errors.md, then the
//! config's `errors.by_status`), and the envelope of an error the gateway
//! makes itself.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::problem::{Details, ErrorFormat, ErrorView};

/// `type`/`code` for one status (`[errors.by_status.NNN]`), overriding
/// the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusOverride {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

/// Status → (`type`, `code`): the defaults of docs/errors.md plus the
/// config's overrides.
#[derive(Debug, Clone, Default)]
pub struct ErrorTable {
    overrides: BTreeMap<u16, StatusOverride>,
}

/// An error's `type` and `code`: fixed text for the defaults, owned for
/// an override or a status without a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClass {
    pub kind: Cow<'static, str>,
    pub code: Cow<'static, str>,
}

impl ErrorClass {
    fn new(kind: impl Into<Cow<'static, str>>, code: impl Into<Cow<'static, str>>) -> Self {
        ErrorClass {
            kind: kind.into(),
            code: code.into(),
        }
    }
}

impl ErrorTable {
    pub fn new(overrides: BTreeMap<u16, StatusOverride>) -> Self {
        ErrorTable { overrides }
    }

    pub fn type_and_code(&self, status: u16) -> ErrorClass {
        if let Some(o) = self.overrides.get(&status) {
            return ErrorClass::new(o.kind.clone(), o.code.clone());
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
                return ErrorClass::new("invalid_request_error", format!("http_{status}"))
            }
            _ => return ErrorClass::new("api_error", format!("http_{status}")),
        };
        ErrorClass::new(t, c)
    }

    /// The body of an error the gateway makes itself, in `format`,
    /// appended to `out`: `details` is `{"retry_after":N}` for a 429,
    /// `null` otherwise. Written straight to bytes (no [`super::Envelope`],
    /// no `Value` for the details): a 429 is answered this way for every
    /// refused request.
    pub fn write_gateway_error(
        &self,
        out: &mut Vec<u8>,
        format: ErrorFormat,
        status: u16,
        message: &str,
        request_id: &str,
        retry_after: Option<u64>,
    ) {
        let ErrorClass { kind, code } = self.type_and_code(status);
        let view = ErrorView {
            status,
            kind: &kind,
            code: &code,
            message,
            request_id,
            details: retry_after.map_or(Details::Null, Details::RetryAfter),
            from_upstream_problem: false,
        };
        view.write(format, out);
    }
}

/// The reason phrase for a status, `"Error"` when it has none.
pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Envelope;
    use serde_json::{json, Value};

    const RID: &str = "req_test123";

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
            table.write_gateway_error(
                &mut out,
                ErrorFormat::Envelope,
                status,
                message,
                RID,
                retry_after,
            );
            assert_eq!(&out[..4], b"kept", "appends");
            let ErrorClass { kind, code } = table.type_and_code(status);
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
        table.write_gateway_error(
            &mut out,
            ErrorFormat::Envelope,
            429,
            "Too many",
            RID,
            Some(3),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                "message": "Too many", "request_id": RID, "details": {"retry_after": 3}}})
        );
    }
}
