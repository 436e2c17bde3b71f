//! A partner's IP allow-list: addresses and CIDR blocks, parsed once. Empty allows any address.

use ipnet::IpNet;
use std::net::IpAddr;

/// The allow-list of one partner. An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is treated
/// as the IPv4 address it maps, both in the list and in the client's address, so a dual-stack
/// listener cannot lock a partner out or let one in by accident.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps(Vec<IpNet>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block (such as 203.0.113.7 or 198.51.100.0/24)")]
pub struct NotAnAddress(pub String);

impl AllowedIps {
    /// The most entries a partner may have (SPEC §3.4a).
    pub const MAX_ENTRIES: usize = 20;

    /// Every entry must be an address or a CIDR block. The list is normalised: host bits of a
    /// block cleared (`198.51.100.7/24` is `198.51.100.0/24`), IPv4-mapped IPv6 as IPv4, and
    /// a repeated entry kept once; otherwise in the order given.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, NotAnAddress> {
        let entries: Vec<IpNet> = entries
            .into_iter()
            .map(parse_entry)
            .collect::<Result<_, _>>()?;
        Ok(Self::from_entries(entries))
    }

    /// The list of entries already parsed by [`parse_entry`] (so normalised), a repeated entry
    /// kept once, otherwise in the order given.
    pub fn from_entries(entries: impl IntoIterator<Item = IpNet>) -> Self {
        let mut list: Vec<IpNet> = Vec::new();
        for net in entries {
            if !list.contains(&net) {
                list.push(net);
            }
        }
        Self(list)
    }

    /// Each entry as shown to people and stored: a single address without its prefix length.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(entry_text).collect()
    }

    /// The stored form: entries joined by commas; empty for "any address".
    pub fn from_stored(text: Option<&str>) -> Result<Self, NotAnAddress> {
        let text = text.unwrap_or_default();
        Self::parse(text.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    pub fn to_stored(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn entries(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` may call: always when the list is empty.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&ip))
    }
}

impl std::fmt::Display for AllowedIps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&entry_text(net))?;
        }
        Ok(())
    }
}

fn entry_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// An address (a block of one) or a CIDR block, its host bits cleared; IPv4-mapped IPv6
/// becomes IPv4.
pub fn parse_entry(s: &str) -> Result<IpNet, NotAnAddress> {
    let s = s.trim();
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| NotAnAddress(s.to_owned()))?;
    Ok(match net {
        IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), len) if len >= 96 => {
                IpNet::new(IpAddr::V4(v4), len - 96).map_err(|_| NotAnAddress(s.to_owned()))?
            }
            _ => net,
        },
        v4 => v4,
    }
    .trunc())
}

/// The IPv4 address an IPv4-mapped IPv6 address stands for; any other address unchanged.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_list_allows_any_address() {
        assert!(AllowedIps::default().allows(ip("192.0.2.7")));
        assert!(AllowedIps::from_stored(None).is_ok_and(|l| l.is_empty()));
        assert!(AllowedIps::from_stored(Some("")).is_ok_and(|l| l.is_empty()));
    }

    #[test]
    fn addresses_blocks_and_mapped_addresses_match() -> Result<(), NotAnAddress> {
        let list = AllowedIps::parse(["192.0.2.0/24", "2001:db8::/48", "::ffff:198.51.100.9"])?;
        assert!(list.allows(ip("192.0.2.7")));
        assert!(list.allows(ip("::ffff:192.0.2.7")));
        assert!(list.allows(ip("2001:db8:0:1::5")));
        assert!(list.allows(ip("198.51.100.9")));
        assert!(!list.allows(ip("198.51.100.10")));
        assert!(!list.allows(ip("2001:db9::1")));
        Ok(())
    }

    #[test]
    fn the_stored_form_round_trips() -> Result<(), NotAnAddress> {
        let list = AllowedIps::parse(["203.0.113.7", "10.0.0.0/8"])?;
        let stored = list.to_stored();
        assert_eq!(stored.as_deref(), Some("203.0.113.7,10.0.0.0/8"));
        assert_eq!(AllowedIps::from_stored(stored.as_deref())?, list);
        Ok(())
    }

    #[test]
    fn entries_are_normalised() -> Result<(), NotAnAddress> {
        let list = AllowedIps::parse([
            "198.51.100.7/24",
            "2001:DB8:0:0::1/48",
            "::ffff:192.0.2.9",
            "192.0.2.9/32",
            " 198.51.100.0/24 ",
        ])?;
        assert_eq!(
            list.to_strings(),
            ["198.51.100.0/24", "2001:db8::/48", "192.0.2.9"]
        );
        Ok(())
    }

    #[test]
    fn garbage_is_refused_with_the_entry_named() {
        let err = AllowedIps::parse(["10.0.0.0/8", "not-an-ip"]).err();
        assert_eq!(err, Some(NotAnAddress("not-an-ip".into())));
        assert!(AllowedIps::parse(["10.0.0.0/33"]).is_err());
    }
}
