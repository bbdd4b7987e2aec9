//! Who the client is: the TCP peer, or, behind trusted proxies, the
//! right-most untrusted address they forwarded; and the bucket key for it.
//!
//! Headers from an untrusted peer are ignored, so a client cannot pick its
//! own bucket by sending `X-Forwarded-For`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The rate-limit key of a client. IPv6 addresses are cut to a prefix so a
/// host that owns a /64 cannot rotate addresses to dodge its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    V6([u8; 16]),
    /// A header value's keyed hash ([`super::KeyHasher`]).
    Hashed([u8; 16]),
}

#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    ipv6_prefix: u8,
}

impl ClientIpResolver {
    pub fn new(trusted: Vec<IpNet>, ipv6_prefix: u8) -> Self {
        ClientIpResolver {
            trusted,
            ipv6_prefix: ipv6_prefix.min(128),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a connection from `peer`, given the values of
    /// its `X-Forwarded-For` and `Forwarded` headers (in header order).
    ///
    /// From a trusted peer, the hops are walked right to left, skipping
    /// trusted proxies; the first untrusted one is the client. If every hop
    /// is trusted, the left-most is. A hop that does not parse ends the walk
    /// at the last good address to its right: nothing left of garbage can
    /// be believed. `X-Forwarded-For` wins over `Forwarded` when both exist.
    pub fn resolve<'a>(
        &self,
        peer: IpAddr,
        xff: impl IntoIterator<Item = &'a [u8]>,
        forwarded: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return peer;
        }
        let mut hops: Vec<Option<IpAddr>> = Vec::new();
        for value in xff {
            for item in value.split(|&b| b == b',') {
                hops.push(parse_hop(item));
            }
        }
        if hops.is_empty() {
            for value in forwarded {
                for element in value.split(|&b| b == b',') {
                    if let Some(v) = forwarded_for(element) {
                        hops.push(parse_hop(v));
                    }
                }
            }
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip.to_canonical();
                    if !self.is_trusted(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
        client
    }

    /// The bucket key for a client address.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if self.ipv6_prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.ipv6_prefix))
                };
                ClientKey::V6((bits & mask).to_be_bytes())
            }
        }
    }
}

/// Client networks that no rate-limit rule applies to
/// (`rate_limit.exempt`), matched against the resolved client address, so a
/// client cannot claim an exempt address through `X-Forwarded-For` unless
/// a trusted proxy put it there. IPv4-mapped IPv6 addresses match their
/// IPv4 networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exemptions(Vec<IpNet>);

