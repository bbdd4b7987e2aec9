//! Criterion benches for the per-request logic: the normalizer per dialect
//! (1 KB and 64 KB, plain and gzip), the rate-limit decision at 1, 10k and
//! 1M live keys (IPv4 and IPv6), client-IP resolution over a 5-hop
//! `X-Forwarded-For`, and header rendering. Before timing, each case's heap
//! allocations per call are counted and printed.
//!
//! `cargo bench --bench hot_paths`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tollgate::client::KeyHasher;
use tollgate::client::{ClientIpResolver, ClientKey};
use tollgate::errors::items::HeldBody;
use tollgate::errors::{normalize, ErrorTable, UpstreamError};
use tollgate::rate_limit::headers::{self as rate_limit_headers, HeaderStyle};
use tollgate::rate_limit::{LocalLimiter, RequestKeys, RuleKey, RuleMode, RuleSpec};
use tollgate::routes::RequestMatcher;

/// Counts allocations so each case can report allocations per call.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn report_allocs(name: &str, mut f: impl FnMut()) {
    const N: u64 = 1000;
    f();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        f();
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!("allocs/op {name}: {per:.1}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A body of the dialect, padded to about `size` bytes with a filler field.
fn dialect_body(dialect: &str, size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(160));
    let v = match dialect {
        "flat" => {
            serde_json::json!({"error_code": "INVALID_DOC", "error_message": "Document type is not supported", "trace": pad})
        }
        "validation" => {
            serde_json::json!({"message": "Invalid.", "validation_errors": ["ID is required", pad]})
        }
        "problem" => {
            serde_json::json!({"type": "about:blank", "title": "Conflict", "status": 409, "detail": "Balance too low", "note": pad})
        }
        "canonical" => {
            serde_json::json!({"error": {"type": "t", "code": "c", "message": "m", "details": {"pad": pad}}})
        }
        _ => return format!("<html><body>{pad}</body></html>").into_bytes(),
    };
    serde_json::to_vec(&v).unwrap()
}

fn bench_normalizer(c: &mut Criterion) {
    let table = ErrorTable::default();
    let mut g = c.benchmark_group("normalize");
    for dialect in ["flat", "validation", "problem", "canonical", "html"] {
        for size in [1024usize, 64 * 1024 - 512] {
            let plain = dialect_body(dialect, size);
            let zipped = gzip(&plain);
            for (enc, body) in [(None, &plain), (Some("gzip"), &zipped)] {
                let name = format!(
                    "{dialect}/{}/{}",
                    if size < 2048 { "1KB" } else { "64KB" },
                    enc.unwrap_or("plain")
                );
                let ctype = if dialect == "html" {
                    "text/html"
                } else {
                    "application/json"
                };
                let err = UpstreamError {
                    status: 422,
                    content_type: Some(ctype),
                    content_encoding: enc,
                    body,
                    truncated: false,
                };
                report_allocs(&format!("normalize/{name}"), || {
                    black_box(normalize(&err, "req_x", &table, 65536).envelope.to_json());
                });
                g.throughput(Throughput::Bytes(plain.len() as u64));
                g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                    b.iter(|| {
                        black_box(
                            normalize(black_box(&err), "req_x", &table, 65536)
                                .envelope
                                .to_json(),
                        )
                    })
                });
            }
        }
    }
    g.finish();
}

