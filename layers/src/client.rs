//! Who a request is from: the one rule every part that names a client (the
//! access log, the policy's audit line) uses, so that a client cannot be one
//! address in one log and another in the next.
//!
//! The answer is the peer's address unless the peer is one of
//! `TRUSTED_PROXIES`. Then `X-Forwarded-For` is read from the right, since
//! each proxy appends the address it saw and only the entries our own
//! proxies appended can be believed: the answer is the right-most entry
//! that is not itself a trusted proxy. Anything left of it was written by
//! someone we do not trust, the client included, and is never read.
//!
//! Entries are addresses, `ip:port` or `[v6]:port` (what some proxies
//! append), or a bracketed IPv6 address; IPv4-mapped IPv6 addresses count as
//! the IPv4 address they carry. Several header lines are one list, in
//! order, and empty list elements are skipped (HTTP list syntax allows them).
//!
//! **Fail closed on what cannot be read.** An entry that is not an address
//! (`unknown`, a host name, a mangled value) stops the walk, and the answer
//! is the trusted hop that wrote it: the entry to its right, or the peer.
//! That address is one we can vouch for; anything further left could be
//! anybody's words.
//!
//! ```
//! use artifactapi_layers::client::TrustedProxies;
//! use http::HeaderMap;
//!
//! let trusted = TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "forged, 203.0.113.7:4711".parse().unwrap());
//! let client = trusted.client("10.1.2.3".parse().unwrap(), &headers);
//! assert_eq!(client, "203.0.113.7".parse::<std::net::IpAddr>().unwrap());
//! ```

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use http::{header::HeaderName, HeaderMap};
use ipnet::IpNet;

/// The client's address as [`TrustedProxies::client`] decided it, attached
/// to the request once at the edge; what names a client reads this, never
/// `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies (`TRUSTED_PROXIES`) whose `X-Forwarded-For` is believed;
/// empty, nobody's is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Trusts peers in `nets`.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// Whether `addr` is one of the trusted proxies (as written, or as the
    /// IPv4 address an IPv4-mapped one carries).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let canonical = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr) || net.contains(&canonical))
    }

    /// The client of a request that came from `peer` with `headers` (see
    /// the module's rule).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut hop = peer.to_canonical();
        if !self.contains(hop) {
            return hop;
        }
        let from_the_right = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|entry| !entry.is_empty());
        for entry in from_the_right {
            let Some(addr) = parse_entry(entry) else { return hop };
            if !self.contains(addr) {
                return addr;
            }
            hop = addr;
        }
        // Every hop is one of ours: the left-most is where it came from.
        hop
    }
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let addr =
        text.parse::<IpAddr>().or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip())).ok().or_else(
            || text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        )?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusting(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()))
    }

    fn forwarded(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(line).unwrap());
        }
        headers
    }

    const PROXY: &str = "10.0.0.1";

    fn through_proxy(lines: &[&[u8]]) -> IpAddr {
        trusting(&["10.0.0.0/8"]).client(ip(PROXY), &forwarded(lines))
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let headers = forwarded(&[b"203.0.113.7"]);
        assert_eq!(TrustedProxies::default().client(ip(PROXY), &headers), ip(PROXY));
        assert_eq!(trusting(&["192.0.2.0/24"]).client(ip(PROXY), &headers), ip(PROXY));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(through_proxy(&[]), ip(PROXY));
        assert_eq!(through_proxy(&[b" , "]), ip(PROXY));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client_not_the_forgeable_first_one() {
        assert_eq!(through_proxy(&[b"198.51.100.66, 203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(through_proxy(&[b"198.51.100.66, 203.0.113.7, 10.2.3.4, 10.9.9.9"]), ip("203.0.113.7"));
    }

    #[test]
    fn entries_with_ports_are_read_in_both_forms() {
        assert_eq!(through_proxy(&[b"spoofed, 203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(through_proxy(&[b"spoofed, [2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(through_proxy(&[b"[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(through_proxy(&[b"2001:db8::7"]), ip("2001:db8::7"));
        // A trusted hop with a port is still a trusted hop.
        assert_eq!(through_proxy(&[b"198.51.100.66, 203.0.113.7:1, 10.2.3.4:8080"]), ip("203.0.113.7"));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4_for_trust_and_answer() {
        let trusted = trusting(&["10.0.0.0/8"]);
        let headers = forwarded(&[b"203.0.113.7, ::ffff:10.2.3.4"]);
        assert_eq!(trusted.client(ip("::ffff:10.0.0.1"), &headers), ip("203.0.113.7"));
        assert_eq!(through_proxy(&[b"[::ffff:203.0.113.7]:80"]), ip("203.0.113.7"));
        assert_eq!(trusted.client(ip("::ffff:192.0.2.1"), &headers), ip("192.0.2.1"));
    }

    #[test]
    fn an_unreadable_entry_stops_the_walk_at_the_trusted_hop_that_wrote_it() {
        assert_eq!(through_proxy(&[b"203.0.113.7, unknown"]), ip(PROXY));
        assert_eq!(through_proxy(&[b"203.0.113.7, garbage, 10.2.3.4"]), ip("10.2.3.4"));
        assert_eq!(through_proxy(&[b"203.0.113.7, 1.2.3.4:99999"]), ip(PROXY));
        assert_eq!(through_proxy(&[b"203.0.113.7, \"198.51.100.1\""]), ip(PROXY));
        assert_eq!(through_proxy(&[b"203.0.113.7, fe80::1%eth0"]), ip(PROXY));
        // What the client wrote itself, left of an untrusted entry, is never read.
        assert_eq!(through_proxy(&[b"\xff\xfe not even text, 203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(through_proxy(&[b"198.51.100.66, 203.0.113.7", b"10.2.3.4"]), ip("203.0.113.7"));
        assert_eq!(through_proxy(&[b"203.0.113.7", b"198.51.100.66"]), ip("198.51.100.66"));
        assert_eq!(through_proxy(&[b"203.0.113.7", b"10.2.3.4, 10.3.4.5", b"10.4.5.6"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_chain_of_only_trusted_hops_names_its_left_most() {
        assert_eq!(through_proxy(&[b"10.7.7.7, 10.2.3.4"]), ip("10.7.7.7"));
    }

    #[test]
    fn many_entries_are_walked_to_the_first_untrusted_from_the_right() {
        let mut list: Vec<String> = (0..500).map(|i| format!("198.51.100.{}", i % 250)).collect();
        list.push("203.0.113.7".into());
        list.extend((0..500).map(|i| format!("10.0.{}.{}:{}", i / 250, i % 250, 1000 + i)));
        assert_eq!(through_proxy(&[list.join(", ").as_bytes()]), ip("203.0.113.7"));
    }
}
