//! What one dependent random memory access costs on this machine: the floor
//! under a rate-limit decision at 1M live keys, whose table is far larger
//! than the caches. Chases a random cycle through `MB` megabytes.
//!
//! `cargo run --release --example mem_latency [MB]` (default 32)

use std::time::Instant;

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32);
    let n = mb * 1024 * 1024 / 8;
    // A random permutation (xorshift-driven Fisher-Yates), then one cycle.
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; n];
    for w in 0..n {
        next[order[w]] = order[(w + 1) % n];
    }
    let steps = 5_000_000;
    let mut p = 0;
    let start = Instant::now();
    for _ in 0..steps {
        p = next[p];
    }
    let ns = start.elapsed().as_nanos() as f64 / steps as f64;
    println!("{mb} MB, dependent random reads: {ns:.1} ns each (end {p})");
}
