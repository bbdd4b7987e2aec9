//! The Redis backend with real `redis-server` processes: one bucket shared
//! by three replicas, each failure policy with Redis stopped or frozen, and
//! recovery when Redis comes back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    envelope, eventually, free_port, get, metric, signal, wait_for_port, Conn, Gateway, Proc,
    Upstream, POLL,
};

struct Redis {
    port: u16,
    proc: Option<Proc>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            proc: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.proc = Some(Proc { child, log: None });
        wait_for_port(self.port, Duration::from_secs(10));
    }

    fn stop(&mut self) {
        self.proc = None;
        let port = self.port;
        eventually(
            Duration::from_secs(5),
            POLL,
            || "redis did not stop".into(),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_err()
                    .then_some(())
            },
        );
    }
}

fn config(redis: &Redis, policy: &str, limit: u32) -> String {
    format!(
        "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\non_backend_error = \"{policy}\"\n\n[[rate_limit.rules]]\nname = \"shared\"\nlimit = {limit}\nperiod = \"1m\"\n",
        redis.port
    )
}

const CLIENT: [(&str, &str); 1] = [("x-forwarded-for", "198.51.100.5")];

fn backend_errors(gw: &Gateway) -> f64 {
    metric(
        &gw.scrape(),
        "tollgate_rate_limit_backend_errors_total{backend=\"redis\"}",
    )
}

#[test]
fn three_replicas_share_one_burst() {
    let up = Upstream::start();
    let redis = Redis::start();
    let cfg = config(&redis, "deny", 10);
    let replicas: Vec<Gateway> = (0..3).map(|_| Gateway::start(up.port, "", &cfg)).collect();
    let mut conns: Vec<Conn> = replicas.iter().map(|g| g.connect()).collect();
    let mut admitted = 0;
    for i in 0..30 {
        let r = conns[i % 3].send("GET", "/hello", &CLIENT, b"").unwrap();
        match r.status {
            200 => admitted += 1,
            429 => {
                assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
                assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
                let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=6).contains(&retry), "one token every 6 s: {retry}");
                assert_eq!(envelope(&r)["code"], "rate_limit_exceeded");
            }
            s => panic!("status {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(
        (10..=11).contains(&admitted),
        "the three replicas admitted {admitted}, not 3 x 10"
    );
    // Another client still has its whole burst.
    let r = conns[0]
        .send("GET", "/hello", &[("x-forwarded-for", "198.51.100.6")], b"")
        .unwrap();
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
}

/// Send `n` requests, asserting each is answered within the decision
/// timeout plus 50 ms; return the statuses.
fn timed_statuses(c: &mut Conn, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = c.send("GET", "/hello", &CLIENT, b"").unwrap();
            assert!(
                t.elapsed() < Duration::from_millis(20 + 50),
                "took {:?}",
                t.elapsed()
            );
            r.status
        })
        .collect()
}

#[test]
fn each_policy_applies_while_redis_is_down() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    for (policy, expected) in [
        ("local", vec![200, 200, 200, 429, 429]),
        ("allow", vec![200; 5]),
        ("deny", vec![503; 5]),
    ] {
        let mut redis = Redis::start();
        let gw = Gateway::start(up.port, "", &config(&redis, policy, 3));
        let mut c = gw.connect();
        assert_eq!(
            c.send("GET", "/hello", &CLIENT, b"").unwrap().status,
            200,
            "redis answers"
        );
        redis.stop();
        // A fresh client, so the local fallback starts from a full bucket.
        let fresh = [("x-forwarded-for", "198.51.100.77")];
        let got: Vec<u16> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let r = c.send("GET", "/hello", &fresh, b"").unwrap();
                assert!(
                    t.elapsed() < Duration::from_millis(70),
                    "{policy}: took {:?}",
                    t.elapsed()
                );
                if r.status == 503 {
                    assert_eq!(envelope(&r)["code"], "service_unavailable");
                }
                r.status
            })
            .collect();
        assert_eq!(got, expected, "policy {policy}");
        assert!(backend_errors(&gw) >= 5.0, "{policy}: failures counted");
        let ready = get(gw.admin, "/readyz").unwrap();
        assert_eq!(ready.status, 200, "still serving");
        assert_eq!(ready.json()["rate_limit_backend"]["redis"], "degraded");
        let log = gw.log();
        assert_eq!(
            log.matches("redis rate-limit backend unavailable").count(),
            1,
            "logged once:\n{log}"
        );
    }
}

#[test]
fn a_frozen_redis_costs_at_most_the_decision_timeout() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    let redis = Redis::start();
    let gw = Gateway::start(up.port, "", &config(&redis, "local", 100));
    let mut c = gw.connect();
    assert_eq!(c.send("GET", "/hello", &CLIENT, b"").unwrap().status, 200);
    // SIGSTOP: the socket stays open but nothing answers.
    signal(redis.proc.as_ref().unwrap(), "STOP");
    let got = timed_statuses(&mut c, 10);
    signal(redis.proc.as_ref().unwrap(), "CONT");
    assert_eq!(got, vec![200; 10]);
    assert!(backend_errors(&gw) >= 1.0);
}

#[test]
fn shared_limiting_resumes_when_redis_returns() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    let mut redis = Redis::start();
    let gw = Gateway::start(up.port, "", &config(&redis, "allow", 3));
    let mut c = gw.connect();
    redis.stop();
    assert_eq!(
        timed_statuses(&mut c, 5),
        vec![200; 5],
        "allowed while down"
    );
    redis.restart();
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || "limits did not resume".into(),
        || (c.send("GET", "/hello", &CLIENT, b"").unwrap().status == 429).then_some(()),
    );
    let ready = get(gw.admin, "/readyz").unwrap();
    assert_eq!(ready.json()["rate_limit_backend"]["redis"], "ok");
    assert!(gw.log().contains("redis rate-limit backend is back"));
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

