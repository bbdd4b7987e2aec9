//! `upstream.max_in_flight`: requests past it wait for a slot in arrival
//! order, at most `upstream.queue_timeout`, then get a 503 envelope; only
//! the upstream's pace holds a slot (docs/behaviour.md, "Requests in
//! flight to the upstream").
//!
//! Each test takes `exclusive()`: the timing of a queue is only as steady
//! as the machine, and the heavy tests would share it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{spawn, JoinHandle};
use std::time::{Duration, Instant};

use crate::harness::{
    envelope, eventually, exclusive, get, metric, send_raw_read_status, signal, Gateway, Proc,
    Upstream, POLL,
};

const WITHIN: Duration = Duration::from_secs(10);

/// Wait until `tollgate_upstream_queued` reads `n`.
fn wait_queued(gw: &Gateway, n: f64) {
    wait_queued_at(gw.admin, n);
}

/// The same, by the admin port (for another thread).
fn wait_queued_at(admin: u16, n: f64) {
    eventually(
        WITHIN,
        POLL,
        || format!("{n} requests in line"),
        || {
            let scrape = get(admin, "/metrics").ok()?.body_text();
            (metric(&scrape, "tollgate_upstream_queued") == n).then_some(())
        },
    );
}

/// Wait until the upstream has received `n` requests.
fn wait_upstream_saw(up: &Upstream, n: u64) {
    eventually(
        WITHIN,
        POLL,
        || format!("{n} requests upstream"),
        || (up.requests_seen() == n).then_some(()),
    );
}

/// A GET on its own connection and thread: its status and when it ended.
fn get_in_background(port: u16, path: &'static str) -> JoinHandle<(u16, Instant)> {
    spawn(move || {
        let status = get(port, path).expect("an answer").status;
        (status, Instant::now())
    })
}

/// A gateway with one slot (and `extra` `[upstream]` keys), that slot held
/// by a GET of `holder` already at the upstream.
fn one_slot_held(
    extra: &str,
    holder: &'static str,
) -> (Upstream, Gateway, JoinHandle<(u16, Instant)>) {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, &format!("max_in_flight = 1\n{extra}"), "");
    let held = get_in_background(gw.port, holder);
    wait_upstream_saw(&up, 1);
    (up, gw, held)
}

/// One slot, three requests to an upstream that answers after 500 ms: the
/// second and the third wait, and go in arrival order, one after another.
#[test]
fn requests_past_max_in_flight_wait_their_turn_in_order() {
    let _alone = exclusive();
    let (_up, gw, first) = one_slot_held("", "/slow?ms=500");
    let second = get_in_background(gw.port, "/slow?ms=500");
    wait_queued(&gw, 1.0);
    let third = get_in_background(gw.port, "/slow?ms=500");
    wait_queued(&gw, 2.0);
    let ended: Vec<_> = [first, second, third]
        .into_iter()
        .map(|r| r.join().expect("a request"))
        .collect();
    for (n, (status, _)) in ended.iter().enumerate() {
        assert_eq!(*status, 200, "request {n}");
    }
    for n in 1..3 {
        let gap = ended[n].1.duration_since(ended[n - 1].1);
        assert!(
            gap >= Duration::from_millis(450),
            "request {n} ended {gap:?} after the one before it"
        );
    }
    let scrape = gw.scrape();
    assert_eq!(metric(&scrape, "tollgate_upstream_queued"), 0.0);
    assert_eq!(
        metric(&scrape, "tollgate_upstream_queue_timeouts_total"),
        0.0
    );
}

/// One slot, held by a slow request: the next request waits the queue
/// timeout, then gets the gateway's 503 envelope, counted.
#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_a_503_envelope() {
    let _alone = exclusive();
    let (up, gw, holder) = one_slot_held("queue_timeout = \"300ms\"", "/slow?ms=3000");
    let start = Instant::now();
    let r = get(gw.port, "/ok").expect("an answer");
    let waited = start.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    let e = envelope(&r);
    assert_eq!(e["type"], "upstream_error");
    assert_eq!(e["code"], "service_unavailable");
    assert!(
        e["message"].as_str().unwrap_or("").contains("300 ms"),
        "{e:?}"
    );
    assert!(
        (Duration::from_millis(280)..Duration::from_millis(2500)).contains(&waited),
        "answered after {waited:?}"
    );
    assert_eq!(holder.join().expect("the slow request").0, 200);
    let scrape = gw.scrape();
    assert_eq!(
        metric(&scrape, "tollgate_upstream_queue_timeouts_total"),
        1.0
    );
    assert_eq!(metric(&scrape, "tollgate_upstream_queued"), 0.0);
    assert_eq!(up.requests_seen(), 1, "the refused one never left");
}

