//! The client's address, and the key the failed-attempt limiter counts it under.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The `X-Forwarded-For` header name.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address behind `trusted_proxies` reverse proxies.
///
/// This count rule trusts `X-Forwarded-For` from any peer. The guard's
/// [`trusted_proxy_networks`](crate::ApiKeyGuardBuilder::trusted_proxy_networks) reads it
/// only when the peer is a known proxy, and is the better choice where clients could
/// reach the service directly.
///
/// - With `0` trusted proxies the answer is `peer`, the address of the TCP connection;
///   `X-Forwarded-For` is ignored, since anyone can send it.
/// - With `N ≥ 1`, every proxy appends the address it received the request from to
///   `X-Forwarded-For`, so the `N` rightmost entries were written by the trusted
///   proxies and the `N`-th from the right (written by the outermost one) is the
///   client. Entries to its left come from the client and are never trusted. All
///   `X-Forwarded-For` headers count, in order, as one comma-separated list; entries
///   are trimmed, and an entry with a port (`203.0.113.7:4711`, `[2001:db8::1]:443`)
///   gives its address.
/// - If the list has fewer than `N` entries, or that entry is not an address, the
///   answer is `peer` (a misconfigured or bypassed proxy must not let the client pick
///   its own address).
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use keygate::limit::client_ip;
///
/// let proxy: IpAddr = "10.0.0.2".parse()?;
/// let mut headers = HeaderMap::new();
/// // The client claims to be 1.1.1.1; the one trusted proxy appended what it saw.
/// headers.insert("x-forwarded-for", "1.1.1.1, 203.0.113.7".parse()?);
///
/// assert_eq!(client_ip(Some(proxy), &headers, 1), Some("203.0.113.7".parse()?));
/// assert_eq!(client_ip(Some(proxy), &headers, 0), Some(proxy));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: usize,
) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    let mut to_skip = trusted_proxies - 1;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|&byte| byte == b',') {
            if to_skip == 0 {
                return parse_entry(entry).or(peer);
            }
            to_skip -= 1;
        }
    }
    peer
}

/// The client's address when only peers inside `networks` are trusted proxies (the rule
/// of nginx's `set_real_ip_from` with `real_ip_recursive on`, and of Envoy's trusted
/// CIDRs).
///
/// - If `peer` is not in `networks`, `X-Forwarded-For` is ignored and the answer is
///   `peer`: only a trusted proxy may speak for the client.
/// - Otherwise the header (all `X-Forwarded-For` headers, in order, as one list) is
///   walked from the right; each entry is taken while the hop before it (first the
///   peer) is a trusted proxy. The first untrusted address met is the client. If every
///   entry is trusted, the leftmost is the client.
/// - An entry that is not an address stops the walk and the answer is `peer`, as with
///   the count rule.
///
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) matches IPv4 networks.
pub(crate) fn client_ip_in_networks(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    networks: &[IpNet],
) -> Option<IpAddr> {
    let peer_ip = peer?;
    if !is_trusted(peer_ip, networks) {
        return peer;
    }
    let mut client = peer_ip;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|&byte| byte == b',') {
            let Some(hop) = parse_entry(entry) else {
                return peer;
            };
            client = hop;
            if !is_trusted(hop, networks) {
                return Some(client);
            }
        }
    }
    Some(client)
}

/// Whether `ip` (or, for an IPv4-mapped IPv6 address, its IPv4 address) is in one of
/// `networks`.
fn is_trusted(ip: IpAddr, networks: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    networks
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
}

/// A trusted proxy entry: a CIDR network (`10.0.0.0/8`, `2001:db8::/32`) or one address
/// (`192.168.1.7`, `::1`). Host bits of a network are cleared. `None` if it is neither.
pub(crate) fn parse_network(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// An `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry.trim_ascii()).ok()?;
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
}

