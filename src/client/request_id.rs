//! Request ids: reuse a sane incoming `X-Request-Id`, otherwise make a new
//! one. An insane one is replaced, never echoed (it could carry a header
//! injection or a log-forging payload).
//!
//! The id is kept as a ready header value: it goes to the upstream and back
//! to the client as the same shared bytes, with no copy per use.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

/// 1 to 128 characters from `A-Z a-z 0-9 - _ . :`.
fn is_sane(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A request's id: sane by construction, so always ASCII text. The
/// default, empty, stands until the request is identified.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// The incoming id when sane (sharing its bytes), else a fresh one.
    pub fn reuse_or_generate(incoming: Option<&HeaderValue>) -> RequestId {
        match incoming {
            Some(id) if is_sane(id.as_bytes()) => RequestId(id.clone()),
            _ => RequestId::generate(),
        }
    }

    /// `req_` + a ULID: 48 bits of milliseconds then 80 random bits, in
    /// Crockford base32, so ids sort by time and are unique in practice.
    pub fn generate() -> RequestId {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let random = (u128::from(fastrand::u64(..)) << 16) | u128::from(fastrand::u16(..));
        let mut value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | random;
        let mut text = *b"req_00000000000000000000000000";
        for digit in text[4..].iter_mut().rev() {
            *digit = CROCKFORD[(value & 0x1F) as usize];
            value >>= 5;
        }
        // One allocation that clones share; the digits are a valid value.
        HeaderValue::from_maybe_shared(Bytes::from_owner(text))
            .map_or_else(|_| RequestId::default(), RequestId)
    }

    /// The id as a header value (a shared handle, not a copy).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    pub fn as_str(&self) -> &str {
        // Sane ids are ASCII, so this never falls back.
        self.0.to_str().unwrap_or_default()
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[cfg(test)]
mod tests {
    use super::*;

    fn reuse(id: &[u8]) -> String {
        let value = HeaderValue::from_bytes(id).ok();
        RequestId::reuse_or_generate(value.as_ref())
            .as_str()
            .to_owned()
    }

    #[test]
    fn sane_ids_are_reused() {
        assert_eq!(reuse(b"abc-123_x.y:z"), "abc-123_x.y:z");
        let long = "a".repeat(128);
        assert_eq!(reuse(long.as_bytes()), long);
    }

    #[test]
    fn insane_ids_are_replaced() {
        for bad in [&b""[..], b"a b", b"{\"a\":1}", &[b'a'; 129], b"\xff\xfe"] {
            let id = reuse(bad);
            assert!(id.starts_with("req_"), "{id}");
            assert!(is_sane(id.as_bytes()));
        }
        let fresh = RequestId::reuse_or_generate(None);
        assert!(fresh.as_str().starts_with("req_"));
    }

    #[test]
    fn generated_ids_are_distinct_sane_and_time_ordered() {
        let a = RequestId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RequestId::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 30);
        assert!(is_sane(a.as_str().as_bytes()));
        assert_eq!(a.header_value().as_bytes(), a.as_str().as_bytes());
        // The first ten digits are the milliseconds: later ids sort later.
        assert!(a.as_str()[..14] < b.as_str()[..14], "{a:?} {b:?}");
    }

    #[test]
    fn digits_match_the_ulid_encoding() {
        // 26 Crockford digits of a 128-bit value, most significant first.
        let id = RequestId::generate();
        let digits = &id.as_str()[4..];
        let decoded = digits.bytes().fold(0u128, |acc, d| {
            let v = CROCKFORD.iter().position(|&c| c == d).unwrap() as u128;
            (acc << 5) | v
        });
        let millis = (decoded >> 80) as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now.abs_diff(millis) < 60_000, "{millis} vs {now}");
        assert!(digits.as_bytes()[0] <= b'7', "the top digit holds 3 bits");
    }
}
