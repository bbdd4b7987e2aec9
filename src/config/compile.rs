//! The checks across fields, and the one step from the file's types to
//! the domain's: defaults are applied here, once, and nothing downstream
//! sees a `Spanned` value or a file type.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::file::{
    Backend, FileConfig, RateLimitConfig, RuleConfig, TlsConfig, MAX_IN_FLIGHT_PER_THREAD,
};
use super::{Config, ErrorSettings, ServerSettings, TlsTermination, UpstreamSettings};
use crate::client::{ClientIpResolver, Exemptions};
use crate::errors::ErrorTable;
use crate::rate_limit::{
    LimiterSettings, RateLimitSettings, RedisTarget, RuleKey, RuleSet, RuleSpec, SharedBackend,
    MAX_REFILL,
};
use crate::routes::{RequestMatcher, RouteSpec};

/// Smallest `server.max_header_bytes`: a request line and a few fields.
const MIN_HEADER_BYTES: usize = 1024;
/// Largest `server.max_header_bytes`: Pingora refuses a head over 1 MiB
/// whatever the setting (with its own answer, not the gateway's).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Most `server.h2_max_concurrent_streams`: each open stream holds a request
/// in flight, so this bounds one connection's share of the gateway.
const MAX_H2_STREAMS: u32 = 1000;

/// Makes an error at a place in the file: a span when serde kept one, else
/// the key's own line is looked up.
pub(super) type At<'a> = dyn Fn(Option<Range<usize>>, &str, String) -> ConfigError + 'a;

