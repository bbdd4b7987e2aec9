//! Pass-through: 2xx bodies untouched, request ids, X-Forwarded-For, h2c.

use std::process::Command;

use crate::harness::{envelope, get, Gateway, Upstream};

#[test]
fn success_bodies_pass_byte_for_byte() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    for n in [0usize, 1, 4096, 1_000_000] {
        let expected = tollgate::demo_upstream::pattern(n);
        let r = c.request("GET", &format!("/bytes?n={n}"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length"),
            Some(n.to_string().as_str()),
            "length kept"
        );
        assert!(r.body == expected, "{n} bytes unchanged");
        let r = c.request("GET", &format!("/bytes?n={n}&chunked=1"));
        assert_eq!(r.status, 200);
        assert!(r.chunked, "chunked kept");
        assert!(r.body == expected, "{n} chunked bytes unchanged");
    }
}

/// The upstream's status line, headers and body come through, next to
/// tollgate's own headers (header names may change case, not content).
#[test]
fn upstream_reason_phrase_and_headers_are_kept() {
    use std::io::{Read, Write};

    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /custom-head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 200 Fine Thanks"), "{raw}");
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    for expected in ["x-upstream-note: kept", "content-type: application/json"] {
        assert!(headers.iter().any(|h| h == expected), "{expected}: {raw}");
    }
    assert!(
        headers.iter().any(|h| h.starts_with("x-request-id: ")),
        "{raw}"
    );
    assert_eq!(body, r#"{"ok":true}"#);
}

/// A streamed 2xx reaches the client as it is produced: the header and each
/// event arrive while the upstream is still writing the rest.
#[test]
fn streamed_bodies_are_not_held_back() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let start = Instant::now();
    let (mut r, mut line) = crate::harness::send_raw_read_status(
        gw.port,
        b"GET /drip?n=4&ms=400 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let header_at = start.elapsed();
    let mut first_event_at = None;
    let mut events = 0;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("data: ") {
            events += 1;
            first_event_at.get_or_insert(start.elapsed());
        }
    }
    let total = start.elapsed();
    let first = first_event_at.expect("events arrived");
    assert_eq!(events, 4);
    assert!(total >= Duration::from_millis(1600), "{total:?}");
    assert!(
        header_at < Duration::from_millis(350),
        "header held back: {header_at:?}"
    );
    assert!(
        first < Duration::from_millis(750),
        "first event held back: {first:?}"
    );
}

#[test]
fn request_ids_are_reused_when_sane_and_replaced_otherwise() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let r = c
        .send("GET", "/echo", &[("x-request-id", "abc-123.x:y_z")], b"")
        .unwrap();
    assert_eq!(r.header("x-request-id"), Some("abc-123.x:y_z"));
    assert_eq!(
        r.json()["headers"]["x-request-id"],
        "abc-123.x:y_z",
        "sent upstream too"
    );

    let r = c
        .send(
            "GET",
            "/echo",
            &[("x-request-id", "bad id with spaces")],
            b"",
        )
        .unwrap();
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(id.starts_with("req_"), "{id}");
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());

    let r = c.request("GET", "/echo");
    let id = r.header("x-request-id").unwrap();
    assert!(id.starts_with("req_") && id.len() == 30, "{id}");
}

#[test]
fn x_forwarded_for_is_appended() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let r = c.request("GET", "/echo");
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
    let r = c
        .send("GET", "/echo", &[("x-forwarded-for", "203.0.113.7")], b"")
        .unwrap();
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
}

