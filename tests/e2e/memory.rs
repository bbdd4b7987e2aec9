//! Memory per connection stays bounded: 2,000 connections that each sent
//! one request and went quiet must not cost more than 5 KiB each (vendor
//! patches 12 and 18), 1,000 requests waiting on a slow upstream not more
//! than 19 KiB each (patches 14, 18 and 23), and requests waiting in line for
//! an upstream slot not more than 10 KiB each (patches 17 and 18). The
//! figures with and without them are in docs/performance.md ("Memory per
//! idle keep-alive connection", "Memory per request in flight").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{exclusive, metric, raise_open_files_limit, Gateway, Upstream};

const CONNECTIONS: usize = 2000;
const MAX_KIB_PER_CONNECTION: f64 = 5.0;

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\nUser-Agent: python-requests/2.32.3\r\n\
Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n";

/// Resident memory of a process, exactly (`smaps_rollup`; `status` lags).
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("an Rss line")
}

/// One GET, its whole answer read; the connection stays open.
fn one_request(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&s).write_all(REQUEST).expect("send");
    let mut r = BufReader::new(&s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("body");
    assert!(r.buffer().is_empty());
    s
}

/// A gateway (and its upstream) after three bursts of 200 connections:
/// pools, caches and first-use allocations are not per connection; then 2 s
/// for the allocator to return what the bursts freed.
fn warmed_up_gateway(upstream_extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, upstream_extra, "");
    for _ in 0..3 {
        let warm: Vec<_> = (0..200).map(|_| one_request(gw.port)).collect();
        drop(warm);
    }
    std::thread::sleep(Duration::from_millis(2000));
    (up, gw)
}

/// Fails without vendor patch 18 (6.9 KiB: each connection's task kept
/// room for its handshake, its loop room for a 400 answer, and its socket
/// a write buffer between requests).
#[test]
fn idle_keepalive_connections_cost_at_most_5_kib_each() {
    let _alone = exclusive();
    // The gateway inherits the raised limit.
    raise_open_files_limit(3 * CONNECTIONS);
    let (_up, gw) = warmed_up_gateway("");
    let pid = gw.proc.child.id();
    let before = rss_kib(pid);
    let idle: Vec<_> = (0..CONNECTIONS).map(|_| one_request(gw.port)).collect();
    std::thread::sleep(Duration::from_millis(2000));
    let after = rss_kib(pid);
    let per_connection = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
    assert!(
        per_connection <= MAX_KIB_PER_CONNECTION,
        "{per_connection:.2} KiB per idle connection ({before} KiB before, {after} KiB with {CONNECTIONS} idle)"
    );
    // They are still open and served.
    assert_eq!(idle.len(), CONNECTIONS);
    drop(one_request(gw.port));
    eprintln!("{per_connection:.2} KiB per idle connection");
}

/// 1,000 requests to an upstream that answers after 4 s, sent in tens so
/// the upstream's accept queue never overflows (a dropped SYN is retried
/// after 1 s, the default connect timeout): the gateway's RSS growth per
/// request 2 s later, and the connections, still waiting.
fn rss_growth_per_slow_request(gw: &Gateway) -> (f64, Vec<TcpStream>) {
    const SLOW: &[u8] =
        b"GET /slow?ms=4000 HTTP/1.1\r\nHost: t\r\nUser-Agent: python-requests/2.32.3\r\n\
Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n";
    let pid = gw.proc.child.id();
    let before = rss_kib(pid);
    let waiting: Vec<TcpStream> = (0..SLOW_REQUESTS)
        .map(|i| {
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
            (&s).write_all(SLOW).expect("send");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let after = rss_kib(pid);
    eprintln!("{before} KiB before, {after} KiB with {SLOW_REQUESTS} requests");
    let per_request = after.saturating_sub(before) as f64 / SLOW_REQUESTS as f64;
    (per_request, waiting)
}

const SLOW_REQUESTS: usize = 1000;

/// Requests in flight each hold their own state, an upstream connection
/// and what their heads were read into; not a 4 KiB read buffer for the
/// request head or for the upstream's answer while it is awaited (vendor
/// patch 14), nor tokio's channels between the request's two halves
/// (patch 23). Fails without patch 23 (20.2 KiB) and without patch 18
/// (28.2 KiB).
#[test]
fn requests_in_flight_cost_at_most_19_kib_each() {
    const MAX_KIB_PER_REQUEST: f64 = 19.0;
    let _alone = exclusive();
    raise_open_files_limit(4 * SLOW_REQUESTS);
    // Every one of them in flight at once, none waiting for a slot.
    let (_up, gw) = warmed_up_gateway(&format!("max_in_flight = {SLOW_REQUESTS}"));
    let (per_request, waiting) = rss_growth_per_slow_request(&gw);
    // Every one of them is answered.
    for s in &waiting {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = [0u8; 12];
        (&*s).read_exact(&mut head).expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    eprintln!("{per_request:.2} KiB per request in flight");
    assert!(
        per_request <= MAX_KIB_PER_REQUEST,
        "{per_request:.2} KiB per request in flight"
    );
}

/// A request waiting in line for an `upstream.max_in_flight` slot holds
/// its connection, parsed head and request state, and nothing of the
/// upstream's (no upstream connection, session or channels): with one
/// slot, 999 of the 1,000 wait. Fails without vendor patch 17 (17.7 KiB:
/// the request state kept room for the proxying and ending states) and
/// without patch 18 (13.2 KiB: it kept room for the cache phase and held
/// its arguments twice, and the socket a write buffer).
#[test]
fn requests_waiting_for_a_slot_cost_at_most_10_kib_each() {
    const MAX_KIB_PER_REQUEST: f64 = 10.0;
    let _alone = exclusive();
    raise_open_files_limit(4 * SLOW_REQUESTS);
    let (_up, gw) = warmed_up_gateway("max_in_flight = 1\nqueue_timeout = \"60s\"");
    let (per_request, _waiting) = rss_growth_per_slow_request(&gw);
    eprintln!("{per_request:.2} KiB per request waiting for a slot");
    assert!(
        per_request <= MAX_KIB_PER_REQUEST,
        "{per_request:.2} KiB per request waiting"
    );
    let queued = metric(&gw.scrape(), "tollgate_upstream_queued");
    assert_eq!(queued, (SLOW_REQUESTS - 1) as f64, "all but one wait");
}