/// A slot is the upstream's to hold, never a client's: it frees when the
/// response header arrives, however long the body streams; and a request
/// with a body, whose pace is its sender's, takes none.
#[test]
fn streamed_answers_and_request_bodies_hold_no_slot() {
    let _alone = exclusive();
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "max_in_flight = 1\nqueue_timeout = \"200ms\"", "");

    // An answer that streams for 1.5 s after its header.
    let (_streaming, status_line) = send_raw_read_status(
        gw.port,
        b"GET /drip?n=5&ms=300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(get(gw.port, "/ok").expect("an answer").status, 200);

    // A slow request holds the slot; a request with a body goes anyway.
    let holder = get_in_background(gw.port, "/slow?ms=1500");
    wait_upstream_saw(&up, 3);
    let mut c = gw.connect();
    let r = c.send("POST", "/echo", &[], b"a body").expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 6);
    assert_eq!(holder.join().expect("the slow request").0, 200);
    assert_eq!(
        metric(&gw.scrape(), "tollgate_upstream_queue_timeouts_total"),
        0.0
    );
}

/// An upstream that switches protocols on `Upgrade` and then holds the
/// connection open, and answers anything else with a 200.
fn upgrading_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("an address").port();
    crate::harness::serve_heads(listener, |reader, head| {
        let answer: &[u8] = if head.to_ascii_lowercase().contains("upgrade: websocket") {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        };
        let mut conn = reader.into_inner();
        let _ = conn.write_all(answer);
        // Hold an upgraded connection until the client closes it.
        let _ = conn.read(&mut [0u8; 1]);
    });
    port
}

/// An upgraded connection (a WebSocket) frees its slot at the 101: with one
/// slot, the next request does not wait for the upgraded one to end.
#[test]
fn an_upgraded_connection_frees_its_slot_at_the_101() {
    let _alone = exclusive();
    let upstream = upgrading_upstream();
    let gw = Gateway::start(upstream, "max_in_flight = 1\nqueue_timeout = \"300ms\"", "");
    let (ws, status_line) = send_raw_read_status(
        gw.port,
        b"GET /socket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(status_line.starts_with("HTTP/1.1 101"), "{status_line}");
    let r = get(gw.port, "/plain").expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    drop(ws);
}

/// A client that leaves while its request waits in line: the request ends
/// there when its turn comes, the upstream never sees it, and the log
/// holds its access line but no ERROR line.
#[test]
fn a_request_whose_client_left_while_waiting_is_not_sent() {
    let _alone = exclusive();
    let (up, gw, holder) = one_slot_held("", "/slow?ms=1000");
    let mut gone = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    gone.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_queued(&gw, 1.0);
    drop(gone);
    assert_eq!(holder.join().expect("the slow request").0, 200);
    // The next request goes through, on the slot the gone one let go.
    assert_eq!(get(gw.port, "/ok").expect("an answer").status, 200);
    assert_eq!(up.requests_seen(), 2, "the slow one and the last one only");
    // Its access line records it; no ERROR line blames the gateway.
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""target":"tollgate::access""#) && l.contains(r#""status":0"#)),
        "an access line with status 0:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains(r#""level":"ERROR""#)),
        "a client that left is not an error:\n{log}"
    );
    let scrape = gw.scrape();
    assert_eq!(metric(&scrape, "tollgate_upstream_queued"), 0.0);
    assert_eq!(
        metric(
            &scrape,
            r#"tollgate_requests_total{route="default",status="0"}"#
        ),
        1.0
    );
}