/// Hop-by-hop headers end at the gateway (vendor/PATCHES.md, 22 finds
/// them in one pass over the names): the upstream sees none of those the
/// client sent, wherever they were among its headers, and all the others.
#[test]
fn hop_by_hop_headers_stop_at_the_gateway() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let hop_by_hop = [
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ("Connection", "keep-alive"),
    ];
    let end_to_end = [("X-Before", "1"), ("Accept", "*/*"), ("X-After", "2")];
    for split in [0, 1, 3] {
        let sent: Vec<(&str, &str)> = end_to_end[..split]
            .iter()
            .chain(&hop_by_hop)
            .chain(&end_to_end[split..])
            .copied()
            .collect();
        let r = c.send("GET", "/echo", &sent, b"").unwrap();
        assert_eq!(r.status, 200);
        let seen = &r.json()["headers"];
        for (name, value) in hop_by_hop {
            assert_ne!(
                seen[name.to_ascii_lowercase()],
                value,
                "{name} passed: {seen}"
            );
            // Nor does the gateway send one of its own in its place.
            let lower = name.to_ascii_lowercase();
            assert!(seen.get(&lower).is_none(), "{name} sent: {seen}");
        }
        for (name, value) in end_to_end {
            assert_eq!(
                seen[name.to_ascii_lowercase()],
                value,
                "{name} lost: {seen}"
            );
        }
    }
}

/// tollgate replaces `X-Forwarded-For` and `X-Request-Id` in Pingora's
/// case-preserving request header (vendor/PATCHES.md, 3): the values and
/// the original-case map must stay in step, or Pingora panics writing the
/// request. Repeated lines in mixed case are the awkward input.
#[test]
fn repeated_mixed_case_forwarding_headers_are_merged() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let sent = [
        ("X-FORWARDED-FOR", "198.51.100.1"),
        ("x-forwarded-for", "203.0.113.7"),
        ("X-Request-ID", "first"),
        ("x-request-id", "second"),
        ("X-Custom", "kept"),
    ];
    for _ in 0..2 {
        let r = c.send("GET", "/echo", &sent, b"").unwrap();
        assert_eq!(r.status, 200);
        let seen = &r.json()["headers"];
        assert_eq!(
            seen["x-forwarded-for"],
            "198.51.100.1, 203.0.113.7, 127.0.0.1"
        );
        assert_eq!(seen["x-custom"], "kept");
        // The first sane id is reused, once, both ways.
        assert_eq!(seen["x-request-id"], "first");
        assert_eq!(r.header("x-request-id"), Some("first"));
    }
}

#[test]
fn h2c_prior_knowledge_works() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed for the h2c test (.ci/run installs it)");
    }
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/hello", gw.port))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-D", "-"])
        .arg(format!("http://127.0.0.1:{}/errors/validation", gw.port))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 422"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["error"]["code"], "invalid_request");
}

/// Upstream connections are pooled: sequential requests, on one client
/// connection or several in turn, reuse one upstream connection (vendor
/// patch 8 checks a pooled connection's peer from its cached address).
#[test]
fn upstream_connections_are_reused() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    assert_eq!(gw.connect().request("GET", "/hello").status, 200);
    let before = up.connections_seen();
    for _ in 0..5 {
        let mut c = gw.connect();
        for _ in 0..6 {
            assert_eq!(c.request("GET", "/hello").status, 200);
        }
    }
    let opened = up.connections_seen() - before;
    // One for the second `/stats`; none for the 30 proxied requests.
    assert_eq!(
        opened,
        1,
        "30 sequential requests opened {} upstream connections",
        opened - 1
    );
}

/// An upstream's `Connection` header decides whether its connection goes
/// back to the pool. The demo upstream leaves its side open, so a
/// connection pooled against its word would be reused. (A `Keep-Alive:
/// timeout=N` from the upstream does not shorten the pool's own idle
/// timeout, as with NGINX.)
#[test]
fn an_upstreams_connection_header_decides_reuse() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    // New upstream connections for three requests in a row.
    let mut opened = |path: &str| {
        let before = up.connections_seen();
        for _ in 0..3 {
            assert_eq!(c.request("GET", path).status, 200);
        }
        // Less the one `/stats` itself opens.
        up.connections_seen() - before - 1
    };
    assert_eq!(opened("/reuse-hint"), 1, "HTTP/1.1 default: reused");
    // The first takes the pooled connection, which its answer closes.
    assert_eq!(
        opened("/reuse-hint?connection=close"),
        2,
        "close: not reused"
    );
    let keep = "/reuse-hint?connection=keep-alive&keep_alive=timeout=1";
    assert_eq!(opened(keep), 1, "keep-alive: reused");
}

