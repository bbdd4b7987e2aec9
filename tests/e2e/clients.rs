//! Facing clients (docs/security.md): requests whose framing a server
//! behind the gateway could read differently are refused, and the admin
//! listener's one mutating endpoint answers loopback peers only.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::harness::{envelope, eventually, metric, Conn, Gateway, Upstream, POLL};

/// The access line of a request id, once it is written.
fn access_line(gw: &Gateway, id: &str) -> serde_json::Value {
    let line = eventually(
        Duration::from_secs(5),
        POLL,
        || format!("no access line for {id}:\n{}", gw.log()),
        || {
            gw.log()
                .lines()
                .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
                .map(str::to_string)
        },
    );
    serde_json::from_str(&line).expect("a JSON line")
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_never_forwarded() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let (requests, connections) = (up.requests_seen(), up.connections_seen());

    // A classic CL.TE smuggling attempt: a server that trusts the length
    // would read the second request as the body of the first.
    let mut c = gw.connect();
    let smuggled = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 44\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nhost: t\r\n\r\n";
    let r = c.raw(smuggled).expect("an answer");
    assert_eq!(r.status, 400);
    let e = envelope(&r);
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("Transfer-Encoding"));
    assert_eq!(r.header("connection"), Some("close"));
    let id = r.header("x-request-id").expect("a request id").to_string();
    assert!(
        !r.header("server").unwrap_or("").contains("Pingora"),
        "the framework does not announce itself"
    );

    std::thread::sleep(Duration::from_millis(200));
    // Each look at the upstream's /stats opens one connection of its own.
    assert_eq!(
        up.connections_seen(),
        connections + 1,
        "not even a connection"
    );
    assert_eq!(up.requests_seen(), requests, "nothing reached the upstream");

    let line = access_line(&gw, &id);
    assert_eq!(line["status"], 400);
    assert_eq!(line["error_type"], "invalid_request_error");
    let scraped = gw.scrape();
    assert_eq!(
        metric(&scraped, "tollgate_client_errors_total{kind=\"malformed\"}"),
        1.0
    );
    for kind in [
        "header_timeout",
        "header_too_large",
        "h2_abuse",
        "tls_handshake",
    ] {
        let series = format!("tollgate_client_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&scraped, &series), 0.0, "{kind} exported at zero");
    }

    // Each header alone is fine.
    let mut c = gw.connect();
    let r = c
        .send(
            "POST",
            "/echo",
            &[("transfer-encoding", "chunked")],
            b"3\r\nabc\r\n0\r\n\r\n",
        )
        .expect("an answer");
    assert_eq!(r.json()["body_len"], 3);
}

/// A local address that is not loopback, if this machine has one (a
/// route is enough: no packet is sent).
fn non_loopback_address() -> Option<IpAddr> {
    let probe = UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn reloads_are_accepted_from_loopback_only() {
    let up = Upstream::start();
    let admin_any = "admin_listen = \"0.0.0.0:{ADMIN}\"";
    let gw = Gateway::start_with(up.port, admin_any, "", "");
    // From loopback, as `tollgate reload` sends it: taken.
    let mut c = Conn::open(gw.admin);
    let r = c.send("POST", "/reload", &[], b"").expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body_text());

    let Some(ip) = non_loopback_address() else {
        eprintln!("no non-loopback address on this machine; the unit test in proxy/admin.rs covers the refusal");
        return;
    };
    let stream =
        TcpStream::connect(SocketAddr::new(ip, gw.admin)).expect("connect to the admin port");
    let mut c = Conn::from_stream(stream);
    let r = c.send("POST", "/reload", &[], b"").expect("an answer");
    assert_eq!(r.status, 403);
    assert_eq!(envelope(&r)["code"], "forbidden");
    let r = c.request("GET", "/healthz");
    assert_eq!(r.status, 200, "reads stay open");
    let scraped = gw.scrape();
    assert_eq!(metric(&scraped, "tollgate_admin_refused_total"), 1.0);
    assert_eq!(
        metric(
            &scraped,
            "tollgate_config_reloads_total{result=\"success\"}"
        ),
        1.0,
        "the refused reload did not run"
    );
}
