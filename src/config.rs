//! The TOML file and the one internal model it turns into.
//!
//! Everything is checked while deserializing (durations, addresses, CIDRs,
//! enums) or right after (cross-field rules), so every error can name the
//! file, line, column and dotted key. `deny_unknown_fields` everywhere: a
//! typo is an error, never a silently ignored key.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::rate_limit::RuleSet;

/// A config error that points at the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `rate_limit.rules[1].period`; empty for syntax errors.
    pub key: String,
    pub message: String,
    /// The offending source line, for a caret display.
    pub source_line: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.source_line.is_empty() {
            let pad = " ".repeat(self.column.saturating_sub(1));
            write!(f, "\n    | {}\n    | {}^", self.source_line, pad)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A duration written with a unit: `"500ms"`, `"1s"`, `"1m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("`{s}` has no unit; write e.g. \"500ms\", \"1s\", \"1m\", \"1h\"")
        })?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` does not start with a whole number"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`; use ms, s, m or h"
                ))
            }
        };
        Ok(d)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen(pub Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address like \"0.0.0.0:8080\" or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                parse_socket_addr(v)
                    .map(|a| Listen(vec![a]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(parse_socket_addr(&s).map_err(de::Error::custom)?);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("at least one listen address is needed"));
                }
                Ok(Listen(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("`{s}` is not an IP:port address (e.g. \"0.0.0.0:8080\", \"[::]:8080\")")
    })
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_socket_addr(&s).map_err(de::Error::custom)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: Listen,
    #[serde(deserialize_with = "socket_addr")]
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub max_request_body_bytes: u64,
    pub grace_period: HumanDuration,
    pub h2c: bool,
    /// The Unix socket a new binary takes the listeners over from
    /// (`tollgate --upgrade`, then SIGQUIT to the old process).
    pub upgrade_sock: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Listen(vec![SocketAddr::from(([0, 0, 0, 0], 8080))]),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            threads: 2,
            max_request_body_bytes: 10_485_760,
            grace_period: HumanDuration(Duration::from_secs(10)),
            h2c: true,
            upgrade_sock: "/tmp/tollgate-upgrade.sock".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`; resolved when the file is loaded.
    pub address: Spanned<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    pub trusted_proxies: Vec<IpNet>,
    pub ipv6_prefix: u8,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendError {
    Local,
    Allow,
    Deny,
}

/// Which rate-limit headers go out (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderStyle {
    XRatelimit,
    Ietf,
    Both,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub backend: Backend,
    pub redis_url: String,
    pub on_backend_error: OnBackendError,
    /// Longest wait for one Redis decision before `on_backend_error` applies.
    pub redis_timeout: HumanDuration,
    /// Redis Cluster seed nodes (`redis://host:port`); when set, used
    /// instead of `redis_url`.
    pub redis_cluster_nodes: Vec<String>,
    pub max_keys: usize,
    pub headers: HeaderStyle,
    /// How often idle keys are swept from the local tables.
    pub sweep_interval: HumanDuration,
    pub rules: Vec<RuleConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            backend: Backend::Local,
            redis_url: "redis://127.0.0.1:6379".into(),
            on_backend_error: OnBackendError::Local,
            redis_timeout: HumanDuration(Duration::from_millis(20)),
            redis_cluster_nodes: Vec::new(),
            max_keys: 1_000_000,
            headers: HeaderStyle::XRatelimit,
            sweep_interval: HumanDuration(Duration::from_secs(10)),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Spanned<String>,
    #[serde(default = "root_prefix")]
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub limit: Spanned<u32>,
    pub period: HumanDuration,
    pub burst: Option<Spanned<u32>>,
}

/// Longest time a rule's full burst may take to refill.
pub const MAX_REFILL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn root_prefix() -> String {
    "/".into()
}

/// `type`/`code` for one status, overriding the SPEC §1 defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusOverride {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorsConfig {
    pub max_body_bytes: usize,
    /// `[errors.by_status.404] type = "...", code = "..."`
    pub by_status: BTreeMap<String, StatusOverride>,
}

impl Default for ErrorsConfig {
    fn default() -> Self {
        ErrorsConfig {
            max_body_bytes: 65536,
            by_status: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub item_errors: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log every request, not only the non-2xx ones.
    pub all_requests: bool,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub errors: ErrorsConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: FileConfig,
    /// `upstream.address` resolved once at load.
    pub upstream_addr: SocketAddr,
    /// Host part of `upstream.address` (TLS SNI default).
    pub upstream_host: String,
    /// `errors.by_status` with the keys parsed.
    pub status_overrides: BTreeMap<u16, StatusOverride>,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
            source_line: String::new(),
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<Range<usize>>, key: &str, message: String| {
            locate(path, text, span, key, message)
        };
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| at(e.span(), "", e.message().to_string()))?;
        let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            at(inner.span(), &key, inner.message().to_string())
        })?;
        validate(file, &at)
    }
}

