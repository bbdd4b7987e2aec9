//! The admin listener: `GET /metrics`, `/healthz`, `/readyz`, and
//! `POST /reload`.
//!
//! It is a background service with its own socket rather than a Pingora
//! listening service, because Pingora closes every listener the moment
//! SIGTERM arrives, and `/readyz` must go on answering 503 while the proxy
//! drains. The socket has `SO_REUSEPORT`, so during a binary upgrade the
//! old and the new process can both hold it.

use std::net::SocketAddr;
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
use crate::config::ConfigError;
use crate::http1::{full, read_request};

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

impl Endpoints {
    /// Status, content type and body for one request.
    async fn answer(&self, method: &str, path: &str) -> (u16, &'static str, Vec<u8>) {
        let json = "application/json";
        match (method, path) {
            ("GET", "/metrics") => {
                let rt = self.live.runtime();
                rt.export_limiter_state();
                (200, "text/plain; version=0.0.4", rt.metrics.render())
            }
            ("GET", "/healthz") => (200, json, br#"{"status":"ok"}"#.to_vec()),
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
                (code, json, body.to_string().into_bytes())
            }
            ("POST", "/reload") => match reload_off_thread(&self.live).await {
                Ok(r) => (
                    200,
                    json,
                    json!({"result": "success", "kept_rules": r.kept_rules, "needs_restart": r.needs_restart})
                        .to_string()
                        .into_bytes(),
                ),
                Err(e) => (
                    400,
                    json,
                    json!({"result": "error", "error": e.to_string()}).to_string().into_bytes(),
                ),
            },
            (_, "/metrics" | "/healthz" | "/readyz" | "/reload") => {
                (405, json, br#"{"error":"method not allowed"}"#.to_vec())
            }
            _ => (404, json, br#"{"error":"not found"}"#.to_vec()),
        }
    }

    async fn connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let read = tokio::time::timeout(IDLE, read_request(&mut stream, &mut buf));
            let Ok(Some(req)) = read.await.unwrap_or(Ok(None)) else {
                return Ok(());
            };
            let (status, ctype, body) = self.answer(&req.method, &req.path).await;
            let extra = [("cache-control", "no-store".to_string())];
            stream
                .write_all(&full(status, ctype, &extra, &body))
                .await?;
            if req.close {
                return Ok(());
            }
        }
    }
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
