//! Per-client buckets over HTTP.

use std::time::Duration;

use crate::harness::{envelope, eventually, Gateway, Upstream, POLL};

const RULES: &str = "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[[rate_limit.rules]]\nname = \"default\"\nlimit = 5\nperiod = \"1m\"\nburst = 3\n\n[[rate_limit.rules]]\nname = \"auth\"\npath_prefix = \"/v1/auth\"\nmethods = [\"POST\"]\nlimit = 2\nperiod = \"1m\"\n";

#[test]
fn limited_after_the_burst_with_headers() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", RULES);
    let mut c = gw.connect();
    let client = [("x-forwarded-for", "198.51.100.1")];
    for remaining in ["2", "1", "0"] {
        let r = c.send("GET", "/hello", &client, b"").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        assert!(r.header("x-ratelimit-reset").is_some());
    }
    let r = c.send("GET", "/hello", &client, b"").unwrap();
    assert_eq!(r.status, 429);
    let e = envelope(&r);
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded");
    // 5 per minute: one token every 12 s.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((11..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(e["details"]["retry_after"], retry);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((35..=36).contains(&reset), "reset {reset}");

    // Another client (through the trusted proxy) has its own bucket.
    let r = c
        .send("GET", "/hello", &[("x-forwarded-for", "198.51.100.2")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn tighter_rule_applies_to_its_methods_only() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", RULES);
    let mut c = gw.connect();
    let client = [("x-forwarded-for", "198.51.100.9")];
    let r = c.send("POST", "/v1/auth/login", &client, b"").unwrap();
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("2"),
        "auth is the tightest"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    let r = c.send("POST", "/v1/auth/login", &client, b"").unwrap();
    assert_eq!(r.status, 200);
    let r = c.send("POST", "/v1/auth/login", &client, b"").unwrap();
    assert_eq!(r.status, 429, "auth allows 2");
}

/// tollgate writes its own answers as prepared bytes over HTTP/1 and
/// through a header map over HTTP/2: both carry the same headers and
/// envelope, a HEAD gets the header only, and the connection stays usable.
#[test]
fn the_gateways_own_429_is_whole_over_http1_and_http2() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", RULES);
    let client = [("x-forwarded-for", "198.51.100.20")];
    let mut c = gw.connect();
    for _ in 0..3 {
        assert_eq!(c.send("GET", "/hello", &client, b"").unwrap().status, 200);
    }
    let before = up.requests_seen();
    let mut ids = Vec::new();
    for method in ["GET", "HEAD", "GET"] {
        let r = c.send(method, "/hello", &client, b"").unwrap();
        assert_eq!(r.status, 429, "{method}");
        let id = r.header("x-request-id").expect("x-request-id").to_string();
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert!(r.header("date").is_some());
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert!(r.header("retry-after").is_some());
        if method == "HEAD" {
            assert!(r.body.is_empty());
            assert!(r.header("content-length").is_some());
        } else {
            let e = envelope(&r);
            assert_eq!(e["request_id"], id.as_str());
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
        }
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one id per answer");
    assert_eq!(up.requests_seen(), before, "refused requests stay here");

    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-D", "-"])
        .args(["-H", "x-forwarded-for: 198.51.100.20"])
        .arg(format!("http://127.0.0.1:{}/hello", gw.port))
        .output()
        .expect("run curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 429"), "{text}");
    assert!(text.contains("x-ratelimit-remaining: 0\r\n"), "{text}");
    assert!(text.contains("retry-after: "), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // Each refusal has its access line, with what the client was told.
    let line_for = |id: &str| {
        gw.log()
            .lines()
            .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
            .map(str::to_string)
    };
    for id in &ids {
        let line = eventually(
            Duration::from_secs(5),
            POLL,
            || format!("no access line for {id}:\n{}", gw.log()),
            || line_for(id),
        );
        let l: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(l["target"], "tollgate::access");
        assert_eq!(l["status"], 429);
        assert_eq!(l["rule"], "default");
        assert_eq!(l["client_ip"], "198.51.100.20");
        assert_eq!(l["error_type"], "rate_limit_error");
        assert_eq!(l["error_code"], "rate_limit_exceeded");
        assert_eq!(
            l["error_message"],
            "Too many requests; retry after the time in Retry-After."
        );
        assert!(l["retry_after"].as_u64().is_some(), "{line}");
        assert!(l.get("upstream_status").is_none(), "{line}");
    }
}

#[test]
fn spoofed_forwarded_for_from_untrusted_peer_is_ignored() {
    let up = Upstream::start();
    // No trusted proxies: the loopback peer is the client, whatever it claims.
    let rules = "[[rate_limit.rules]]\nname = \"default\"\nlimit = 2\nperiod = \"1m\"\n";
    let gw = Gateway::start(up.port, "", rules);
    let mut c = gw.connect();
    let mut statuses = vec![];
    for i in 0..4 {
        let ip = format!("203.0.113.{i}");
        let r = c
            .send("GET", "/hello", &[("x-forwarded-for", ip.as_str())], b"")
            .unwrap();
        statuses.push(r.status);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
}

#[test]
fn ietf_headers_when_asked() {
    let up = Upstream::start();
    let rules = RULES.replace(
        "[client_ip]",
        "[rate_limit]\nheaders = \"ietf\"\n\n[client_ip]",
    );
    let gw = Gateway::start(up.port, "", &rules);
    let mut c = gw.connect();
    let r = c
        .send(
            "POST",
            "/v1/auth/x",
            &[("x-forwarded-for", "198.51.100.3")],
            b"",
        )
        .unwrap();
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"default\";q=5;w=60, \"auth\";q=2;w=60")
    );
    assert_eq!(r.header("ratelimit"), Some("\"auth\";r=1;t=30"));
    assert!(r.header("x-ratelimit-limit").is_none());
}

