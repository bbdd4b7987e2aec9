//! Per-item errors in 2xx bodies, on routes that opt in with
//! `item_errors`: the demo upstream's OCR and address-match pages.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{envelope, get, metric, Gateway, Response, Upstream};

const ROUTES: &str = r#"
[[routes]]
name = "ocr"
path_prefix = "/v1/ocr"
item_errors = ["ocr_data"]

[[routes]]
name = "address_match"
path_prefix = "/v1/address/match"
item_errors = ["match_data"]

[[routes]]
name = "flat_errors"
path_prefix = "/errors/flat"
item_errors = ["items"]

[[routes]]
name = "drip"
path_prefix = "/drip"
item_errors = ["items"]

[[routes]]
name = "reset"
path_prefix = "/reset"
item_errors = ["items"]
"#;

/// The body as the upstream sends it, straight from the upstream.
fn upstream_json(up: &Upstream, path: &str) -> Value {
    get(up.port, path).expect("upstream").json()
}

/// A rewritten response: exact length, no encoding, the count header.
fn rewritten(r: &Response, failed: u64) -> Value {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-item-errors"),
        Some(failed.to_string().as_str()),
        "{r:?}"
    );
    assert!(r.header("content-encoding").is_none(), "{r:?}");
    assert!(!r.chunked, "a rewritten body has a length: {r:?}");
    let len: usize = r.header("content-length").expect("length").parse().unwrap();
    assert_eq!(len, r.body.len());
    r.json()
}

/// The OCR page: the failed item gets one canonical error, every other
/// item and member is the upstream's.
fn assert_ocr(v: &Value, upstream: &Value, request_id: &str) {
    let items = v["ocr_data"].as_array().expect("ocr_data");
    let original = upstream["ocr_data"].as_array().unwrap();
    assert_eq!(items[0], original[0], "a successful item is untouched");
    assert_eq!(items[2], original[2]);
    assert_eq!(
        items[1],
        json!({"document_id": "d2", "data": null, "error": {
            "type": "item_error", "code": "invalid_doc", "message": "multiple people",
            "request_id": request_id, "details": null}})
    );
    assert_eq!(
        v["request_id"], upstream["request_id"],
        "other members kept"
    );
    assert_eq!(v["pad"], upstream["pad"]);
}

#[test]
fn both_seed_pages_are_rewritten() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", ROUTES);
    let mut c = gw.connect();

    let r = c.request("GET", "/v1/ocr");
    let v = rewritten(&r, 1);
    let rid = r.header("x-request-id").expect("request id");
    assert_ocr(&v, &upstream_json(&up, "/v1/ocr"), rid);

    let r = c.request("POST", "/v1/address/match");
    let v = rewritten(&r, 1);
    let upstream = upstream_json(&up, "/v1/address/match");
    assert_eq!(v["match_data"][0], upstream["match_data"][0]);
    assert_eq!(v["count"], 2);
    assert_eq!(
        v["match_data"][1],
        json!({"index": 1, "address": "", "similarity_score": null, "error": {
            "type": "validation_error", "code": "invalid_request",
            "message": "Unprocessable Entity: the address has no street",
            "request_id": r.header("x-request-id").unwrap(), "details": {"status": 422}}})
    );

    // gzip, chunked, both: decoded, rewritten, sent plain with a length.
    for query in ["?gzip=1", "?chunked=1", "?gzip=1&chunked=1"] {
        let r = c
            .send(
                "GET",
                &format!("/v1/ocr{query}"),
                &[("accept-encoding", "gzip")],
                b"",
            )
            .unwrap();
        let v = rewritten(&r, 1);
        assert_ocr(
            &v,
            &upstream_json(&up, "/v1/ocr"),
            r.header("x-request-id").unwrap(),
        );
    }
    let text = gw.scrape();
    assert_eq!(
        metric(&text, "tollgate_item_errors_total{route=\"ocr\"}"),
        4.0
    );
    assert_eq!(
        metric(&text, "tollgate_item_errors_total{route=\"address_match\"}"),
        1.0
    );
    assert!(
        !text.contains("tollgate_item_errors_total{route=\"default\"}"),
        "only opted-in routes are exported"
    );
}

