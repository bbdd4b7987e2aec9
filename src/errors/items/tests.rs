use std::io::Write;

use serde_json::{json, Value};

use super::*;

const RID: &str = "req_items1";

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The item rewrite of `body` with the default status table.
fn check_items(body: &str, arrays: &[&str]) -> Option<Checked> {
    check(body.as_bytes(), &names(arrays), RID, &ErrorTable::default())
}

fn run(body: &str, arrays: &[&str]) -> Option<(u64, Value)> {
    let checked = check_items(body, arrays)?;
    let v = serde_json::from_slice(&checked.body).expect("valid JSON out");
    Some((checked.failed, v))
}

/// The seed shapes and their edges: (body, arrays, failed, expected body).
#[test]
fn failed_items_get_one_canonical_error() {
    let cases: Vec<(&str, &[&str], u64, Value)> = vec![
        // OCR: error_code/error_reason, empty strings for success.
        (
            r#"{"request_id":"up-9","ocr_data":[
                {"document_id":"d1","data":{"name":"Ann"},"error_code":"","error_reason":""},
                {"document_id":"d2","data":null,"error_code":"INVALID_DOC","error_reason":"multiple people"}
            ]}"#,
            &["ocr_data"],
            1,
            json!({"request_id":"up-9","ocr_data":[
                {"document_id":"d1","data":{"name":"Ann"},"error_code":"","error_reason":""},
                {"document_id":"d2","data":null,"error":{"type":"item_error","code":"invalid_doc",
                    "message":"multiple people","request_id":RID,"details":null}}
            ]}),
        ),
        // Address match: error_code/error_message, null for success, a
        // status-like code.
        (
            r#"{"match_data":[
                {"index":0,"similarity_score":0.93,"error_code":null,"error_message":null},
                {"index":1,"similarity_score":null,"error_code":"422","error_message":"Unprocessable Entity: no street"}
            ],"count":2}"#,
            &["match_data"],
            1,
            json!({"match_data":[
                {"index":0,"similarity_score":0.93,"error_code":null,"error_message":null},
                {"index":1,"similarity_score":null,"error":{"type":"validation_error","code":"invalid_request",
                    "message":"Unprocessable Entity: no street","request_id":RID,"details":{"status":422}}}
            ],"count":2}),
        ),
        // A numeric code; no message: the code as given.
        (
            r#"{"items":[{"error_code":404},{"error_code":503,"error_reason":"down"}]}"#,
            &["items"],
            2,
            json!({"items":[
                {"error":{"type":"not_found_error","code":"not_found","message":"404","request_id":RID,"details":{"status":404}}},
                {"error":{"type":"upstream_error","code":"service_unavailable","message":"down","request_id":RID,"details":{"status":503}}}
            ]}),
        ),
        // Out-of-range numbers and non-numeric codes are item errors.
        (
            r#"{"items":[{"error_code":200},{"error_code":" Timeout "},{"error_code":true}]}"#,
            &["items"],
            3,
            json!({"items":[
                {"error":{"type":"item_error","code":"200","message":"200","request_id":RID,"details":null}},
                {"error":{"type":"item_error","code":"timeout","message":" Timeout ","request_id":RID,"details":null}},
                {"error":{"type":"item_error","code":"true","message":"true","request_id":RID,"details":null}}
            ]}),
        ),
        // Both messages: the first is the message, the other is kept.
        (
            r#"{"items":[{"error_code":"X","error_message":"first","error_reason":"second","error":"old"}]}"#,
            &["items"],
            1,
            json!({"items":[{"error":{"type":"item_error","code":"x","message":"first","request_id":RID,
                "details":{"error_reason":"second","error":"old"}}}]}),
        ),
        // An empty message falls through to the next; a non-string one is kept.
        (
            r#"{"items":[{"error_code":"E1","error_message":"","error_reason":{"why":1}}]}"#,
            &["items"],
            1,
            json!({"items":[{"error":{"type":"item_error","code":"e1","message":"E1","request_id":RID,
                "details":{"error_reason":{"why":1}}}}]}),
        ),
        // Non-object items, items without error_code, blank codes: untouched.
        (
            r#"{"items":[1,"two",null,[3],{"a":1},{"error_code":"  "},{"error_message":"no code"}]}"#,
            &["items"],
            0,
            json!({"items":[1,"two",null,[3],{"a":1},{"error_code":"  "},{"error_message":"no code"}]}),
        ),
        // A repeated code: one `error`, where the first code was.
        (
            r#"{"items":[{"error_code":"A","x":1,"error_code":"B"}]}"#,
            &["items"],
            1,
            json!({"items":[{"error":{"type":"item_error","code":"a","message":"A","request_id":RID,"details":null},"x":1}]}),
        ),
        // Several arrays named; one of them is not an array.
        (
            r#"{"a":[{"error_code":"E"}],"b":{"error_code":"E"},"c":[{"error_code":"F"}]}"#,
            &["a", "b", "c"],
            2,
            json!({"a":[{"error":{"type":"item_error","code":"e","message":"E","request_id":RID,"details":null}}],
                "b":{"error_code":"E"},
                "c":[{"error":{"type":"item_error","code":"f","message":"F","request_id":RID,"details":null}}]}),
        ),
    ];
    for (body, arrays, failed, expected) in cases {
        let (n, v) = run(body, arrays).unwrap_or_else(|| panic!("not checked: {body}"));
        assert_eq!(n, failed, "{body}");
        assert_eq!(v, expected, "{body}");
    }
}

