//! The Redis backend against the local buckets: latency of one decision
//! (sequential) and decisions per second with 64 in flight, on loopback,
//! with a real `redis-server` started here on a free port.
//!
//! `cargo bench --bench redis_backend`

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::client::ClientKey;
use tollgate::rate_limit::{
    Limiter, LimiterSettings, OnBackendError, Outcome, Pending, RedisTarget, RequestKeys, RuleMode,
    RuleSpec, SharedBackend,
};
use tollgate::routes::RequestMatcher;

fn rules() -> Vec<RuleSpec> {
    vec![RuleSpec {
        name: "bench".into(),
        applies_to: RequestMatcher::any(),
        limit: 1_000_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000_000,
        mode: RuleMode::Enforce,
        key: Default::default(),
    }]
}

fn key(i: u32) -> ClientKey {
    ClientKey::V4((0x0a00_0000u32 + i % 10_000).to_be_bytes())
}

struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench(c: &mut Criterion) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(child) = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    else {
        eprintln!("redis-server not installed: redis_backend bench skipped");
        return;
    };
    let _server = RedisServer(child);
    std::thread::sleep(Duration::from_millis(300));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rules = rules();
    let errors = prometheus::IntCounter::new("errors", "bench").unwrap();
    let local_settings = LimiterSettings {
        rules: rules.clone(),
        max_keys: 1_000_000,
        shared: None,
        key_secret: None,
    };
    let local = Limiter::new(&local_settings, errors.clone());
    let shared = SharedBackend {
        target: RedisTarget::Single(format!("redis://127.0.0.1:{port}")),
        timeout: Duration::from_millis(200),
        on_error: OnBackendError::Deny,
    };
    let redis_settings = LimiterSettings {
        shared: Some(shared),
        ..local_settings
    };
    let redis = Arc::new(Limiter::new(&redis_settings, errors));
    // Warm the connection and the script cache.
    let first = rt.block_on(
        redis
            .decide("GET", "/", RequestKeys::ip_only(key(0)))
            .outcome(),
    );
    assert!(matches!(first, Outcome::Decided(_)), "redis answers");

    let mut g = c.benchmark_group("decision");
    g.bench_function("local", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(
                match local.decide("GET", "/", RequestKeys::ip_only(key(i))) {
                    Pending::Ready(outcome) => outcome,
                    Pending::Shared(_) => unreachable!("the local backend decides at once"),
                },
            )
        })
    });
    g.bench_function("redis/sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    black_box(
                        redis
                            .decide("GET", "/", RequestKeys::ip_only(key(i as u32)))
                            .outcome()
                            .await,
                    );
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("redis/64_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                let mut set = tokio::task::JoinSet::new();
                let per = iters.div_ceil(64);
                for w in 0..64u64 {
                    let redis = redis.clone();
                    set.spawn(async move {
                        for i in 0..per {
                            let key = key((w * per + i) as u32);
                            black_box(
                                redis
                                    .decide("GET", "/", RequestKeys::ip_only(key))
                                    .outcome()
                                    .await,
                            );
                        }
                    });
                }
                while set.join_next().await.is_some() {}
                // Report the time per decision actually made.
                t.elapsed().mul_f64(iters as f64 / (per * 64) as f64)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
