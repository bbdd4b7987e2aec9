//! Facing clients (docs/security.md): requests whose framing a server
//! behind the gateway could read differently are refused, and the admin
//! listener's one mutating endpoint answers loopback peers only.

use std::io::{Read, Write};
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

/// A raw connection that sends `bytes` and reads whatever comes back until
/// the gateway closes it (or `within` passes).
fn exchange(port: u16, bytes: &[u8], within: Duration) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(within)).ok();
    let start = std::time::Instant::now();
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (out, start.elapsed())
}

/// The status and the envelope's code of a raw answer.
fn status_and_code(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn slow_heads_are_cut_with_408_while_others_are_served() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "header_timeout = \"1s\"", "", "");
    let slow = 200;
    let started = std::time::Instant::now();
    let mut conns: Vec<TcpStream> = (0..slow)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
            // A head begun and never finished (slowloris).
            s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            s
        })
        .collect();
    // Meanwhile another client is served at once.
    let mut probe = gw.connect();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        assert_eq!(probe.request("GET", "/hello").status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &mut conns {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert_eq!(status_and_code(&out), (408, "http_408".into()));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "all {slow} cut near the 1 s deadline, took {took:?}"
    );
    let scraped = gw.scrape();
    let series = "tollgate_client_errors_total{kind=\"header_timeout\"}";
    assert_eq!(metric(&scraped, series), f64::from(slow));
}

#[test]
fn idle_connections_are_closed_silently_after_the_keepalive_timeout() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "keepalive_timeout = \"1s\"", "", "");
    let mut c = gw.connect();
    // Ask for longer with Keep-Alive: the server's timeout still holds.
    let r = c
        .send("GET", "/hello", &[("keep-alive", "timeout=600")], b"")
        .expect("an answer");
    assert_eq!(r.status, 200);
    assert_closed_silently_after_a_second(c);
}

/// A fresh connection that sends nothing is closed after the keep-alive
/// timeout too, though the gateway also listens for cleartext HTTP/2 on
/// it (vendor patch 20: the wait for the HTTP/2 preface was unbounded).
#[test]
fn a_connection_that_never_sends_is_closed_after_the_keepalive_timeout() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "keepalive_timeout = \"1s\"\nh2c = true", "", "");
    assert_closed_silently_after_a_second(gw.connect());
}

/// A whole HTTP/1 request shorter than the HTTP/2 preface (24 bytes) is
/// answered at once (vendor patch 20: it waited for the preface's length).
#[test]
fn a_request_shorter_than_the_http2_preface_is_answered() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "h2c = true", "", "");
    let request = b"GET /hello HTTP/1.0\r\n\r\n";
    assert!(request.len() < 24);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(request).expect("send");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// The gateway closes `c` without a word, about a second (a 1 s
/// `keepalive_timeout`) after it went quiet.
fn assert_closed_silently_after_a_second(c: Conn) {
    let (rest, idle) = exchange_after(c, Duration::from_secs(5));
    assert!(rest.is_empty(), "closed without a word: {rest:?}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?}"
    );
}

/// Wait on an open connection until the gateway closes it.
fn exchange_after(c: Conn, within: Duration) -> (Vec<u8>, Duration) {
    let mut s = c.into_stream();
    s.set_read_timeout(Some(within)).ok();
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (out, start.elapsed())
}

