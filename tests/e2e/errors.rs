//! Every upstream dialect of docs/errors.md and the gateway's own errors,
//! over HTTP.

use serde_json::json;
use std::time::{Duration, Instant};

use crate::harness::{envelope, Gateway, Upstream};

pub(crate) struct Expect {
    pub dialect: &'static str,
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: &'static str,
}

/// Every dialect of the demo upstream and the envelope it must become.
pub(crate) const CASES: &[Expect] = &[
    Expect {
        dialect: "canonical",
        status: 402,
        kind: "card_error",
        code: "card_declined",
        message: "The card was declined.",
    },
    Expect {
        dialect: "flat",
        status: 400,
        kind: "invalid_request_error",
        code: "invalid_doc",
        message: "Document type is not supported",
    },
    Expect {
        dialect: "flat-code",
        status: 401,
        kind: "authentication_error",
        code: "unauthorized",
        message: "Authentication Error: invalid API key",
    },
    Expect {
        dialect: "validation",
        status: 422,
        kind: "validation_error",
        code: "invalid_request",
        message: "One or more request parameters are invalid.",
    },
    Expect {
        dialect: "event",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Failed to do something",
    },
    Expect {
        dialect: "message",
        status: 403,
        kind: "permission_error",
        code: "forbidden",
        message: "This key cannot read documents.",
    },
    Expect {
        dialect: "problem",
        status: 409,
        kind: "conflict_error",
        code: "conflict",
        message: "Your current balance is 30, but that costs 50.",
    },
    Expect {
        dialect: "other",
        status: 418,
        kind: "invalid_request_error",
        code: "http_418",
        message: "teapot",
    },
    Expect {
        dialect: "text",
        status: 503,
        kind: "upstream_error",
        code: "service_unavailable",
        message: "upstream connect error or disconnect/reset before headers",
    },
    Expect {
        dialect: "html",
        status: 502,
        kind: "upstream_error",
        code: "bad_gateway",
        message: "Bad Gateway",
    },
    Expect {
        dialect: "empty",
        status: 503,
        kind: "upstream_error",
        code: "service_unavailable",
        message: "Service Unavailable",
    },
    Expect {
        dialect: "empty-chunked",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Internal Server Error",
    },
    Expect {
        dialect: "invalid-json",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Internal Server Error",
    },
    Expect {
        dialect: "binary",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Internal Server Error",
    },
    Expect {
        dialect: "gzip",
        status: 400,
        kind: "invalid_request_error",
        code: "invalid_doc",
        message: "Document type is not supported",
    },
    Expect {
        dialect: "deflate",
        status: 400,
        kind: "invalid_request_error",
        code: "invalid_doc",
        message: "Document type is not supported",
    },
    Expect {
        dialect: "br",
        status: 400,
        kind: "invalid_request_error",
        code: "invalid_doc",
        message: "Document type is not supported",
    },
    Expect {
        dialect: "large",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Internal Server Error",
    },
    Expect {
        dialect: "chunked",
        status: 422,
        kind: "validation_error",
        code: "invalid_request",
        message: "Sent in pieces",
    },
    Expect {
        dialect: "close",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Closed when done",
    },
    Expect {
        dialect: "bomb",
        status: 500,
        kind: "api_error",
        code: "internal_error",
        message: "Internal Server Error",
    },
];

#[test]
fn every_dialect_becomes_the_envelope() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    for case in CASES {
        let mut c = gw.connect();
        let r = c
            .send(
                "GET",
                &format!("/errors/{}", case.dialect),
                &[("accept-encoding", "gzip, br")],
                b"",
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.dialect));
        assert_eq!(r.status, case.status, "{}: status kept", case.dialect);
        let e = envelope(&r);
        assert_eq!(e["type"], case.kind, "{}", case.dialect);
        assert_eq!(e["code"], case.code, "{}", case.dialect);
        assert_eq!(e["message"], case.message, "{}", case.dialect);
        let rid = r.header("x-request-id").expect("x-request-id");
        if case.dialect == "event" {
            assert_eq!(e["request_id"], "c3cc1b5e-5f0a-4b43-9d1c-0a4b1f0e2d7a");
        } else if case.dialect == "canonical" {
            assert_eq!(e["request_id"], "up_123");
        } else {
            assert_eq!(e["request_id"], rid, "{}", case.dialect);
        }
        match case.dialect {
            "validation" => assert_eq!(
                e["details"],
                json!([{"message": "ID is required"}, {"message": "Name must be at most 64 characters"}])
            ),
            "problem" => assert_eq!(
                e["details"],
                json!({"type": "https://example.com/probs/out-of-credit", "title": "You do not have enough credit.",
                       "instance": "/account/12345/msgs/abc", "balance": 30})
            ),
            "large" | "bomb" => {
                assert_eq!(e["details"], json!({"truncated": true}), "{}", case.dialect)
            }
            "canonical" => assert_eq!(e["details"], json!({"decline_code": "insufficient_funds"})),
            "other" => assert_eq!(
                e["details"],
                json!({"error": "teapot", "hint": "try coffee"})
            ),
            _ => {}
        }
    }
}