type At<'a> = dyn Fn(Option<Range<usize>>, &str, String) -> ConfigError + 'a;

fn validate(file: FileConfig, at: &At) -> Result<Config, ConfigError> {
    let s = &file.server;
    if s.threads == 0 {
        return Err(at(None, "server.threads", "must be at least 1".into()));
    }
    if file.client_ip.ipv6_prefix > 128 {
        return Err(at(None, "client_ip.ipv6_prefix", "must be 0..=128".into()));
    }
    if file.errors.max_body_bytes == 0 {
        return Err(at(
            None,
            "errors.max_body_bytes",
            "must be at least 1".into(),
        ));
    }
    let rl = &file.rate_limit;
    if rl.max_keys == 0 {
        return Err(at(None, "rate_limit.max_keys", "must be at least 1".into()));
    }
    if rl.redis_timeout.0.is_zero() {
        return Err(at(
            None,
            "rate_limit.redis_timeout",
            "must be longer than zero".into(),
        ));
    }
    if rl.backend == Backend::Redis {
        let check = |url: &str, key: &str| {
            redis::Client::open(url)
                .map(|_| ())
                .map_err(|e| at(None, key, format!("`{url}` is not a Redis URL: {e}")))
        };
        if rl.redis_cluster_nodes.is_empty() {
            check(&rl.redis_url, "rate_limit.redis_url")?;
        }
        for n in &rl.redis_cluster_nodes {
            check(n, "rate_limit.redis_cluster_nodes")?;
        }
    }
    if rl.rules.len() > RuleSet::CAPACITY {
        return Err(at(
            None,
            "rate_limit.rules",
            format!("at most {} rules are supported", RuleSet::CAPACITY),
        ));
    }
    let mut names = HashSet::new();
    for (i, r) in rl.rules.iter().enumerate() {
        let key = |k: &str| format!("rate_limit.rules[{i}].{k}");
        check_name(r.name.get_ref(), r.name.span(), &key("name"), at)?;
        if !names.insert(r.name.get_ref().clone()) {
            return Err(at(
                Some(r.name.span()),
                &key("name"),
                "duplicate rule name".into(),
            ));
        }
        check_prefix(&r.path_prefix, &key("path_prefix"), at)?;
        check_methods(&r.methods, &key("methods"), at)?;
        if *r.limit.get_ref() == 0 {
            return Err(at(
                Some(r.limit.span()),
                &key("limit"),
                "must be at least 1".into(),
            ));
        }
        if let Some(b) = &r.burst {
            if *b.get_ref() == 0 {
                return Err(at(
                    Some(b.span()),
                    &key("burst"),
                    "must be at least 1".into(),
                ));
            }
        }
        if r.period.0.is_zero() {
            return Err(at(None, &key("period"), "must be longer than zero".into()));
        }
        // The limiter keeps time in u64 nanoseconds (584 years); a bucket
        // that takes longer than a century to refill is a typo, not a policy.
        let burst = r
            .burst
            .as_ref()
            .map_or(*r.limit.get_ref(), |b| *b.get_ref());
        let refill = (r.period.0 / *r.limit.get_ref()).saturating_mul(burst);
        if refill > MAX_REFILL {
            let (field, span) = match &r.burst {
                Some(b) => ("burst", Some(b.span())),
                None => ("period", None),
            };
            return Err(at(
                span,
                &key(field),
                "a full bucket would take more than 100 years to refill (period / limit × burst)"
                    .into(),
            ));
        }
    }
    let mut route_names = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        check_name(r.name.get_ref(), r.name.span(), &key("name"), at)?;
        if r.name.get_ref() == "default" || !route_names.insert(r.name.get_ref().clone()) {
            return Err(at(
                Some(r.name.span()),
                &key("name"),
                "duplicate route name (\"default\" is reserved for unmatched requests)".into(),
            ));
        }
        check_prefix(&r.path_prefix, &key("path_prefix"), at)?;
        check_methods(&r.methods, &key("methods"), at)?;
        if let Some(items) = &r.item_errors {
            return Err(at(
                Some(items.span()),
                &key("item_errors"),
                "per-item error normalization is not available in this build yet".into(),
            ));
        }
    }
    let mut status_overrides = BTreeMap::new();
    for (k, v) in &file.errors.by_status {
        let key = format!("errors.by_status.{k}");
        let code: u16 = k
            .parse()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| {
                at(
                    None,
                    &key,
                    "the key must be a status code from 400 to 599".into(),
                )
            })?;
        if v.kind.is_empty() || v.code.is_empty() {
            return Err(at(None, &key, "`type` and `code` must be non-empty".into()));
        }
        status_overrides.insert(code, v.clone());
    }
    let addr_text = file.upstream.address.get_ref();
    let span = Some(file.upstream.address.span());
    let upstream_host = addr_text
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| {
            at(
                span.clone(),
                "upstream.address",
                "expected host:port".into(),
            )
        })?;
    let upstream_addr = addr_text
        .to_socket_addrs()
        .map_err(|e| {
            at(
                span.clone(),
                "upstream.address",
                format!("cannot resolve: {e}"),
            )
        })?
        .next()
        .ok_or_else(|| at(span, "upstream.address", "resolved to no address".into()))?;
    let ca = &file.upstream.ca_file;
    if !ca.is_empty() && !Path::new(ca).is_file() {
        return Err(at(None, "upstream.ca_file", format!("no such file: {ca}")));
    }
    Ok(Config {
        file,
        upstream_addr,
        upstream_host,
        status_overrides,
    })
}

