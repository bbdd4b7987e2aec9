//! The framework floor for the load harness: a Pingora pass-through proxy
//! with nothing but `upstream_peer`, built with the same profile and
//! allocator as tollgate and the same listener, scheduling (vendor patch 13),
//! timers and upstream pool settings.
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
use pingora::protocols::http::v1::server::ClientLimits;

#[path = "../benches/load/bare_logic.rs"]
mod bare_logic;
use bare_logic::{serve, Args, Bare};

/// The same allocator as tollgate's binary.
#[global_allocator]
static GLOBAL: tollgate::allocator::Allocator = tollgate::allocator::Allocator;

fn main() {
    let args = Args::from_command_line();
    let timeouts = args.has("timeouts");
    let bare = Bare {
        upstream: args.upstream.clone(),
        timeouts,
        refuse: args.has("refuse"),
    };
    // tollgate's schedule (vendor patch 13) and timers (tokio's wheel for
    // timeouts of a second or more).
    let tune = |conf: &mut pingora::server::configuration::ServerConf| {
        conf.runtime_fair_scheduling = true;
        conf.fast_timeout_to_tokio_threshold_seconds =
            Some(tollgate::proxy::server::TOKIO_TIMER_THRESHOLD_SECS);
    };
    serve(&args, bare, tune, |logic| {
        if timeouts {
            let mut options = HttpServerOptions::default();
            options.h1_client_limits = Some(ClientLimits {
                idle_timeout_secs: 60,
                head_timeout: std::time::Duration::from_secs(10),
                max_head_bytes: 65_536,
            });
            logic.server_options = Some(options);
        }
    });
}
