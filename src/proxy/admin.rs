//! The admin listener: `GET /metrics`, `/healthz`, `/readyz`, and
//! `POST /reload`.
//!
//! It is a background service with its own socket rather than a Pingora
//! listening service, because Pingora closes every listener the moment
//! SIGTERM arrives, and `/readyz` must go on answering 503 while the proxy
//! drains. The socket has `SO_REUSEPORT`, so during a binary upgrade the
//! old and the new process can both hold it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::live::{Live, Reloaded};
use super::patched;
use crate::client::RequestId;
use crate::config::ConfigError;
use crate::errors::ErrorFormat;
use crate::http1::{full, read_request};
use crate::observe::ClientErrorKind;

/// An admin connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Where the process is in its life, for `/readyz`.
#[derive(Default)]
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }
    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }
    fn state(&self) -> &'static str {
        match self.0.load(Ordering::Acquire) {
            STARTING => "starting",
            READY => "ready",
            _ => "draining",
        }
    }
}

/// Bind the admin socket before the server starts, so a taken port fails
/// the start instead of a background task.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Reload on a blocking thread: it reads a file and may resolve a name.
pub async fn reload_off_thread(live: &Arc<Live>) -> Result<Reloaded, ConfigError> {
    let live = live.clone();
    let path = live.path().to_path_buf();
    match tokio::task::spawn_blocking(move || live.reload()).await {
        Ok(result) => result,
        Err(e) => Err(ConfigError::unplaced(
            &path,
            format!("reload task failed: {e}"),
        )),
    }
}

pub struct Admin {
    endpoints: Arc<Endpoints>,
    /// Taken when the service starts.
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl Admin {
    pub fn new(
        live: Arc<Live>,
        readiness: Arc<Readiness>,
        listener: std::net::TcpListener,
    ) -> Self {
        Admin {
            endpoints: Arc::new(Endpoints { live, readiness }),
            listener: std::sync::Mutex::new(Some(listener)),
        }
    }
}

struct Endpoints {
    live: Arc<Live>,
    readiness: Arc<Readiness>,
}

/// One admin answer.
struct AdminAnswer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

const JSON: &str = "application/json";

impl AdminAnswer {
    fn json(status: u16, body: serde_json::Value) -> AdminAnswer {
        AdminAnswer {
            status,
            content_type: JSON,
            body: body.to_string().into_bytes(),
        }
    }
}

impl Endpoints {
    /// The answer to one request from `peer`.
    async fn answer(&self, method: &str, path: &str, peer: Option<IpAddr>) -> AdminAnswer {
        match (method, path) {
            ("GET", "/metrics") => {
                let rt = self.live.runtime();
                rt.export_limiter_state();
                let handshakes = patched::tls_handshake_failures();
                rt.metrics
                    .client_errors_total(ClientErrorKind::TlsHandshake, handshakes);
                let h2_abuse = patched::h2_abuse_ended();
                rt.metrics
                    .client_errors_total(ClientErrorKind::H2Abuse, h2_abuse);
                AdminAnswer {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: rt.metrics.render(),
                }
            }
            ("GET", "/healthz") => AdminAnswer::json(200, json!({ "status": "ok" })),
            ("GET", "/readyz") => {
                // A degraded rate-limit backend is reported, not failed:
                // the gateway still serves, under `on_backend_error`.
                let state = self.readiness.state();
                let code = if state == "ready" { 200 } else { 503 };
                let mut body = json!({ "status": state });
                if let Some(degraded) = self.live.runtime().limiter.shared_backend_degraded() {
                    let backend = if degraded { "degraded" } else { "ok" };
                    body["rate_limit_backend"] = json!({ "redis": backend });
                }
                AdminAnswer::json(code, body)
            }
            // The one endpoint that changes anything: only from this host
            // (`tollgate reload`), whatever `admin_listen` is bound to.
            ("POST", "/reload") if !peer.is_some_and(is_loopback) => {
                self.live.metrics().admin_refused.inc();
                self.error(403, "Reloads are accepted from a loopback address only.")
            }
            ("POST", "/reload") => match reload_off_thread(&self.live).await {
                Ok(r) => AdminAnswer::json(
                    200,
                    json!({"result": "success", "kept_rules": r.kept_rules, "needs_restart": r.needs_restart}),
                ),
                Err(e) => {
                    AdminAnswer::json(400, json!({"result": "error", "error": e.to_string()}))
                }
            },
            (_, "/metrics" | "/healthz" | "/readyz" | "/reload") => {
                self.error(405, "This endpoint does not take that method.")
            }
            _ => self.error(404, "No such admin endpoint."),
        }
    }

