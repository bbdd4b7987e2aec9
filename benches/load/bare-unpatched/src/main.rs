//! The unpatched framework floor: a Pingora 0.9.1 pass-through proxy from
//! crates.io with nothing but `upstream_peer`, the same profile, allocator,
//! listener and module settings as tollgate, and tollgate's upstream
//! timeouts. Pingora 0.9.1 has no client limits (vendor patch 9), so it
//! waits for a next request without an idle timer.
//!
//! `bare-unpatched LISTEN UPSTREAM [THREADS] [refuse]`: `refuse` answers
//! every request with an empty 429 from `request_filter`.

#[path = "../../bare_logic.rs"]
mod bare_logic;
use bare_logic::{serve, Args, Bare};

/// The same allocator as tollgate's binary: the same file, so the floor
/// differs from tollgate by Pingora's patches and tollgate's logic only.
#[path = "../../../../src/allocator.rs"]
mod allocator;

#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

fn main() {
    let args = Args::from_command_line();
    let bare = Bare {
        upstream: args.upstream.clone(),
        timeouts: true,
        refuse: args.has("refuse"),
    };
    serve(&args, bare, |_| {}, |_| {});
}
