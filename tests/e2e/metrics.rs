//! The admin listener: health, readiness, and metrics checked by promtool.

use std::io::Write;
use std::process::{Command, Stdio};

use std::time::Duration;

use crate::harness::{eventually, get, metric as value, Gateway, Upstream, POLL};

/// The first scrape that is `ready` (the request's log phase, which
/// counts it, ends just after its response).
fn scrape_until(gw: &Gateway, ready: impl Fn(&str) -> bool) -> String {
    eventually(
        Duration::from_secs(5),
        POLL,
        || format!("metrics not there:\n{}", gw.scrape()),
        || Some(gw.scrape()).filter(|text| ready(text)),
    )
}

#[test]
fn metrics_count_traffic_and_pass_promtool() {
    let up = Upstream::start();
    let rules = "[[rate_limit.rules]]\nname = \"default\"\nlimit = 3\nperiod = \"1m\"\n\n[[routes]]\nname = \"errors\"\npath_prefix = \"/errors\"\n";
    let gw = Gateway::start(up.port, "", rules);
    assert_eq!(get(gw.admin, "/healthz").unwrap().status, 200);
    assert_eq!(get(gw.admin, "/readyz").unwrap().status, 200);

    let before = gw.scrape();
    assert_eq!(
        value(&before, "tollgate_rate_limited_total{rule=\"default\"}"),
        0.0
    );
    assert_eq!(
        value(
            &before,
            "tollgate_upstream_failures_total{kind=\"connect\"}"
        ),
        0.0
    );

    let mut c = gw.connect();
    assert_eq!(c.request("GET", "/hello").status, 200);
    assert_eq!(c.request("GET", "/errors/html").status, 502);
    assert_eq!(c.request("GET", "/errors/validation").status, 422);
    assert_eq!(c.request("GET", "/hello").status, 429);

    // A request is counted as its log phase ends, just after its response:
    // wait for the last one.
    let last = "tollgate_requests_total{route=\"default\",status=\"429\"} 1\n";
    let text = scrape_until(&gw, |t| t.contains(last));
    assert_eq!(
        value(
            &text,
            "tollgate_requests_total{route=\"default\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_requests_total{route=\"errors\",status=\"502\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_requests_total{route=\"default\",status=\"429\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "tollgate_rate_limited_total{rule=\"default\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_errors_normalized_total{source=\"html\",status=\"502\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_errors_normalized_total{source=\"message\",status=\"422\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "tollgate_rate_limit_keys{rule=\"default\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_request_duration_seconds_count{route=\"errors\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "tollgate_upstream_duration_seconds_count{route=\"errors\"}"
        ),
        2.0
    );
    assert!(text.contains("tollgate_build_info{version=\""));
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs the prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    crate::harness::assert_quiet_success(&out, "promtool");
}

#[test]
fn upstream_failures_are_counted_by_kind() {
    let dead = crate::harness::free_port();
    let gw = Gateway::start(dead, "connect_timeout = \"300ms\"", "");
    assert_eq!(gw.connect().request("GET", "/x").status, 502);
    let text = gw.scrape();
    assert_eq!(
        value(&text, "tollgate_upstream_failures_total{kind=\"connect\"}"),
        1.0
    );
}

#[test]
fn access_log_is_json_without_secrets() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let secret_headers = [
        ("authorization", "Bearer s3cr3t-token"),
        ("x-api-key", "s3cr3t-key"),
        ("cookie", "session=s3cr3t-cookie"),
        ("x-request-id", "log-test-1"),
    ];
    let r = c
        .send(
            "GET",
            "/errors/event?token=s3cr3t-query",
            &secret_headers,
            b"s3cr3t-body",
        )
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(c.request("GET", "/hello").status, 200);
    // The line is written as the request's log phase ends: wait for it.
    eventually(
        Duration::from_secs(5),
        POLL,
        || format!("no line for log-test-1:\n{}", gw.log()),
        || gw.log().contains("\"log-test-1\"").then_some(()),
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = gw.log();
    assert!(!log.contains("s3cr3t"), "a secret was logged:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("\"log-test-1\""))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["path"], "/errors/event");
    assert_eq!(v["status"], 500);
    assert_eq!(v["upstream_status"], 500);
    assert_eq!(v["error_code"], "internal_error");
    assert_eq!(v["error_message"], "Failed to do something");
    assert_eq!(v["upstream_ref"], "c3cc1b5e-5f0a-4b43-9d1c-0a4b1f0e2d7a");
    assert_eq!(v["client_ip"], "127.0.0.1");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 UTC with ms: {ts}"
    );
    assert!(
        !log.contains("\"path\":\"/hello\""),
        "2xx not logged by default"
    );
}

#[test]
fn admin_listener_drops_oversized_requests_and_keeps_serving() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let pid = gw.proc.child.id();
    let rss_kb = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = rss_kb();

    // A head that never ends: cut off after 64 KiB, not buffered forever.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.admin)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nx-filler: ");
    let filler = vec![b'a'; 1 << 20];
    for _ in 0..32 {
        if s.write_all(&filler).is_err() {
            break; // closed by the listener, as it should be
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a 32 MiB head");

    // A 64 MiB body is read through, not kept; the answer still comes.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.admin)).unwrap();
    let n = 64usize << 20;
    write!(
        s,
        "POST /nothing HTTP/1.1\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    for _ in 0..64 {
        s.write_all(&filler).unwrap();
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // A chunk size that would overflow is refused.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.admin)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a bogus chunk");

    assert_eq!(get(gw.admin, "/healthz").unwrap().status, 200);
    let grown = rss_kb().saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}
