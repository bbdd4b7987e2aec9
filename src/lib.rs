//! tollgate: a reverse-proxy gateway sidecar in front of one HTTP API.
//!
//! One folder or file per concern (docs/architecture.md). The pure logic
//! knows nothing of Pingora; `proxy` is the thin layer on top, and the only
//! one that reads `config`. A request's data flows one way: client →
//! limiter → upstream → normalizer → metrics and log.

#![deny(unsafe_code)]

// The one module with `unsafe` throughout (each block has its SAFETY
// comment); the other is a prefetch hint in `rate_limit::bucket_table`.
pub mod admission;
#[allow(unsafe_code)]
pub mod allocator;
pub mod client;
pub mod config;
pub mod demo_upstream;
pub mod errors;
pub mod http1;
pub mod observe;
pub mod proxy;
pub mod rate_limit;
pub mod routes;
