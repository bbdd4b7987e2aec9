//! Who is asking: the client's address behind trusted proxies, the key its
//! rate-limit buckets are filed under, and the request's id.

pub mod ip;
pub mod request_id;

pub use ip::{ip_text, ClientIpResolver, ClientKey, Exemptions};
pub use request_id::RequestId;
