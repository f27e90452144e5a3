//! One address per range set for an owner, host-local's way, over any [`Store`]; releases,
//! GC and conflict markers. Every operation that takes several steps leaves no half state
//! behind: an allocation that fails gives back what it took, and a release that fails for
//! one lease goes on with the others and reports each failure.
use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{IpamConfig, IpamError, Owner, RangeSet, Store};

/// How long an address another host answered a probe for (ARP, or IPv6 duplicate address
/// detection) stays out of allocations.
/// After it, the marker counts as free: the address is handed out, and so probed, again
/// at its next allocation (a host that held it for a while may have gone; one that still
/// answers gets it marked again). Without an expiry every ADD on a node next to a host
/// that answers all probes would burn one address for ever.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(10 * 60);

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

/// True when a conflict marker written at `written` no longer keeps its address out at
/// `now`. One dated more than the period ahead of `now` (the clock was set back) has
/// expired too: letting a marker go early costs a probe, keeping it costs the address.
pub fn marker_expired(written: SystemTime, now: SystemTime) -> bool {
    match now.duration_since(written) {
        Ok(age) => age >= CONFLICT_RETRY,
        Err(ahead) => ahead.duration() >= CONFLICT_RETRY,
    }
}

/// True when `holder` of `ip` is a conflict marker that has expired at `now` (or whose file
/// is gone): the address is free again.
fn is_expired_marker(
    store: &impl Store,
    ip: IpAddr,
    holder: &Owner,
    now: SystemTime,
) -> Result<bool, IpamError> {
    if holder.conflicting_mac().is_none() {
        return Ok(false);
    }
    Ok(store
        .written_at(ip)?
        .is_none_or(|written| marker_expired(written, now)))
}

/// Reserves `ip` for `owner`: its lease, then the round-robin hint. When the hint cannot be
/// written the lease just created is removed again, so a failed reserve leaves nothing.
pub fn reserve(
    store: &mut impl Store,
    ip: IpAddr,
    owner: &Owner,
    range_set: usize,
) -> Result<bool, IpamError> {
    if !store.create(ip, owner)? {
        return Ok(false);
    }
    if let Err(error) = store.set_last_reserved(range_set, ip) {
        if let Err(undo) = store.remove(ip) {
            // The lease names its owner, so a retried ADD takes it again and DEL releases it.
            log::error!("failed to remove the lease of {ip} for {owner} after a failed reservation: {undo}");
        }
        return Err(error);
    }
    Ok(true)
}

/// Allocates one address from every range set for `owner`. An owner that already holds an
/// address in a set gets the same one again (a retried ADD); requested addresses are taken
/// from the set that contains them; a conflict marker that has expired at `now` is free.
/// On error nothing new stays reserved (an expired marker that was cleared to make room
/// stays cleared: it was free).
pub fn allocate(
    store: &mut impl Store,
    config: &IpamConfig,
    owner: &Owner,
    now: SystemTime,
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
                    if let Some(holder) = leases.get(&requested)
                        && is_expired_marker(store, requested, holder, now)?
                    {
                        clear_expired_marker(store, requested, holder)?;
                    }
                    if !reserve(store, requested, owner, index)? {
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
                        match leases.get(&candidate) {
                            None => {}
                            Some(holder) if is_expired_marker(store, candidate, holder, now)? => {
                                clear_expired_marker(store, candidate, holder)?;
                            }
                            Some(_) => continue,
                        }
                        if reserve(store, candidate, owner, index)? {
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
                    // The lease names its owner, so a retried ADD takes it again and DEL
                    // releases it.
                    log::error!("failed to release {ip} after a failed allocation: {undo}");
                }
            }
            Err(error)
        }
    }
}

