//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::runtime::Runtime;

/// Readiness: set once the services run, cleared while draining.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub struct Admin {
    pub rt: Arc<Runtime>,
    pub ready: Arc<Readiness>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let json = "application/json";
        match session.req_header().uri.path() {
            "/metrics" => {
                let limiter = &self.rt.limiter;
                self.rt
                    .metrics
                    .set_limiter_state(&limiter.key_counts(), &limiter.overflow_totals());
                reply(200, "text/plain; version=0.0.4", self.rt.metrics.render())
            }
            "/healthz" => reply(200, json, br#"{"status":"ok"}"#.to_vec()),
            "/readyz" if self.ready.get() => reply(200, json, br#"{"status":"ready"}"#.to_vec()),
            "/readyz" => reply(503, json, br#"{"status":"not_ready"}"#.to_vec()),
            _ => reply(404, json, br#"{"error":"not found"}"#.to_vec()),
        }
    }
}
