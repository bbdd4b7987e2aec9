//! The unpatched framework floor: a Pingora 0.9.1 pass-through proxy from
//! crates.io with nothing but `upstream_peer`, the same profile, allocator,
//! listener and module settings as tollgate, and tollgate's upstream
//! timeouts. Pingora 0.9.1 has no client limits (vendor patch 9), so it
//! waits for a next request without an idle timer.
//!
//! `bare-unpatched LISTEN UPSTREAM [THREADS] [refuse]`: `refuse` answers
//! every request with an empty 429 from `request_filter`.

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[path = "../../bare_logic.rs"]
mod bare_logic;
use bare_logic::Bare;

/// The same allocator as tollgate's binary: the same file, so the floor
/// differs from tollgate by Pingora's patches and tollgate's logic only.
#[path = "../../../../src/allocator.rs"]
mod allocator;

#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6190".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let refuse = args.any(|f| f == "refuse");
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare {
        upstream,
        timeouts: true,
        refuse,
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::default().read(0)));
    server.add_service(proxy);
    server.run_forever();
}
