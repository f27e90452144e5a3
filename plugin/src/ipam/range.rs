//! Ranges and range sets with host-local's rules: a range is a subnet with an inclusive
//! start and end and a gateway that is never handed out; a range set is tried round-robin,
//! starting after the address reserved last.
use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;

use super::IpamError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// Network address and prefix length.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// Addresses as integers, so that stepping and comparing work for both families.
fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_int(value: u128, like: IpAddr) -> IpAddr {
    match like {
        // Values come from a v4 range, so they fit.
        IpAddr::V4(_) => IpAddr::V4((value as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

impl Range {
    /// Fills in host-local's defaults and checks consistency: start defaults to the
    /// network address + 1, end to the last address (the one before broadcast for IPv4),
    /// gateway to the network address + 1.
    pub fn new(
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Self, IpamError> {
        let invalid = |why: String| Err(IpamError::InvalidConfig(why));
        let max_prefix = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > max_prefix - 2 {
            return invalid(format!("subnet {subnet} is too small to allocate from"));
        }
        if subnet.ip() != subnet.network() {
            return invalid(format!(
                "subnet {subnet} has host bits set; its network address is {}",
                subnet.network()
            ));
        }
        let network = to_int(subnet.network());
        let last = to_int(subnet.broadcast()) - u128::from(subnet.is_ipv4());
        let first = from_int(network + 1, subnet.ip());
        let range = Range {
            subnet,
            start: start.unwrap_or(first),
            end: end.unwrap_or_else(|| from_int(last, subnet.ip())),
            gateway: gateway.unwrap_or(first),
        };
        for (what, ip) in [
            ("rangeStart", range.start),
            ("rangeEnd", range.end),
            ("gateway", range.gateway),
        ] {
            if ip.is_ipv4() != subnet.is_ipv4() {
                return invalid(format!(
                    "{what} {ip} is not of the same family as subnet {subnet}"
                ));
            }
        }
        for (what, ip) in [("rangeStart", range.start), ("rangeEnd", range.end)] {
            if !subnet.contains(ip) {
                return invalid(format!("{what} {ip} is not in subnet {subnet}"));
            }
        }
        if to_int(range.start) > to_int(range.end) {
            return invalid(format!(
                "rangeStart {} is after rangeEnd {}",
                range.start, range.end
            ));
        }
        Ok(range)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.is_ipv4()
            && self.subnet.contains(ip)
            && (to_int(self.start)..=to_int(self.end)).contains(&to_int(ip))
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && to_int(self.start) <= to_int(other.end)
            && to_int(other.start) <= to_int(self.end)
    }

    /// How many addresses this range can hand out (the gateway excluded).
    pub fn size(&self) -> u128 {
        let all = to_int(self.end) - to_int(self.start) + 1;
        all - u128::from(self.contains(self.gateway))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges of one family from which one address is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    pub fn new(ranges: Vec<Range>) -> Result<Self, IpamError> {
        let Some(first) = ranges.first() else {
            return Err(IpamError::InvalidConfig("a range set is empty".into()));
        };
        if ranges
            .iter()
            .any(|range| range.subnet.is_ipv4() != first.subnet.is_ipv4())
        {
            return Err(IpamError::InvalidConfig(
                "a range set mixes address families".into(),
            ));
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(IpamError::InvalidConfig(format!("ranges {a} and {b} overlap")));
            }
        }
        Ok(Self(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].subnet.is_ipv4()
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|range| range.contains(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn size(&self) -> u128 {
        self.0.iter().map(Range::size).sum()
    }

    /// Every allocatable address once, in host-local's order: from the one after
    /// `last_reserved` (when it is in this set) round the ranges back to it; otherwise from
    /// the first range's start. Gateways are skipped.
    pub fn candidates(&self, last_reserved: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
        let (first_range, first_offset) = last_reserved
            .and_then(|last| {
                let index = self.0.iter().position(|range| range.contains(last))?;
                let range = &self.0[index];
                if last == range.end {
                    Some(((index + 1) % self.0.len(), 0))
                } else {
                    Some((index, to_int(last) - to_int(range.start) + 1))
                }
            })
            .unwrap_or((0, 0));
        let count = self.0.len();
        // Walk ranges from `first_range`, the first one from `first_offset`, and finally the
        // head of `first_range` that was skipped.
        let ranges = (0..count).map(move |step| (first_range + step) % count);
        ranges
            .enumerate()
            .flat_map(move |(step, index)| {
                let range = &self.0[index];
                let from = if step == 0 { first_offset } else { 0 };
                let len = to_int(range.end) - to_int(range.start) + 1;
                (from..len).map(move |offset| (from_int(to_int(range.start) + offset, range.start), range))
            })
            .chain({
                let range = &self.0[first_range];
                (0..first_offset)
                    .map(move |offset| (from_int(to_int(range.start) + offset, range.start), range))
            })
            .filter(|(ip, range)| *ip != range.gateway)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&ranges.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn range(subnet: &str, start: Option<&str>, end: Option<&str>, gateway: Option<&str>) -> Range {
        Range::new(
            subnet.parse().expect("subnet"),
            start.map(ip),
            end.map(ip),
            gateway.map(ip),
        )
        .expect("range")
    }

    #[test]
    fn defaults_follow_host_local() {
        let r = range("10.10.0.0/16", None, None, None);
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.10.0.1"), ip("10.10.255.254"), ip("10.10.0.1"))
        );
        assert_eq!(r.size(), 65533);
        let r6 = range("fd00::/120", None, None, None);
        assert_eq!((r6.start, r6.end), (ip("fd00::1"), ip("fd00::ff")));
    }

    #[test]
    fn seed_range_has_101_addresses_and_skips_the_gateway() {
        let seed = range(
            "10.10.0.0/16",
            Some("10.10.1.1"),
            Some("10.10.1.101"),
            Some("10.10.1.0"),
        );
        assert_eq!(seed.size(), 101);
        let set = RangeSet::new(vec![seed]).expect("set");
        let all: Vec<IpAddr> = set.candidates(None).map(|(ip, _)| ip).collect();
        assert_eq!(all.len(), 101);
        assert_eq!(all[0], ip("10.10.1.1"));
        assert_eq!(all[100], ip("10.10.1.101"));
    }

    #[test]
    fn gateway_inside_the_range_is_never_a_candidate() {
        let set = RangeSet::new(vec![range("10.0.0.0/29", None, None, Some("10.0.0.3"))]).expect("set");
        let all: Vec<IpAddr> = set.candidates(None).map(|(ip, _)| ip).collect();
        assert_eq!(
            all,
            ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip)
        );
    }

    #[test]
    fn round_robin_starts_after_the_last_reserved_and_wraps_across_ranges() {
        let set = RangeSet::new(vec![
            range(
                "10.0.0.0/24",
                Some("10.0.0.10"),
                Some("10.0.0.12"),
                Some("10.0.0.1"),
            ),
            range(
                "10.0.1.0/24",
                Some("10.0.1.10"),
                Some("10.0.1.11"),
                Some("10.0.1.1"),
            ),
        ])
        .expect("set");
        let order =
            |last: Option<&str>| -> Vec<IpAddr> { set.candidates(last.map(ip)).map(|(ip, _)| ip).collect() };
        assert_eq!(
            order(Some("10.0.0.11")),
            ["10.0.0.12", "10.0.1.10", "10.0.1.11", "10.0.0.10", "10.0.0.11"].map(ip)
        );
        assert_eq!(
            order(Some("10.0.1.11")),
            ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.1.10", "10.0.1.11"].map(ip)
        );
        // A last address outside the set (the ranges changed) restarts at the beginning.
        assert_eq!(order(Some("192.168.0.1"))[0], ip("10.0.0.10"));
    }

    #[test]
    fn invalid_ranges_are_rejected() {
        let bad = [
            ("10.0.0.1/24", None, None),
            ("10.0.0.0/31", None, None),
            ("10.0.0.0/24", Some("10.0.1.1"), None),
            ("10.0.0.0/24", Some("10.0.0.9"), Some("10.0.0.5")),
            ("10.0.0.0/24", Some("fd00::1"), None),
        ];
        for (subnet, start, end) in bad {
            assert!(
                Range::new(subnet.parse().expect("subnet"), start.map(ip), end.map(ip), None).is_err(),
                "{subnet} {start:?} {end:?}"
            );
        }
        let a = range("10.0.0.0/24", None, None, None);
        let b = range("10.0.0.0/25", None, None, None);
        assert!(RangeSet::new(vec![a.clone(), b]).is_err());
        assert!(RangeSet::new(vec![a, range("fd00::/64", None, None, None)]).is_err());
        assert!(RangeSet::new(vec![]).is_err());
    }
}