#[test]
fn oversized_and_malformed_heads_get_the_envelope_and_reach_nothing() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let requests = up.requests_seen();
    let big = [
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ".as_slice(),
        &[b'a'; 70_000],
        b"\r\n\r\n",
    ]
    .concat();
    let (out, _) = exchange(gw.port, &big, Duration::from_secs(5));
    assert_eq!(status_and_code(&out), (431, "http_431".into()));

    let malformed: [&[u8]; 7] = [
        b"GET /hello HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for req in malformed {
        let (out, _) = exchange(gw.port, req, Duration::from_secs(5));
        let shown = String::from_utf8_lossy(req);
        assert_eq!(
            status_and_code(&out),
            (400, "bad_request".into()),
            "{shown:?}"
        );
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(text.contains("x-request-id: req_"), "{shown:?}: {text}");
        assert!(text.contains("connection: close"), "{shown:?}: {text}");
        assert!(!text.contains("pingora"), "{shown:?}: {text}");
    }
    // A chunk size that is not a number: the head may have gone upstream
    // (the body is held back), never a whole request.
    let bad_chunk = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    let (out, _) = exchange(gw.port, bad_chunk, Duration::from_secs(5));
    assert_eq!(status_and_code(&out), (400, "bad_request".into()));

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.requests_seen(),
        requests,
        "no request reached the upstream whole"
    );
    let scraped = gw.scrape();
    let kind = |k: &str| {
        metric(
            &scraped,
            &format!("tollgate_client_errors_total{{kind=\"{k}\"}}"),
        )
    };
    assert_eq!(kind("header_too_large"), 1.0);
    assert_eq!(kind("malformed"), 8.0);
    let log = gw.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("\"target\":\"tollgate::access\""))
        .filter(|l| l.contains("\"status\":400") || l.contains("\"status\":431"))
        .count();
    assert_eq!(lines, 9, "one access line each:\n{log}");
}

/// Debian's slowhttptest in slowloris mode: 300 connections that send a
/// header line a second and never finish. Each is cut at the head deadline
/// (the tool reports no open connection left well before its run ends),
/// and a probe client is served promptly throughout.
#[test]
fn slowhttptest_slowloris_is_cut_and_others_are_served() {
    let up = Upstream::start();
    let gw = Gateway::start_with(up.port, "header_timeout = \"2s\"", "", "");
    let dir = crate::harness::TempDir::new();
    let prefix = dir.0.join("slowloris");
    let url = format!("http://127.0.0.1:{}/hello", gw.port);
    let attack = std::process::Command::new("slowhttptest")
        .args([
            "-H", "-c", "300", "-r", "150", "-i", "1", "-l", "12", "-p", "2", "-g",
        ])
        .args(["-u", &url, "-o"])
        .arg(&prefix)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("slowhttptest is installed (.ci/run installs it)");
    let mut attack = crate::harness::Proc {
        child: attack,
        log: None,
    };
    let mut worst = Duration::ZERO;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let t = std::time::Instant::now();
        let r = crate::harness::get(gw.port, "/hello").expect("the probe is served");
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        worst < Duration::from_millis(500),
        "a probe waited {worst:?}"
    );
    // The tool stops early once the server has closed all its connections.
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || "slowhttptest still running".into(),
        || attack.child.try_wait().ok().flatten(),
    );
    // Its own record, one row a second: Seconds,Closed,Pending,Connected,...
    let csv = prefix.with_extension("csv");
    let text = std::fs::read_to_string(&csv).expect("the tool's CSV report");
    let rows: Vec<Vec<u64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .filter(|r: &Vec<u64>| r.len() >= 4)
        .collect();
    let peak = rows.iter().map(|r| r[3]).max().unwrap_or(0);
    assert!(peak >= 100, "the attack got connections open: {rows:?}");
    // The tool ends before its 12 s only when no connection is left open.
    let ran = started.elapsed();
    assert!(
        ran < Duration::from_secs(10),
        "every slow connection cut: ran {ran:?}, {rows:?}"
    );
    let closed = rows.last().map(|r| r[1]).unwrap_or(0);
    assert!(closed >= 200, "closed by the gateway: {rows:?}");
    let scraped = gw.scrape();
    let cut = metric(
        &scraped,
        "tollgate_client_errors_total{kind=\"header_timeout\"}",
    );
    assert!(cut >= 100.0, "{cut} counted");
}

