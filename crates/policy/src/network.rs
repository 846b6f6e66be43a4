//! Network conditions (`ip`, `not_ip`) and the address sets behind them.
//!
//! A [`NetSet`] stores its prefixes as sorted, merged address ranges, so a lookup is one
//! binary search whatever the number of prefixes (a 1,000,000-prefix block list included),
//! and building one is a sort.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A set of IPv4 and IPv6 networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    // INVARIANT: sorted by start, non-overlapping and non-adjacent (merged).
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    prefixes: usize,
}

impl NetSet {
    /// The set of all addresses in `networks`.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> NetSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut prefixes = 0;
        for network in networks {
            prefixes += 1;
            match network {
                IpNet::V4(net) => v4.push((u32::from(net.network()), u32::from(net.broadcast()))),
                IpNet::V6(net) => v6.push((u128::from(net.network()), u128::from(net.broadcast()))),
            }
        }
        NetSet {
            v4: merged(v4),
            v6: merged(v6),
            prefixes,
        }
    }

    /// Whether `ip` is in the set. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as
    /// the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => within(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => within(&self.v6, u128::from(ip)),
        }
    }

    /// How many prefixes the set was built from.
    pub fn prefixes(&self) -> usize {
        self.prefixes
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether every address of `other` is in this set.
    pub fn covers(&self, other: &NetSet) -> bool {
        other
            .v4
            .iter()
            .all(|&(start, end)| spans(&self.v4, start, end))
            && other
                .v6
                .iter()
                .all(|&(start, end)| spans(&self.v6, start, end))
    }

    /// Whether some address is in both sets.
    pub fn intersects(&self, other: &NetSet) -> bool {
        overlap(&self.v4, &other.v4) || overlap(&self.v6, &other.v6)
    }

    /// Whether the set holds every address (`0.0.0.0/0` and `::/0`).
    pub fn is_everything(&self) -> bool {
        self.v4 == [(0, u32::MAX)] && self.v6 == [(0, u128::MAX)]
    }

    /// Bytes of heap the set uses.
    pub fn heap_size(&self) -> usize {
        self.v4.capacity() * size_of::<(u32, u32)>()
            + self.v6.capacity() * size_of::<(u128, u128)>()
    }
}

fn merged<T: Ord + Copy + Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1 >= start || last.1.next() == Some(start) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    // The last range starting at or before `value` is the only one that can hold it.
    let after = ranges.partition_point(|&(start, _)| start <= value);
    after > 0 && ranges[after - 1].1 >= value
}

fn overlap<T: Ord + Copy>(a: &[(T, T)], b: &[(T, T)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].1 < b[j].0 {
            i += 1;
        } else if b[j].1 < a[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

fn spans<T: Ord + Copy>(ranges: &[(T, T)], start: T, end: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= start);
    after > 0 && ranges[after - 1].1 >= end
}

/// The next address, for merging adjacent ranges.
trait Step: Sized {
    fn next(self) -> Option<Self>;
}

impl Step for u32 {
    fn next(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Step for u128 {
    fn next(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// Networks an `ip` or `not_ip` condition names: named lists (`@office`) and inline CIDRs.
#[derive(Debug, Clone)]
pub struct Networks {
    sets: Vec<Arc<NetSet>>,
    /// How the condition was written (`@office, 10.0.0.0/8`), for operators; interned, so
    /// a denial's reason borrows it instead of copying it.
    label: &'static str,
    /// The label with `not ` before it, for `not_ip` conditions.
    negated: &'static str,
}

impl Networks {
    /// Networks made of named lists and one set of inline CIDRs; `label` is how the
    /// condition reads in the policy file.
    pub fn new(sets: Vec<Arc<NetSet>>, label: &str) -> Networks {
        Networks {
            sets,
            label: crate::decision::interned(label),
            negated: crate::decision::interned(&format!("not {label}")),
        }
    }

    /// Whether `ip` is in any of the sets.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.sets.iter().any(|set| set.contains(ip))
    }

    /// How the condition was written.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// How the condition was written, as a `not_ip` condition reads.
    pub fn negated_label(&self) -> &'static str {
        self.negated
    }

    /// Whether the networks hold no address at all (an empty list).
    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(|set| set.is_empty())
    }

    /// Whether some address is in both these networks and `set`.
    pub fn intersects(&self, set: &NetSet) -> bool {
        self.sets.iter().any(|own| own.intersects(set))
    }

    /// Whether the networks hold every address.
    pub fn is_everything(&self) -> bool {
        self.sets.iter().any(|set| set.is_everything())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidrs: &[&str]) -> NetSet {
        NetSet::new(cidrs.iter().map(|c| c.parse::<IpNet>().unwrap()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_prefixes() {
        let office = set(&["203.0.113.0/24", "10.0.0.0/8", "192.0.2.7/32"]);
        for (address, inside) in [
            ("203.0.113.0", true),
            ("203.0.113.255", true),
            ("203.0.114.0", false),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("192.0.2.7", true),
            ("192.0.2.6", false),
            ("192.0.2.8", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("::ffff:10.1.2.3", true),
            ("::ffff:11.1.2.3", false),
        ] {
            assert_eq!(office.contains(ip(address)), inside, "{address}");
        }
    }

    #[test]
    fn ipv6_prefixes() {
        let office = set(&["2001:db8::/32", "fe80::1/128"]);
        assert!(office.contains(ip("2001:db8:ffff::1")));
        assert!(!office.contains(ip("2001:db9::1")));
        assert!(office.contains(ip("fe80::1")));
        assert!(!office.contains(ip("fe80::2")));
        assert!(!office.contains(ip("10.0.0.1")));
    }

    #[test]
    fn overlapping_and_adjacent_prefixes_merge() {
        let merged = set(&["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "0.0.0.0/32"]);
        assert_eq!(merged.v4, vec![(0, 0), (0x0a00_0000, 0x0aff_ffff)]);
        assert_eq!(merged.prefixes(), 4);
        assert!(set(&["0.0.0.0/0", "::/0"]).is_everything());
        assert!(!set(&["0.0.0.0/0"]).is_everything());
    }

    #[test]
    fn intersects() {
        let office = set(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(office.intersects(&set(&["10.1.0.0/16"])));
        assert!(office.intersects(&set(&["0.0.0.0/0"])));
        assert!(office.intersects(&set(&["192.0.2.0/24", "2001:db8:1::/48"])));
        assert!(!office.intersects(&set(&["11.0.0.0/8", "192.0.2.0/24", "2001:db9::/32"])));
    }

    #[test]
    fn covers() {
        let wide = set(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(wide.covers(&set(&["10.1.0.0/16", "2001:db8:1::/48"])));
        assert!(!wide.covers(&set(&["10.1.0.0/16", "11.0.0.0/8"])));
        assert!(wide.covers(&NetSet::default()));
    }
}