/// The key under which the [failed-attempt limiter](super::FailedAttemptLimiter)
/// counts a client: its IPv4 address, or its IPv6 /64 network.
///
/// An IPv6 host usually holds a whole /64 and can change addresses within it at will,
/// so counting per address would let it pick a fresh one for every attempt. An IPv6
/// address that carries an IPv4 address is that IPv4 address: IPv4-mapped
/// (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4 peers), IPv4-compatible,
/// NAT64 (`64:ff9b::192.0.2.1`), 6to4 and Teredo; otherwise every IPv4 client behind one
/// translator would share one /64, and one budget.
///
/// ```
/// use std::net::IpAddr;
/// use keygate::limit::ClientKey;
///
/// let key = |s: &str| ClientKey::from(s.parse::<IpAddr>().unwrap());
/// assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
/// assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
/// assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
/// assert_eq!(key("64:ff9b::192.0.2.1"), key("192.0.2.1"));
/// assert_ne!(key("64:ff9b::192.0.2.1"), key("64:ff9b::192.0.2.2"));
/// assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The IPv4 address, or the IPv6 network address (host bits zero).
    #[must_use]
    pub const fn ip(&self) -> IpAddr {
        self.0
    }

    /// The prefix length the key stands for: 32 for IPv4, 64 for IPv6.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        match self.0 {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 64,
        }
    }
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::from(v4),
            IpAddr::V6(v6) => Self::from(v6),
        }
    }
}

impl From<Ipv4Addr> for ClientKey {
    fn from(ip: Ipv4Addr) -> Self {
        Self(IpAddr::V4(ip))
    }
}

impl From<Ipv6Addr> for ClientKey {
    fn from(ip: Ipv6Addr) -> Self {
        match embedded_ipv4(ip) {
            Some(v4) => Self::from(v4),
            None => Self(IpAddr::V6(Ipv6Addr::from_bits(
                ip.to_bits() & !u128::from(u64::MAX),
            ))),
        }
    }
}

/// The IPv4 address an IPv6 address stands for, in the forms that carry one in full:
/// IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`, but `::` and `::1`), NAT64's
/// well-known prefix (`64:ff9b::/96`, RFC 6052), 6to4 (`2002::/16`, RFC 3056) and Teredo
/// (`2001::/32`, RFC 4380: the client's address, inverted, in the last 32 bits).
///
/// Without this, a client that reaches the service over one of these forms would count
/// per /64 of the form, which holds every IPv4 client the gateway translates: all of them
/// would share one failure budget (and lock each other out).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    // The 32 bits at `shift` from the right, as an IPv4 address.
    #[allow(clippy::cast_possible_truncation)] // masked to 32 bits
    let v4_at = |shift: u32| Ipv4Addr::from_bits((bits >> shift) as u32);
    let segments = ip.segments();
    match segments {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4_at(0)),
        [0x2002, ..] => Some(v4_at(80)),
        [0x2001, 0, ..] => Some(Ipv4Addr::from_bits(!v4_at(0).to_bits())),
        _ => None,
    }
}

impl fmt::Display for ClientKey {
    /// `192.0.2.1` or `2001:db8::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    const PEER: &str = "10.0.0.2";

    #[test]
    fn no_trusted_proxy_means_the_peer_whatever_the_header_says() {
        let headers = xff(&["203.0.113.7"]);
        assert_eq!(client_ip(Some(ip(PEER)), &headers, 0), Some(ip(PEER)));
        assert_eq!(client_ip(None, &headers, 0), None);
    }

