//! The Pingora glue, and only that: the `ProxyHttp` hooks ([`gateway`]),
//! the steps they call, the answers the gateway makes itself ([`answer`]),
//! the wiring of the server ([`server`]), the admin listener ([`admin`])
//! and the live, reloadable runtime ([`live`], [`runtime`]).
//!
//! Calls to APIs that exist only in the patched Pingora go through
//! `patched`.

pub mod admin;
pub mod answer;
pub mod ctx;
pub mod gateway;
mod headers;
pub mod live;
mod log;
mod patched;
mod request;
mod response;
pub mod runtime;
pub mod server;
pub mod tls;
mod upstream;

pub use gateway::Gateway;
pub use server::{run, Launch};
