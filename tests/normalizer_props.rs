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

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An item: any value, or an object that may carry the error members.
fn item() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let code = prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        Just(Some(Value::from(""))),
        Just(Some(Value::from("INVALID_DOC"))),
        Just(Some(Value::from("422"))),
        (0u64..1000).prop_map(|n| Some(Value::from(n))),
        json_value().prop_map(Some),
    ];
    let message = prop_oneof![Just(None), json_value().prop_map(Some)];
    prop_oneof![
        json_value(),
        (
            code,
            message.clone(),
            message,
            proptest::collection::btree_map("[a-z]{1,8}", json_value(), 0..3)
        )
            .prop_map(|(code, error_message, error_reason, rest)| {
                let mut m: serde_json::Map<String, Value> = rest.into_iter().collect();
                for (k, v) in [
                    ("error_code", code),
                    ("error_message", error_message),
                    ("error_reason", error_reason),
                ] {
                    if let Some(v) = v {
                        m.insert(k.to_string(), v);
                    }
                }
                Value::Object(m)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Arbitrary bytes never panic the item rewrite.
    #[test]
    fn item_rewrite_takes_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let arrays = ["items".to_string()];
        let _ = tollgate::errors::items::check(&body, &arrays, "req_prop", &ErrorTable::default());
    }

    /// Arbitrary bodies with arbitrary item arrays: valid JSON out, an item
    /// that has not failed is never changed, a failed one has exactly one
    /// canonical error instead of its error members, the rest is kept.
    #[test]
    fn item_rewrite_keeps_what_has_not_failed(
        items in proptest::collection::vec(item(), 0..8),
        other in json_value(),
    ) {
        use serde_json::Value;
        let bytes = serde_json::to_vec(&serde_json::json!({"items": items, "other": other})).unwrap();
        // Both sides as parsed from bytes (serde_json may read a float one
        // ulp off; the rewrite itself copies the bytes).
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let items = body["items"].as_array().unwrap().clone();
        let arrays = ["items".to_string()];
        let checked = tollgate::errors::items::check(&bytes, &arrays, "req_prop", &ErrorTable::default())
            .expect("an object with an array is checked");
        let out: Value = serde_json::from_slice(&checked.body).expect("valid JSON");
        prop_assert_eq!(&out["other"], &body["other"]);
        let out_items = out["items"].as_array().unwrap();
        prop_assert_eq!(out_items.len(), items.len());
        let mut failed = 0;
        for (before, after) in items.iter().zip(out_items) {
            let code = before.get("error_code");
            let has_failed = before.is_object() && match code {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(_) => true,
            };
            if !has_failed {
                prop_assert_eq!(after, before);
                continue;
            }
            failed += 1;
            let error = after["error"].as_object().expect("an error object");
            prop_assert_eq!(error.len(), 5);
            for k in ["type", "code", "message", "request_id"] {
                prop_assert!(error[k].is_string(), "{} in {}", k, after);
            }
            prop_assert_eq!(&error["request_id"], "req_prop");
            for k in ["error_code", "error_message", "error_reason"] {
                prop_assert!(after.get(k).is_none(), "{} left in {}", k, after);
            }
            for (k, v) in before.as_object().unwrap() {
                if !["error_code", "error_message", "error_reason", "error"].contains(&k.as_str()) {
                    prop_assert_eq!(&after[k], v, "member {} kept", k);
                }
            }
        }
        prop_assert_eq!(checked.failed, failed);
    }
}