/// The next `count` addresses each range set would hand out after the allocations so far,
/// in order: free ones, or held by a conflict marker that has expired at `now`. What ADD
/// probes ahead, so that the next pods need not wait for their probe.
pub fn upcoming(
    store: &impl Store,
    config: &IpamConfig,
    count: usize,
    now: SystemTime,
) -> Result<Vec<IpAddr>, IpamError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let leases = store.leases()?;
    let mut upcoming = Vec::new();
    for (index, set) in config.range_sets.iter().enumerate() {
        let last = store.last_reserved(index)?;
        let mut found = 0;
        for (candidate, _) in set.candidates(last) {
            if found == count {
                break;
            }
            let free = match leases.get(&candidate) {
                None => true,
                Some(holder) => is_expired_marker(store, candidate, holder, now)?,
            };
            if free {
                upcoming.push(candidate);
                found += 1;
            }
        }
    }
    Ok(upcoming)
}

fn clear_expired_marker(store: &mut impl Store, ip: IpAddr, holder: &Owner) -> Result<(), IpamError> {
    store.remove(ip)?;
    log::info!(
        "the conflict marker of {ip} ({} answered for it) has expired: handing it out again",
        holder.conflicting_mac().unwrap_or_default()
    );
    Ok(())
}

/// What a release of several leases did: it goes on past a lease it cannot remove.
#[derive(Debug, Default)]
pub struct Released {
    /// The leases removed, with who held them.
    pub released: Vec<(IpAddr, Owner)>,
    /// The leases that could not be removed, with why.
    pub failed: Vec<(IpAddr, IpamError)>,
}

fn remove_each(store: &mut impl Store, leases: Vec<(IpAddr, Owner)>) -> Released {
    let mut outcome = Released::default();
    for (ip, holder) in leases {
        match store.remove(ip) {
            Ok(()) => outcome.released.push((ip, holder)),
            Err(error) => outcome.failed.push((ip, error)),
        }
    }
    outcome
}

/// Releases every lease of `owner`.
pub fn release(store: &mut impl Store, owner: &Owner) -> Result<Released, IpamError> {
    let mine = store
        .leases()?
        .into_iter()
        .filter(|(_, holder)| holder.matches(owner))
        .collect();
    Ok(remove_each(store, mine))
}

/// GC: releases every lease that `in_use` does not claim (an ID-only lease is claimed when
/// any interface of its container is), the leases of nobody (empty or unreadable) and the
/// conflict markers that have expired at `now`. Live markers stay.
pub fn release_unused(
    store: &mut impl Store,
    in_use: impl Fn(&Owner) -> bool,
    now: SystemTime,
) -> Result<Released, IpamError> {
    let mut unused = Vec::new();
    for (ip, holder) in store.leases()? {
        let keep = if holder.conflicting_mac().is_some() {
            !is_expired_marker(store, ip, &holder, now)?
        } else {
            !holder.is_nobody() && in_use(&holder)
        };
        if !keep {
            unused.push((ip, holder));
        }
    }
    Ok(remove_each(store, unused))
}

/// Marks `ip`, leased to `owner` a moment ago, as used by the host with `mac` on the wire,
/// at `now`: the lease becomes a conflict marker that keeps the address out of every
/// allocation for [`CONFLICT_RETRY`].
pub fn mark_conflict(
    store: &mut impl Store,
    ip: IpAddr,
    mac: [u8; 6],
    now: SystemTime,
) -> Result<(), IpamError> {
    store.set(ip, &Owner::conflict(mac), now)
}

/// An address someone else on the wire answered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    /// The MAC of the host that answered, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// When it was marked.
    pub written: SystemTime,
    /// True once [`CONFLICT_RETRY`] has passed: the address is handed out again.
    pub expired: bool,
}

/// Every conflict marker of the store, as of `now`.
pub fn conflicts(store: &impl Store, now: SystemTime) -> Result<Vec<Conflict>, IpamError> {
    let mut found = Vec::new();
    for (ip, holder) in store.leases()? {
        let Some(mac) = holder.conflicting_mac() else {
            continue;
        };
        // Gone since the listing.
        let Some(written) = store.written_at(ip)? else {
            continue;
        };
        found.push(Conflict {
            ip,
            mac,
            written,
            expired: marker_expired(written, now),
        });
    }
    Ok(found)
}

/// Removes the conflict markers of the store (only that of `only`, when given), expired or
/// not; leases of containers are never touched.
pub fn clear_conflicts(store: &mut impl Store, only: Option<IpAddr>) -> Result<Released, IpamError> {
    let markers = store
        .leases()?
        .into_iter()
        .filter(|(ip, holder)| holder.conflicting_mac().is_some() && only.is_none_or(|only| only == *ip))
        .collect();
    Ok(remove_each(store, markers))
}