/// Check `file` as a whole and build the model from it.
pub(super) fn compile(file: FileConfig, at: &At) -> Result<Config, ConfigError> {
    let s = &file.server;
    if s.threads == 0 {
        return Err(at(None, "server.threads", "must be at least 1".into()));
    }
    if file.upstream.keepalive_pool_size == 0 {
        return Err(at(
            None,
            "upstream.keepalive_pool_size",
            "must be at least 1".into(),
        ));
    }
    if file.upstream.max_in_flight == Some(0) {
        let message = "must be at least 1".into();
        return Err(at(None, "upstream.max_in_flight", message));
    }
    if file.upstream.queue_timeout.0.is_zero() {
        let message = "must be longer than zero".into();
        return Err(at(None, "upstream.queue_timeout", message));
    }
    if s.header_timeout.0.is_zero() {
        let message = "must be longer than zero".into();
        return Err(at(None, "server.header_timeout", message));
    }
    // Pingora counts the idle time between requests in whole seconds.
    if s.keepalive_timeout.0 < Duration::from_secs(1) {
        let message = "must be at least 1s".into();
        return Err(at(None, "server.keepalive_timeout", message));
    }
    if !(1..=MAX_H2_STREAMS).contains(&s.h2_max_concurrent_streams) {
        let message = format!("must be from 1 to {MAX_H2_STREAMS}");
        return Err(at(None, "server.h2_max_concurrent_streams", message));
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes) {
        let message = format!("must be from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} bytes");
        return Err(at(None, "server.max_header_bytes", message));
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
        if matches!(r.key, RuleKey::Header(_))
            && rl.backend == Backend::Redis
            && rl.key_secret.is_empty()
        {
            let message = "a header-keyed rule on the Redis backend needs rate_limit.key_secret \
                           (so that replicas hash a value to the same key)";
            return Err(at(None, &key("key"), message.into()));
        }
        if r.period.0.is_zero() {
            return Err(at(None, &key("period"), "must be longer than zero".into()));
        }
        if rule_spec(r).full_refill() > MAX_REFILL {
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
            let names = items.get_ref();
            let mut seen = HashSet::new();
            if names.is_empty() || names.iter().any(|n| n.is_empty() || !seen.insert(n)) {
                return Err(at(
                    Some(items.span()),
                    &key("item_errors"),
                    "must list the top-level members holding item arrays: non-empty, distinct names".into(),
                ));
            }
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
    let upstream = upstream(&file, at)?;
    let tls = match &file.server.tls {
        Some(t) => Some(tls(t, at)?),
        None => None,
    };
    let ca = &file.upstream.ca_file;
    if !ca.is_empty() && !Path::new(ca).is_file() {
        return Err(at(None, "upstream.ca_file", format!("no such file: {ca}")));
    }
    let server = &file.server;
    Ok(Config {
        server: ServerSettings {
            listen: server.listen.0.clone(),
            admin_listen: server.admin_listen,
            threads: server.threads,
            max_request_body_bytes: server.max_request_body_bytes,
            grace_period: server.grace_period.0,
            h2c: server.h2c,
            upgrade_sock: server.upgrade_sock.clone(),
            header_timeout: server.header_timeout.0,
            keepalive_timeout: server.keepalive_timeout.0,
            max_header_bytes: server.max_header_bytes,
            h2_max_concurrent_streams: server.h2_max_concurrent_streams,
            upstream_keepalive_pool_size: file.upstream.keepalive_pool_size,
            upstream_max_in_flight: file
                .upstream
                .max_in_flight
                .unwrap_or(MAX_IN_FLIGHT_PER_THREAD.saturating_mul(server.threads)),
            upstream_adaptive_in_flight: file.upstream.adaptive_in_flight,
            tls,
        },
        upstream,
        client_ip: ClientIpResolver::new(
            file.client_ip.trusted_proxies.clone(),
            file.client_ip.ipv6_prefix,
        ),
        rate_limit: rate_limit(&file.rate_limit),
        errors: ErrorSettings {
            table: ErrorTable::new(status_overrides),
            max_body_bytes: file.errors.max_body_bytes,
            format: file.errors.format,
        },
        routes: file
            .routes
            .iter()
            .map(|r| RouteSpec {
                name: r.name.get_ref().clone(),
                applies_to: matcher(&r.path_prefix, &r.methods),
                item_errors: r
                    .item_errors
                    .as_ref()
                    .map_or_else(Vec::new, |i| i.get_ref().clone()),
            })
            .collect(),
        log_all_requests: file.log.all_requests,
    })
}

/// `[server.tls]`. The files are read where the pair is loaded (at start,
/// by `tollgate check`, on reload), not here: a config may name files that
/// exist only where it is deployed.
fn tls(t: &TlsConfig, at: &At) -> Result<TlsTermination, ConfigError> {
    if t.watch_interval.0 > Duration::ZERO && t.watch_interval.0 < Duration::from_secs(1) {
        let message = "must be 0s (off) or at least 1s".into();
        return Err(at(None, "server.tls.watch_interval", message));
    }
    Ok(TlsTermination {
        listen: t.listen.0.clone(),
        cert_file: PathBuf::from(&t.cert_file),
        key_file: PathBuf::from(&t.key_file),
        watch_interval: (!t.watch_interval.0.is_zero()).then_some(t.watch_interval.0),
    })
}

/// A rule as the limiter takes it; its burst defaults to its limit.
fn rule_spec(r: &RuleConfig) -> RuleSpec {
    RuleSpec {
        name: r.name.get_ref().clone(),
        applies_to: matcher(&r.path_prefix, &r.methods),
        limit: *r.limit.get_ref(),
        period: r.period.0,
        burst: r
            .burst
            .as_ref()
            .map_or(*r.limit.get_ref(), |b| *b.get_ref()),
        mode: r.mode,
        key: r.key.clone(),
    }
}

fn matcher(path_prefix: &str, methods: &[String]) -> RequestMatcher {
    RequestMatcher {
        path_prefix: path_prefix.to_string(),
        methods: methods.to_vec(),
    }
}

fn rate_limit(rl: &RateLimitConfig) -> RateLimitSettings {
    let rules = rl.rules.iter().map(rule_spec).collect();
    let shared = (rl.backend == Backend::Redis).then(|| SharedBackend {
        target: if rl.redis_cluster_nodes.is_empty() {
            RedisTarget::Single(rl.redis_url.clone())
        } else {
            RedisTarget::Cluster(rl.redis_cluster_nodes.clone())
        },
        timeout: rl.redis_timeout.0,
        on_error: rl.on_backend_error,
    });
    RateLimitSettings {
        limiter: LimiterSettings {
            rules,
            max_keys: rl.max_keys,
            shared,
            key_secret: (!rl.key_secret.is_empty()).then(|| rl.key_secret.clone()),
        },
        headers: rl.headers,
        exempt: Exemptions::new(rl.exempt.clone()),
        // A sweep walks every table: not more often than ten times a second.
        sweep_interval: rl.sweep_interval.0.max(Duration::from_millis(100)),
    }
}

/// `upstream.address` resolved once, and the TLS name (`sni`, else the
/// address's host).
fn upstream(file: &FileConfig, at: &At) -> Result<UpstreamSettings, ConfigError> {
    let u = &file.upstream;
    let addr_text = u.address.get_ref();
    let span = Some(u.address.span());
    let host = addr_text
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or_else(|| {
            at(
                span.clone(),
                "upstream.address",
                "expected host:port".into(),
            )
        })?;
    let addr: SocketAddr = addr_text
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
    Ok(UpstreamSettings {
        addr,
        tls: u.tls,
        sni: if u.sni.is_empty() {
            host
        } else {
            u.sni.clone()
        },
        ca_file: (!u.ca_file.is_empty()).then(|| u.ca_file.clone()),
        connect_timeout: u.connect_timeout.0,
        read_timeout: u.read_timeout.0,
        queue_timeout: u.queue_timeout.0,
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