#[test]
fn a_thousand_errors_on_one_connection_all_parse() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let keepalive: Vec<&Expect> = CASES.iter().filter(|c| c.dialect != "close").collect();
    for i in 0..1000 {
        let case = keepalive[i % keepalive.len()];
        let r = c
            .send("GET", &format!("/errors/{}", case.dialect), &[], b"")
            .unwrap_or_else(|e| panic!("request {i} ({}): {e}", case.dialect));
        assert_eq!(r.status, case.status, "request {i}");
        let e = envelope(&r);
        assert_eq!(e["code"], case.code, "request {i}");
    }
}

#[test]
fn head_gets_status_and_headers_without_body() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let r = c.request("HEAD", "/errors/flat");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.is_empty());
    // The connection is still good afterwards.
    let r = c.request("GET", "/errors/message");
    assert_eq!(r.status, 403);
    envelope(&r);
}

#[test]
fn refused_upstream_is_502_within_the_connect_timeout() {
    let _serial = crate::harness::exclusive();
    let dead = crate::harness::free_port();
    let gw = Gateway::start(dead, "connect_timeout = \"500ms\"", "");
    let t = Instant::now();
    let r = gw.connect().request("GET", "/anything");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 502);
    let e = envelope(&r);
    assert_eq!(e["code"], "bad_gateway");
    assert!(
        !e["message"].as_str().unwrap().contains("127.0.0.1"),
        "no internal address"
    );
}

/// A read timeout under a second runs on Pingora's own timer, one of a
/// second or more on tokio's wheel (`src/proxy/server.rs`): either way the
/// slow upstream's request is a 504 in time, and not early.
#[test]
fn slow_upstream_is_504() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    for (read_timeout, at_least, slow_ms) in [("300ms", 300, 3000), ("1s", 1000, 4000)] {
        let gw = Gateway::start(up.port, &format!("read_timeout = \"{read_timeout}\""), "");
        let t = Instant::now();
        let r = gw.connect().request("GET", &format!("/slow?ms={slow_ms}"));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(at_least)
                && took < Duration::from_millis(at_least + 2000),
            "read_timeout {read_timeout}: took {took:?}"
        );
        assert_eq!(r.status, 504, "read_timeout {read_timeout}");
        assert_eq!(envelope(&r)["code"], "gateway_timeout");
    }
}

#[test]
fn reset_and_garbage_are_502() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let r = gw.connect().request("GET", "/garbage");
    assert_eq!(r.status, 502);
    assert_eq!(envelope(&r)["type"], "upstream_error");
    // An error body cut short: the envelope still goes out, well framed.
    let r = gw.connect().request("GET", "/reset?status=500");
    assert_eq!(r.status, 500);
    envelope(&r);
}

#[test]
fn status_table_is_overridable() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.port,
        "",
        "[errors.by_status.403]\ntype = \"access_denied\"\ncode = \"no_entry\"\n",
    );
    let r = gw.connect().request("GET", "/errors/message");
    let e = envelope(&r);
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("access_denied"), Some("no_entry"))
    );
}

#[test]
fn oversized_bodies_are_413_and_never_reach_the_upstream() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "max_request_body_bytes = 1000", "", "");
    let before = up.requests_seen();

    // Declared too large: refused before anything is read or sent.
    let mut c = gw.connect();
    let r = c
        .send("POST", "/echo", &[], &[b'a'; 5000])
        .expect("a response");
    assert_eq!(r.status, 413);
    assert_eq!(envelope(&r)["code"], "payload_too_large");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the unread body makes the connection unusable"
    );

    // Chunked, found too large on the way: held back, then refused.
    let mut c = gw.connect();
    let mut raw = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"258\r\n");
        raw.extend_from_slice(&[b'b'; 600]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = c.raw(&raw).expect("a response");
    assert_eq!(r.status, 413);
    envelope(&r);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.requests_seen(),
        before,
        "the upstream saw no complete request"
    );

    // Within the limit, chunked or not, the whole body arrives.
    let mut c = gw.connect();
    let r = c
        .send("POST", "/echo", &[], &[b'c'; 999])
        .expect("a response");
    assert_eq!(r.json()["body_len"], 999);
    let mut raw = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"12c\r\n");
        raw.extend_from_slice(&[b'd'; 300]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = c.raw(&raw).expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 900);
}
