//! Live configuration: the current [`Runtime`] behind an `ArcSwap`, and
//! reloading it from the file (SIGHUP or `POST /reload`).
//!
//! A bad file is refused and the old config keeps serving. Unchanged rules
//! keep their buckets. Listener addresses, threads and h2c are fixed at
//! start: a reload that changes them says so in the log and keeps the old
//! values until a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::runtime::Runtime;
use super::tls::{load_pair, CertStore};
use crate::config::{Config, ConfigError, ServerSettings};
use crate::observe::Metrics;

pub struct Live {
    path: PathBuf,
    current: ArcSwap<Runtime>,
    /// The `[server]` the process was started with.
    boot: ServerSettings,
    metrics: Arc<Metrics>,
    /// The certificate pair the TLS listeners serve, when there are any.
    tls: Option<Arc<CertStore>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Rules that kept their bucket state.
    pub kept_rules: Vec<String>,
    /// `[server]` keys that changed but need a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Live {
    pub fn new(
        path: PathBuf,
        cfg: &Config,
        metrics: Arc<Metrics>,
        tls: Option<Arc<CertStore>>,
    ) -> Live {
        Live {
            path,
            current: ArcSwap::from_pointee(Runtime::new(cfg, metrics.clone())),
            boot: cfg.server.clone(),
            metrics,
            tls,
            reloading: Mutex::new(()),
        }
    }

    /// The runtime new requests use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The config file this process reloads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-read the file and swap the runtime in; counted in
    /// `tollgate_config_reloads_total` and logged either way.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let result = Config::load(&self.path).and_then(|cfg| {
            // The pair is read first: a bad one refuses the whole reload.
            let pair = match (&self.tls, &cfg.server.tls) {
                (Some(_), Some(t)) => Some(
                    load_pair(&t.cert_file, &t.key_file)
                        .map_err(|e| ConfigError::unplaced(&e.file, e.message))?,
                ),
                _ => None,
            };
            let (next, kept_rules) = self.current.load().reconfigured(&cfg);
            self.current.store(Arc::new(next));
            if let (Some(store), Some(pair)) = (&self.tls, pair) {
                store.replace(pair);
            }
            let needs_restart = self.restart_only_changes(&cfg.server);
            Ok(Reloaded {
                kept_rules,
                needs_restart,
            })
        });
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        match &result {
            Ok(r) => {
                tracing::info!(kept_rules = ?r.kept_rules, "config reloaded");
                if !r.needs_restart.is_empty() {
                    tracing::warn!(
                        keys = ?r.needs_restart,
                        "these [server] keys changed but take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the old config keeps serving")
            }
        }
        result
    }

    fn restart_only_changes(&self, new: &ServerSettings) -> Vec<&'static str> {
        let old = &self.boot;
        let tls_listen = |s: &ServerSettings| s.tls.as_ref().map(|t| t.listen.clone());
        // Each key read only when the listeners are set up, and whether it
        // changed since the start.
        let keys = [
            ("server.listen", old.listen != new.listen),
            ("server.admin_listen", old.admin_listen != new.admin_listen),
            ("server.threads", old.threads != new.threads),
            ("server.h2c", old.h2c != new.h2c),
            ("server.grace_period", old.grace_period != new.grace_period),
            (
                "server.header_timeout",
                old.header_timeout != new.header_timeout,
            ),
            (
                "server.keepalive_timeout",
                old.keepalive_timeout != new.keepalive_timeout,
            ),
            (
                "server.max_header_bytes",
                old.max_header_bytes != new.max_header_bytes,
            ),
            (
                "server.h2_max_concurrent_streams",
                old.h2_max_concurrent_streams != new.h2_max_concurrent_streams,
            ),
            ("server.upgrade_sock", old.upgrade_sock != new.upgrade_sock),
            (
                "upstream.keepalive_pool_size",
                old.upstream_keepalive_pool_size != new.upstream_keepalive_pool_size,
            ),
            (
                "upstream.max_in_flight",
                old.upstream_max_in_flight != new.upstream_max_in_flight,
            ),
            (
                "upstream.adaptive_in_flight",
                old.upstream_adaptive_in_flight != new.upstream_adaptive_in_flight,
            ),
            ("server.tls.listen", tls_listen(old) != tls_listen(new)),
        ];
        keys.into_iter()
            .filter_map(|(key, changed)| changed.then_some(key))
            .collect()
    }
}
