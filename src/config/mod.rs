//! Configuration: one TOML file → one validated model, [`Config`].
//!
//! - [`mod@file`]: the file's schema as serde reads it.
//! - `compile`: the checks across fields, and the one step to the
//!   domain's types (rules, the error table, the client-IP resolver), with
//!   every default applied once.
//! - [`error`]: errors that name the file, line, column and dotted key.
//!
//! Only the wiring (`proxy`) and the CLI use this module; the domain
//! modules never import it. Every key is described in
//! docs/configuration.md.

mod compile;
pub mod error;
pub mod file;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::ClientIpResolver;
use crate::errors::{ErrorFormat, ErrorTable};
use crate::rate_limit::RateLimitSettings;
use crate::routes::RouteSpec;

pub use error::ConfigError;
pub use file::HumanDuration;

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub client_ip: ClientIpResolver,
    pub rate_limit: RateLimitSettings,
    pub errors: ErrorSettings,
    /// `[[routes]]` in file order.
    pub routes: Vec<RouteSpec>,
    /// Log every request, not only the non-2xx ones.
    pub log_all_requests: bool,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// Proxy worker threads.
    pub threads: usize,
    /// A request body over this many bytes is refused with 413.
    pub max_request_body_bytes: u64,
    /// How long SIGTERM waits for in-flight requests.
    pub grace_period: Duration,
    /// Accept HTTP/2 without TLS (prior knowledge).
    pub h2c: bool,
    /// The Unix socket a new binary takes the listeners over from
    /// (`tollgate --upgrade`, then SIGQUIT to the old process).
    pub upgrade_sock: String,
    /// A request head must arrive whole within this of its first byte
    /// (408 past it).
    pub header_timeout: Duration,
    /// An idle client connection is closed after this (whole seconds).
    pub keepalive_timeout: Duration,
    /// Largest request head; 431 past it (HTTP/2: the largest header list,
    /// refused by the h2 layer).
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Idle upstream connections kept for reuse (`upstream.keepalive_pool_size`,
    /// read when the process starts).
    pub upstream_keepalive_pool_size: usize,
    /// Requests waiting on the upstream's answer at once
    /// (`upstream.max_in_flight`, read when the process starts).
    pub upstream_max_in_flight: usize,
    /// Whether fewer slots than `upstream_max_in_flight` are in force when
    /// fewer lose no throughput (`upstream.adaptive_in_flight`, read when
    /// the process starts).
    pub upstream_adaptive_in_flight: bool,
    /// `[server.tls]`, when TLS is terminated.
    pub tls: Option<TlsTermination>,
}

/// `[server.tls]`: listeners that speak TLS (1.2 and 1.3, HTTP/2 and
/// HTTP/1.1 by ALPN) with a certificate pair re-read on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTermination {
    pub listen: Vec<SocketAddr>,
    /// PEM: the leaf certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the leaf's private key.
    pub key_file: PathBuf,
    /// How often the files are checked for a change, which reloads the
    /// config (`None`: only on SIGHUP and `POST /reload`).
    pub watch_interval: Option<Duration>,
}

/// `[upstream]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `upstream.address`, resolved once at load.
    pub addr: SocketAddr,
    pub tls: bool,
    /// The TLS server name: `upstream.sni`, else the address's host.
    pub sni: String,
    /// Extra CA certificates (PEM) to trust for the upstream.
    pub ca_file: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's next bytes (and to write to it).
    pub read_timeout: Duration,
    /// Longest wait for one of the `upstream.max_in_flight` slots.
    pub queue_timeout: Duration,
}

/// `[errors]`.
#[derive(Debug, Clone)]
pub struct ErrorSettings {
    /// The status table with `errors.by_status` applied.
    pub table: ErrorTable,
    /// Most bytes of an upstream error body read (and decoded) for the
    /// envelope.
    pub max_body_bytes: usize,
    /// The form of an error body when the client's `Accept` does not
    /// decide (and for answers made before a request is parsed).
    pub format: ErrorFormat,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::unplaced(path, format!("cannot read the file: {e}")))?;
        Config::parse(path, &text)
    }

    /// Parse and validate text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<Range<usize>>, key: &str, message: String| {
            error::locate(path, text, span, key, message)
        };
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| at(e.span(), "", e.message().to_string()))?;
        let file: file::FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            at(inner.span(), &key, inner.message().to_string())
        })?;
        compile::compile(file, &at)
    }
}

#[cfg(test)]
mod tests;
