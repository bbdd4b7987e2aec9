//! Wiring: a Pingora server with the proxy service, the admin listener, a
//! janitor that sweeps idle rate-limit keys, and the SIGHUP reloader.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use super::admin::{self, Admin, Readiness};
use super::gateway::Gateway;
use super::live::Live;
use super::patched;
use super::tls::{load_pair, CertStore};
use crate::admission::Admission;
use crate::config::{Config, ServerSettings};
use crate::observe::Metrics;

/// Pingora's threshold for timers: a timeout whose whole seconds exceed
/// this runs on tokio's timer wheel rather than Pingora's own timer thread
/// (0: every timeout of a second or more). The keep-alive wait and the
/// upstream read each start a timeout per request, and Pingora's costs more (a look-up in a shared map of
/// deadlines, two reference counts and a notifier per timeout, a clock
/// read to check on its thread) than an entry in tokio's wheel. Pingora
/// keeps its own timer by default (tokio's only past 15 minutes) for
/// servers with many threads, which share the runtime's one wheel and its
/// lock; a sidecar runs one or two. Figures in docs/performance.md.
pub const TOKIO_TIMER_THRESHOLD_SECS: u64 = 0;

/// Sweeps idle keys from whichever runtime is current.
struct Janitor {
    live: Arc<Live>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Janitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.live.runtime().limiter.sweep(),
            }
        }
    }
}

/// Reloads the config on SIGHUP (Pingora does not handle it).
struct Reloader {
    live: Arc<Live>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; use POST /reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = hup.recv() => {
                    let _ = admin::reload_off_thread(&self.live).await;
                }
            }
        }
    }
}

/// Reloads when the TLS certificate or key file changes, so a rotation
/// that only replaces the files (cert-manager, a Kubernetes secret update)
/// needs no signal.
struct CertWatcher {
    live: Arc<Live>,
    files: [PathBuf; 2],
    every: Duration,
}

/// What a change to a file shows: its modification time and length (a
/// Kubernetes secret update swaps a symlink; metadata follows it).
fn fingerprint(files: &[PathBuf; 2]) -> [Option<(std::time::SystemTime, u64)>; 2] {
    files.each_ref().map(|f| {
        let m = std::fs::metadata(f).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = fingerprint(&self.files);
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let now = fingerprint(&self.files);
                    if now != seen {
                        seen = now;
                        tracing::info!(files = ?self.files, "TLS files changed; reloading");
                        let _ = admin::reload_off_thread(&self.live).await;
                    }
                }
            }
        }
    }
}

/// How the process was started.
pub struct Launch {
    pub config_path: PathBuf,
    /// Take the listening sockets over from a running tollgate (SIGQUIT
    /// hand-off; see docs/operations.md).
    pub upgrade: bool,
}

/// `upstream.max_in_flight`'s slots; under `upstream.adaptive_in_flight`,
/// with the thread that decides how many are in force.
fn admission(s: &ServerSettings, metrics: &Arc<Metrics>) -> Admission {
    let max = s.upstream_max_in_flight;
    let gauge = metrics.upstream_in_flight_limit.clone();
    gauge.set(i64::try_from(max).unwrap_or(i64::MAX));
    if !s.upstream_adaptive_in_flight {
        return Admission::new(max);
    }
    let admission = Admission::adaptive(max);
    let on_change = move |limit: usize| gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
    if admission.start_adapting(max, on_change).is_none() {
        tracing::warn!(
            "no thread for upstream.adaptive_in_flight: the limit stays at max_in_flight"
        );
    }
    admission
}

/// Build the server for a validated config and run it; returns only if
/// the start fails.
pub fn run(launch: Launch, cfg: Config) -> std::io::Error {
    let s = &cfg.server;
    let metrics = Arc::new(Metrics::new());
    let admission = admission(s, &metrics);
    // A pair that cannot be served stops the start, naming the file.
    let tls = match &cfg.server.tls {
        Some(t) => match load_pair(&t.cert_file, &t.key_file) {
            Ok(pair) => Some(CertStore::new(pair)),
            Err(e) => return std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        },
        None => None,
    };
    let live = Arc::new(Live::new(launch.config_path, &cfg, metrics, tls.clone()));
    let readiness = Arc::new(Readiness::default());
    let admin_socket = match admin::bind(s.admin_listen) {
        Ok(s) => s,
        Err(e) => {
            return std::io::Error::new(e.kind(), format!("admin_listen {}: {e}", s.admin_listen))
        }
    };

    let mut conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: cfg.upstream.ca_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        fast_timeout_to_tokio_threshold_seconds: Some(TOKIO_TIMER_THRESHOLD_SECS),
        ..ServerConf::default()
    };
    patched::serve_ready_connections_in_turn(&mut conf);
    let opt = Opt {
        upgrade: launch.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(live.clone(), admission),
        "tollgate",
    );
    for addr in &s.listen {
        // No read buffer in front of the socket: Pingora reads requests into
        // buffers of its own, and the default 64 KiB one (zero-filled when
        // the connection is accepted) made 64 MB of a 1,000-connection
        // gateway's memory. The write buffer stays: it makes a response's
        // header and body one `sendto`.
        let listener =
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0));
        proxy.add_listener(listener);
    }
    if let (Some(t), Some(store)) = (&s.tls, &tls) {
        for addr in &t.listen {
            let settings = match store.listener_settings() {
                Ok(settings) => settings,
                Err(e) => return std::io::Error::other(format!("TLS listener {addr}: {e}")),
            };
            let listener = ListenerConfig::tcp(addr.to_string())
                .tls(settings)
                .l4_buffer(L4BufferSettings::default().read(0));
            proxy.add_listener(listener);
        }
    }
    if let Some(logic) = proxy.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = s.h2c;
        // CONNECT reaches `request_filter`, which refuses it with the
        // envelope (Pingora's own refusal is an empty 405).
        options.allow_connect_method_proxying = true;
        patched::limit_clients(
            &mut options,
            s.keepalive_timeout,
            s.header_timeout,
            s.max_header_bytes,
        );
        logic.server_options = Some(options);
        // HTTP/2: Pingora's bounded defaults, with the configured stream
        // limit and the same header budget as HTTP/1.
        let mut h2 = default_h2_options();
        h2.max_concurrent_streams(s.h2_max_concurrent_streams);
        h2.max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX));
        logic.h2_options = Some(h2);
    }
    let sweep_every = cfg.rate_limit.sweep_interval;

    server.add_service(proxy);
    server.add_service(background_service(
        "tollgate admin",
        Admin::new(live.clone(), readiness, admin_socket),
    ));
    server.add_service(background_service(
        "tollgate janitor",
        Janitor {
            live: live.clone(),
            every: sweep_every,
        },
    ));
    if let Some(t) = &s.tls {
        if let Some(every) = t.watch_interval {
            let watcher = CertWatcher {
                live: live.clone(),
                files: [t.cert_file.clone(), t.key_file.clone()],
                every,
            };
            server.add_service(background_service("tollgate TLS watcher", watcher));
        }
    }
    server.add_service(background_service("tollgate reloader", Reloader { live }));
    tracing::info!(
        listen = ?s.listen,
        tls_listen = ?s.tls.as_ref().map(|t| &t.listen),
        admin = %s.admin_listen,
        upstream = %cfg.upstream.addr,
        "tollgate starting"
    );
    server.run_forever()
}
