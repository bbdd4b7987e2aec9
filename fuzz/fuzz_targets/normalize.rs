//! Any upstream error (status, content type, encoding, body bytes) gives
//! a valid envelope whose `request_id` is a string, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::errors::{normalize, ErrorFormat, ErrorTable, Source, UpstreamError};

fuzz_target!(|input: (u16, u8, u8, bool, &[u8])| {
    let (status, ctype, encoding, truncated, body) = input;
    let ctypes = [
        None,
        Some("application/json"),
        Some("application/problem+json"),
        Some("text/html"),
        Some("text/plain"),
    ];
    let encodings = [
        None,
        Some("gzip"),
        Some("deflate"),
        Some("br"),
        Some("gzip, br"),
        Some("identity"),
    ];
    let err = UpstreamError {
        status: 400 + status % 200,
        content_type: ctypes[usize::from(ctype) % ctypes.len()],
        content_encoding: encodings[usize::from(encoding) % encodings.len()],
        body,
        truncated,
    };
    let n = normalize(&err, "req_fuzz", &ErrorTable::default(), 65_536);
    let json: serde_json::Value =
        serde_json::from_slice(&n.envelope.to_json()).expect("the envelope is JSON");
    assert!(json["error"]["request_id"].is_string());
    assert!(json["error"]["message"].is_string());
    let from_problem = n.source == Source::Problem;
    let problem = n.envelope.to_bytes(err.status, ErrorFormat::Problem, from_problem);
    let problem: serde_json::Value =
        serde_json::from_slice(&problem).expect("the problem is JSON");
    assert_eq!(problem["detail"], json["error"]["message"]);
});
