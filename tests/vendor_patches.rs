//! Guards for the vendored `http` and `pingora-http` patches whose only
//! effect is fewer allocations (vendor/PATCHES.md, patches 5, 6 and 21):
//! counted here by a global allocator that counts this thread's
//! allocations. Unpatched, each allocation test fails; the wire tests
//! check that patch 21 sends every name in the case it came in.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{HeaderNameVariant, RequestHeader};

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

/// A request as Pingora's HTTP/1 reader builds one: names as they came.
fn parsed_request(lines: &[(&'static str, &'static str)], case: bool) -> RequestHeader {
    let build = if case {
        RequestHeader::build
    } else {
        RequestHeader::build_no_case
    };
    let mut request = build("GET", b"/", Some(lines.len() + 4)).unwrap();
    for (name, value) in lines {
        request
            .append_header(Bytes::from_static(name.as_bytes()), *value)
            .unwrap();
    }
    request
}

/// The header lines Pingora writes for `request`.
fn wire(request: &RequestHeader) -> String {
    let mut out = Vec::new();
    request.header_to_h1_wire(&mut out);
    String::from_utf8(out).unwrap()
}

const CLIENT_LIBRARY: [(&str, &str); 5] = [
    ("Host", "api.test"),
    ("User-Agent", "python-requests/2.32.3"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept", "*/*"),
    ("Connection", "keep-alive"),
];

/// Patch 21: a request whose names are all title case keeps no map of
/// their case, so copying it (as the proxy does for the upstream) and
/// adding tollgate's two headers allocate what a request without case
/// preservation does.
#[test]
fn a_title_case_request_keeps_no_case_map() {
    let x_request_id = HeaderName::from_static("x-request-id");
    let copy_and_add = |request: &RequestHeader| {
        let mut upstream = request.clone();
        upstream.reserve_headers(1).unwrap();
        upstream
            .insert_parsed_header(&x_request_id, "X-Request-Id", HeaderValue::from_static("r"))
            .unwrap();
        upstream
    };
    let with_case = parsed_request(&CLIENT_LIBRARY, true);
    let without_case = parsed_request(&CLIENT_LIBRARY, false);
    // The first copy of each shares its values' buffers (an allocation of
    // `bytes`' own); count the second.
    drop((copy_and_add(&with_case), copy_and_add(&without_case)));
    let kept = allocations(|| drop(copy_and_add(&with_case)));
    let none = allocations(|| drop(copy_and_add(&without_case)));
    assert_eq!(kept, none, "a title case request allocated a case map");
    assert_eq!(
        wire(&copy_and_add(&with_case)),
        "Host: api.test\r\nUser-Agent: python-requests/2.32.3\r\n\
         Accept-Encoding: gzip, deflate, br\r\nAccept: */*\r\n\
         Connection: keep-alive\r\nX-Request-Id: r\r\n"
    );
}

/// Patch 21: a request whose names are not in title case (a client that
/// sends them in lower case) makes its case map once, at the size the
/// request was built for: two allocations more than a title case one,
/// not a map that grows as names arrive.
#[test]
fn a_lower_case_request_makes_its_case_map_once() {
    let title: Vec<(&str, &str)> = [
        "Host",
        "User-Agent",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Connection",
        "Cookie",
        "Referer",
    ]
    .into_iter()
    .map(|name| (name, "v"))
    .collect();
    let lower: Vec<(&str, &str)> = [
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "accept-language",
        "connection",
        "cookie",
        "referer",
    ]
    .into_iter()
    .map(|name| (name, "v"))
    .collect();
    let title_cost = allocations(|| drop(parsed_request(&title, true)));
    let lower_cost = allocations(|| drop(parsed_request(&lower, true)));
    assert_eq!(
        lower_cost,
        title_cost + 2,
        "the case map grew as names came"
    );
    assert_eq!(
        wire(&parsed_request(&lower, true)),
        lower
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect::<String>()
    );
}

/// Patch 21's title case rule, through the public API, against a
/// byte-at-a-time reading of it: a name keeps the case map unmade exactly
/// when it is in title case, goes out as it came either way, and `map`
/// visits it by that name. Names cross the eight-byte chunks the patch
/// reads and hold the bytes next to the letters' ranges.
#[test]
fn title_case_is_decided_byte_for_byte() {
    fn is_title_case(name: &str) -> bool {
        let mut word_start = true;
        name.bytes().all(|b| {
            let in_case = if word_start {
                !b.is_ascii_lowercase()
            } else {
                !b.is_ascii_uppercase()
            };
            word_start = b == b'-';
            in_case
        })
    }
    let names = [
        "Host",
        "host",
        "HOST",
        "User-Agent",
        "User-agent",
        "user-Agent",
        "X-Request-Id",
        "X-Request-ID",
        "ETag",
        "TE",
        "A",
        "a",
        "--X",
        "X--y",
        "1st-Try",
        "1St-Try",
        "Sec-Ch-Ua-Platform",
        "sec-ch-ua",
        "X-Exactly8",
        "Abcdefg-Hij",
        "Abcdefg-hij",
        "Abcdefgh-Ijklmnop-Qrstuvw",
        "Abcdefgh-ijklmnop",
        "X_Under~Score!#$%&'*+.^`|",
        "A-B-C-D-E-F-G-H-I-J",
        "A-B-C-D-E-F-G-H-i-J",
        "Zz-Zz-Zz",
    ];
    for name in names {
        let request = parsed_request(&[("Host", "t"), (name, "v")], true);
        let made = request.case_header_iter().count() > 0;
        assert_eq!(made, !is_title_case(name), "{name}");
        // A name equal to `Host` but for case goes under the same entry.
        let want = format!("Host: t\r\n{name}: v\r\n");
        assert_eq!(wire(&request), want, "{name}");
        let mut mapped = Vec::new();
        request
            .map(|header, _| {
                mapped.push(match header {
                    HeaderNameVariant::Case(case) => case.as_slice().to_vec(),
                    HeaderNameVariant::Titled(titled) => titled.as_bytes().to_vec(),
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(
            mapped.last().map(Vec::as_slice),
            Some(name.as_bytes()),
            "{name}"
        );
    }
}

/// Patch 21: names in any other case are sent as they came, those before
/// the first of them (kept in title case until then) included, repeated
/// names and later inserts as well.
#[test]
fn header_names_in_other_cases_are_sent_as_they_came() {
    let mut request = parsed_request(
        &[
            ("Host", "api.test"),
            ("X-Trace", "1"),
            ("x-api-key", "k"),
            ("X-Trace", "2"),
            ("ETag", "\"v\""),
            ("accept", "*/*"),
        ],
        true,
    );
    request.insert_header("SOAPAction", "run").unwrap();
    request.remove_header("accept");
    request.append_header("X-trace", "3").unwrap();
    assert_eq!(
        wire(&request),
        "Host: api.test\r\nX-Trace: 1\r\nX-Trace: 2\r\nX-trace: 3\r\n\
         x-api-key: k\r\nETag: \"v\"\r\nSOAPAction: run\r\n"
    );
    // Title case until a name in another case is inserted by the proxy.
    let mut request = parsed_request(&CLIENT_LIBRARY[..2], true);
    request.insert_header("x-added", "1").unwrap();
    assert_eq!(
        wire(&request),
        "Host: api.test\r\nUser-Agent: python-requests/2.32.3\r\nx-added: 1\r\n"
    );
}
