//! One address per range set for an owner, host-local's way, over any [`Store`].
use std::net::IpAddr;

use super::{IpamConfig, IpamError, Owner, RangeSet, Store};

/// An address handed out: with the prefix length of its subnet and the gateway of its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
    pub range_set: usize,
}

fn allocation(set: &RangeSet, index: usize, ip: IpAddr) -> Option<Allocation> {
    let range = set.range_for(ip)?;
    Some(Allocation {
        ip,
        prefix: range.subnet.prefix(),
        gateway: range.gateway,
        range_set: index,
    })
}

/// Allocates one address from every range set for `owner`. An owner that already holds an
/// address in a set gets the same one again (a retried ADD); requested addresses are taken
/// from the set that contains them. On error nothing new stays reserved.
pub fn allocate(
    store: &mut impl Store,
    config: &IpamConfig,
    owner: &Owner,
) -> Result<Vec<Allocation>, IpamError> {
    let leases = store.leases()?;
    for &ip in &config.requested {
        if !config.range_sets.iter().any(|set| set.range_for(ip).is_some()) {
            return Err(IpamError::RequestedOutOfRange { ip });
        }
    }
    let mut allocations = Vec::new();
    let mut reserved_now = Vec::new();
    let result = (|| {
        for (index, set) in config.range_sets.iter().enumerate() {
            let requested = config
                .requested
                .iter()
                .copied()
                .find(|&ip| set.range_for(ip).is_some());
            let held = leases
                .iter()
                .find(|(ip, holder)| holder.matches(owner) && set.range_for(**ip).is_some())
                .map(|(ip, _)| *ip);
            let ip = match (held, requested) {
                (Some(held), Some(requested)) if held != requested => {
                    return Err(IpamError::HeldOther {
                        owner: owner.to_string(),
                        held,
                        requested,
                        range_set: index,
                    });
                }
                (Some(held), _) => held,
                (None, Some(requested)) => {
                    let range = set
                        .range_for(requested)
                        .ok_or(IpamError::RequestedOutOfRange { ip: requested })?;
                    if requested == range.gateway {
                        return Err(IpamError::RequestedIsGateway { ip: requested });
                    }
                    if !store.reserve(requested, owner, index)? {
                        let holder = leases
                            .get(&requested)
                            .map_or_else(|| "another container".into(), ToString::to_string);
                        return Err(IpamError::RequestedTaken {
                            ip: requested,
                            holder,
                        });
                    }
                    reserved_now.push(requested);
                    requested
                }
                (None, None) => {
                    let last = store.last_reserved(index)?;
                    let mut chosen = None;
                    for (candidate, _) in set.candidates(last) {
                        if !leases.contains_key(&candidate) && store.reserve(candidate, owner, index)? {
                            chosen = Some(candidate);
                            break;
                        }
                    }
                    let ip = chosen.ok_or_else(|| IpamError::Exhausted {
                        range_set: index,
                        ranges: set.to_string(),
                    })?;
                    reserved_now.push(ip);
                    ip
                }
            };
            allocations.extend(allocation(set, index, ip));
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(allocations),
        Err(error) => {
            for ip in reserved_now {
                if let Err(undo) = store.remove(ip) {
                    log::error!("failed to release {ip} after a failed allocation: {undo}");
                }
            }
            Err(error)
        }
    }
}

/// Releases every lease of `owner`; returns the addresses released.
pub fn release(store: &mut impl Store, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    let mine: Vec<IpAddr> = store
        .leases()?
        .into_iter()
        .filter(|(_, holder)| holder.matches(owner))
        .map(|(ip, _)| ip)
        .collect();
    for &ip in &mine {
        store.remove(ip)?;
    }
    Ok(mine)
}

/// Marks `ip`, leased to `owner` a moment ago, as used by the host with `mac` on the wire:
/// the lease becomes a conflict marker that keeps the address out of every allocation.
pub fn mark_conflict(store: &mut impl Store, ip: IpAddr, mac: [u8; 6]) -> Result<(), IpamError> {
    store.set(ip, &Owner::conflict(mac))
}

/// Leased and allocatable addresses per range set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub range_set: usize,
    pub ranges: String,
    pub leased: u128,
    pub size: u128,
}

pub fn usage(store: &impl Store, config: &IpamConfig) -> Result<Vec<Usage>, IpamError> {
    let leases = store.leases()?;
    Ok(config
        .range_sets
        .iter()
        .enumerate()
        .map(|(index, set)| Usage {
            range_set: index,
            ranges: set.to_string(),
            leased: leases
                .keys()
                .filter(|ip| set.range_for(**ip).is_some_and(|range| range.gateway != **ip))
                .count() as u128,
            size: set.size(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::MemoryStore;

    fn config(extra: &str) -> IpamConfig {
        let text = format!(
            r#"{{"name":"data","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.10.0.0/16","rangeStart":"10.10.1.1",
            "rangeEnd":"10.10.1.4","gateway":"10.10.1.0"}}]{extra}]}}}}"#
        );
        IpamConfig::from_net_config(text.as_bytes(), None).expect("config")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn owner(n: u32) -> Owner {
        Owner::new(&format!("container{n}"), "eth0")
    }

    #[test]
    fn allocates_round_robin_with_prefix_and_gateway() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = allocate(&mut store, &config, &owner(1)).expect("first");
        assert_eq!(
            first,
            vec![Allocation {
                ip: ip("10.10.1.1"),
                prefix: 16,
                gateway: ip("10.10.1.0"),
                range_set: 0
            }]
        );
        assert_eq!(
            allocate(&mut store, &config, &owner(2)).expect("second")[0].ip,
            ip("10.10.1.2")
        );
        // Releasing .1 does not make it the next address: round robin goes on from .2.
        release(&mut store, &owner(1)).expect("release");
        assert_eq!(
            allocate(&mut store, &config, &owner(3)).expect("third")[0].ip,
            ip("10.10.1.3")
        );
        assert_eq!(
            allocate(&mut store, &config, &owner(4)).expect("fourth")[0].ip,
            ip("10.10.1.4")
        );
        assert_eq!(
            allocate(&mut store, &config, &owner(5)).expect("wraps")[0].ip,
            ip("10.10.1.1")
        );
    }

    #[test]
    fn same_owner_gets_the_same_address_again() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = allocate(&mut store, &config, &owner(1)).expect("first");
        let again = allocate(&mut store, &config, &owner(1)).expect("again");
        assert_eq!(first, again);
        assert_eq!(store.leases.len(), 1);
        // Another interface of the same container is another owner.
        let eth1 = allocate(&mut store, &config, &Owner::new("container1", "eth1")).expect("eth1");
        assert_ne!(eth1[0].ip, first[0].ip);
    }

    #[test]
    fn exhaustion_is_an_error_that_names_the_range() {
        let config = config("");
        let mut store = MemoryStore::default();
        for n in 0..4 {
            allocate(&mut store, &config, &owner(n)).expect("fits");
        }
        let error = allocate(&mut store, &config, &owner(9)).expect_err("exhausted");
        assert!(
            matches!(error, IpamError::Exhausted { range_set: 0, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("10.10.1.1-10.10.1.4"), "{error}");
        assert_eq!(store.leases.len(), 4);
    }

    #[test]
    fn requested_addresses() {
        let mut config = config("");
        let mut store = MemoryStore::default();
        config.requested = vec![ip("10.10.1.3")];
        assert_eq!(
            allocate(&mut store, &config, &owner(1)).expect("requested")[0].ip,
            ip("10.10.1.3")
        );
        assert!(matches!(
            allocate(&mut store, &config, &owner(2)),
            Err(IpamError::RequestedTaken { .. })
        ));
        config.requested = vec![ip("10.10.1.0")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(2)),
            Err(IpamError::RequestedOutOfRange { .. })
        ));
        config.requested = vec![ip("10.10.9.9")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(2)),
            Err(IpamError::RequestedOutOfRange { .. })
        ));
        config.requested = vec![ip("10.10.1.4")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(1)),
            Err(IpamError::HeldOther { .. })
        ));
        assert_eq!(store.leases.len(), 1);
    }

    #[test]
    fn one_address_per_range_set_and_all_or_nothing() {
        let config = config(r#",[{"subnet":"fd00::/120","rangeStart":"fd00::10","rangeEnd":"fd00::10"}]"#);
        let mut store = MemoryStore::default();
        let both = allocate(&mut store, &config, &owner(1)).expect("dual stack");
        assert_eq!(
            both.iter().map(|a| a.ip).collect::<Vec<_>>(),
            [ip("10.10.1.1"), ip("fd00::10")]
        );
        assert_eq!(both[1].prefix, 120);
        // The IPv6 set is full: the IPv4 address taken for owner 2 is given back.
        assert!(matches!(
            allocate(&mut store, &config, &owner(2)),
            Err(IpamError::Exhausted { range_set: 1, .. })
        ));
        assert_eq!(store.leases.len(), 2);
        assert_eq!(release(&mut store, &owner(1)).expect("release").len(), 2);
        assert!(store.leases.is_empty());
    }

    #[test]
    fn a_conflicting_address_is_skipped_from_then_on() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = allocate(&mut store, &config, &owner(1)).expect("first")[0].ip;
        mark_conflict(&mut store, first, [2, 0, 0, 0, 0, 9]).expect("mark");
        // The same owner asking again gets another address; nobody gets the marked one.
        let again = allocate(&mut store, &config, &owner(1)).expect("again")[0].ip;
        assert_ne!(again, first);
        assert!(store.leases[&first].conflicting_mac().is_some());
        release(&mut store, &owner(1)).expect("release");
        assert!(
            store.leases.contains_key(&first),
            "releasing the owner freed the conflict marker"
        );
    }

    #[test]
    fn usage_counts_leases_per_set() {
        let config = config("");
        let mut store = MemoryStore::default();
        allocate(&mut store, &config, &owner(1)).expect("one");
        store.leases.insert(ip("192.168.0.1"), owner(7));
        let usage = usage(&store, &config).expect("usage");
        assert_eq!((usage[0].leased, usage[0].size), (1, 4));
    }
}