impl Exemptions {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Exemptions(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// An address as text in `buf` (45 bytes hold any IPv6 form), IPv4
/// written without `core::fmt`, which costs several times as much per
/// address (this runs for every proxied request's `X-Forwarded-For`).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 45]) -> &[u8] {
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let d = digits.format(octet).as_bytes();
                buf[len..len + d.len()].copy_from_slice(d);
                len += d.len();
            }
        }
        IpAddr::V6(v6) => {
            let mut rest = &mut buf[..];
            // 45 bytes hold the longest form (with an embedded IPv4).
            let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
            len = 45 - rest.len();
        }
    }
    &buf[..len]
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`,
/// optionally quoted (as `Forwarded` writes IPv6).
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim().trim_matches('"');
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239 §4).
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = pair.split_at(eq);
        name.eq_ignore_ascii_case(b"for").then_some(&value[1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exemptions_match_v4_v6_and_mapped_addresses() {
        let nets = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().unwrap());
        let exempt = Exemptions::new(nets.collect());
        assert!(exempt.contains(ip("10.1.2.3")));
        assert!(exempt.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(exempt.contains(ip("2001:db8::1")));
        assert!(!exempt.contains(ip("11.0.0.1")));
        assert!(!exempt.contains(ip("2001:db9::1")));
        assert!(!exempt.contains(ip("::ffff:11.0.0.1")));
        assert!(
            !Exemptions::default().contains(ip("10.1.2.3")),
            "none by default"
        );
    }

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver::new(trusted.iter().map(|s| s.parse().unwrap()).collect(), 64)
    }

    fn resolve(r: &ClientIpResolver, peer: &str, xff: &[&str], fwd: &[&str]) -> IpAddr {
        r.resolve(
            ip(peer),
            xff.iter().map(|s| s.as_bytes()),
            fwd.iter().map(|s| s.as_bytes()),
        )
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&r, "203.0.113.9", &["1.1.1.1"], &[]),
            ip("203.0.113.9")
        );
        assert_eq!(
            resolve(&r, "203.0.113.9", &[], &["for=1.1.1.1"]),
            ip("203.0.113.9")
        );
        let none = resolver(&[]);
        assert_eq!(
            resolve(&none, "10.0.0.1", &["1.1.1.1"], &[]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn right_most_untrusted_wins() {
        let r = resolver(&["10.0.0.0/8", "192.168.0.0/16"]);
        // Client spoofed 6.6.6.6; the real client is 198.51.100.7.
        let got = resolve(&r, "10.0.0.2", &["6.6.6.6, 198.51.100.7, 192.168.1.1"], &[]);
        assert_eq!(got, ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let got = resolve(
            &r,
            "10.0.0.2",
            &["6.6.6.6", "198.51.100.7", "10.1.1.1"],
            &[],
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_gives_left_most_and_no_header_gives_peer() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&r, "10.0.0.2", &["10.9.9.9, 10.0.0.1"], &[]),
            ip("10.9.9.9")
        );
        assert_eq!(resolve(&r, "10.0.0.2", &[], &[]), ip("10.0.0.2"));
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&r, "10.0.0.2", &["1.2.3.4, nonsense, 10.0.0.5"], &[]),
            ip("10.0.0.5")
        );
        assert_eq!(resolve(&r, "10.0.0.2", &["1.2.3.4, "], &[]), ip("10.0.0.2"));
    }

    #[test]
    fn ports_and_brackets() {
        let r = resolver(&["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            resolve(&r, "127.0.0.1", &["1.2.3.4:5555"], &[]),
            ip("1.2.3.4")
        );
        assert_eq!(
            resolve(&r, "::1", &["[2001:db8::1]:80"], &[]),
            ip("2001:db8::1")
        );
        assert_eq!(resolve(&r, "::1", &["2001:db8::2"], &[]), ip("2001:db8::2"));
    }

    #[test]
    fn forwarded_header() {
        let r = resolver(&["10.0.0.0/8"]);
        let got = resolve(
            &r,
            "10.0.0.2",
            &[],
            &["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.0.0.9;by=10.0.0.2"],
        );
        assert_eq!(got, ip("2001:db8:cafe::17"));
        // XFF wins when both are present.
        let got = resolve(&r, "10.0.0.2", &["5.5.5.5"], &["for=6.6.6.6"]);
        assert_eq!(got, ip("5.5.5.5"));
        // Obfuscated identifiers are not addresses.
        assert_eq!(
            resolve(&r, "10.0.0.2", &[], &["for=_hidden"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(&r, "::ffff:10.0.0.2", &["1.2.3.4"], &[]),
            ip("1.2.3.4")
        );
        assert_eq!(r.key(ip("::ffff:1.2.3.4")), ClientKey::V4([1, 2, 3, 4]));
    }

    #[test]
    fn ipv6_keyed_by_prefix() {
        let r = resolver(&[]);
        let a = r.key(ip("2001:db8:1:2:aaaa::1"));
        let b = r.key(ip("2001:db8:1:2:bbbb::2"));
        let c = r.key(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let r128 = ClientIpResolver::new(vec![], 128);
        assert_ne!(r128.key(ip("2001:db8::1")), r128.key(ip("2001:db8::2")));
        let r0 = ClientIpResolver::new(vec![], 0);
        assert_eq!(r0.key(ip("2001:db8::1")), r0.key(ip("2001:ffff::2")));
    }

    #[test]
    fn key_is_small() {
        assert!(std::mem::size_of::<ClientKey>() <= 17);
    }
}