fn check_name(name: &str, span: Range<usize>, key: &str, at: &At) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(at(
            Some(span),
            key,
            "names are metric labels: 1 to 64 characters from A-Z a-z 0-9 _ -".into(),
        ))
    }
}

fn check_prefix(prefix: &str, key: &str, at: &At) -> Result<(), ConfigError> {
    if prefix.starts_with('/') {
        Ok(())
    } else {
        Err(at(None, key, format!("`{prefix}` must start with `/`")))
    }
}

fn check_methods(methods: &[String], key: &str, at: &At) -> Result<(), ConfigError> {
    for m in methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(at(
                None,
                key,
                format!("`{m}` is not an HTTP method in upper case (e.g. \"POST\")"),
            ));
        }
    }
    Ok(())
}

/// Turn a byte span into a line/column error. Without a span (a check made
/// after parsing), the key's own line is looked up in the text.
fn locate(
    path: &Path,
    text: &str,
    span: Option<Range<usize>>,
    key: &str,
    message: String,
) -> ConfigError {
    let offset = span.map(|s| s.start).or_else(|| find_key(text, key));
    let (line, column, source_line) = match offset {
        Some(off) => {
            let off = off.min(text.len());
            let before = &text[..off];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = text[line_start..off].chars().count() + 1;
            let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
            (line, column, source_line)
        }
        None => (1, 1, String::new()),
    };
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key: key.to_string(),
        message,
        source_line,
    }
}

/// Best-effort position of a dotted key (`a.b[2].c`) in the text: finds the
/// table header, then the leaf key inside it.
fn find_key(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t, l),
        None => ("", key),
    };
    // `rate_limit.rules[1]` -> header `[[rate_limit.rules]]`, 2nd occurrence.
    let (table_name, nth) = match table.rsplit_once('[') {
        Some((t, rest)) => (t, rest.trim_end_matches(']').parse::<usize>().unwrap_or(0)),
        None => (table, 0),
    };
    let mut offset = 0;
    let mut in_table = table_name.is_empty();
    let mut seen = 0usize;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = false;
            if name == table_name {
                if seen == nth {
                    in_table = true;
                }
                seen += 1;
            }
        } else if in_table {
            let k = t.split('=').next().unwrap_or("").trim();
            if k == leaf {
                return Some(offset + line.find(leaf).unwrap_or(0));
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n").unwrap();
        assert_eq!(c.file.server.threads, 2);
        assert_eq!(c.file.errors.max_body_bytes, 65536);
        assert_eq!(c.file.rate_limit.max_keys, 1_000_000);
        assert!(c.file.rate_limit.rules.is_empty());
        assert_eq!(c.upstream_addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.upstream_host, "127.0.0.1");
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
        let e = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n\n[server]\nthreds = 4\n")
            .unwrap_err();
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
        let text = "[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 0\nperiod = \"1s\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, "rate_limit.rules[0].limit");
        assert_eq!(e.line, 5, "{e}");

        let text = "[upstream]\naddress = \"127.0.0.1:3000\"\n[server]\nthreads = 0\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("server.threads", 4), "{e}");

        let text = "[upstream]\naddress = \"127.0.0.1:3000\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\n[[rate_limit.rules]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line),
            ("rate_limit.rules[1].name", 8),
            "{e}"
        );
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
        assert_eq!(c.file.server.listen.0.len(), 2);
    }

    #[test]
    fn status_overrides_parse() {
        let c = parse("[upstream]\naddress = \"127.0.0.1:3000\"\n[errors.by_status.404]\ntype = \"missing\"\ncode = \"nope\"\n").unwrap();
        assert_eq!(c.status_overrides[&404].kind, "missing");
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
}
