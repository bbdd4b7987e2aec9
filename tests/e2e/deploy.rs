//! The `deploy/` material checked against the real thing: a real Prometheus
//! scraping a real tollgate with the shipped scrape config and rules, the
//! rules' and dashboard's metric names against what tollgate exports, the
//! Kubernetes manifests against the config they carry, and the systemd
//! unit with `systemd-analyze` where it exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate::config::Config;

use crate::harness::{
    eventually, free_port, get, wait_for_port, Gateway, Proc, TempDir, Upstream, POLL,
};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let cfg = deploy("prometheus/prometheus.yml");
    promtool(&["check", "config", cfg.to_str().unwrap()]);
    for rules in [
        "prometheus/rules/alerts.yml",
        "prometheus/rules/recording.yml",
    ] {
        promtool(&["check", "rules", deploy(rules).to_str().unwrap()]);
    }
    promtool(&[
        "test",
        "rules",
        deploy("prometheus/tests/alerts_test.yml").to_str().unwrap(),
    ]);
}

/// Metric names a PromQL text refers to (`tollgate_*`, `process_*`), with
/// histogram suffixes folded to the family name.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = promql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if at_word_start
            && (promql[i..].starts_with("tollgate_") || promql[i..].starts_with("process_"))
        {
            let end = promql[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(promql.len(), |e| i + e);
            let name = &promql[i..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(name);
            out.insert(family.to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if (k == "expr" || k == "query" || k == "definition") && v.is_string() {
                        out.push(v.as_str().unwrap_or_default().to_string());
                    } else if k == "query" && v.is_object() {
                        if let Some(q) = v.get("query").and_then(Value::as_str) {
                            out.push(q.to_string());
                        }
                    }
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let v: Value = serde_json::from_str(&read("grafana/tollgate.json")).expect("dashboard is JSON");
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

fn rule_exprs() -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "prometheus/rules/alerts.yml",
        "prometheus/rules/recording.yml",
    ] {
        for doc in yaml_docs(path) {
            for group in doc["groups"].as_sequence().expect("groups") {
                for rule in group["rules"].as_sequence().expect("rules") {
                    out.push(rule["expr"].as_str().expect("expr").to_string());
                }
            }
        }
    }
    out
}

/// The families a running tollgate exports (after a little traffic, so
/// every histogram has series).
fn exported_families(gw: &Gateway) -> BTreeSet<String> {
    gw.scrape()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_in_the_dashboard_and_rules_is_exported() {
    let up = Upstream::start();
    let gw = Gateway::start(
        up.port,
        "",
        "[[rate_limit.rules]]\nname = \"default\"\nlimit = 100\nperiod = \"1s\"\n",
    );
    gw.connect().request("GET", "/hello");
    // The request is counted as its log phase ends, just after the response.
    let exported = eventually(
        Duration::from_secs(5),
        POLL,
        || "tollgate_requests_total not exported".into(),
        || Some(exported_families(&gw)).filter(|f| f.contains("tollgate_requests_total")),
    );
    let dash = dashboard_exprs();
    assert!(
        dash.len() >= 8,
        "the dashboard has its panels: {}",
        dash.len()
    );
    for (what, exprs) in [("dashboard", dash), ("rules", rule_exprs())] {
        let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
        assert!(!used.is_empty(), "{what} uses tollgate metrics");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} uses metrics tollgate does not export: {missing:?}"
        );
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn prom_query(port: u16, q: &str) -> Vec<Value> {
    let r = get(port, &format!("/api/v1/query?query={}", url_encode(q))).expect("query prometheus");
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_real_prometheus_scrapes_tollgate_with_the_shipped_config() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    let rules = "[[rate_limit.rules]]\nname = \"default\"\npath_prefix = \"/hello\"\nlimit = 5\nperiod = \"1m\"\n";
    let gw = Gateway::start(up.port, "", rules);

    // The shipped config and rules, pointed at this tollgate, scraping every second.
    let dir = TempDir::new();
    let shipped = read("prometheus/prometheus.yml");
    assert!(shipped.contains("127.0.0.1:9090"), "the shipped target");
    let cfg = shipped
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", gw.admin))
        .replace("15s", "1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s");
    std::fs::write(dir.0.join("prometheus.yml"), cfg).unwrap();
    std::fs::create_dir_all(dir.0.join("rules")).unwrap();
    for f in ["alerts.yml", "recording.yml"] {
        std::fs::copy(
            deploy(&format!("prometheus/rules/{f}")),
            dir.0.join("rules").join(f),
        )
        .unwrap();
    }
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.0.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (.ci/run installs it)");
    let _prom = Proc { child, log: None };
    wait_for_port(port, Duration::from_secs(20));
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || "prometheus not ready".into(),
        || get(port, "/-/ready").ok().filter(|r| r.status == 200),
    );

    // Traffic: 200s, normalized errors, and 429s.
    let mut c = gw.connect();
    for path in [
        "/hello",
        "/errors/validation",
        "/errors/html",
        "/hello",
        "/hello",
        "/hello",
        "/hello",
    ] {
        c.request("GET", path);
    }

    let expectations = [
        "up{job=\"tollgate\"} == 1",
        "rate(tollgate_requests_total[30s]) > 0",
        "rate(tollgate_rate_limited_total{rule=\"default\"}[30s]) > 0",
        "rate(tollgate_errors_normalized_total{source=\"html\"}[30s]) > 0",
        "histogram_quantile(0.99, sum by (le) (rate(tollgate_request_duration_seconds_bucket[30s]))) > 0",
    ];
    let start = Instant::now();
    for q in expectations {
        eventually(
            Duration::from_secs(40).saturating_sub(start.elapsed()),
            Duration::from_millis(500),
            || format!("no series for {q}"),
            || {
                // Keep a trickle of traffic so rates stay positive.
                c.request("GET", "/hello");
                c.request("GET", "/errors/html");
                Some(()).filter(|_| !prom_query(port, q).is_empty())
            },
        );
    }
}

#[test]
fn kubernetes_manifests_match_the_config_they_carry() {
    let cm = yaml_docs("kubernetes/configmap.yaml");
    let cm = cm
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let toml = cm["data"]["tollgate.toml"]
        .as_str()
        .expect("tollgate.toml in the ConfigMap");
    let cfg = Config::parse(Path::new("configmap.yaml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let listen_port = cfg.server.listen[0].port();
    let admin_port = cfg.server.admin_listen.port();
    assert!(
        cfg.server.admin_listen.ip().is_unspecified(),
        "probes reach the admin listener"
    );

    let dep = yaml_docs("kubernetes/deployment.yaml");
    let dep = dep
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &dep["spec"]["template"];
    let containers = pod["spec"]["containers"].as_sequence().expect("containers");
    let gw = containers
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.contains("tollgate")))
        .expect("the tollgate container");
    let port_of = |name: &str| -> u64 {
        gw["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("port {name}"))
    };
    assert_eq!(port_of("http"), u64::from(listen_port));
    assert_eq!(port_of("admin"), u64::from(admin_port));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(gw[probe]["httpGet"]["path"], path);
        assert_eq!(gw[probe]["httpGet"]["port"], "admin");
    }
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], admin_port.to_string().as_str());
    assert!(gw["lifecycle"]["preStop"].is_mapping(), "a preStop hook");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(
        grace > cfg.server.grace_period.as_secs() + 1,
        "room for the drain"
    );
    assert!(gw["resources"]["requests"]["memory"].is_string());
    // The app's upstream is the sidecar's upstream.
    let app_ports: Vec<u64> = containers
        .iter()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert!(app_ports.contains(&u64::from(cfg.upstream.addr.port())));

    let kinds: BTreeSet<String> = ["service.yaml", "servicemonitor.yaml", "pdb.yaml"]
        .iter()
        .flat_map(|f| yaml_docs(&format!("kubernetes/{f}")))
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect();
    for k in ["Service", "ServiceMonitor", "PodDisruptionBudget"] {
        assert!(kinds.contains(k), "{k} shipped");
    }
}

#[test]
fn systemd_unit_verifies_where_systemd_analyze_exists() {
    let unit = read("systemd/tollgate.service");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes"));
    assert!(unit.contains("ProtectSystem=strict"));
    assert!(unit.lines().any(|l| l.trim() == "CapabilityBoundingSet="));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit checked as text only");
        return;
    }
    // Verify with the real binary in place of /usr/local/bin/tollgate.
    let dir = TempDir::new();
    let path = dir.0.join("tollgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tollgate", crate::harness::BIN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    crate::harness::assert_quiet_success(&out, "systemd-analyze verify");
}
