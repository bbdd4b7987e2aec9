//! Memory per idle keep-alive connection stays bounded: 2,000 connections
//! that each sent one request and went quiet must not cost more than
//! 8 KiB each (vendor patch 12; docs/performance.md, "Memory per idle
//! connection").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{raise_open_files_limit, Gateway, Upstream};

const CONNECTIONS: usize = 2000;
const MAX_KIB_PER_CONNECTION: f64 = 8.0;

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

#[test]
fn idle_keepalive_connections_cost_at_most_8_kib_each() {
    // The gateway inherits the raised limit.
    raise_open_files_limit(3 * CONNECTIONS);
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", "");
    let pid = gw.proc.child.id();
    // Warm up: pools, caches and first-use allocations are not per
    // connection; then let the allocator return what the burst freed.
    for _ in 0..3 {
        let warm: Vec<_> = (0..200).map(|_| one_request(gw.port)).collect();
        drop(warm);
    }
    std::thread::sleep(Duration::from_millis(2000));
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
