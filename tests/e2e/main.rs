//! End-to-end tests: the real `tollgate` binary in front of its real demo
//! upstream process, over loopback HTTP.

mod harness;

mod admission;
mod cli;
mod clients;
mod deploy;
mod errors;
mod items;
mod lifecycle;
mod memory;
mod metrics;
mod problem;
mod proxy;
mod rate_limit;
mod redis;
mod scheduling;
mod tls;
mod tls_termination;
