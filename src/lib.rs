//! tollgate: a reverse-proxy gateway sidecar.
//!
//! The pure logic (config, client IP, rate limiting, error normalization,
//! metrics, access log) knows nothing of Pingora; `gateway`, `admin` and
//! `server` are the thin Pingora layer on top.

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod bucket_table;
pub mod client_ip;
pub mod config;
pub mod demo_upstream;
pub mod gateway;
pub mod http1;
pub mod metrics;
pub mod normalize;
pub mod rate_limit;
pub mod rate_limit_headers;
pub mod redis_limiter;
pub mod reload;
pub mod request_id;
pub mod routes;
pub mod runtime;
pub mod server;