#[test]
fn bodies_that_are_not_for_rewriting_are_left_alone() {
    for (body, arrays) in [
        (r#"[{"error_code":"E"}]"#, &["items"][..]),
        (r#""a string""#, &["items"]),
        (r#"{"items":{"error_code":"E"}}"#, &["items"]),
        (r#"{"other":[{"error_code":"E"}]}"#, &["items"]),
        (r#"{"items":[{"error_code":"E"}]"#, &["items"]),
        ("not json", &["items"]),
        ("", &["items"]),
    ] {
        assert_eq!(run(body, arrays), None, "{body}");
    }
}

/// Unchanged members keep their bytes: order, number spelling, spacing
/// inside values, escapes; a body with no failure is sent as it came.
#[test]
fn untouched_values_keep_their_bytes() {
    let body = r#"{"z":1.50,"a":"caf\u00e9","items":[{"n":1e2, "keep":[1, 2]},{"error_code":"E","x":0.10}],"m":{"b":1,"a":2}}"#;
    let checked = check_items(body, &["items"]).unwrap();
    let out = String::from_utf8(checked.body).unwrap();
    assert!(
        out.starts_with(
            r#"{"z":1.50,"a":"caf\u00e9","items":[{"n":1e2, "keep":[1, 2]},{"error":{"#
        ),
        "{out}"
    );
    assert!(
        out.ends_with(r#""details":null},"x":0.10}],"m":{"b":1,"a":2}}"#),
        "{out}"
    );
    let clean = r#"{ "items" : [ {"error_code": null} ] }"#;
    let checked = check_items(clean, &["items"]).unwrap();
    assert_eq!(
        (checked.failed, checked.body),
        (0, clean.as_bytes().to_vec())
    );
}

#[test]
fn held_bodies_are_bounded_decoded_and_given_back() {
    let table = ErrorTable::default();
    let arrays = names(&["items"]);
    let body = br#"{"items":[{"error_code":"E"}]}"#;
    // Within the bound, in pieces.
    let mut held = HeldBody::new(None, 64);
    assert_eq!(held.push(&body[..10]), Hold::Held);
    assert_eq!(held.push(&body[10..]), Hold::Held);
    let Finished::Checked(c) = held.finish(&arrays, RID, &table) else {
        panic!("checked")
    };
    assert_eq!(c.failed, 1);
    // Over the bound: everything held comes back at once.
    let mut held = HeldBody::new(None, 16);
    assert_eq!(held.push(&body[..10]), Hold::Held);
    assert_eq!(held.push(&body[10..]), Hold::GiveBack(body.to_vec()));
    // gzip is decoded; its decoded size is bounded too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).unwrap();
    let gz = gz.finish().unwrap();
    let mut held = HeldBody::new(Some("gzip"), 64);
    assert_eq!(held.push(&gz), Hold::Held);
    assert!(matches!(held.finish(&arrays, RID, &table), Finished::Checked(c) if c.failed == 1));
    // Compressed bytes within the bound that decode past it: untouched,
    // still compressed.
    let long = format!(
        r#"{{"items":[{}{{"error_code":"E"}}]}}"#,
        r#"{"error_code":null},"#.repeat(50)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(long.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < long.len() / 4);
    let mut held = HeldBody::new(Some("gzip"), long.len() - 1);
    assert_eq!(held.push(&gz), Hold::Held);
    assert_eq!(held.finish(&arrays, RID, &table), Finished::Untouched(gz));
    // Not JSON: the bytes as held.
    let mut held = HeldBody::new(None, 64);
    let _ = held.push(b"<html>");
    assert_eq!(
        held.finish(&arrays, RID, &table),
        Finished::Untouched(b"<html>".to_vec())
    );
}

#[test]
fn json_media_types() {
    for ct in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
        "application/problem+json",
    ] {
        assert!(is_json_media_type(ct), "{ct}");
    }
    for ct in [
        "text/html",
        "application/jsonl",
        "text/plain; x=application/json",
        "+json",
        "",
    ] {
        assert!(!is_json_media_type(ct), "{ct}");
    }
}

/// A repeated `error_code` gives one `error` member, not one per code
/// (a parse into a map would hide the duplicate, so count in the bytes).
#[test]
fn a_repeated_code_gives_one_error_member() {
    let body = r#"{"items":[{"error_code":"A","x":1,"error_code":"B"}]}"#;
    let checked = check_items(body, &["items"]).unwrap();
    let out = String::from_utf8(checked.body).unwrap();
    assert_eq!(out.matches(r#""error":"#).count(), 1, "{out}");
    assert!(!out.contains("error_code"), "{out}");
}
