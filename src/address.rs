//! What a client address counts as, for every limit: its address (IPv4 as is, IPv6
//! by its /64, the smallest block one subscriber usually holds) and its network
//! (IPv4 /24, IPv6 /48, the block one attacker is assumed to hold entirely).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address a limit counts: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64,
/// the smallest block one subscriber usually holds.
pub fn address_key(ip: IpAddr) -> String {
    match address_block(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// [`address_key`]'s block as an address (the /64's first), for in-memory counts
/// that need no text.
pub fn address_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The network password guesses count against: an IPv4 /24 or an IPv6 /48, the
/// block one attacker is assumed to hold entirely (an IPv6 site gets a /48; an
/// attacker hopping through fresh /64s of it gets no fresh budget with each).
pub fn network_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_ipv4_or_ipv6_slash_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        let block = |s: &str| address_block(s.parse().unwrap());
        assert_eq!(block("::ffff:203.0.113.7"), block("203.0.113.7"));
        assert_eq!(block("2001:db8:1:2:ffff::1"), block("2001:db8:1:2::9"));
        assert_ne!(block("2001:db8:1:3::1"), block("2001:db8:1:2::1"));
    }

    #[test]
    fn guesses_count_by_ipv4_slash_24_or_ipv6_slash_48() {
        let key = |s: &str| network_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.0/24");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.0/24");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:2::1"), key("2001:db8:1::1"));
    }
}