/// HTTP/1.1 pipelining (RFC 9112 §9.3.2): requests sent back to back in one
/// write are all answered, in order, and the connection stays open.
/// Pingora's default answers the first and closes.
#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: t\r\nuser-agent: pipe\r\n\r\n");
    let burst = [
        get("/one"),
        "POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello".to_string(),
        get("/errors/flat"),
        get("/two"),
    ]
    .concat();
    let first = c.raw(burst.as_bytes()).expect("first answer");
    assert_eq!(first.json()["path"], "/one");
    let echo = c.read().expect("second answer");
    assert_eq!(echo.json()["body_len"], 5);
    let error = c.read().expect("third answer");
    assert_eq!(error.status, 400);
    assert_eq!(envelope(&error)["code"], "invalid_doc");
    let last = c.read().expect("fourth answer");
    assert_eq!(last.json()["path"], "/two");
    // Still open for more.
    assert_eq!(c.request("GET", "/three").status, 200);
}

/// `upstream.keepalive_pool_size` bounds the idle upstream connections
/// kept: after 8 requests in flight at once, a pool of 3 keeps 3, so the
/// next 8 at once open 5 new connections.
#[test]
fn the_upstream_pool_keeps_at_most_its_size() {
    const AT_ONCE: u64 = 8;
    const POOL: u64 = 3;
    let up = Upstream::start();
    let gw = Gateway::start(up.port, &format!("keepalive_pool_size = {POOL}"), "");
    let burst = || {
        let port = gw.port;
        let slow: Vec<_> = (0..AT_ONCE)
            .map(|_| std::thread::spawn(move || get(port, "/slow?ms=400").expect("a slow answer")))
            .collect();
        for s in slow {
            assert_eq!(s.join().expect("a request").status, 200);
        }
    };
    burst();
    let before = up.connections_seen();
    burst();
    // One more for the second `/stats`.
    let opened = up.connections_seen() - before - 1;
    assert_eq!(opened, AT_ONCE - POOL, "the second burst opened {opened}");
}

/// An upstream that answers each request on a connection with a kept-alive
/// 200, then closes the connection 100 ms later, as an upstream with a
/// short keep-alive timeout does. Returns its port and a count of the
/// connections it accepted.
fn closing_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut conn = reader.into_inner();
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                std::thread::sleep(std::time::Duration::from_millis(100));
                // Dropped: closed while the gateway keeps it idle.
            });
        }
    });
    (port, accepted)
}

/// An idle upstream connection that the upstream closed is never reused,
/// and is closed on the gateway's side too within a few seconds, with no
/// request to notice it (vendor patch 15 keeps idle connections without a
/// task watching each; one sweep a second checks them all).
#[test]
fn an_idle_upstream_connection_the_upstream_closed_is_dropped() {
    use std::sync::atomic::Ordering;
    const AT_ONCE: u64 = 6;
    let (upstream, accepted) = closing_upstream();
    let gw = Gateway::start(upstream, "", "");
    let open_fds = || crate::harness::metric(&gw.scrape(), "process_open_fds");
    let before = open_fds();
    let port = gw.port;
    let burst: Vec<_> = (0..AT_ONCE)
        .map(|_| std::thread::spawn(move || get(port, "/again").expect("an answer").status))
        .collect();
    for r in burst {
        assert_eq!(r.join().expect("a request"), 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), AT_ONCE);
    // The upstream closes them after 100 ms; the gateway lets them go.
    crate::harness::eventually(
        std::time::Duration::from_secs(5),
        crate::harness::POLL,
        || format!("open descriptors back to {before} (now {})", open_fds()),
        || (open_fds() <= before).then_some(()),
    );
    // The next request goes out on a new connection and gets its 200.
    assert_eq!(get(gw.port, "/again").expect("an answer").status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), AT_ONCE + 1);
}