/// Leased and allocatable addresses per range set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub range_set: usize,
    pub ranges: String,
    pub leased: u128,
    pub size: u128,
}

/// Usage at `now`: an expired conflict marker does not count as leased.
pub fn usage(store: &impl Store, config: &IpamConfig, now: SystemTime) -> Result<Vec<Usage>, IpamError> {
    let mut held = Vec::new();
    for (ip, holder) in store.leases()? {
        if !is_expired_marker(store, ip, &holder, now)? {
            held.push(ip);
        }
    }
    Ok(config
        .range_sets
        .iter()
        .enumerate()
        .map(|(index, set)| Usage {
            range_set: index,
            ranges: set.to_string(),
            leased: held
                .iter()
                .filter(|ip| set.range_for(**ip).is_some_and(|range| range.gateway != **ip))
                .count() as u128,
            size: set.size(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::ipam::{DiskStore, MemoryStore};

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

    /// A fixed "now" for the tests: the clock is passed in, never read.
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    fn first_ip(store: &mut impl Store, config: &IpamConfig, who: &Owner, now: SystemTime) -> IpAddr {
        allocate(store, config, who, now).expect("allocate")[0].ip
    }

    #[test]
    fn upcoming_are_the_next_allocations_in_order() {
        let config = config("");
        let mut store = MemoryStore::default();
        assert_eq!(
            upcoming(&store, &config, 2, t0()).expect("upcoming"),
            [ip("10.10.1.1"), ip("10.10.1.2")]
        );
        first_ip(&mut store, &config, &owner(1), t0());
        mark_conflict(&mut store, ip("10.10.1.3"), [2, 0, 0, 0, 0, 9], t0()).expect("mark");
        // After .1: .2, then .4 (.3 is marked); .1 is leased: only two.
        let next = upcoming(&store, &config, 3, t0()).expect("upcoming");
        assert_eq!(next, [ip("10.10.1.2"), ip("10.10.1.4")]);
        for (n, expected) in (2..).zip(&next) {
            let got = first_ip(&mut store, &config, &owner(n), t0());
            assert_eq!(got, *expected, "upcoming named what allocate hands out, in order");
        }
        // An expired marker is upcoming again.
        assert_eq!(
            upcoming(&store, &config, 3, t0() + CONFLICT_RETRY).expect("upcoming"),
            [ip("10.10.1.3")]
        );
    }

    #[test]
    fn allocates_round_robin_with_prefix_and_gateway() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = allocate(&mut store, &config, &owner(1), t0()).expect("first");
        assert_eq!(
            first,
            vec![Allocation {
                ip: ip("10.10.1.1"),
                prefix: 16,
                gateway: ip("10.10.1.0"),
                range_set: 0
            }]
        );
        assert_eq!(first_ip(&mut store, &config, &owner(2), t0()), ip("10.10.1.2"));
        // Releasing .1 does not make it the next address: round robin goes on from .2.
        release(&mut store, &owner(1)).expect("release");
        assert_eq!(first_ip(&mut store, &config, &owner(3), t0()), ip("10.10.1.3"));
        assert_eq!(first_ip(&mut store, &config, &owner(4), t0()), ip("10.10.1.4"));
        assert_eq!(first_ip(&mut store, &config, &owner(5), t0()), ip("10.10.1.1"));
    }

    #[test]
    fn same_owner_gets_the_same_address_again() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = allocate(&mut store, &config, &owner(1), t0()).expect("first");
        let again = allocate(&mut store, &config, &owner(1), t0()).expect("again");
        assert_eq!(first, again);
        assert_eq!(store.leases.len(), 1);
        // Another interface of the same container is another owner.
        let eth1 = first_ip(&mut store, &config, &Owner::new("container1", "eth1"), t0());
        assert_ne!(eth1, first[0].ip);
    }

    #[test]
    fn exhaustion_is_an_error_that_names_the_range() {
        let config = config("");
        let mut store = MemoryStore::default();
        for n in 0..4 {
            allocate(&mut store, &config, &owner(n), t0()).expect("fits");
        }
        let error = allocate(&mut store, &config, &owner(9), t0()).expect_err("exhausted");
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
        assert_eq!(first_ip(&mut store, &config, &owner(1), t0()), ip("10.10.1.3"));
        assert!(matches!(
            allocate(&mut store, &config, &owner(2), t0()),
            Err(IpamError::RequestedTaken { .. })
        ));
        config.requested = vec![ip("10.10.1.0")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(2), t0()),
            Err(IpamError::RequestedOutOfRange { .. })
        ));
        config.requested = vec![ip("10.10.9.9")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(2), t0()),
            Err(IpamError::RequestedOutOfRange { .. })
        ));
        config.requested = vec![ip("10.10.1.4")];
        assert!(matches!(
            allocate(&mut store, &config, &owner(1), t0()),
            Err(IpamError::HeldOther { .. })
        ));
        assert_eq!(store.leases.len(), 1);
    }

    #[test]
    fn one_address_per_range_set_and_all_or_nothing() {
        let config = config(r#",[{"subnet":"fd00::/120","rangeStart":"fd00::10","rangeEnd":"fd00::10"}]"#);
        let mut store = MemoryStore::default();
        let both = allocate(&mut store, &config, &owner(1), t0()).expect("dual stack");
        assert_eq!(
            both.iter().map(|a| a.ip).collect::<Vec<_>>(),
            [ip("10.10.1.1"), ip("fd00::10")]
        );
        assert_eq!(both[1].prefix, 120);
        // The IPv6 set is full: the IPv4 address taken for owner 2 is given back.
        assert!(matches!(
            allocate(&mut store, &config, &owner(2), t0()),
            Err(IpamError::Exhausted { range_set: 1, .. })
        ));
        assert_eq!(store.leases.len(), 2);
        assert_eq!(release(&mut store, &owner(1)).expect("release").released.len(), 2);
        assert!(store.leases.is_empty());
    }

    #[test]
    fn a_reservation_whose_hint_cannot_be_written_leaves_no_lease() {
        let config = config("");
        let mut store = MemoryStore {
            fail_last_reserved: true,
            ..MemoryStore::default()
        };
        let error = allocate(&mut store, &config, &owner(1), t0()).expect_err("the hint fails");
        assert!(error.to_string().contains("last_reserved_ip.0"), "{error}");
        assert!(store.leases.is_empty(), "lease stranded: {:?}", store.leases);

        // The same on disk: a directory where last_reserved_ip.0 goes makes its rename fail.
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut disk = DiskStore::open(&dir).expect("open");
        fs::create_dir(dir.join("last_reserved_ip.0")).expect("mkdir");
        allocate(&mut disk, &config, &owner(1), t0()).expect_err("the hint fails");
        assert!(
            disk.leases().expect("leases").is_empty(),
            "lease stranded on disk"
        );
        fs::remove_dir(dir.join("last_reserved_ip.0")).expect("rmdir");
        assert_eq!(first_ip(&mut disk, &config, &owner(1), t0()), ip("10.10.1.1"));
    }

    #[test]
    fn release_goes_on_past_a_lease_it_cannot_remove() {
        let config = config(r#",[{"subnet":"fd00::/120","rangeStart":"fd00::10","rangeEnd":"fd00::11"}]"#);
        let mut store = MemoryStore::default();
        allocate(&mut store, &config, &owner(1), t0()).expect("dual stack");
        store.fail_remove.insert(ip("10.10.1.1"));
        let released = release(&mut store, &owner(1)).expect("release");
        assert_eq!(released.released, [(ip("fd00::10"), owner(1))]);
        assert_eq!(released.failed.len(), 1);
        assert_eq!(released.failed[0].0, ip("10.10.1.1"));
        assert_eq!(
            store.leases.keys().copied().collect::<Vec<_>>(),
            [ip("10.10.1.1")]
        );
    }

    #[test]
    fn gc_releases_the_unused_and_goes_on_past_failures() {
        let config = config("");
        let mut store = MemoryStore::default();
        for n in 1..=3 {
            allocate(&mut store, &config, &owner(n), t0()).expect("allocate");
        }
        let marked = ip("10.10.1.4");
        mark_conflict(&mut store, marked, [2, 0, 0, 0, 0, 9], t0()).expect("mark");
        store.fail_remove.insert(ip("10.10.1.2"));
        let keep = owner(1);
        let gc = release_unused(&mut store, |holder| holder.matches(&keep), t0()).expect("gc");
        // .2 could not be removed; .3 was still released after it. The live marker stays.
        assert_eq!(gc.released, [(ip("10.10.1.3"), owner(3))]);
        assert_eq!(
            gc.failed.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            [ip("10.10.1.2")]
        );
        assert_eq!(
            store.leases.keys().copied().collect::<Vec<_>>(),
            [ip("10.10.1.1"), ip("10.10.1.2"), marked]
        );
        // Once expired, the marker goes too.
        store.fail_remove.clear();
        let gc =
            release_unused(&mut store, |holder| holder.matches(&keep), t0() + CONFLICT_RETRY).expect("gc");
        assert_eq!(
            gc.released.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            [ip("10.10.1.2"), marked]
        );
        assert!(gc.failed.is_empty());
    }

    #[test]
    fn a_conflicting_address_is_skipped_until_its_marker_expires() {
        let config = config("");
        let mut store = MemoryStore::default();
        let first = first_ip(&mut store, &config, &owner(1), t0());
        mark_conflict(&mut store, first, [2, 0, 0, 0, 0, 9], t0()).expect("mark");
        // The same owner asking again gets another address; nobody gets the marked one.
        let again = first_ip(&mut store, &config, &owner(1), t0());
        assert_ne!(again, first);
        assert!(store.leases[&first].conflicting_mac().is_some());
        release(&mut store, &owner(1)).expect("release");
        assert!(
            store.leases.contains_key(&first),
            "releasing the owner freed the conflict marker"
        );
        for n in 2..=4 {
            first_ip(&mut store, &config, &owner(n), t0());
        }
        // Full but for the marked address, which stays out until the period has passed...
        let just_before = t0() + CONFLICT_RETRY - Duration::from_secs(1);
        assert!(matches!(
            allocate(&mut store, &config, &owner(5), just_before),
            Err(IpamError::Exhausted { .. })
        ));
        assert_eq!(usage(&store, &config, just_before).expect("usage")[0].leased, 4);
        // ... and is handed out (to be probed) again after it.
        let after = t0() + CONFLICT_RETRY;
        assert_eq!(usage(&store, &config, after).expect("usage")[0].leased, 3);
        assert_eq!(first_ip(&mut store, &config, &owner(5), after), first);
        assert_eq!(store.leases[&first], owner(5));
    }

    #[test]
    fn an_expired_marker_can_be_requested() {
        let mut config = config("");
        let mut store = MemoryStore::default();
        let marked = ip("10.10.1.3");
        mark_conflict(&mut store, marked, [2, 0, 0, 0, 0, 9], t0()).expect("mark");
        config.requested = vec![marked];
        assert!(matches!(
            allocate(&mut store, &config, &owner(1), t0() + minutes(9)),
            Err(IpamError::RequestedTaken { .. })
        ));
        assert_eq!(
            first_ip(&mut store, &config, &owner(1), t0() + minutes(10)),
            marked
        );
    }

    #[test]
    fn markers_expire_after_the_period_and_when_dated_far_ahead() {
        assert!(!marker_expired(t0(), t0()));
        assert!(!marker_expired(t0(), t0() + minutes(9)));
        assert!(marker_expired(t0(), t0() + minutes(10)));
        // The clock was set back a little, or by more than the period.
        assert!(!marker_expired(t0() + minutes(1), t0()));
        assert!(marker_expired(t0() + minutes(60), t0()));
    }

    #[test]
    fn conflicts_are_listed_with_their_age_and_cleared_alone() {
        let config = config("");
        let mut store = MemoryStore::default();
        first_ip(&mut store, &config, &owner(1), t0());
        mark_conflict(&mut store, ip("10.10.1.2"), [2, 0, 0, 0, 0, 0xab], t0()).expect("mark");
        mark_conflict(
            &mut store,
            ip("10.10.1.3"),
            [2, 0, 0, 0, 0, 0xcd],
            t0() + minutes(5),
        )
        .expect("mark");
        let listed = conflicts(&store, t0() + minutes(12)).expect("conflicts");
        assert_eq!(
            listed,
            [
                Conflict {
                    ip: ip("10.10.1.2"),
                    mac: "02:00:00:00:00:ab".into(),
                    written: t0(),
                    expired: true,
                },
                Conflict {
                    ip: ip("10.10.1.3"),
                    mac: "02:00:00:00:00:cd".into(),
                    written: t0() + minutes(5),
                    expired: false,
                },
            ]
        );
        // One address, then all the rest; the container's lease is never touched.
        let cleared = clear_conflicts(&mut store, Some(ip("10.10.1.3"))).expect("clear");
        assert_eq!(
            cleared.released.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            [ip("10.10.1.3")]
        );
        assert!(
            clear_conflicts(&mut store, Some(ip("10.10.1.1")))
                .expect("clear")
                .released
                .is_empty()
        );
        let cleared = clear_conflicts(&mut store, None).expect("clear");
        assert_eq!(
            cleared.released.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(),
            [ip("10.10.1.2")]
        );
        assert_eq!(
            store.leases.keys().copied().collect::<Vec<_>>(),
            [ip("10.10.1.1")]
        );
        assert!(conflicts(&store, t0()).expect("conflicts").is_empty());
    }

    #[test]
    fn conflict_markers_on_disk_keep_host_local_s_format_and_age_by_mtime() {
        let config = config("");
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut store = DiskStore::open(&dir).expect("open");
        let first = first_ip(&mut store, &config, &owner(1), t0());
        mark_conflict(&mut store, first, [2, 0, 0, 0, 0, 9], t0()).expect("mark");
        assert_eq!(
            fs::read_to_string(dir.join(first.to_string())).expect("marker"),
            "flatbridge-conflict-020000000009\r\n"
        );
        assert_eq!(
            conflicts(&store, t0() + minutes(3)).expect("conflicts")[0],
            Conflict {
                ip: first,
                mac: "02:00:00:00:00:09".into(),
                written: t0(),
                expired: false,
            }
        );
        assert_ne!(first_ip(&mut store, &config, &owner(2), t0() + minutes(3)), first);
        // A marker written by an older version carries its age in its mtime already.
        let old = dir.join("10.10.1.4");
        fs::write(&old, "flatbridge-conflict-020000000008\r\n").expect("write");
        fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|file| file.set_modified(t0() - minutes(60)))
            .expect("set mtime");
        let listed = conflicts(&store, t0() + minutes(3)).expect("conflicts");
        assert_eq!(
            listed.iter().map(|c| c.expired).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn an_empty_lease_is_skipped_released_by_nobody_but_gc() {
        let config = config("");
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        // What an older version left when killed between creating a lease and writing it.
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("10.10.1.1"), "").expect("write");
        let mut store = DiskStore::open(&dir).expect("open");
        assert_eq!(first_ip(&mut store, &config, &owner(1), t0()), ip("10.10.1.2"));
        assert_eq!(
            release(&mut store, &Owner::new("", ""))
                .expect("release")
                .released,
            []
        );
        assert!(dir.join("10.10.1.1").exists());
        let keep = owner(1);
        let gc = release_unused(&mut store, |holder| holder.matches(&keep), t0()).expect("gc");
        assert_eq!(gc.released, [(ip("10.10.1.1"), Owner::new("", ""))]);
        assert!(gc.failed.is_empty());
        assert_eq!(store.leases().expect("leases").len(), 1);
    }

    #[test]
    fn usage_counts_leases_per_set() {
        let config = config("");
        let mut store = MemoryStore::default();
        allocate(&mut store, &config, &owner(1), t0()).expect("one");
        store.leases.insert(ip("192.168.0.1"), owner(7));
        let usage = usage(&store, &config, t0()).expect("usage");
        assert_eq!((usage[0].leased, usage[0].size), (1, 4));
    }
}
