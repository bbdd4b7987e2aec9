//! Property test: whatever bytes, status and headers the upstream sends,
//! the normalizer never panics and always yields a valid envelope.

use proptest::prelude::*;
use tollgate::errors::{normalize, ErrorTable, UpstreamError};

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/problem+json".to_string())),
        Just(Some("text/html; charset=utf-8".to_string())),
        Just(Some("text/plain".to_string())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn encoding() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("gzip".to_string())),
        Just(Some("deflate".to_string())),
        Just(Some("br".to_string())),
        Just(Some("gzip, br".to_string())),
        "[ -~]{0,20}".prop_map(Some),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        // JSON-ish text reaches the deeper branches more often.
        "\\{(\"(error|message|error_code|error_message|eventID|validation_errors|detail|title|type|status|details|request_id|code)\":(\"[a-zA-Z ]{0,10}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}|\\{\"error\":\\{\\}\\}),?){0,6}\\}"
            .prop_map(|s| s.into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn always_a_valid_envelope(
        status in 400u16..600,
        ctype in content_type(),
        enc in encoding(),
        body in body(),
        truncated in any::<bool>(),
        max in 1usize..4096,
    ) {
        let err = UpstreamError {
            status,
            content_type: ctype.as_deref(),
            content_encoding: enc.as_deref(),
            body: &body,
            truncated,
        };
        let n = normalize(&err, "req_prop", &ErrorTable::default(), max);
        let v: serde_json::Value = serde_json::from_slice(&n.envelope.to_json()).unwrap();
        let e = v["error"].as_object().unwrap();
        prop_assert_eq!(e.len(), 5);
        for k in ["type", "code", "message", "request_id"] {
            let s = e[k].as_str().unwrap();
            prop_assert!(!s.trim().is_empty(), "{} empty in {}", k, v);
        }
        prop_assert!(e["details"].is_object() || e["details"].is_array() || e["details"].is_null());

        // The same error as a problem: valid JSON that says the same.
        let from_problem = n.source == tollgate::errors::Source::Problem;
        let p: serde_json::Value = serde_json::from_slice(
            &n.envelope.to_bytes(status, tollgate::errors::ErrorFormat::Problem, from_problem),
        )
        .unwrap();
        prop_assert_eq!(&p["status"], &serde_json::json!(status));
        prop_assert_eq!(&p["detail"], &e["message"]);
        prop_assert_eq!(&p["error_type"], &e["type"]);
        prop_assert_eq!(&p["code"], &e["code"]);
        prop_assert_eq!(&p["request_id"], &e["request_id"]);
        prop_assert!(p["type"].is_string() && p["title"].is_string());
    }
}