/// Large uploads arrive whole, with a length and chunked: many more body
/// pieces than the pipe between the request's two halves holds at once
/// (4, vendor patch 23).
#[test]
fn large_uploads_stream_through_whole() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let mut c = gw.connect();
    let body = vec![b'x'; 8 << 20];
    let r = c.send("POST", "/echo", &[], &body).expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 8 << 20);

    let mut raw = b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'y'; 30_000];
    for _ in 0..100 {
        raw.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = c.raw(&raw).expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 100 * 30_000);
}

/// FNV-1a over `bytes`, continuing from `hash`: what the slow reader
/// reports of the bytes it got, so that order and content are checked.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// An upstream with a small receive window that reads a request body
/// slowly and answers with how many bytes came (and their FNV-1a hash in
/// `x-body-fnv`): the gateway's writes to it block while the client's
/// bytes keep coming.
fn slow_reading_upstream() -> u16 {
    use std::io::{Read, Write};
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("a small window");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(16).expect("listen");
    let listener: std::net::TcpListener = socket.into();
    let port = listener.local_addr().expect("an address").port();
    crate::harness::serve_heads(listener, |mut reader, head| {
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut got = 0;
        let mut hash = FNV_OFFSET;
        let mut buf = [0u8; 8192];
        while got < length {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got += n;
                    hash = fnv1a(hash, &buf[..n]);
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        let body = got.to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nx-body-fnv: {hash:x}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = reader.get_mut().write_all(answer.as_bytes());
    });
    port
}

/// An upload to an upstream that reads slowly arrives whole and in order:
/// the pipe from the request's downstream half to its upstream half fills,
/// and the downstream half waits for room in it (vendor patch 23).
#[test]
fn an_upload_to_a_slow_reader_waits_for_room_and_arrives_whole() {
    let gw = Gateway::start(slow_reading_upstream(), "", "");
    let mut c = gw.connect();
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let r = c.send("POST", "/slow", &[], &body).expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_text(), (4usize << 20).to_string());
    let sent = format!("{:x}", fnv1a(FNV_OFFSET, &body));
    assert_eq!(
        r.header("x-body-fnv"),
        Some(sent.as_str()),
        "the same bytes in order"
    );
}

/// An upstream that answers an upgrade (a WebSocket's: the only kind the
/// gateway forwards) with 101 and then sends back every byte it gets until
/// the gateway stops sending, then closes.
fn echoing_upgrade_upstream() -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("an address").port();
    crate::harness::serve_heads(listener, |mut reader, _head| {
        let mut conn = reader.get_ref().try_clone().expect("a clone");
        let _ = conn.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        let _ = std::io::copy(&mut reader, &mut conn);
    });
    port
}

/// An upgraded connection carries bytes both ways, many pieces of them,
/// through the pipes between the request's two halves (vendor patch 23),
/// and ends when the client stops sending: the gateway then closes it.
/// (It stalls if taking a task from a pipe does not wake its sender.)
#[test]
fn an_upgraded_connection_carries_bytes_both_ways_until_closed() {
    use std::io::{Read, Write};
    let gw = Gateway::start(echoing_upgrade_upstream(), "", "");
    let (mut reader, status_line) = crate::harness::send_raw_read_status(
        gw.port,
        b"GET /pipe HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(status_line.starts_with("HTTP/1.1 101"), "{status_line}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).expect("the 101's head");
    }
    let sent: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = reader.get_ref().try_clone().expect("a clone");
    let to_send = sent.clone();
    let sender = std::thread::spawn(move || {
        for piece in to_send.chunks(10_000) {
            writer.write_all(piece).expect("send");
        }
        writer
    });
    let mut echoed = vec![0u8; sent.len()];
    reader.read_exact(&mut echoed).expect("every byte back");
    assert!(echoed == sent, "the same bytes in the same order");
    // The client stops sending; the upgraded connection ends there.
    let writer = sender.join().expect("the sender");
    writer
        .shutdown(std::net::Shutdown::Write)
        .expect("end the sending side");
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .expect("the end, not a timeout");
    assert!(
        rest.is_empty(),
        "nothing after the echo: {} bytes",
        rest.len()
    );
}
