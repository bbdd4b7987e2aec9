//! RFC 9457 problem details: chosen by `Accept` or by `errors.format`,
//! for upstream errors and the gateway's own, judged by an RFC 9457 client
//! library (`http-api-problem`) besides our own reading.

use std::process::Command;

use http_api_problem::HttpApiProblem;
use serde_json::{json, Value};

use crate::errors::CASES;
use crate::harness::{envelope, Gateway, Response, Upstream};

const PROBLEM: &str = "application/problem+json";

/// The problem document of a response, read by `http-api-problem`, after
/// the framing checks every error response gets.
fn problem(r: &Response) -> (HttpApiProblem, Value) {
    assert_eq!(r.header("content-type"), Some(PROBLEM), "{r:?}");
    assert!(r.header("content-encoding").is_none(), "{r:?}");
    assert_eq!(r.header("vary"), Some("Accept"), "{r:?}");
    let parsed: HttpApiProblem = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not a problem document ({e}): {}", r.body_text()));
    assert_eq!(
        parsed.status.map(|s| s.as_u16()),
        Some(r.status),
        "status member = HTTP status: {}",
        r.body_text()
    );
    assert!(parsed.type_url.is_some() && parsed.title.is_some() && parsed.detail.is_some());
    (parsed, r.json())
}

#[test]
fn every_dialect_as_a_problem_when_the_client_asks() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    // One keep-alive connection for all of them: the framing must be exact.
    let mut c = gw.connect();
    for case in CASES {
        let path = format!("/errors/{}", case.dialect);
        let accept = [("accept", "application/problem+json, application/json;q=0.9")];
        let r = c
            .send("GET", &path, &accept, b"")
            .unwrap_or_else(|e| panic!("{}: {e}", case.dialect));
        assert_eq!(r.status, case.status, "{}", case.dialect);
        let (p, v) = problem(&r);
        assert_eq!(p.detail.as_deref(), Some(case.message), "{}", case.dialect);
        assert_eq!(v["error_type"], case.kind, "{}", case.dialect);
        assert_eq!(v["code"], case.code, "{}", case.dialect);
        assert!(v["request_id"].is_string(), "{}", case.dialect);
        if case.dialect == "problem" {
            // The upstream's own problem members come back out.
            assert_eq!(
                p.type_url.as_deref(),
                Some("https://example.com/probs/out-of-credit")
            );
            assert_eq!(p.title.as_deref(), Some("You do not have enough credit."));
            assert_eq!(p.instance.as_deref(), Some("/account/12345/msgs/abc"));
            assert_eq!(v["details"], json!({"balance": 30}));
        } else {
            assert_eq!(
                p.type_url.as_deref(),
                Some("about:blank"),
                "{}",
                case.dialect
            );
        }
        // The same request without Accept: the envelope, also with Vary.
        let r = c.send("GET", &path, &[], b"").expect("response");
        assert_eq!(envelope(&r)["code"], case.code);
        assert_eq!(r.header("vary"), Some("Accept"), "{}", case.dialect);
    }
}

#[test]
fn errors_format_sets_the_default_and_accept_still_decides() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "[errors]\nformat = \"problem\"\n");
    let mut c = gw.connect();
    for accept in [None, Some("*/*"), Some("application/*")] {
        let headers: Vec<_> = accept.iter().map(|a| ("accept", *a)).collect();
        let r = c.send("GET", "/errors/validation", &headers, b"").unwrap();
        let (p, v) = problem(&r);
        assert_eq!(
            p.title.as_deref(),
            Some("Unprocessable Entity"),
            "{accept:?}"
        );
        assert_eq!(
            v["details"],
            json!([{"message": "ID is required"}, {"message": "Name must be at most 64 characters"}])
        );
    }
    let r = c
        .send(
            "GET",
            "/errors/validation",
            &[("accept", "application/json")],
            b"",
        )
        .unwrap();
    assert_eq!(envelope(&r)["code"], "invalid_request");
    // HEAD: the problem's headers, no body.
    let r = c.send("HEAD", "/errors/validation", &[], b"").unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.header("content-type"), Some(PROBLEM));
    assert!(r.body.is_empty());
    // Before a request is parsed there is no Accept: the configured form.
    let r = c.raw(b"GET /x HTTP/1.1\r\nhost test\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let (p, v) = problem(&r);
    assert_eq!(p.detail.as_deref(), Some("The request head is malformed."));
    assert_eq!(v["code"], "bad_request");
    // The access line says the same type and code either way.
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"status\":422"))
        .expect("an access line for the 422");
    assert!(
        line.contains("\"error_type\":\"validation_error\""),
        "{line}"
    );
    assert!(
        line.contains("\"error_code\":\"invalid_request\""),
        "{line}"
    );
}

#[test]
fn the_gateways_own_429_and_502_as_problems() {
    let up = Upstream::start();
    let rules = "[[rate_limit.rules]]\nname = \"default\"\nlimit = 1\nperiod = \"1m\"\nburst = 1\n";
    let gw = Gateway::start(up.port, "", rules);
    let mut c = gw.connect();
    let accept = [("accept", PROBLEM)];
    assert_eq!(c.send("GET", "/hello", &accept, b"").unwrap().status, 200);
    let r = c.send("GET", "/hello", &accept, b"").unwrap();
    assert_eq!(r.status, 429);
    let (p, v) = problem(&r);
    assert_eq!(p.title.as_deref(), Some("Too Many Requests"));
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(v["details"]["retry_after"], retry_after);
    assert_eq!(v["error_type"], "rate_limit_error");
    assert!(r.header("x-ratelimit-limit").is_some(), "{r:?}");
    // The same refusal without Accept is the envelope, still with Vary.
    let r = c.send("GET", "/hello", &[], b"").unwrap();
    assert_eq!(envelope(&r)["code"], "rate_limit_exceeded");
    assert_eq!(r.header("vary"), Some("Accept"));

    // Over h2c, framed as curl reads it.
    let p = problem_over_h2c(&gw, "/hello", 429);
    assert_eq!(p.status.map(|s| s.as_u16()), Some(429));

    // 502: nothing listens upstream.
    let _serial = crate::harness::exclusive();
    let dead = crate::harness::free_port();
    let gw = Gateway::start(dead, "connect_timeout = \"500ms\"", "");
    let r = gw.connect().send("GET", "/x", &accept, b"").unwrap();
    assert_eq!(r.status, 502);
    let (p, v) = problem(&r);
    assert_eq!(
        p.detail.as_deref(),
        Some("The upstream could not be reached.")
    );
    assert_eq!(v["code"], "bad_gateway");
}

/// GET `path` over h2c asking for a problem; curl checks the framing.
fn problem_over_h2c(gw: &Gateway, path: &str, status: u16) -> HttpApiProblem {
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-D", "-", "-H"])
        .arg(format!("accept: {PROBLEM}"))
        .arg(format!("http://127.0.0.1:{}{path}", gw.port))
        .output()
        .expect("run curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("HTTP/2 {status}")), "{text}");
    assert!(text.contains(&format!("content-type: {PROBLEM}")), "{text}");
    assert!(text.contains("vary: Accept"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn upstream_problems_over_h2c() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let p = problem_over_h2c(&gw, "/errors/problem", 409);
    assert_eq!(p.instance.as_deref(), Some("/account/12345/msgs/abc"));
}
