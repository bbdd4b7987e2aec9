use serde_json::{json, Value};

use super::*;
use crate::errors::{normalize, ErrorTable, UpstreamError};

const RID: &str = "req_test123";

#[test]
fn accept_decides_by_q_value_and_specificity() {
    use ErrorFormat::{Envelope as E, Problem as P};
    let cases: &[(&str, ErrorFormat, ErrorFormat)] = &[
        // (Accept, with default envelope, with default problem)
        ("application/problem+json", P, P),
        ("application/json", E, E),
        ("*/*", E, P),
        ("", E, P),
        ("text/html", E, P),
        ("application/*", E, P),
        ("application/problem+json, application/json", E, P),
        ("application/problem+json;q=0.9, application/json", E, E),
        ("application/problem+json, application/json;q=0.5", P, P),
        ("application/json;q=0.5, */*", P, P),
        ("application/json;q=0, */*;q=0.1", P, P),
        ("application/problem+json;q=0, */*", E, E),
        ("application/problem+json;q=0, application/json;q=0", E, P),
        ("APPLICATION/Problem+JSON", P, P),
        (
            "  application/problem+json ; Q=1.0 ,application/json;q=0.999",
            P,
            P,
        ),
        ("application/*;q=0.2, application/json;q=0.1", P, P),
        (
            "application/json;charset=utf-8;q=0.3, application/*;q=0.4",
            P,
            P,
        ),
        (
            "application/problem+json;q=1.5, application/json;q=0.1",
            E,
            E,
        ),
        ("application/problem+json;q=abc", E, P),
        (
            "application/problem+json;q=0.1234, application/json;q=0.1",
            E,
            E,
        ),
        (
            "application/json;q=0.5, application/json;q=0.7, application/problem+json;q=0.6",
            E,
            E,
        ),
        ("garbage, ,;;,/", E, P),
        ("text/*, application/problem+json;q=0.001", P, P),
    ];
    for &(accept, with_envelope, with_problem) in cases {
        let lines = [accept.as_bytes()];
        assert_eq!(
            negotiate(lines, E),
            with_envelope,
            "{accept:?} default envelope"
        );
        assert_eq!(
            negotiate(lines, P),
            with_problem,
            "{accept:?} default problem"
        );
    }
    assert_eq!(negotiate(std::iter::empty(), P), P, "no Accept");
    let two_lines = [&b"application/json;q=0.2"[..], b"application/problem+json"];
    assert_eq!(negotiate(two_lines, E), P, "lines are one list");
}

#[test]
fn qvalues_parse_as_rfc_9110_says() {
    let ok = [
        ("0", 0),
        ("1", 1000),
        ("0.5", 500),
        ("0.123", 123),
        ("1.000", 1000),
        ("0.", 0),
        ("1.", 1000),
    ];
    for (s, q) in ok {
        assert_eq!(parse_qvalue(s.as_bytes()), Some(q), "{s}");
    }
    for s in ["", "2", "1.001", "0.1234", "-0", ".5", "0,5", "abc", "01"] {
        assert_eq!(parse_qvalue(s.as_bytes()), None, "{s}");
    }
}

fn upstream(status: u16, content_type: &str, body: &str) -> crate::errors::Normalized {
    let err = UpstreamError {
        status,
        content_type: Some(content_type),
        content_encoding: None,
        body: body.as_bytes(),
        truncated: false,
    };
    normalize(&err, RID, &ErrorTable::default(), 65536)
}

fn problem_of(status: u16, content_type: &str, body: &str) -> Value {
    let n = upstream(status, content_type, body);
    let from_problem = n.source == crate::errors::Source::Problem;
    let bytes = n
        .envelope
        .to_bytes(status, ErrorFormat::Problem, from_problem);
    serde_json::from_slice(&bytes).expect("the problem is JSON")
}

