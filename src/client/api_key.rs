//! Bucket keys taken from a request header (an API key) instead of the
//! client address. The value is a credential: it is turned into a keyed
//! hash (HMAC-SHA-256, cut to 128 bits) before it is used, so no table,
//! log line, metric or Redis key ever holds it as sent.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ClientKey;

/// The keyed hash of header values: a secret per process (local buckets),
/// so a value's key cannot be worked out from outside.
#[derive(Clone)]
pub struct KeyHasher {
    /// HMAC with the secret already absorbed; cloned per value.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher keyed by `secret`.
    pub fn with_secret(secret: &[u8]) -> KeyHasher {
        // HMAC takes a key of any length.
        let mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable_key_length(),
        };
        KeyHasher { mac }
    }

    /// A hasher keyed by 32 random bytes, for this process only.
    pub fn random() -> KeyHasher {
        let secret: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
        KeyHasher::with_secret(&secret)
    }

    /// The hasher of this process, made on first use.
    pub fn process() -> &'static KeyHasher {
        static PROCESS: std::sync::OnceLock<KeyHasher> = std::sync::OnceLock::new();
        PROCESS.get_or_init(KeyHasher::random)
    }

    /// The bucket key of a header's values: the first value, without
    /// surrounding whitespace. `None` when there is none or it is empty: the
    /// rule then keys the request by its client address.
    pub fn key<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> Option<ClientKey> {
        let value = values.next()?.trim_ascii();
        if value.is_empty() {
            return None;
        }
        let mut mac = self.mac.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Some(ClientKey::Hashed(key))
    }
}

/// `Hmac::new_from_slice` refuses no length; were it ever to, a fixed
/// secret would make every key predictable, so stop instead.
#[cold]
fn unreachable_key_length() -> ! {
    panic!("HMAC-SHA-256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(h: &KeyHasher, values: &[&[u8]]) -> Option<ClientKey> {
        h.key(values.iter().copied())
    }

    #[test]
    fn the_first_value_trimmed_is_the_key() {
        let h = KeyHasher::with_secret(b"s");
        let k = key(&h, &[b"abc"]);
        assert!(k.is_some());
        assert_eq!(key(&h, &[b"  abc\t"]), k, "whitespace around is ignored");
        assert_eq!(key(&h, &[b"abc", b"other"]), k, "the first of several");
        assert_ne!(key(&h, &[b"abd"]), k);
        assert_eq!(key(&h, &[]), None, "absent");
        assert_eq!(key(&h, &[b"   "]), None, "empty");
        let long = vec![b'x'; 40_000];
        assert!(
            key(&h, &[&long]).is_some(),
            "a long value is hashed like any other"
        );
        assert!(key(&h, &[b"\xff\xfe\x00"]).is_some(), "any bytes");
    }

    #[test]
    fn keys_depend_on_the_secret_and_hold_no_value() {
        let a = KeyHasher::with_secret(b"one");
        let b = KeyHasher::with_secret(b"two");
        assert_eq!(key(&a, &[b"k-123"]), key(&a.clone(), &[b"k-123"]));
        assert_ne!(key(&a, &[b"k-123"]), key(&b, &[b"k-123"]));
        assert_ne!(
            key(&KeyHasher::random(), &[b"k"]),
            key(&KeyHasher::random(), &[b"k"])
        );
        let Some(ClientKey::Hashed(bytes)) = key(&a, &[b"secret-api-key"]) else {
            panic!("a hashed key");
        };
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
    }
}
