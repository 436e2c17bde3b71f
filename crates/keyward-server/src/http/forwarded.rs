//! Who the client is, behind trusted proxies: the chain of addresses a proxy reports, read
//! from the right (the entries the proxies themselves added), stopping at the first one that
//! is not a trusted proxy — or at the first one that cannot be read, where the last trusted
//! hop is all we can vouch for. Entries a client wrote itself, to the left, are never believed.

pub use crate::config::ForwardedHeader;
use ipnet::IpNet;
use keyward_core::allow_list::unmapped;
use std::net::{IpAddr, SocketAddr};

/// The client's address, given the TCP peer and the values of the chosen header (in order).
pub fn client_address<'a>(
    peer: IpAddr,
    trusted: &[IpNet],
    header: ForwardedHeader,
    values: impl Iterator<Item = &'a str>,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    let peer = unmapped(peer);
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = values.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let node = match header {
            ForwardedHeader::XForwardedFor => Some(entry.trim()),
            ForwardedHeader::Forwarded => for_parameter(entry),
        };
        let Some(ip) = node.and_then(parse_node).map(unmapped) else {
            break; // unreadable: vouch only for the last trusted hop
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Whether `peer` (the TCP peer) is one of `KEYWARD_TRUSTED_PROXIES`: the one check of who
/// may tell keyward about the client (its address, its scheme, its request id).
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = unmapped(peer);
    trusted.iter().any(|net| net.contains(&peer))
}

/// Whether a trusted proxy says the client used https, in the configured header only:
/// `X-Forwarded-Proto` beside `X-Forwarded-For`, or the `proto=` of the last element of
/// `Forwarded` (the one the proxy next to keyward wrote).
pub fn says_https<'a>(header: ForwardedHeader, values: impl Iterator<Item = &'a str>) -> bool {
    match header {
        ForwardedHeader::XForwardedFor => values
            .last()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")),
        ForwardedHeader::Forwarded => values
            .last()
            .and_then(|v| v.rsplit(',').next())
            .and_then(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("proto")
                        .then(|| value.trim().trim_matches('"'))
                })
            })
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https")),
    }
}

/// An address as proxies write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`. Anything else (`unknown`, `_hidden`) is `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

/// The `for=` of one element of a `Forwarded` header, unquoted.
fn for_parameter(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolve(header: ForwardedHeader, values: &[&str]) -> IpAddr {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        client_address(ip("10.0.0.1"), &trusted, header, values.iter().copied())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let values = ["1.2.3.4"];
        let client = client_address(
            ip("203.0.113.9"),
            &trusted,
            ForwardedHeader::XForwardedFor,
            values.iter().copied(),
        );
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn the_chain_is_read_from_the_right_past_trusted_proxies() {
        use ForwardedHeader::XForwardedFor as X;
        assert_eq!(resolve(X, &["6.6.6.6, 198.51.100.7"]), ip("198.51.100.7"));
        assert_eq!(
            resolve(X, &["6.6.6.6", "198.51.100.7, 10.0.0.2"]),
            ip("198.51.100.7")
        );
        assert_eq!(resolve(X, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        use ForwardedHeader::XForwardedFor as X;
        assert_eq!(resolve(X, &["6.6.6.6, 9.9.9.9:1234"]), ip("9.9.9.9"));
        assert_eq!(
            resolve(X, &["6.6.6.6, [2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(resolve(X, &["6.6.6.6, [2001:db8::1]"]), ip("2001:db8::1"));
        assert_eq!(resolve(X, &["6.6.6.6, ::ffff:9.9.9.9"]), ip("9.9.9.9"));
    }

    #[test]
    fn an_unreadable_entry_stops_the_walk_at_the_last_trusted_hop() {
        use ForwardedHeader::XForwardedFor as X;
        for tail in ["unknown", "", "9.9.9.9:port", "not an ip", "[::1"] {
            assert_eq!(
                resolve(X, &[&format!("6.6.6.6, {tail}")]),
                ip("10.0.0.1"),
                "{tail:?}"
            );
        }
        assert_eq!(resolve(X, &["6.6.6.6, garbage, 10.0.0.3"]), ip("10.0.0.3"));
    }

    #[test]
    fn the_forwarded_header_is_read_the_same_way() {
        use ForwardedHeader::Forwarded as F;
        assert_eq!(
            resolve(F, &["for=6.6.6.6, for=198.51.100.7;proto=https"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(F, &[r#"for=6.6.6.6, For="[2001:db8::1]:4711""#]),
            ip("2001:db8::1")
        );
        assert_eq!(resolve(F, &["for=6.6.6.6, for=unknown"]), ip("10.0.0.1"));
        assert_eq!(resolve(F, &["for=6.6.6.6, proto=https"]), ip("10.0.0.1"));
        assert_eq!(resolve(F, &["for=6.6.6.6, for=_hidden"]), ip("10.0.0.1"));
    }
}