#[test]
fn a_flood_of_distinct_clients_never_grows_the_table_past_max_keys() {
    let up = Upstream::start();
    let cfg = "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[rate_limit]\nmax_keys = 50\n\n[[rate_limit.rules]]\nname = \"default\"\nlimit = 1000\nperiod = \"1h\"\n";
    let gw = Gateway::start(up.port, "", cfg);
    let mut c = gw.connect();
    for i in 0..300u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let r = c
            .send("GET", "/hello", &[("x-forwarded-for", ip.as_str())], b"")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let text = gw.scrape();
    let series = |name: &str| crate::harness::metric(&text, name);
    let keys = series("tollgate_rate_limit_keys{rule=\"default\"}");
    assert!(
        keys <= 51.0,
        "the table holds {keys} keys, cap 50 (+1 overflow bucket)"
    );
    assert_eq!(
        series("tollgate_rate_limit_overflow_total{rule=\"default\"}"),
        250.0
    );
    // The overflow clients share one bucket: it has spent 250 of 1000 (a
    // token comes back every 3.6 s, longer than this test).
    let r = c
        .send("GET", "/hello", &[("x-forwarded-for", "10.9.9.9")], b"")
        .unwrap();
    assert_eq!(r.header("x-ratelimit-remaining"), Some("749"));
}