/// Requests that waited in line go to the upstream without a system call
/// to check that their clients are still there: their sockets' readiness
/// says nothing arrived since their heads (vendor patch 19). `strace`
/// watches the gateway's reads; without the patch each request's turn
/// starts with a `recvfrom(…, MSG_PEEK|MSG_DONTWAIT)`.
#[test]
fn requests_waiting_in_line_are_sent_without_peeking_at_their_clients() {
    const WAITING: usize = 20;
    let _alone = exclusive();
    let (up, gw, holder) = one_slot_held("", "/slow?ms=3000");
    let trace = std::env::temp_dir().join(format!("tollgate-reads-{}.strace", gw.port));
    // A file left by an earlier run would read as "attached" below.
    let _ = std::fs::remove_file(&trace);
    let mut strace = Proc {
        child: std::process::Command::new("strace")
            .args(["-f", "-e", "trace=recvfrom", "-o"])
            .arg(&trace)
            .args(["-p", &gw.proc.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace (scripts/deps.sh installs it)"),
        log: None,
    };
    // Attached once it has written something (the gateway's threads poll).
    eventually(
        WITHIN,
        POLL,
        || "strace attached".to_string(),
        || {
            let _ = get(gw.admin, "/healthz");
            (std::fs::metadata(&trace).ok()?.len() > 0).then_some(())
        },
    );
    let waiting: Vec<_> = (0..WAITING)
        .map(|_| get_in_background(gw.port, "/ok"))
        .collect();
    wait_queued(&gw, WAITING as f64);
    assert_eq!(holder.join().expect("the slow request").0, 200);
    for w in waiting {
        assert_eq!(w.join().expect("a waiting request").0, 200);
    }
    assert_eq!(up.requests_seen(), WAITING as u64 + 1);
    signal(&strace, "INT");
    strace.child.wait().expect("strace ends");
    let reads = std::fs::read_to_string(&trace).expect("strace's output");
    let _ = std::fs::remove_file(&trace);
    assert!(
        reads.lines().filter(|l| l.contains("recvfrom(")).count() >= WAITING,
        "strace saw the requests read:\n{reads}"
    );
    let peeks = reads.lines().filter(|l| l.contains("MSG_PEEK")).count();
    assert_eq!(peeks, 0, "{WAITING} requests sent from the line:\n{reads}");
}

/// Over HTTP/2 a request waits in line like any other and is answered in
/// its turn; one whose stream the client resets while it waits leaves the
/// line at once and never reaches the upstream.
#[test]
fn http2_streams_wait_their_turn_and_a_reset_one_leaves_the_line() {
    let _alone = exclusive();
    let (up, gw, holder) = one_slot_held("", "/slow?ms=1500");
    let (port, admin) = (gw.port, gw.admin);
    // Polled from a blocking thread, so the client's connection task runs.
    let queued = move |n: f64| tokio::task::spawn_blocking(move || wait_queued_at(admin, n));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let request = |path: &str| {
            http::Request::get(format!("http://127.0.0.1:{port}{path}"))
                .body(())
                .unwrap()
        };
        let mut client = client.ready().await.unwrap();
        let (reset, _) = client.send_request(request("/ok?reset"), true).unwrap();
        let mut client = client.ready().await.unwrap();
        let (kept, _) = client.send_request(request("/ok?kept"), true).unwrap();
        queued(2.0).await.unwrap();
        // Dropping a response future resets its stream.
        drop(reset);
        queued(1.0).await.unwrap();
        kept.await.expect("an answer").status().as_u16()
    });
    assert_eq!(status, 200);
    assert_eq!(holder.join().expect("the slow request").0, 200);
    assert_eq!(up.requests_seen(), 2, "the slow one and the kept one only");
    assert_eq!(metric(&gw.scrape(), "tollgate_upstream_queued"), 0.0);
}

/// `clients` threads, each sending GETs of `path` one after another until
/// `stop` is set; each thread's statuses.
fn load_until(
    port: u16,
    path: &'static str,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<JoinHandle<Vec<u16>>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(get(port, path).map_or(0, |r| r.status));
                }
                statuses
            })
        })
        .collect()
}

/// Runs `clients` clients of `path` through an adaptive gateway of
/// `max_in_flight` slots until `tollgate_upstream_in_flight_limit` meets
/// `wanted`; every answer must be a 200.
fn adaptive_limit_under_load(
    path: &'static str,
    max_in_flight: usize,
    clients: usize,
    mut wanted: impl FnMut(f64) -> bool,
    what: &str,
) {
    let _alone = exclusive();
    let up = Upstream::start();
    let gw = Gateway::start(
        up.port,
        &format!("max_in_flight = {max_in_flight}\nadaptive_in_flight = true"),
        "",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load_until(gw.port, path, clients, &stop);
    let mut seen = Vec::new();
    let met = (|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let limit = metric(&gw.scrape(), "tollgate_upstream_in_flight_limit");
            seen.push(limit);
            if wanted(limit) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    assert!(met, "{what}: the limits seen were {seen:?}");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every answer a 200: {:?}",
        statuses.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
}

/// An upstream that serves one request at a time (5 ms each): slots past
/// a few only make requests wait inside it, so the adaptive limit falls
/// from 64 to about 7 (docs/behaviour.md, "An adaptive limit").
#[test]
fn an_adaptive_limit_falls_in_front_of_a_saturated_upstream() {
    adaptive_limit_under_load(
        "/serial?ms=5",
        64,
        32,
        |limit| (5.0..=16.0).contains(&limit),
        "the limit fell to 5–16",
    );
}

/// An upstream that answers in 50 ms however many wait: every slot adds
/// throughput, so the adaptive limit goes back to `max_in_flight` once its
/// first probe (at 4 slots) has measured the ideal time.
#[test]
fn an_adaptive_limit_keeps_every_slot_for_an_upstream_that_keeps_up() {
    let mut probed = false;
    adaptive_limit_under_load(
        "/slow?ms=50",
        32,
        48,
        move |limit| {
            probed |= limit < 32.0;
            probed && limit == 32.0
        },
        "the limit went back to 32 after the first probe",
    );
}
