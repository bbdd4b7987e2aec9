//! What tollgate takes from a request head before anything else: the
//! client address behind trusted proxies (X-Forwarded-For and Forwarded
//! values as sent), the request id (reused or replaced), and the envelope
//! of the gateway's own answer with that id. Never a panic; always JSON.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use tollgate::client::{ClientIpResolver, RequestId};
use tollgate::errors::{ErrorFormat, ErrorTable};

fuzz_target!(|input: (&[u8], &[u8], &[u8], u16, &str)| {
    let (xff, forwarded, request_id, status, message) = input;
    let resolver = ClientIpResolver::new(
        vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        64,
    );
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let ip = resolver.resolve(peer, [xff], [forwarded]);
    let _ = resolver.key(ip);

    let value = http::HeaderValue::from_bytes(request_id).ok();
    let id = RequestId::reuse_or_generate(value.as_ref());
    let mut out = Vec::new();
    ErrorTable::default().write_gateway_error(
        &mut out,
        ErrorFormat::Envelope,
        400 + status % 200,
        message,
        id.as_str(),
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&out).expect("the envelope is JSON");
    assert_eq!(json["error"]["request_id"], id.as_str());
});
