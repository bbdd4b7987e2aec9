//! The bare proxies' whole logic, shared by `examples/bare_proxy.rs`
//! (patched Pingora, from vendor/) and `benches/load/bare-unpatched`
//! (crates.io Pingora): nothing but `upstream_peer`, no response modules,
//! pipelining served as tollgate serves it, optionally tollgate's upstream
//! timeouts, optionally an empty 429 for every request.

use async_trait::async_trait;
use pingora::prelude::*;
use std::time::Duration;

pub struct Bare {
    pub upstream: String,
    /// Set the same peer timeouts tollgate sets (for A/B measurements).
    pub timeouts: bool,
    /// Answer every request with an empty 429 instead of proxying.
    pub refuse: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    /// No response modules, as in tollgate (Pingora's default is a
    /// compression module set to off, which still costs every request).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        // Pipelined requests answered in order, as tollgate does.
        session.downstream_session.set_pipelining_enabled(true);
        if !self.refuse {
            return Ok(false);
        }
        let mut h = ResponseHeader::build(429, Some(1))?;
        h.insert_header("Content-Length", "0")?;
        session.write_response_header(Box::new(h), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _s: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.timeouts {
            let o = &mut peer.options;
            o.connection_timeout = Some(Duration::from_secs(1));
            o.total_connection_timeout = Some(Duration::from_secs(1));
            o.read_timeout = Some(Duration::from_secs(30));
            o.write_timeout = Some(Duration::from_secs(30));
            o.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

/// `LISTEN UPSTREAM [THREADS] [FLAG...]` from the command line.
pub struct Args {
    pub listen: String,
    pub upstream: String,
    pub threads: usize,
    flags: Vec<String>,
}

impl Args {
    pub fn from_command_line() -> Args {
        let mut args = std::env::args().skip(1);
        Args {
            listen: args.next().unwrap_or_else(|| "127.0.0.1:6190".into()),
            upstream: args.next().unwrap_or_else(|| "127.0.0.1:3000".into()),
            threads: args.next().and_then(|t| t.parse().ok()).unwrap_or(1),
            flags: args.collect(),
        }
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Serve `bare` with tollgate's server and listener settings (its
/// threads, its default upstream pool of 1,024, no read buffer on client
/// connections); `tune` sets more of the server, `configure` the rest of
/// the proxy.
pub fn serve(
    args: &Args,
    bare: Bare,
    tune: impl FnOnce(&mut pingora::server::configuration::ServerConf),
    configure: impl FnOnce(&mut pingora::proxy::HttpProxy<Bare>),
) {
    use pingora::listeners::{L4BufferSettings, ListenerConfig};
    use pingora::server::configuration::{Opt, ServerConf};
    let mut conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        upstream_keepalive_pool_size: 1024,
        ..ServerConf::default()
    };
    tune(&mut conf);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    // The same listener setting as tollgate's (src/proxy/server.rs).
    let listener = ListenerConfig::tcp(&args.listen).l4_buffer(L4BufferSettings::default().read(0));
    proxy.add_listener(listener);
    if let Some(logic) = proxy.app_logic_mut() {
        configure(logic);
    }
    server.add_service(proxy);
    server.run_forever();
}