/// Every dialect of docs/errors.md as a problem: the envelope's members
/// under their problem names, an upstream problem's own members back at
/// the top, nothing lost.
#[test]
fn every_dialect_maps_to_a_problem() {
    let json = "application/json";
    let cases: Vec<(u16, &str, &str, Value)> = vec![
        (
            404,
            json,
            r#"{"error":{"type":"not_found_error","code":"no_user","message":"No such user","request_id":"up_1","details":{"id":7}}}"#,
            json!({"type":"about:blank","title":"Not Found","status":404,"detail":"No such user",
                "error_type":"not_found_error","code":"no_user","request_id":"up_1","details":{"id":7}}),
        ),
        (
            401,
            json,
            r#"{"error_code":"401","error_message":"Authentication Error: bad token"}"#,
            json!({"type":"about:blank","title":"Unauthorized","status":401,
                "detail":"Authentication Error: bad token","error_type":"authentication_error",
                "code":"unauthorized","request_id":RID,"details":null}),
        ),
        (
            400,
            json,
            r#"{"error_code":"INVALID_DOC","error_message":"Bad document","doc":3}"#,
            json!({"type":"about:blank","title":"Bad Request","status":400,"detail":"Bad document",
                "error_type":"invalid_request_error","code":"invalid_doc","request_id":RID,
                "details":{"doc":3}}),
        ),
        (
            422,
            json,
            r#"{"message":"Invalid","validation_errors":["ID is required"]}"#,
            json!({"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"Invalid",
                "error_type":"validation_error","code":"invalid_request","request_id":RID,
                "details":[{"message":"ID is required"}]}),
        ),
        (
            500,
            json,
            r#"{"eventID":"c3cc","message":"Failed to do something"}"#,
            json!({"type":"about:blank","title":"Internal Server Error","status":500,
                "detail":"Failed to do something","error_type":"api_error","code":"internal_error",
                "request_id":"c3cc","details":null}),
        ),
        (
            503,
            json,
            r#"{"message":"Down"}"#,
            json!({"type":"about:blank","title":"Service Unavailable","status":503,"detail":"Down",
                "error_type":"upstream_error","code":"service_unavailable","request_id":RID,"details":null}),
        ),
        (
            403,
            "application/problem+json",
            r#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":403,"detail":"Your balance is 30.","instance":"/account/12345/msgs/abc","balance":30}"#,
            json!({"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.",
                "status":403,"detail":"Your balance is 30.","instance":"/account/12345/msgs/abc",
                "error_type":"permission_error","code":"forbidden","request_id":RID,
                "details":{"balance":30}}),
        ),
        (
            409,
            "application/problem+json",
            r#"{"type":"https://example.com/probs/conflict","title":"Already exists","status":409}"#,
            json!({"type":"https://example.com/probs/conflict","title":"Conflict","status":409,
                "detail":"Already exists","error_type":"conflict_error","code":"conflict",
                "request_id":RID,"details":null}),
        ),
        (
            400,
            json,
            r#"{"detail":"odd","flag":true}"#,
            json!({"type":"about:blank","title":"Bad Request","status":400,"detail":"odd",
                "error_type":"invalid_request_error","code":"bad_request","request_id":RID,
                "details":{"detail":"odd","flag":true}}),
        ),
        (
            502,
            "text/plain",
            "upstream is sad",
            json!({"type":"about:blank","title":"Bad Gateway","status":502,"detail":"upstream is sad",
                "error_type":"upstream_error","code":"bad_gateway","request_id":RID,"details":null}),
        ),
        (
            500,
            "text/html",
            "<html>oops</html>",
            json!({"type":"about:blank","title":"Internal Server Error","status":500,
                "detail":"Internal Server Error","error_type":"api_error","code":"internal_error",
                "request_id":RID,"details":null}),
        ),
        (
            418,
            json,
            "",
            json!({"type":"about:blank","title":"I'm a teapot","status":418,"detail":"I'm a teapot",
                "error_type":"invalid_request_error","code":"http_418","request_id":RID,"details":null}),
        ),
    ];
    for (status, content_type, body, expected) in cases {
        assert_eq!(problem_of(status, content_type, body), expected, "{body}");
    }
}

/// The problem keeps every member the envelope has, under its own name.
#[test]
fn problem_and_envelope_say_the_same() {
    let bodies = [
        r#"{"error_code":"INVALID_DOC","error_message":"Bad","x":[1,2]}"#,
        r#"{"message":"m","eventID":42}"#,
        r#"{"title":"t","status":400,"type":7,"instance":{"not":"a string"}}"#,
    ];
    for body in bodies {
        let n = upstream(400, "application/json", body);
        let from_problem = n.source == crate::errors::Source::Problem;
        let envelope: Value = serde_json::from_slice(&n.envelope.to_json()).unwrap();
        let problem: Value =
            serde_json::from_slice(&n.envelope.to_bytes(400, ErrorFormat::Problem, from_problem))
                .unwrap();
        let e = &envelope["error"];
        assert_eq!(problem["error_type"], e["type"], "{body}");
        assert_eq!(problem["code"], e["code"], "{body}");
        assert_eq!(problem["detail"], e["message"], "{body}");
        assert_eq!(problem["request_id"], e["request_id"], "{body}");
        assert_eq!(problem["status"], 400);
        // Non-string type/instance cannot be lifted: they stay in details.
        if body.contains("\"type\":7") {
            assert_eq!(problem["type"], "about:blank");
            assert_eq!(problem["details"]["type"], 7);
            assert_eq!(problem["details"]["instance"], json!({"not": "a string"}));
        }
    }
}

#[test]
fn gateway_errors_in_both_forms() {
    let table = ErrorTable::default();
    let mut problem = Vec::new();
    table.write_gateway_error(
        &mut problem,
        ErrorFormat::Problem,
        429,
        "Too many",
        RID,
        Some(3),
    );
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(
        problem,
        json!({"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Too many",
            "error_type":"rate_limit_error","code":"rate_limit_exceeded","request_id":RID,
            "details":{"retry_after":3}})
    );
    let mut odd = Vec::new();
    table.write_gateway_error(
        &mut odd,
        ErrorFormat::Problem,
        599,
        "quote \" \n",
        RID,
        None,
    );
    let odd: Value = serde_json::from_slice(&odd).unwrap();
    assert_eq!(odd["title"], "Error", "no reason phrase");
    assert_eq!(odd["detail"], "quote \" \n");
    assert_eq!(odd["details"], Value::Null);
}
