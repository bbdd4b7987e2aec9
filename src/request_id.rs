//! Request ids: reuse a sane incoming `X-Request-Id`, otherwise make a new
//! one. An insane one is replaced, never echoed (it could carry a header
//! injection or a log-forging payload).

use std::time::{SystemTime, UNIX_EPOCH};

/// 1 to 128 characters from `A-Z a-z 0-9 - _ . :`.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The incoming id when sane, else a fresh one.
pub fn reuse_or_generate(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(id) if is_sane(id) => String::from_utf8_lossy(id).into_owned(),
        _ => generate(),
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `req_` + a ULID: 48 bits of milliseconds then 80 random bits, in
/// Crockford base32, so ids sort by time and are unique in practice.
pub fn generate() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = (u128::from(fastrand::u64(..)) << 16) | u128::from(fastrand::u16(..));
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | random;
    let mut out = String::with_capacity(30);
    out.push_str("req_");
    for i in (0..26).rev() {
        let idx = ((value >> (i * 5)) & 0x1F) as usize;
        out.push(CROCKFORD[idx] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_reused() {
        assert_eq!(reuse_or_generate(Some(b"abc-123_x.y:z")), "abc-123_x.y:z");
        let long = "a".repeat(128);
        assert_eq!(reuse_or_generate(Some(long.as_bytes())), long);
    }

    #[test]
    fn insane_ids_are_replaced() {
        for bad in [
            &b""[..],
            b"a b",
            b"x\r\nSet-Cookie: y",
            b"{\"a\":1}",
            &[b'a'; 129],
        ] {
            let id = reuse_or_generate(Some(bad));
            assert!(id.starts_with("req_"), "{id}");
            assert!(is_sane(id.as_bytes()));
        }
        assert!(reuse_or_generate(None).starts_with("req_"));
    }

    #[test]
    fn generated_ids_are_distinct_and_sane() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 30);
        assert!(is_sane(a.as_bytes()));
    }
}
