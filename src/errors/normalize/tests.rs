//! The dialect table: every upstream shape, plain and compressed, and the
//! bounds.

use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;

use crate::errors::StatusOverride;

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
    let class = t.type_and_code(404);
    assert_eq!((&*class.kind, &*class.code), ("missing", "no_such_thing"));
    assert_eq!(t.type_and_code(400).code, "bad_request");
    assert_eq!(t.type_and_code(451).code, "http_451");
}

#[test]
fn content_types_are_matched_ignoring_case() {
    assert!(contains_ignoring_case("Text/HTML; charset=utf-8", "html"));
    assert!(contains_ignoring_case(
        "application/Problem+JSON",
        "problem+json"
    ));
    assert!(!contains_ignoring_case("application/json", "problem+json"));
    assert!(!contains_ignoring_case("", "json"));
    assert!(contains_ignoring_case("x", ""));
}