#[test]
fn redis_cluster_keeps_one_decision_in_one_slot() {
    let _serial = crate::harness::exclusive();
    let dir = crate::harness::TempDir::new();
    let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
    let _nodes: Vec<Proc> = ports
        .iter()
        .map(|p| {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                ])
                .current_dir(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            wait_for_port(*p, Duration::from_secs(10));
            Proc { child, log: None }
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli is installed (.ci/run installs redis-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || "cluster not ok".into(),
        || {
            let info = Command::new("redis-cli")
                .args(["-p", &ports[0].to_string(), "cluster", "info"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&info.stdout)
                .contains("cluster_state:ok")
                .then_some(())
        },
    );

    let up = Upstream::start();
    let nodes: Vec<String> = addrs.iter().map(|a| format!("\"redis://{a}\"")).collect();
    // Two rules match every request: the script touches two keys, which
    // Redis Cluster accepts only if they share a slot.
    let cfg = format!(
        "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[rate_limit]\nbackend = \"redis\"\nredis_cluster_nodes = [{}]\nredis_timeout = \"200ms\"\non_backend_error = \"deny\"\n\n[[rate_limit.rules]]\nname = \"wide\"\nlimit = 100\nperiod = \"1m\"\n\n[[rate_limit.rules]]\nname = \"narrow\"\nlimit = 4\nperiod = \"1m\"\n",
        nodes.join(", ")
    );
    let a = Gateway::start(up.port, "", &cfg);
    let b = Gateway::start(up.port, "", &cfg);
    let mut conns = [a.connect(), b.connect()];
    let mut statuses = vec![];
    for i in 0..8 {
        statuses.push(
            conns[i % 2]
                .send("GET", "/hello", &CLIENT, b"")
                .unwrap()
                .status,
        );
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 429, 429, 429, 429],
        "log:\n{}",
        a.log()
    );
    // Many clients spread over the slots of all three nodes.
    for i in 0..30 {
        let ip = format!("203.0.113.{i}");
        let r = conns[i % 2]
            .send("GET", "/hello", &[("x-forwarded-for", ip.as_str())], b"")
            .unwrap();
        assert_eq!(r.status, 200, "client {ip}");
    }
    assert_eq!(backend_errors(&a) + backend_errors(&b), 0.0);
}

#[test]
fn shadow_rules_decide_on_redis_without_refusing() {
    let up = Upstream::start();
    let redis = Redis::start();
    // An enforced rule with room to spare, and a shadow rule of burst 2 on
    // the same requests: the shadow bucket drains in Redis, nothing is
    // refused, and the enforced rule's headers are the ones sent.
    let cfg = format!(
        "{}\n[[rate_limit.rules]]\nname = \"trial\"\nlimit = 1\nperiod = \"1h\"\nburst = 2\nmode = \"shadow\"\n",
        config(&redis, "deny", 100)
    );
    let gw = Gateway::start(up.port, "", &cfg);
    let mut c = gw.connect();
    for _ in 0..5 {
        let r = c.send("GET", "/hello", &CLIENT, b"").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ratelimit-limit"),
            Some("100"),
            "the enforced rule's"
        );
    }
    let scraped = gw.scrape();
    let shadowed = "tollgate_rate_limit_shadowed_total{rule=\"trial\"}";
    assert_eq!(metric(&scraped, shadowed), 3.0);
    assert_eq!(
        metric(&scraped, "tollgate_rate_limited_total{rule=\"trial\"}"),
        0.0
    );
    assert_eq!(backend_errors(&gw), 0.0, "decided by Redis");
}

#[test]
fn replicas_share_an_api_keys_bucket_and_redis_never_sees_the_key() {
    let up = Upstream::start();
    let redis = Redis::start();
    let cfg = format!(
        "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"\non_backend_error = \"deny\"\nkey_secret = \"replicas-share-this\"\n\n[[rate_limit.rules]]\nname = \"per_key\"\nlimit = 1\nperiod = \"1h\"\nburst = 3\nkey = \"header:X-Api-Key\"\n",
        redis.port
    );
    let a = Gateway::start(up.port, "", &cfg);
    let b = Gateway::start(up.port, "", &cfg);
    let key = "sk_live_shared_between_replicas";
    let send = |gw: &Gateway, ip: &str| {
        let headers = [("x-forwarded-for", ip), ("x-api-key", key)];
        gw.connect()
            .send("GET", "/hello", &headers, b"")
            .unwrap()
            .status
    };
    // One burst of 3 for the key, whichever replica and address it comes by.
    let statuses = [
        send(&a, "198.51.100.1"),
        send(&b, "198.51.100.2"),
        send(&a, "198.51.100.3"),
        send(&b, "198.51.100.1"),
    ];
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(
        backend_errors(&a) + backend_errors(&b),
        0.0,
        "decided by Redis"
    );
    // Nothing in Redis holds the key as sent: neither key names nor values.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed (.ci/run installs redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let names = cli(&["--scan"]);
    assert!(!names.trim().is_empty(), "the bucket is in Redis");
    for name in names.lines().filter(|l| !l.is_empty()) {
        assert!(!name.contains(key), "{name}");
        assert!(!cli(&["GET", name]).contains(key));
    }
    for gw in [&a, &b] {
        assert!(!gw.log().contains(key) && !gw.scrape().contains(key));
    }
}
