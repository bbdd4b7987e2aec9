//! The framework floor for the load harness: a Pingora pass-through proxy
//! with nothing but `upstream_peer`, built with the same profile and
//! allocator as tollgate and the same listener and module settings.
//!
//! `bare_proxy LISTEN UPSTREAM [THREADS] [timeouts] [refuse]`
//!
//! `timeouts` sets tollgate's default timeouts and limits on both sides:
//! the upstream's, and the client limits of vendor patch 9 (a deadline for
//! a request head, a cap on its size, an idle timeout between requests,
//! which costs a timer per request wait); `refuse` answers every
//! request with an empty 429 from `request_filter` (Pingora's own API, one
//! header): the framework's floor for a response the proxy makes itself.

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::protocols::http::v1::server::ClientLimits;
use pingora::server::configuration::{Opt, ServerConf};

#[path = "../benches/load/bare_logic.rs"]
mod bare_logic;
use bare_logic::Bare;

/// The same allocator as tollgate's binary.
#[global_allocator]
static GLOBAL: tollgate::allocator::Allocator = tollgate::allocator::Allocator;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6190".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let flags: Vec<String> = args.collect();
    let timeouts = flags.iter().any(|f| f == "timeouts");
    let refuse = flags.iter().any(|f| f == "refuse");
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream,
            timeouts,
            refuse,
        },
    );
    // The same listener setting as tollgate's (src/server.rs).
    proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::default().read(0)));
    if let (true, Some(logic)) = (timeouts, proxy.app_logic_mut()) {
        let mut options = HttpServerOptions::default();
        options.h1_client_limits = Some(ClientLimits {
            idle_timeout_secs: 60,
            head_timeout: std::time::Duration::from_secs(10),
            max_head_bytes: 65_536,
        });
        logic.server_options = Some(options);
    }
    server.add_service(proxy);
    server.run_forever();
}
