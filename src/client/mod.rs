//! Who is asking: the client's address behind trusted proxies, the key its
//! rate-limit buckets are filed under (its address, or the keyed hash of an
//! API key header), and the request's id.

pub mod api_key;
pub mod ip;
pub mod request_id;

pub use api_key::KeyHasher;
pub use ip::{ip_text, ClientIpResolver, ClientKey, Exemptions};
pub use request_id::RequestId;