#[test]
fn exempt_clients_are_never_limited_and_cannot_be_spoofed() {
    let up = Upstream::start();
    let exempt = "[rate_limit]\nexempt = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\n";
    let gw = Gateway::start(up.port, "", &format!("{exempt}{RULES}"));
    let mut c = gw.connect();
    // Behind the trusted proxy (loopback), exempt addresses pass every time
    // with no rate-limit header; the default rule's burst is 3.
    for client in ["203.0.113.7", "2001:db8::5", "::ffff:203.0.113.9"] {
        for _ in 0..10 {
            let r = c
                .send("GET", "/hello", &[("x-forwarded-for", client)], b"")
                .unwrap();
            assert_eq!(r.status, 200, "{client}");
            assert!(
                r.header("x-ratelimit-limit").is_none(),
                "{client}: no headers"
            );
        }
    }
    // Others are limited as always.
    let other = [("x-forwarded-for", "198.51.100.9")];
    let statuses: Vec<u16> = (0..5)
        .map(|_| c.send("GET", "/hello", &other, b"").unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let scraped = gw.scrape();
    assert_eq!(
        crate::harness::metric(&scraped, "tollgate_rate_limit_exempt_total"),
        30.0
    );

    // With no trusted proxy, X-Forwarded-For is ignored: claiming an exempt
    // address does not make the (loopback) client exempt.
    let gw = Gateway::start(up.port, "", &format!("{exempt}[[rate_limit.rules]]\nname = \"default\"\nlimit = 5\nperiod = \"1m\"\nburst = 3\n"));
    let mut c = gw.connect();
    let spoof = [("x-forwarded-for", "203.0.113.7")];
    let statuses: Vec<u16> = (0..5)
        .map(|_| c.send("GET", "/hello", &spoof, b"").unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(
        crate::harness::metric(&gw.scrape(), "tollgate_rate_limit_exempt_total"),
        0.0
    );
}

#[test]
fn a_shadow_rule_only_counts_and_keeps_its_bucket_when_enforced() {
    let up = Upstream::start();
    let rule = |mode: &str| {
        format!("[[rate_limit.rules]]\nname = \"trial\"\nlimit = 1\nperiod = \"1h\"\nburst = 2\nmode = \"{mode}\"\n")
    };
    let gw = Gateway::start(up.port, "", &rule("shadow"));
    let mut c = gw.connect();
    for _ in 0..5 {
        let r = c.request("GET", "/hello");
        assert_eq!(r.status, 200, "a shadow rule refuses nothing");
        assert!(
            r.header("x-ratelimit-limit").is_none(),
            "and adds no header"
        );
    }
    let scraped = gw.scrape();
    let shadowed = "tollgate_rate_limit_shadowed_total{rule=\"trial\"}";
    assert_eq!(
        crate::harness::metric(&scraped, shadowed),
        3.0,
        "burst 2 of 5"
    );
    let limited = "tollgate_rate_limited_total{rule=\"trial\"}";
    assert_eq!(crate::harness::metric(&scraped, limited), 0.0);

    // The same rule enforced: its bucket, drained in shadow, is kept.
    gw.write_config("", "", &rule("enforce"));
    gw.signal("HUP");
    gw.wait_for_reloads("success", 1);
    let r = c.request("GET", "/hello");
    assert_eq!(r.status, 429, "the drained bucket refuses at once");
    assert!(
        gw.log().contains("\"kept_rules\":\"[\\\"trial\\\"]\""),
        "{}",
        gw.log()
    );
}

#[test]
fn an_api_key_has_its_own_bucket_with_the_address_as_fallback() {
    let up = Upstream::start();
    let cfg = "[client_ip]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[[rate_limit.rules]]\nname = \"per_key\"\nlimit = 1\nperiod = \"1h\"\nburst = 2\nkey = \"header:X-Api-Key\"\n";
    let gw = Gateway::start(up.port, "", cfg);
    let mut c = gw.connect();
    let send = |c: &mut crate::harness::Conn, ip: &str, key: Option<&str>| {
        let mut headers = vec![("x-forwarded-for", ip)];
        if let Some(k) = key {
            headers.push(("x-api-key", k));
        }
        c.send("GET", "/hello", &headers, b"").unwrap().status
    };
    let (a, b) = ("sk_live_AAAA_do_not_log", "sk_live_BBBB_do_not_log");
    // One address, two keys: each key has its own burst of 2.
    let ip1 = "198.51.100.1";
    assert_eq!(
        [
            send(&mut c, ip1, Some(a)),
            send(&mut c, ip1, Some(a)),
            send(&mut c, ip1, Some(a))
        ],
        [200, 200, 429]
    );
    assert_eq!(
        [
            send(&mut c, ip1, Some(b)),
            send(&mut c, ip1, Some(b)),
            send(&mut c, ip1, Some(b))
        ],
        [200, 200, 429]
    );
    // Without a key (or with an empty one) the address is the key.
    assert_eq!(
        [
            send(&mut c, ip1, None),
            send(&mut c, ip1, Some("  ")),
            send(&mut c, ip1, None)
        ],
        [200, 200, 429]
    );
    // The key follows its holder to another address; the address does not
    // matter to it.
    let ip2 = "198.51.100.2";
    assert_eq!(send(&mut c, ip2, Some(a)), 429);
    assert_eq!(send(&mut c, ip2, None), 200, "ip2's own bucket");
    // The key as sent is nowhere: not in the log, not in the metrics.
    let (log, scraped) = (gw.log(), gw.scrape());
    for k in [a, b] {
        assert!(!log.contains(k) && !scraped.contains(k), "{k} leaked");
    }
    assert_eq!(
        crate::harness::metric(&scraped, "tollgate_rate_limited_total{rule=\"per_key\"}"),
        4.0
    );
}
