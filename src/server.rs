//! Wiring: a Pingora server with the proxy service, the admin listener and
//! a janitor that sweeps idle rate-limit keys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// Sweeps idle keys and flips readiness.
struct Janitor {
    rt: Arc<Runtime>,
    ready: Arc<Readiness>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Janitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.ready.set(true);
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.rt.limiter.sweep(),
            }
        }
        self.ready.set(false);
    }
}

/// Build the server for a validated config and run it; never returns.
pub fn run(cfg: Config) -> ! {
    let f = &cfg.file;
    let metrics = Arc::new(Metrics::new(&Runtime::rule_names(&cfg)));
    let rt = Arc::new(Runtime::new(&cfg, metrics));
    let ready = Arc::new(Readiness::default());

    let conf = ServerConf {
        threads: f.server.threads,
        grace_period_seconds: Some(f.server.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ca_file: (!f.upstream.ca_file.is_empty()).then(|| f.upstream.ca_file.clone()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(rt.clone()),
        "tollgate",
    );
    for addr in &f.server.listen.0 {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(logic) = proxy.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = f.server.h2c;
        logic.server_options = Some(options);
    }

    let mut admin = Service::new(
        "tollgate admin".to_string(),
        Admin {
            rt: rt.clone(),
            ready: ready.clone(),
        },
    );
    admin.add_tcp(&f.server.admin_listen.to_string());
    admin.threads = Some(1);

    let janitor = background_service(
        "tollgate janitor",
        Janitor {
            rt,
            ready,
            every: f
                .rate_limit
                .sweep_interval
                .0
                .max(Duration::from_millis(100)),
        },
    );
    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(janitor);
    tracing::info!(
        listen = ?f.server.listen.0,
        admin = %f.server.admin_listen,
        upstream = %cfg.upstream_addr,
        "tollgate starting"
    );
    server.run_forever()
}