/// An OCR page of about `size` bytes: items of which one in ten failed.
fn ocr_page(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 40;
    let mut i = 0;
    while len < size {
        let item = if i % 10 == 3 {
            format!(
                r#"{{"document_id":"d{i}","data":null,"error_code":"INVALID_DOC","error_reason":"multiple people"}}"#
            )
        } else {
            format!(
                r#"{{"document_id":"d{i}","data":{{"name":"Ann Lee","dob":"1990-01-02"}},"error_code":"","error_reason":""}}"#
            )
        };
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!(
        r#"{{"request_id":"ocr-7","ocr_data":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

/// Holding and rewriting an opted-in 2xx body (`item_errors`), per size.
fn bench_item_errors(c: &mut Criterion) {
    let table = ErrorTable::default();
    let arrays = ["ocr_data".to_string()];
    let mut g = c.benchmark_group("item_errors");
    for size in [1024usize, 16 * 1024, 64 * 1024 - 512] {
        let page = ocr_page(size);
        let zipped = gzip(&page);
        for (enc, body) in [(None, &page), (Some("gzip"), &zipped)] {
            let name = format!("ocr/{}KB/{}", size.div_ceil(1024), enc.unwrap_or("plain"));
            let run = || {
                let mut held = HeldBody::new(enc, 65536);
                for piece in body.chunks(16 * 1024) {
                    black_box(held.push(piece));
                }
                held.finish(&arrays, "req_x", &table)
            };
            report_allocs(&format!("item_errors/{name}"), || {
                black_box(run());
            });
            g.throughput(Throughput::Bytes(page.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| black_box(run()))
            });
        }
    }
    g.finish();
}

/// Client key number `i` (IPv4 `10.x.y.z`, or a distinct IPv6 /64).
fn client_key(i: u32, v6: bool) -> ClientKey {
    let resolver = ClientIpResolver::new(vec![], 64);
    if v6 {
        let addr = (0x2001_0db8u128 << 96) | (u128::from(i) << 64) | 1;
        resolver.key(IpAddr::V6(addr.into()))
    } else {
        resolver.key(IpAddr::V4(i.wrapping_add(0x0a00_0000).into()))
    }
}

/// A limiter with one generous rule and `keys` live clients.
/// A rule that never refuses, keyed as asked.
fn never_refusing(key: RuleKey) -> RuleSpec {
    RuleSpec {
        name: "default".into(),
        applies_to: RequestMatcher::any(),
        limit: 1_000_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000_000,
        mode: RuleMode::Enforce,
        key,
    }
}

fn limiter_with(keys: u32, v6: bool) -> LocalLimiter {
    let lim = LocalLimiter::new(vec![never_refusing(RuleKey::Ip)], 2_000_000);
    for i in 0..keys {
        lim.check("GET", "/", &client_key(i, v6));
    }
    lim
}

fn bench_limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_decision");
    for v6 in [false, true] {
        for keys in [1u32, 10_000, 1_000_000] {
            let lim = limiter_with(keys, v6);
            let name = format!("{}/{keys}", if v6 { "ipv6" } else { "ipv4" });
            // Walk the live keys in a scattered order, making each key from
            // its index (as a request has its key at hand) rather than reading
            // it from a 17 MB array, which would add a cache miss of its own.
            let mut i = 0u32;
            let mut next = || {
                i = (i + 7919) % keys;
                client_key(i, v6)
            };
            report_allocs(&format!("rate_limit/{name}"), || {
                black_box(lim.check("GET", "/", &next()));
            });
            g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter(|| black_box(lim.check("GET", "/", black_box(&next()))))
            });
            // As the gateway decides: the slot was prefetched when the
            // client's address became known, and other request work ran
            // meanwhile. Here the prefetch runs AHEAD decisions early, the
            // same walk.
            const AHEAD: u32 = 8;
            let (mut i, mut ahead) = (0u32, (AHEAD * 7919) % keys);
            g.bench_function(
                BenchmarkId::from_parameter(format!("{name}/prefetched")),
                |b| {
                    b.iter(|| {
                        lim.prefetch("GET", "/", &client_key(ahead, v6));
                        ahead = (ahead + 7919) % keys;
                        i = (i + 7919) % keys;
                        black_box(lim.check("GET", "/", black_box(&client_key(i, v6))))
                    })
                },
            );
        }
    }
    // An API-key rule against the same rule keyed by address, one client
    // (the key is hashed per decision: HMAC-SHA-256 of a 32-byte value).
    for header_key in [false, true] {
        let key = if header_key {
            RuleKey::Header(http::HeaderName::from_static("x-api-key"))
        } else {
            RuleKey::Ip
        };
        let lim = LocalLimiter::new(vec![never_refusing(key)], 1_000);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-api-key",
            "sk_live_0123456789abcdef0123456789".parse().unwrap(),
        );
        let keys = RequestKeys {
            ip: client_key(1, false),
            headers: Some(&headers),
            hasher: KeyHasher::process(),
        };
        let name = if header_key {
            "header_key/1"
        } else {
            "ip_key/1"
        };
        report_allocs(&format!("rate_limit/{name}"), || {
            black_box(lim.check_keys("GET", "/", &keys));
        });
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(lim.check_keys("GET", "/", black_box(&keys))))
        });
    }
    g.finish();
}

fn bench_client_ip(c: &mut Criterion) {
    let r = ClientIpResolver::new(
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ],
        64,
    );
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let xff = "198.51.100.7, 203.0.113.9, 192.168.1.1, 10.1.2.3, 10.0.0.9";
    report_allocs("client_ip/5_hop_xff", || {
        black_box(r.resolve(peer, [xff.as_bytes()], std::iter::empty()));
    });
    c.bench_function("client_ip/5_hop_xff", |b| {
        b.iter(|| {
            black_box(r.resolve(
                black_box(peer),
                [black_box(xff).as_bytes()],
                std::iter::empty(),
            ))
        })
    });
}

fn bench_headers(c: &mut Criterion) {
    let lim = limiter_with(1, false);
    let rules: Vec<RuleSpec> = lim.rules().cloned().collect();
    let d = lim.check("GET", "/", &client_key(0, false));
    // Rendered into a header map, as the gateway does; the map keeps its
    // room between calls, as a response's map has it reserved.
    let mut map = http::HeaderMap::with_capacity(8);
    for style in [HeaderStyle::XRatelimit, HeaderStyle::Both] {
        let name = format!("headers/{style:?}");
        let renderer = rate_limit_headers::Renderer::new(style, &rules);
        let mut render_into_map = |d: &tollgate::rate_limit::Decision| {
            map.clear();
            renderer.render(d, &rules, |n, v| {
                map.insert(n, v);
            });
            black_box(map.len());
        };
        report_allocs(&name, || render_into_map(&d));
        c.bench_function(&name, |b| b.iter(|| render_into_map(black_box(&d))));
    }
}

criterion_group!(
    benches,
    bench_normalizer,
    bench_item_errors,
    bench_limiter,
    bench_client_ip,
    bench_headers
);
criterion_main!(benches);