/// HTTP/2 (h2c here): the server advertises the configured stream limit
/// and the same header budget as HTTP/1, as nghttp (nghttp2-client) sees
/// them in its SETTINGS.
#[test]
fn http2_settings_carry_the_stream_and_header_limits() {
    let up = Upstream::start();
    let limits = "h2_max_concurrent_streams = 7\nmax_header_bytes = 4096";
    let gw = Gateway::start_with(up.port, limits, "", "");
    let out = std::process::Command::new("nghttp")
        .args(["-nv", &format!("http://127.0.0.1:{}/hello", gw.port)])
        .output()
        .expect("nghttp is installed (.ci/run installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let received = text
        .split("recv SETTINGS frame")
        .nth(1)
        .expect("the server's SETTINGS");
    let received = received
        .split("send SETTINGS frame")
        .next()
        .unwrap_or(received);
    assert!(
        received.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"),
        "{text}"
    );
    assert!(
        received.contains("SETTINGS_MAX_HEADER_LIST_SIZE(0x06):4096"),
        "{text}"
    );
    assert!(text.contains(":status: 200"), "{text}");
}

/// An HTTP/2 rapid-reset flood (CVE-2023-44487): a client opens streams
/// and cancels each at once, as fast as it can. The h2 layer ends that
/// connection (GOAWAY) long before the flood is spent, and another client
/// is served meanwhile.
#[test]
fn an_http2_rapid_reset_flood_ends_its_own_connection() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let port = gw.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sent, ended) = runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        let mut sent = 0u32;
        for _ in 0..100_000 {
            client = match client.ready().await {
                Ok(client) => client,
                Err(_) => break,
            };
            let request = http::Request::get(format!("http://127.0.0.1:{port}/slow?ms=2000"))
                .body(())
                .unwrap();
            match client.send_request(request, true) {
                // Dropping the response cancels the stream (RST_STREAM).
                Ok((response, _)) => drop(response),
                Err(_) => break,
            }
            sent += 1;
            tokio::task::yield_now().await;
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
        (sent, ended.is_ok())
    });
    assert!(ended, "the flooding connection was ended");
    assert!(
        sent < 100_000,
        "ended before the flood was spent ({sent} streams)"
    );
    let series = "tollgate_client_errors_total{kind=\"h2_abuse\"}";
    assert_eq!(metric(&gw.scrape(), series), 1.0, "counted once");
    let t = std::time::Instant::now();
    assert_eq!(gw.connect().request("GET", "/hello").status, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    eprintln!("rapid reset: connection ended after {sent} streams");
}

/// An HTTP/2 CONTINUATION flood (CVE-2024-27316): one request whose header
/// block never ends, sent as raw frames (HEADERS without END_HEADERS, then
/// CONTINUATION after CONTINUATION of valid HPACK fields). The h2 layer
/// ends the connection long before 8 MB of header block, and another
/// client is served meanwhile.
#[test]
fn an_http2_continuation_flood_ends_its_own_connection() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // HPACK: the request's pseudo-headers, indexed (":method: GET",
    // ":scheme: http", ":path: /"), then ":authority: x" as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    // A literal field without indexing with a new name, ~1 KB each.
    let field = |i: u32| {
        let name = format!("x-flood-{i}");
        let mut f = vec![0x00, name.len() as u8];
        f.extend_from_slice(name.as_bytes());
        f.extend_from_slice(&[0x7f, 0x81, 0x07]); // value length 1,000 (7-bit prefix)
        f.extend_from_slice(&[b'a'; 1000]);
        f
    };
    block.extend(field(0));
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(0x4, 0, 0, &[])).unwrap(); // SETTINGS
    s.write_all(&frame(0x1, 0x1, 1, &block)).unwrap(); // HEADERS, END_STREAM only
    let mut sent = 0usize;
    let mut ended = false;
    for i in 1..8_000u32 {
        let continuation = frame(0x9, 0, 1, &field(i));
        if s.write_all(&continuation).is_err() {
            ended = true;
            break;
        }
        sent += continuation.len();
    }
    if !ended {
        // The writes may all fit in socket buffers: the server's answer
        // (GOAWAY, then close) is what ends it.
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut rest = Vec::new();
        ended = s.read_to_end(&mut rest).is_ok() || !rest.is_empty();
    }
    assert!(ended, "the connection was ended");
    assert!(
        sent < 8_000_000,
        "before 8 MB of header block ({sent} bytes)"
    );
    let t = std::time::Instant::now();
    assert_eq!(gw.connect().request("GET", "/hello").status, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    eprintln!("continuation flood: ended after {sent} bytes of CONTINUATION");
}

#[test]
fn connect_is_refused_with_the_envelope() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let requests = up.requests_seen();
    let (out, _) = exchange(
        gw.port,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_and_code(&out), (405, "method_not_allowed".into()));
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.contains("x-request-id: req_"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(up.requests_seen(), requests, "nothing reached the upstream");
}
