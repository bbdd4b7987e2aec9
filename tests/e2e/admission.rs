//! `upstream.max_in_flight`: requests past it wait for a slot in arrival
//! order, at most `upstream.queue_timeout`, then get a 503 envelope; only
//! the upstream's pace holds a slot (docs/behaviour.md, "Requests in
//! flight to the upstream").

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread::{sleep, spawn};
use std::time::{Duration, Instant};

use crate::harness::{envelope, get, metric, Gateway, Upstream};

/// Two slots, four requests to an upstream that answers after 600 ms: the
/// first two go at once, the last two wait for them, in arrival order.
#[test]
fn requests_past_max_in_flight_wait_their_turn() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "max_in_flight = 2", "");
    let start = Instant::now();
    let port = gw.port;
    let requests: Vec<_> = (0..4)
        .map(|n| {
            // Arrivals 50 ms apart, so their order is known.
            sleep(Duration::from_millis(50));
            spawn(move || {
                let r = get(port, &format!("/slow?ms=600&n={n}")).expect("an answer");
                (r.status, start.elapsed())
            })
        })
        .collect();
    sleep(Duration::from_millis(300));
    assert_eq!(metric(&gw.scrape(), "tollgate_upstream_queued"), 2.0);
    let done: Vec<_> = requests
        .into_iter()
        .map(|r| r.join().expect("a request"))
        .collect();
    for (n, (status, at)) in done.iter().enumerate() {
        assert_eq!(*status, 200, "request {n}");
        let (earliest, latest) = if n < 2 { (600, 1100) } else { (1200, 2200) };
        assert!(
            (earliest..latest).contains(&(at.as_millis() as u64)),
            "request {n} answered at {at:?}: {done:?}"
        );
    }
    assert!(done[2].1 < done[3].1, "in arrival order: {done:?}");
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
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "max_in_flight = 1\nqueue_timeout = \"300ms\"", "");
    let port = gw.port;
    let holder = spawn(move || get(port, "/slow?ms=2000").expect("an answer").status);
    sleep(Duration::from_millis(200));
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
        (Duration::from_millis(280)..Duration::from_millis(1500)).contains(&waited),
        "answered after {waited:?}"
    );
    assert_eq!(holder.join().expect("the slow request"), 200);
    let scrape = gw.scrape();
    assert_eq!(
        metric(&scrape, "tollgate_upstream_queue_timeouts_total"),
        1.0
    );
    assert_eq!(metric(&scrape, "tollgate_upstream_queued"), 0.0);
    assert_eq!(
        up.requests_seen(),
        1,
        "only the slow one reached the upstream"
    );
}

/// A slot is the upstream's to hold, never a client's: it frees when the
/// response header arrives, however long the body streams; and a request
/// with a body, whose pace is its sender's, takes none.
#[test]
fn streamed_answers_and_request_bodies_hold_no_slot() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "max_in_flight = 1\nqueue_timeout = \"200ms\"", "");

    // An answer that streams for 1.5 s after its header.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /drip?n=5&ms=300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut streaming = BufReader::new(s);
    let mut status_line = String::new();
    streaming.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(get(gw.port, "/ok").expect("an answer").status, 200);

    // A slow request holds the slot; a request with a body goes anyway.
    let port = gw.port;
    let holder = spawn(move || get(port, "/slow?ms=1500").expect("an answer").status);
    sleep(Duration::from_millis(200));
    let mut c = gw.connect();
    let r = c.send("POST", "/echo", &[], b"a body").expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 6);
    assert_eq!(holder.join().expect("the slow request"), 200);
    assert_eq!(
        metric(&gw.scrape(), "tollgate_upstream_queue_timeouts_total"),
        0.0
    );
}

/// A client that leaves while its request waits in line: the request ends
/// there when its turn comes, and the upstream never sees it.
#[test]
fn a_request_whose_client_left_while_waiting_is_not_sent() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "max_in_flight = 1", "");
    let port = gw.port;
    let holder = spawn(move || get(port, "/slow?ms=1000").expect("an answer").status);
    sleep(Duration::from_millis(200));
    let mut gone = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    gone.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    sleep(Duration::from_millis(200));
    assert_eq!(metric(&gw.scrape(), "tollgate_upstream_queued"), 1.0);
    drop(gone);
    assert_eq!(holder.join().expect("the slow request"), 200);
    // The next request goes through, on the slot the gone one let go.
    assert_eq!(get(gw.port, "/ok").expect("an answer").status, 200);
    assert_eq!(up.requests_seen(), 2, "the slow one and the last one only");
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
