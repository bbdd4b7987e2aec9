//! tollgate: a reverse-proxy gateway sidecar in front of one HTTP API.
//!
//! One folder or file per concern (docs/architecture.md). The pure logic
//! knows nothing of Pingora; `proxy` is the thin layer on top, and the only
//! one that reads `config`. A request's data flows one way: client →
//! limiter → upstream → normalizer → metrics and log.

#![deny(unsafe_code)]

/// The process allocator (the one place with `unsafe`, besides a
/// prefetch hint in the bucket table).
#[allow(unsafe_code)]
pub mod allocator;
/// Who is asking: client address behind trusted proxies, bucket key,
/// request id.
pub mod client;
/// The TOML file → one validated model.
pub mod config;
/// The demo upstream that speaks every error dialect (also the tests').
pub mod demo_upstream;
/// The canonical envelope and everything that makes it.
pub mod errors;
/// The small HTTP/1.1 server code the admin listener and the demo
/// upstream share.
pub mod http1;
/// Metrics and the access log.
pub mod observe;
/// The Pingora glue: hooks, the gateway's own answers, wiring, admin,
/// reload.
pub mod proxy;
/// Rules, decisions, and the limiter the gateway asks.
pub mod rate_limit;
/// Which requests a rule or route applies to; route names.
pub mod routes;
