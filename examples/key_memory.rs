//! Memory per live rate-limit key, and the `max_keys` bound under a flood
//! of distinct client addresses, measured on the limiter directly.
//!
//! `key_memory N ipv4|ipv6 MAX_KEYS` prints live keys, RSS growth and
//! bytes per key. With N > MAX_KEYS the table must stop at MAX_KEYS (new
//! clients then share the overflow bucket, which is not a key) and RSS must
//! stay within the budget.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use tollgate::client::ClientIpResolver;
use tollgate::rate_limit::{LocalLimiter, RuleMode, RuleSpec};
use tollgate::routes::RequestMatcher;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let v6 = args.next().as_deref() == Some("ipv6");
    let max_keys: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(usize::MAX / 2);
    let rule = RuleSpec {
        name: "flood".into(),
        applies_to: RequestMatcher::any(),
        limit: 100,
        period: Duration::from_secs(60),
        burst: 100,
        mode: RuleMode::Enforce,
        key: Default::default(),
    };
    let resolver = ClientIpResolver::new(vec![], 64);
    let limiter = LocalLimiter::new(vec![rule], max_keys);
    let before = rss_bytes();
    let t = Instant::now();
    for i in 0..n {
        let ip = if v6 {
            // Distinct /64s, as a flood that rotates prefixes would be.
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (u128::from(i) << 64) | 1,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32.wrapping_add(i as u32)))
        };
        limiter.check("GET", "/", &resolver.key(ip));
    }
    let elapsed = t.elapsed();
    let after = rss_bytes();
    let keys = limiter.key_counts()[0];
    let grown = after.saturating_sub(before);
    println!(
        "family={} inserted={n} max_keys={max_keys} live_keys={keys} overflow_decisions={} rss_before_mb={:.1} rss_after_mb={:.1} bytes_per_key={:.1} decisions_per_s={:.0}",
        if v6 { "ipv6" } else { "ipv4" },
        limiter.overflow_totals()[0],
        before as f64 / 1e6,
        after as f64 / 1e6,
        grown as f64 / keys.max(1) as f64,
        n as f64 / elapsed.as_secs_f64(),
    );
}