#[test]
fn bodies_not_for_rewriting_pass_untouched() {
    let up = Upstream::start();
    let cap = "[errors]\nmax_body_bytes = 2048\n";
    let gw = Gateway::start(up.port, "", &format!("{cap}{ROUTES}"));
    let mut c = gw.connect();
    let untouched = |r: &Response, path: &str| {
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("x-item-errors").is_none(), "{path}: {r:?}");
        let direct = get(up.port, path).unwrap();
        assert_eq!(r.body, direct.body, "{path}: the upstream's bytes");
    };
    // Over the cap (held bytes first, then the rest), plain and chunked,
    // and compressed bytes within it that decode past it.
    for path in [
        "/v1/ocr?pad=5000",
        "/v1/ocr?pad=5000&chunked=1",
        "/v1/ocr?pad=50000&gzip=1",
    ] {
        let r = c.request("GET", path);
        untouched(&r, path);
    }
    let r = c.request("GET", "/v1/ocr?pad=50000&gzip=1");
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "still compressed"
    );
    // The named member is not an array.
    let r = c.request("GET", "/v1/ocr/not-array");
    untouched(&r, "/v1/ocr/not-array");
    // HEAD: untouched headers, no body.
    let r = c.request("HEAD", "/v1/ocr");
    assert_eq!(r.status, 200);
    assert!(r.header("x-item-errors").is_none());
    assert!(r.body.is_empty());
    // Not JSON (an event stream on an opted-in route) still streams.
    let r = c.request("GET", "/drip?n=2&ms=10");
    assert!(r.chunked && r.header("x-item-errors").is_none(), "{r:?}");
    // A route without item_errors: untouched.
    let gw_plain = Gateway::start(up.port, "", "");
    let r = gw_plain.connect().request("GET", "/v1/ocr");
    untouched(&r, "/v1/ocr");
    // Non-2xx on an opted-in route: the envelope, as everywhere.
    let r = c.request("GET", "/errors/flat");
    assert_eq!(r.status, 400);
    assert_eq!(envelope(&r)["code"], "invalid_doc");
    assert!(r.header("x-item-errors").is_none());
}

/// 200 rewritten bodies on one keep-alive connection, mixed with plain
/// ones: each is framed exactly, or the next would not parse.
#[test]
fn many_rewritten_bodies_on_one_connection() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", ROUTES);
    let mut c = gw.connect();
    for i in 0..200 {
        let path = [
            "/v1/ocr",
            "/v1/address/match",
            "/v1/ocr?chunked=1&gzip=1",
            "/hello",
        ][i % 4];
        let r = c.request("GET", path);
        assert_eq!(r.status, 200, "{i} {path}");
        let expected = if path == "/hello" { None } else { Some("1") };
        assert_eq!(r.header("x-item-errors"), expected, "{i} {path}");
        r.json();
    }
}

#[test]
fn rewritten_over_h2c() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", ROUTES);
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-D", "-", "--compressed"])
        .arg(format!(
            "http://127.0.0.1:{}/v1/ocr?gzip=1&chunked=1",
            gw.port
        ))
        .output()
        .expect("run curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.contains("x-item-errors: 1"), "{text}");
    assert!(!text.contains("content-encoding"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length");
    assert_eq!(len.parse::<usize>().unwrap(), body.len());
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    let rid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("request id");
    assert_ocr(&v, &upstream_json(&up, "/v1/ocr"), rid);
}

/// The upstream breaks off while a body is held: nothing has been sent, so
/// the client gets the gateway's 502 envelope, not half a body.
#[test]
fn a_held_body_that_breaks_off_is_a_502_envelope() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", ROUTES);
    let r = gw.connect().request("GET", "/reset?status=200");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(envelope(&r)["code"], "bad_gateway");
    assert!(r.header("x-item-errors").is_none());
}
