//! The file's schema: what serde reads from the TOML, before any check
//! across fields. `deny_unknown_fields` everywhere: a typo is an error,
//! never a silently ignored key. Nothing outside `config` sees these
//! types; `compile` turns them into the domain's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::errors::{ErrorFormat, StatusOverride};
use crate::rate_limit::{HeaderStyle, OnBackendError, RuleKey, RuleMode};

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
    /// A request head must arrive whole within this of its first byte.
    pub header_timeout: HumanDuration,
    /// An idle client connection is closed after this.
    pub keepalive_timeout: HumanDuration,
    /// Largest request head (request line and fields), in bytes.
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// `[server.tls]`: terminate TLS on listeners of its own.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: Listen,
    /// PEM: the leaf certificate, then its chain.
    pub cert_file: String,
    /// PEM: the leaf's private key.
    pub key_file: String,
    /// How often the two files are checked for a change; "0s": never.
    #[serde(default = "default_watch_interval")]
    pub watch_interval: HumanDuration,
}

fn default_watch_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
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
            header_timeout: HumanDuration(Duration::from_secs(10)),
            keepalive_timeout: HumanDuration(Duration::from_secs(60)),
            max_header_bytes: 65_536,
            h2_max_concurrent_streams: 100,
            tls: None,
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
    #[serde(default = "default_keepalive_pool_size")]
    pub keepalive_pool_size: usize,
    /// Default: [`MAX_IN_FLIGHT_PER_THREAD`] for each of `server.threads`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Whether the limit adapts below `max_in_flight`.
    #[serde(default)]
    pub adaptive_in_flight: bool,
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: HumanDuration,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
/// As many idle upstream connections as a 1,000-connection burst leaves:
/// fewer, and every burst closes the surplus and connects anew.
fn default_keepalive_pool_size() -> usize {
    1024
}
/// Requests one proxy thread keeps waiting on the upstream at once by
/// default: past some number, their state no longer fits the caches and
/// every request costs more (docs/performance.md, "Under load").
pub const MAX_IN_FLIGHT_PER_THREAD: usize = 128;
fn default_queue_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
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

/// `rate_limit.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Redis,
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
    /// Client addresses (after trusted-proxy resolution) no rule limits.
    pub exempt: Vec<IpNet>,
    /// The HMAC key of header values for header-keyed rules, shared by
    /// replicas on the Redis backend.
    pub key_secret: String,
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
            exempt: Vec::new(),
            key_secret: String::new(),
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
    #[serde(default)]
    pub mode: RuleMode,
    /// `"ip"` or `"header:NAME"`.
    #[serde(default, deserialize_with = "rule_key")]
    pub key: RuleKey,
}

/// `key = "ip" | "header:NAME"`.
fn rule_key<'de, D: Deserializer<'de>>(d: D) -> Result<RuleKey, D::Error> {
    let s = String::deserialize(d)?;
    if s == "ip" {
        return Ok(RuleKey::Ip);
    }
    let name = s.strip_prefix("header:").ok_or_else(|| {
        de::Error::custom(format!(
            "`{s}`: write \"ip\" or \"header:NAME\" (e.g. \"header:X-Api-Key\")"
        ))
    })?;
    http::HeaderName::from_bytes(name.trim().as_bytes())
        .map(RuleKey::Header)
        .map_err(|_| de::Error::custom(format!("`{name}` is not a header name")))
}

fn root_prefix() -> String {
    "/".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorsConfig {
    pub max_body_bytes: usize,
    /// The form an error takes when the client's `Accept` does not decide.
    pub format: ErrorFormat,
    /// `[errors.by_status.404] type = "...", code = "..."`
    pub by_status: BTreeMap<String, StatusOverride>,
}

impl Default for ErrorsConfig {
    fn default() -> Self {
        ErrorsConfig {
            max_body_bytes: 65536,
            format: ErrorFormat::Envelope,
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