    /// An error in the gateway's envelope, with a request id of its own.
    fn error(&self, status: u16, message: &str) -> AdminAnswer {
        let mut body = Vec::with_capacity(256);
        let id = RequestId::generate();
        self.live.runtime().errors.write_gateway_error(
            &mut body,
            ErrorFormat::Envelope,
            status,
            message,
            id.as_str(),
            None,
        );
        AdminAnswer {
            status,
            content_type: JSON,
            body,
        }
    }

    async fn connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let mut buf = Vec::with_capacity(1024);
        loop {
            let read = tokio::time::timeout(IDLE, read_request(&mut stream, &mut buf));
            let Ok(Some(req)) = read.await.unwrap_or(Ok(None)) else {
                return Ok(());
            };
            let answer = self.answer(&req.method, &req.path, peer).await;
            let extra = [("cache-control", "no-store".to_string())];
            let bytes = full(answer.status, answer.content_type, &extra, &answer.body);
            stream.write_all(&bytes).await?;
            if req.close {
                return Ok(());
            }
        }
    }
}

/// 127.0.0.0/8 and ::1, also written as an IPv4-mapped IPv6 address.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[async_trait]
impl BackgroundService for Admin {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let std_listener = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener = match std_listener.map(TcpListener::from_std) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::error!(error = %e, "admin listener failed");
                return;
            }
            None => return,
        };
        self.endpoints.readiness.ready();
        let mut draining = false;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let endpoints = self.endpoints.clone();
                        tokio::spawn(async move { let _ = endpoints.connection(stream).await; });
                    }
                }
                _ = shutdown.changed(), if !draining => {
                    // Keep answering: /readyz says 503 until the process exits.
                    draining = true;
                    self.endpoints.readiness.draining();
                }
            }
        }
    }
}

/// A running tollgate's answer to `POST /reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadAnswer {
    /// It took the file (200).
    pub accepted: bool,
    /// Its JSON answer: the kept rules, or why it refused the file.
    pub body: String,
}

/// `tollgate reload`: POST /reload to a running tollgate's admin listener.
pub fn request_reload(admin: SocketAddr) -> std::io::Result<ReloadAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(
        b"POST /reload HTTP/1.1\r\nhost: tollgate\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let accepted = answer.starts_with("HTTP/1.1 200");
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok(ReloadAnswer { accepted, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::observe::Metrics;

    fn endpoints() -> Endpoints {
        let path = std::path::Path::new("/nonexistent/tollgate.toml");
        let cfg = Config::parse(path, "[upstream]\naddress = \"127.0.0.1:3000\"\n").unwrap();
        let live = Live::new(path.to_path_buf(), &cfg, Arc::new(Metrics::new()), None);
        Endpoints {
            live: Arc::new(live),
            readiness: Arc::new(Readiness::default()),
        }
    }

    #[tokio::test]
    async fn reloads_only_from_loopback_and_reads_from_anywhere() {
        let e = endpoints();
        let outside: IpAddr = "192.0.2.7".parse().unwrap();
        let refused = e.answer("POST", "/reload", Some(outside)).await;
        assert_eq!(refused.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(v["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
        assert_eq!(e.live.metrics().admin_refused.get(), 1);
        assert_eq!(e.answer("POST", "/reload", None).await.status, 403);

        // From loopback the reload runs (and fails here: no such file).
        for inside in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let answer = e.answer("POST", "/reload", inside.parse().ok()).await;
            assert_eq!(answer.status, 400, "{inside}: the reload ran");
        }
        assert_eq!(e.live.metrics().admin_refused.get(), 2);
        let metrics = e.answer("GET", "/metrics", Some(outside)).await;
        assert_eq!(metrics.status, 200);
        assert_eq!(e.answer("GET", "/nope", Some(outside)).await.status, 404);
    }
}
