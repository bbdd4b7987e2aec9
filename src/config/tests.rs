use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), text)
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n").unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.upstream_keepalive_pool_size, 1024);
    assert_eq!(c.server.upstream_max_in_flight, 256, "128 for each thread");
    assert!(!c.server.upstream_adaptive_in_flight, "a fixed limit");
    assert_eq!(c.upstream.queue_timeout, Duration::from_secs(5));
    assert_eq!(c.errors.max_body_bytes, 65536);
    assert_eq!(c.rate_limit.limiter.max_keys, 1_000_000);
    assert!(c.rate_limit.limiter.rules.is_empty());
    assert_eq!(c.upstream.addr, "127.0.0.1:3000".parse().unwrap());
    assert_eq!(c.upstream.sni, "127.0.0.1", "the host is the TLS name");
}

#[test]
fn max_in_flight_follows_the_threads_unless_set() {
    let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nthreads = 3\n").unwrap();
    assert_eq!(c.server.upstream_max_in_flight, 384);
    let c = parse(
        "[upstream]\naddress = \"127.0.0.1:3000\"\nmax_in_flight = 10\nqueue_timeout = \"250ms\"\n",
    )
    .unwrap();
    assert_eq!(c.server.upstream_max_in_flight, 10);
    assert_eq!(c.upstream.queue_timeout, Duration::from_millis(250));
    let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\nadaptive_in_flight = true\n").unwrap();
    assert!(c.server.upstream_adaptive_in_flight);
}

#[test]
fn durations_take_units() {
    assert_eq!(
        HumanDuration::parse("500ms"),
        Ok(Duration::from_millis(500))
    );
    assert_eq!(HumanDuration::parse("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(HumanDuration::parse("2h"), Ok(Duration::from_secs(7200)));
    assert!(HumanDuration::parse("10").is_err());
    assert!(HumanDuration::parse("1d").is_err());
    assert!(HumanDuration::parse("s").is_err());
}

#[test]
fn unknown_key_names_line_column_and_key() {
    let e =
        parse("[upstream]\naddress = \"127.0.0.1:3000\"\n\n[server]\nthreds = 4\n").unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert_eq!(e.column, 1, "{e}");
    assert!(e.message.contains("threds"), "{e}");
    assert!(e.to_string().starts_with("t.toml:5:1: "), "{e}");
}

#[test]
fn bad_duration_names_the_rule_key() {
    let text = "[upstream]\naddress = \"127.0.0.1:3000\"\n\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\n\n[[rate_limit.rules]]\nname = \"b\"\nlimit = 1\nperiod = \"5 minutes\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.key, "rate_limit.rules[1].period", "{e}");
    assert_eq!(e.line, 12, "{e}");
    assert!(e.message.contains("unit"), "{e}");
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let e = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nthreads = \"two\"\n")
        .unwrap_err();
    assert_eq!(e.key, "server.threads");
    assert_eq!((e.line, e.column), (4, 11), "{e}");
}

#[test]
fn missing_upstream_address_is_an_error() {
    let e = parse("[upstream]\ntls = false\n").unwrap_err();
    assert!(e.message.contains("address"), "{e}");
}

#[test]
fn syntax_error_has_position() {
    let e = parse("[upstream\naddress = 1\n").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
}

#[test]
fn semantic_checks_point_at_the_key() {
    // (file text, the key the error names, its line)
    let cases = [
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 0\nperiod = \"1s\"\n",
            "rate_limit.rules[0].limit",
            5,
        ),
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nthreads = 0\n",
            "server.threads",
            4,
        ),
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\nkeepalive_pool_size = 0\n",
            "upstream.keepalive_pool_size",
            3,
        ),
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\nmax_in_flight = 0\n",
            "upstream.max_in_flight",
            3,
        ),
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\nqueue_timeout = \"0s\"\n",
            "upstream.queue_timeout",
            3,
        ),
        (
            "[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\n",
            "rate_limit.rules[1].name",
            8,
        ),
    ];
    for (text, key, line) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
    }
}

#[test]
fn buckets_that_never_refill_are_refused() {
    let rule = |extra: &str| {
        format!("[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\n{extra}")
    };
    let e = parse(&rule("period = \"2000000h\"\n")).unwrap_err();
    assert_eq!(e.key, "rate_limit.rules[0].period", "{e}");
    let e = parse(&rule("period = \"8760h\"\nburst = 4000000000\n")).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("rate_limit.rules[0].burst", 7),
        "{e}"
    );
    assert!(e.to_string().contains("100 years"), "{e}");
    parse(&rule("period = \"8760h\"\nburst = 99\n")).expect("99 years is allowed");
}

