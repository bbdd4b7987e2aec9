//! Guards for the vendored `http` patches whose only effect is fewer
//! allocations (vendor/PATCHES.md, patches 5 and 6): counted here by a
//! global allocator that counts this thread's allocations. Unpatched, each
//! of these tests fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{HeaderMap, HeaderName, HeaderValue};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is a const-initialized thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Patch 5: a clone keeps its spare entries and `reserve` reserves
/// entries, so the headers a proxy adds to a cloned message go in with
/// no allocation.
#[test]
fn a_reserved_clone_takes_new_headers_without_allocating() {
    let mut parsed = HeaderMap::with_capacity(16);
    for name in ["host", "accept", "user-agent"] {
        parsed.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
    }
    let mut clone = parsed.clone();
    let name = HeaderName::from_static("x-request-id");
    let added = allocations(|| {
        clone.reserve(2);
        clone.insert(name.clone(), HeaderValue::from_static("req_1"));
        clone.insert(http::header::VIA, HeaderValue::from_static("1.1 tollgate"));
    });
    assert_eq!(added, 0, "the clone had room for two more headers");
}

/// Patch 6: tollgate's header names are standard headers, so parsing one
/// from the wire allocates nothing (a custom name is copied).
#[test]
fn tollgate_header_names_parse_without_allocating() {
    for wire in [
        "X-Request-Id",
        "x-forwarded-for",
        "X-RateLimit-Limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "RateLimit",
        "ratelimit-policy",
    ] {
        let mut name = None;
        let parsed = allocations(|| name = HeaderName::from_bytes(wire.as_bytes()).ok());
        assert_eq!(
            name.expect("a valid name").as_str(),
            wire.to_ascii_lowercase()
        );
        assert_eq!(parsed, 0, "{wire} was copied: not a standard header");
    }
    let mut name = None;
    let custom = allocations(|| name = HeaderName::from_bytes(b"x-custom-header").ok());
    assert_eq!(name.expect("a valid name").as_str(), "x-custom-header");
    assert!(
        custom >= 1,
        "a custom name is copied (so the test can see one)"
    );
}