    #[test]
    fn spoofed_leftmost_entry_is_never_used() {
        // The client sent "X-Forwarded-For: 6.6.6.6"; our proxy appended its real address.
        let headers = xff(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 1),
            Some(ip("203.0.113.7"))
        );
        // A client that sends many entries still cannot reach past the trusted ones.
        let headers = xff(&["6.6.6.6, 7.7.7.7, 8.8.8.8, 203.0.113.7"]);
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 1),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn n_trusted_proxies_take_the_nth_entry_from_the_right() {
        // client -> cdn (appends client) -> lb (appends cdn) -> us
        let headers = xff(&["6.6.6.6,203.0.113.7 ,  198.51.100.1"]);
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 2),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 1),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn several_headers_form_one_list_in_order() {
        let headers = xff(&["6.6.6.6", "203.0.113.7", "198.51.100.1"]);
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 2),
            Some(ip("203.0.113.7"))
        );
        let headers = xff(&["6.6.6.6, 203.0.113.7", "198.51.100.1"]);
        assert_eq!(
            client_ip(Some(ip(PEER)), &headers, 2),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn short_list_or_garbage_falls_back_to_the_peer() {
        let headers = xff(&["203.0.113.7"]);
        assert_eq!(client_ip(Some(ip(PEER)), &headers, 2), Some(ip(PEER)));
        assert_eq!(
            client_ip(Some(ip(PEER)), &HeaderMap::new(), 1),
            Some(ip(PEER))
        );
        for bad in [
            "unknown",
            "",
            "203.0.113.7.1",
            "1.1.1.1, not-an-ip",
            "1.1.1.1,",
        ] {
            assert_eq!(
                client_ip(Some(ip(PEER)), &xff(&[bad]), 1),
                Some(ip(PEER)),
                "{bad}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(client_ip(Some(ip(PEER)), &headers, 1), Some(ip(PEER)));
    }

    #[test]
    fn entries_may_be_ipv6_or_carry_ports() {
        let headers = xff(&["2001:db8::7"]);
        assert_eq!(client_ip(None, &headers, 1), Some(ip("2001:db8::7")));
        let headers = xff(&["203.0.113.7:4711"]);
        assert_eq!(client_ip(None, &headers, 1), Some(ip("203.0.113.7")));
        let headers = xff(&["[2001:db8::7]:443"]);
        assert_eq!(client_ip(None, &headers, 1), Some(ip("2001:db8::7")));
    }

    fn nets(entries: &[&str]) -> Vec<IpNet> {
        entries.iter().map(|e| parse_network(e).unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_means_the_header_is_ignored() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.7"]);
        let headers = xff(&["203.0.113.7"]);
        for peer in ["198.51.100.9", "192.168.1.8", "11.0.0.1", "2001:db8::1"] {
            assert_eq!(
                client_ip_in_networks(Some(ip(peer)), &headers, &trusted),
                Some(ip(peer)),
                "{peer}"
            );
        }
        assert_eq!(client_ip_in_networks(None, &headers, &trusted), None);
        // No networks at all: nobody is trusted.
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &[]),
            Some(ip(PEER))
        );
    }

    #[test]
    fn trusted_peer_gives_the_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client wrote 6.6.6.6 and 10.1.1.1; the proxy appended the real address.
        let headers = xff(&["6.6.6.6, 10.1.1.1, 203.0.113.7"]);
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &trusted),
            Some(ip("203.0.113.7"))
        );
        let headers = xff(&["192.168.1.7"]);
        assert_eq!(
            client_ip_in_networks(Some(ip("192.168.1.7")), &headers, &nets(&["192.168.1.7"])),
            Some(ip("192.168.1.7")),
            "every hop trusted: the leftmost"
        );
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &HeaderMap::new(), &trusted),
            Some(ip(PEER)),
            "no header: the peer"
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_through() {
        // client -> cdn 192.168.1.7 -> lb 10.0.0.5 -> us (peer 10.0.0.2)
        let trusted = nets(&["10.0.0.0/8", "192.168.1.7"]);
        let headers = xff(&["6.6.6.6, 203.0.113.7", "192.168.1.7 , 10.0.0.5"]);
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &trusted),
            Some(ip("203.0.113.7"))
        );
        // The walk stops at the first untrusted hop, even if trusted ones are left of it.
        let headers = xff(&["10.9.9.9, 203.0.113.7, 10.0.0.5"]);
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &trusted),
            Some(ip("203.0.113.7"))
        );
        let trusted6 = nets(&["2001:db8:ff::/48"]);
        let headers = xff(&["[2001:db8::7]:443, 2001:db8:ff::2"]);
        assert_eq!(
            client_ip_in_networks(Some(ip("2001:db8:ff::1")), &headers, &trusted6),
            Some(ip("2001:db8::7"))
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_ipv4_networks() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.7, ::ffff:10.0.0.5"]);
        assert_eq!(
            client_ip_in_networks(Some(ip("::ffff:10.0.0.2")), &headers, &trusted),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client_ip_in_networks(Some(ip("::ffff:11.0.0.2")), &headers, &trusted),
            Some(ip("::ffff:11.0.0.2"))
        );
    }

    #[test]
    fn malformed_entries_behind_trusted_hops_fall_back_to_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in [
            "unknown",
            "",
            "203.0.113.7.1",
            "1.1.1.1, not-an-ip",
            "1.1.1.1,",
            "1.1.1.1, not-an-ip, 10.0.0.5",
        ] {
            assert_eq!(
                client_ip_in_networks(Some(ip(PEER)), &xff(&[bad]), &trusted),
                Some(ip(PEER)),
                "{bad}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &trusted),
            Some(ip(PEER))
        );
        // Garbage left of the client is never reached.
        let headers = xff(&["not-an-ip, 203.0.113.7"]);
        assert_eq!(
            client_ip_in_networks(Some(ip(PEER)), &headers, &trusted),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn networks_parse_as_cidrs_or_single_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_network(" 10.1.2.3/8 "),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_network("192.168.1.7"),
            Some("192.168.1.7/32".parse().unwrap())
        );
        assert_eq!(parse_network("::1"), Some("::1/128".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "example.com",
            "10.0.0.1:80",
            "::/129",
        ] {
            assert_eq!(parse_network(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let a = ClientKey::from(ip("2001:db8:aa:bb:1:2:3:4"));
        let b = ClientKey::from(ip("2001:db8:aa:bb:ffff:ffff:ffff:ffff"));
        let c = ClientKey::from(ip("2001:db8:aa:bc::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.ip(), ip("2001:db8:aa:bb::"));
        assert_eq!(a.prefix_len(), 64);
        assert_eq!(a.to_string(), "2001:db8:aa:bb::/64");

        let mapped = ClientKey::from(ip("::ffff:203.0.113.7"));
        assert_eq!(mapped, ClientKey::from(ip("203.0.113.7")));
        assert_eq!(mapped.prefix_len(), 32);
        assert_eq!(mapped.to_string(), "203.0.113.7");
        assert_ne!(
            ClientKey::from(ip("203.0.113.7")),
            ClientKey::from(ip("203.0.113.8"))
        );
    }

    #[test]
    fn ipv6_forms_that_carry_an_ipv4_address_count_as_that_address() {
        let v4 = ClientKey::from(ip("203.0.113.7"));
        for form in [
            "::ffff:203.0.113.7",
            "::203.0.113.7",
            "64:ff9b::203.0.113.7",
            "2002:cb00:7107::1",
            // Teredo: server 65.54.227.120, client 203.0.113.7 inverted (34.ff.8e.f8).
            "2001:0:4136:e378:8000:63bf:34ff:8ef8",
        ] {
            assert_eq!(ClientKey::from(ip(form)), v4, "{form}");
        }
        // Two IPv4 clients behind one NAT64 gateway are two clients, not one /64.
        assert_ne!(
            ClientKey::from(ip("64:ff9b::203.0.113.7")),
            ClientKey::from(ip("64:ff9b::203.0.113.8"))
        );
        // Not forms of IPv4: the unspecified and loopback addresses, documentation
        // addresses under 2001:db8::/32 (not Teredo's 2001::/32).
        for native in ["::", "::1", "2001:db8::203.0.113.7"] {
            assert_eq!(ClientKey::from(ip(native)).prefix_len(), 64, "{native}");
        }
    }
}