#[test]
fn bad_cidr_and_listen_are_refused() {
    let e = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[client_ip]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
    assert!(e.key.starts_with("client_ip.trusted_proxies"), "{e}");
    assert_eq!(e.line, 4);
    let e = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nlisten = [\"nope\"]\n")
        .unwrap_err();
    assert!(e.key.starts_with("server.listen"), "{e}");
}

#[test]
fn listen_takes_one_or_many() {
    let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n").unwrap();
    assert_eq!(c.server.listen.len(), 2);
}

#[test]
fn status_overrides_parse() {
    let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[errors.by_status.404]\ntype = \"missing\"\ncode = \"nope\"\n").unwrap();
    assert_eq!(c.errors.table.type_and_code(404).kind, "missing");
    let e = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[errors.by_status.200]\ntype = \"x\"\ncode = \"y\"\n").unwrap_err();
    assert_eq!(e.key, "errors.by_status.200");
}

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    Config::load(&dir.join("tollgate.toml")).unwrap();
    for entry in std::fs::read_dir(dir.join("examples")).unwrap() {
        let p = entry.unwrap().path();
        Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn a_rules_burst_defaults_to_its_limit_and_its_prefix_to_the_root() {
    let text = "[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 5\nperiod = \"1s\"\n[[rate_limit.rules]]\nname = \"b\"\npath_prefix = \"/v1\"\nmethods = [\"POST\"]\nlimit = 5\nperiod = \"1s\"\nburst = 9\n";
    let rules = parse(text).unwrap().rate_limit.limiter.rules;
    assert_eq!(rules.iter().map(|r| r.burst).collect::<Vec<_>>(), [5, 9]);
    assert!(rules[0].matches("DELETE", "/anything"));
    assert!(rules[1].matches("POST", "/v1/x") && !rules[1].matches("GET", "/v1/x"));
}

#[test]
fn rule_keys_parse_and_header_keys_on_redis_need_a_secret() {
    let rule = |key: &str| {
        format!("[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\nkey = \"{key}\"\n")
    };
    let rules = parse(&rule("header:X-Api-Key"))
        .unwrap()
        .rate_limit
        .limiter
        .rules;
    assert_eq!(
        rules[0].key,
        crate::rate_limit::RuleKey::Header(http::HeaderName::from_static("x-api-key"))
    );
    assert_eq!(
        parse(&rule("ip")).unwrap().rate_limit.limiter.rules[0].key,
        crate::rate_limit::RuleKey::Ip
    );
    let e = parse(&rule("cookie:x")).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("rate_limit.rules[0].key", 7),
        "{e}"
    );
    let e = parse(&rule("header:bad name")).unwrap_err();
    assert!(e.message.contains("not a header name"), "{e}");
    let redis = rule("header:X-Api-Key").replace(
        "[[rate_limit.rules]]",
        "[rate_limit]\nbackend = \"redis\"\n[[rate_limit.rules]]",
    );
    let e = parse(&redis).unwrap_err();
    assert_eq!(e.key, "rate_limit.rules[0].key", "{e}");
    assert!(e.message.contains("rate_limit.key_secret"), "{e}");
    let with_secret = redis.replace(
        "backend = \"redis\"",
        "backend = \"redis\"\nkey_secret = \"s3cret\"",
    );
    let c = parse(&with_secret).unwrap();
    assert_eq!(c.rate_limit.limiter.key_secret.as_deref(), Some("s3cret"));
}

#[test]
fn item_errors_and_the_error_format_parse_and_are_checked() {
    let base = "[upstream]\naddress = \"127.0.0.1:3000\"\n";
    let c = parse(&format!(
        "{base}[errors]\nformat = \"problem\"\n[[routes]]\nname = \"ocr\"\npath_prefix = \"/v1/ocr\"\nitem_errors = [\"ocr_data\", \"more\"]\n"
    ))
    .unwrap();
    assert_eq!(c.errors.format, crate::errors::ErrorFormat::Problem);
    assert_eq!(c.routes[0].item_errors, ["ocr_data", "more"]);
    assert_eq!(
        parse(base).unwrap().errors.format,
        crate::errors::ErrorFormat::Envelope
    );
    for bad in ["[]", "[\"\"]", "[\"a\", \"a\"]"] {
        let e = parse(&format!(
            "{base}[[routes]]\nname = \"ocr\"\npath_prefix = \"/v1/ocr\"\nitem_errors = {bad}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "routes[0].item_errors", "{bad}: {e}");
        assert_eq!(e.line, 6, "{bad}: {e}");
    }
    let e = parse(&format!("{base}[errors]\nformat = \"xml\"\n")).unwrap_err();
    assert_eq!(e.key, "errors.format", "{e}");
    assert_eq!(e.line, 4, "{e}");
}
