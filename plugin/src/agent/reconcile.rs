//! One reconcile pass of the agent over every flatbridge network of the node; see the
//! module above. Every step goes on past the failures of the others; each failure is
//! logged and counted, each action logged and counted.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use flatbridge_common::{NODE_ENABLED, NODE_TCP_OFFLOAD};

use super::Shared;
use crate::{
    cmd::{
        host_veth_name, sweep,
        wire::{self, Wire},
    },
    datapath::{Datapath, DatapathError, Detached},
    ipam::{DiskStore, Store},
    kernel,
    netlink::Netlink,
    report,
};

/// The pods' leases among `leases` whose host veth is not among `links`. Conflict markers,
/// empty leases and ID-only leases (no interface: no veth name) are not a pod's; IPAM and GC
/// deal with them.
pub(crate) fn leases_without_veth(
    network: &str,
    leases: std::collections::BTreeMap<IpAddr, crate::ipam::Owner>,
    links: &HashSet<String>,
) -> Vec<(IpAddr, crate::ipam::Owner)> {
    leases
        .into_iter()
        .filter(|(_, owner)| {
            owner.conflicting_mac().is_none() && !owner.is_nobody() && !owner.ifname.is_empty()
        })
        .filter(|(_, owner)| !links.contains(&host_veth_name(network, &owner.container_id, &owner.ifname)))
        .collect()
}

/// A lease seen without its host veth: since when, continuously.
type Missing = HashMap<(String, IpAddr, crate::ipam::Owner), Instant>;

/// A pod's address claimed on the wire by another MAC: network, address, claimer.
type WireConflict = (String, IpAddr, [u8; 6]);

/// RFC 5227's DEFEND_INTERVAL: a pod's address is defended at most once per 10 s.
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);
/// How many times a pod's address is defended against one claimer: one that keeps
/// claiming it (another defender: a host with the address configured, a node with an
/// overlapping range) would otherwise flip its neighbours' caches every DEFEND_INTERVAL
/// for ever. After that, the conflict is only reported.
pub const DEFENCES: u32 = 2;

/// The defences of one pod address: the last one (CLOCK_MONOTONIC ns), against whom, and
/// how many against that claimer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defence {
    pub at_ns: u64,
    pub claimer: [u8; 6],
    pub count: u32,
}

/// What to do about a claim of a pod's address by `claimer` at `claimed_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defend {
    /// Announce the pod's MAC now.
    Now,
    /// Nothing yet: the claim predates the last defence, or DEFEND_INTERVAL has not passed.
    NotYet,
    /// This claimer was answered [`DEFENCES`] times and claims still: report only.
    GaveUp,
}

/// RFC 5227 section 2.4 for an address that cannot be given up: defend at most once per
/// [`DEFEND_INTERVAL`], only a claim newer than the last defence, and at most [`DEFENCES`]
/// times against the same claimer.
pub fn defend(last: Option<Defence>, claimer: [u8; 6], claimed_ns: u64, now_ns: u64) -> Defend {
    let Some(last) = last else {
        return Defend::Now;
    };
    if claimed_ns <= last.at_ns {
        return Defend::NotYet;
    }
    if last.claimer == claimer && last.count >= DEFENCES {
        return Defend::GaveUp;
    }
    if now_ns.saturating_sub(last.at_ns) < kernel::nanos(DEFEND_INTERVAL) {
        return Defend::NotYet;
    }
    Defend::Now
}

pub struct Reconciler {
    shared: Arc<Shared>,
    netlink: Option<Netlink>,
    missing: Missing,
    /// Conflicts logged already (each is logged once while it lasts).
    conflicts_logged: HashSet<WireConflict>,
    /// How each address was last defended, by network.
    defended: HashMap<(String, IpAddr), Defence>,
}

impl Reconciler {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            netlink: None,
            missing: HashMap::new(),
            conflicts_logged: HashSet::new(),
            defended: HashMap::new(),
        }
    }

    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        log::warn!("reconcile: {what}: {error}");
        self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn pass(&mut self) {
        if self.netlink.is_none() {
            match Netlink::open() {
                Ok(netlink) => self.netlink = Some(netlink),
                Err(error) => return self.failed("netlink", &error),
            }
        }
        let Some(node) = self.netlink.take() else {
            return;
        };
        self.install();
        let bpf_root = self.shared.options.bpf_root.clone();
        let mut seen = HashSet::new();
        let mut wire_seen = HashSet::new();
        for network in Datapath::networks(&bpf_root) {
            let datapath = match Datapath::open(&bpf_root, &network) {
                Ok(datapath) => datapath,
                Err(DatapathError::NotLoaded { .. }) => continue,
                Err(error) => {
                    self.failed(&format!("network {network}"), &error);
                    continue;
                }
            };
            self.take_calls(&datapath);
            self.upgrade(&bpf_root, &datapath);
            self.reattach(&datapath, &node).await;
            if let Err(error) = sweep(&datapath, &node).await {
                self.failed(&format!("sweeping network {network}"), &error);
            }
            self.follow_tcp_liberal(&datapath);
            self.watch_wire(&datapath, &mut wire_seen);
            self.free_leaked_leases(&network, &node, &mut seen).await;
        }
        // Leases of networks (or addresses) no longer seen are not missing any more.
        self.missing.retain(|key, _| seen.contains(key));
        // A conflict that went away and comes back is logged again.
        self.conflicts_logged.retain(|key| wire_seen.contains(key));
        // And is defended again: a claimer given up on that went quiet starts afresh.
        self.defended.retain(|(network, address), defence| {
            wire_seen.contains(&(network.clone(), *address, defence.claimer))
        });
        self.netlink = Some(node);
    }

    /// A network whose pins run another build (a DaemonSet update brought this one) gets
    /// this build's programs over the same maps, every attachment switched atomically:
    /// pods keep their traffic, and nothing waits for the next ADD.
    fn upgrade(&self, bpf_root: &std::path::Path, datapath: &Datapath) {
        if datapath.is_loaded() {
            return;
        }
        match Datapath::ensure_loaded(bpf_root, datapath.network()) {
            Ok((_, true)) => {
                log::info!(
                    "reconcile: network {}: loaded build {} over the pinned maps",
                    datapath.network(),
                    crate::datapath::BPF_OBJECT_HASH
                );
                self.shared.stats.count("upgrade_programs");
            }
            Ok((_, false)) => {}
            Err(error) => self.failed(&format!("upgrading network {}", datapath.network()), &error),
        }
    }

    /// The CNI calls the plugin recorded since the last pass, into the agent's counts.
    fn take_calls(&self, datapath: &Datapath) {
        match datapath.take_calls() {
            Ok(calls) => {
                let mut stats = self
                    .shared
                    .stats
                    .cni
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for call in &calls {
                    stats.add(datapath.network(), call);
                }
            }
            // A datapath pinned by a build without the map: nothing to take.
            Err(DatapathError::Map { .. }) => {}
            Err(error) => self.failed("reading the CNI calls", &error),
        }
    }

    /// The binary and this node's conflist, from the node map, when either changed.
    fn install(&self) {
        let Some(target) = &self.shared.options.install else {
            return;
        };
        // On a thread of its own: node setup runs its own netlink runtime, which cannot
        // start inside this one.
        let bpf_root = &self.shared.options.bpf_root;
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| crate::operator::install::install_from_node_map(target, bpf_root))
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the install thread panicked")))
        });
        let in_map = match outcome {
            Ok(Some(installed)) => {
                if installed.binary {
                    log::info!(
                        "reconcile: installed the binary into {}",
                        target.bin_dir.display()
                    );
                    self.shared.stats.count("install_binary");
                }
                if installed.loopback {
                    log::info!("reconcile: installed loopback into {}", target.bin_dir.display());
                    self.shared.stats.count("install_loopback");
                }
                if installed.conflist {
                    log::info!(
                        "reconcile: installed the conflist into {}",
                        target.conf_dir.display()
                    );
                    self.shared.stats.count("install_conflist");
                }
                Some(true)
            }
            Ok(None) => {
                let mut known = self
                    .shared
                    .stats
                    .in_node_map
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if *known != Some(false) {
                    log::warn!(
                        "reconcile: node {} is not in the node map {}: no network config installed",
                        target.node_name,
                        target.nodes.display()
                    );
                }
                *known = Some(false);
                return;
            }
            Err(error) => {
                self.failed("installing from the node map", &format!("{error:#}"));
                None
            }
        };
        if in_map.is_some() {
            *self
                .shared
                .stats
                .in_node_map
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = in_map;
        }
    }

    /// Programs another tool removed (`tc qdisc del dev <veth> clsact`, `tc filter del`, a
    /// detached TCX link) go back on.
    async fn reattach(&self, datapath: &Datapath, node: &Netlink) {
        let detached = match datapath.detached(node).await {
            Ok(detached) => detached,
            Err(error) => return self.failed(&format!("network {}", datapath.network()), &error),
        };
        for device in detached {
            // Under the lock ADD and DEL take for endpoints: a pod being deleted right now is
            // not given programs again half-way.
            let _lock = match datapath.lock() {
                Ok(lock) => lock,
                Err(error) => return self.failed("lock", &error),
            };
            match datapath.reattach(&device) {
                Ok(()) => {
                    log::info!(
                        "reconcile: network {}: {device}: attached again",
                        datapath.network()
                    );
                    self.shared.stats.count(match device {
                        Detached::Pod { .. } => "reattach_pod",
                        Detached::Uplink { .. } => "reattach_uplink",
                    });
                }
                Err(error) => self.failed(&format!("re-attaching ({device})"), &error),
            }
        }
    }

    /// The wire, for the pods' addresses (RFC 5227 section 2.4): a claim of a pod's
    /// address by another MAC is logged once and answered with an announcement of the
    /// pod's MAC, at most once per [`DEFEND_INTERVAL`] and only for a claim newer than the
    /// last defence. And the next addresses the latest ADD named are probed again once
    /// their probe is [`wire::REPROBE_AFTER`] old, so that the next ADD finds them fresh.
    fn watch_wire(&mut self, datapath: &Datapath, seen: &mut HashSet<WireConflict>) {
        let network = datapath.network().to_owned();
        let Ok(settings) = datapath.node_config() else {
            return;
        };
        if settings.flags & NODE_ENABLED == 0 || settings.uplink_ifindex == 0 {
            return;
        }
        let endpoints = match datapath.endpoints() {
            Ok(endpoints) => endpoints,
            Err(error) => return self.failed(&format!("network {network}: endpoints"), &error),
        };
        // Frames go out through the datapath (a packet socket only where it cannot send).
        let wire = Wire::new(settings.bridge_ifindex, settings.bridge_mac, Some(datapath));
        let now = kernel::monotonic_ns();
        // Pins older than the IPv6 map: IPv4 only.
        let ipv6_by_port = datapath.ipv6_addresses_by_port().unwrap_or_default();
        let addresses = report::pod_addresses(&endpoints, &ipv6_by_port);
        for conflict in report::wire_conflicts(datapath, &addresses) {
            let key = (network.clone(), conflict.address, conflict.claimed_by.0);
            seen.insert(key.clone());
            if self.conflicts_logged.insert(key) {
                log::warn!(
                    "reconcile: network {network}: address {} of the pod on {} ({}) is claimed on the wire by {}",
                    conflict.address,
                    conflict.host_veth,
                    conflict.pod_mac,
                    conflict.claimed_by
                );
                self.shared.stats.count("wire_conflict");
            }
            let claimed_ns = now.saturating_sub(conflict.seen_ms_ago * 1_000_000);
            let address = (network.clone(), conflict.address);
            let last = self.defended.get(&address).copied();
            match defend(last, conflict.claimed_by.0, claimed_ns, now) {
                Defend::NotYet => continue,
                Defend::GaveUp => {
                    if let Some(last) = self.defended.get_mut(&address)
                        && last.count == DEFENCES
                    {
                        // Once: the count goes past DEFENCES.
                        last.count += 1;
                        log::warn!(
                            "reconcile: network {network}: {} keeps claiming {} after {DEFENCES} defences: no longer defended, only reported",
                            conflict.claimed_by,
                            conflict.address
                        );
                        self.shared.stats.count("defence_given_up");
                    }
                    continue;
                }
                Defend::Now => {}
            }
            match wire.announce_any(conflict.pod_mac.0, conflict.address) {
                Ok(()) => {
                    log::info!(
                        "reconcile: network {network}: defended {} ({}) against {}",
                        conflict.address,
                        conflict.pod_mac,
                        conflict.claimed_by
                    );
                    let count = match last {
                        Some(last) if last.claimer == conflict.claimed_by.0 => last.count + 1,
                        _ => 1,
                    };
                    self.defended.insert(
                        address,
                        Defence {
                            at_ns: now,
                            claimer: conflict.claimed_by.0,
                            count,
                        },
                    );
                    self.shared.stats.count("defend_address");
                }
                Err(error) => self.failed(&format!("defending {}", conflict.address), &error),
            }
        }
        let pods: HashSet<IpAddr> = addresses.iter().map(|&(address, _)| address).collect();
        self.defended
            .retain(|(owner, address), _| *owner != network || pods.contains(address));
        let probes = match datapath.wire_probes() {
            Ok(probes) => probes,
            // Pins older than the probe map: ADD probes and waits.
            Err(_) => return,
        };
        let (forget, reprobe) = wire::upkeep(&probes, &pods, now);
        for ip in forget {
            // Only as it was listed: an ADD that probed or stamped it since needs it (the
            // uplink program remembers IPv6 answers only for the entries there).
            let listed = probes
                .iter()
                .find(|(probed, _)| *probed == ip)
                .map(|(_, probe)| *probe);
            if datapath.wire_probe(ip).ok().flatten() == listed {
                let _ = datapath.forget_wire_probe(ip);
            }
        }
        let mut probed = 0;
        for ip in reprobe {
            match wire.probe(ip) {
                Ok(_) => probed += 1,
                Err(error) => return self.failed(&format!("probing {ip}"), &error),
            }
        }
        if probed > 0 {
            log::debug!("reconcile: network {network}: probed {probed} addresses ahead again");
            self.shared.stats.count_n("reprobe_address", probed);
        }
    }

    /// TCP is offloaded only while conntrack is liberal about windows; ADD reads the sysctl
    /// when it writes the settings, this follows it between ADDs.
    fn follow_tcp_liberal(&self, datapath: &Datapath) {
        let allowed = kernel::tcp_offload_allowed();
        let changed = (|| {
            let _lock = datapath.lock()?;
            let mut settings = datapath.node_config()?;
            let offloading = settings.flags & NODE_TCP_OFFLOAD != 0;
            if settings.flags & NODE_ENABLED == 0 || offloading == allowed {
                return Ok::<bool, DatapathError>(false);
            }
            settings.flags ^= NODE_TCP_OFFLOAD;
            datapath.set_node_config(&settings)?;
            Ok(true)
        })();
        match changed {
            Ok(true) => {
                log::info!(
                    "reconcile: network {}: nf_conntrack_tcp_be_liberal is {}: TCP {} offloaded",
                    datapath.network(),
                    u8::from(allowed),
                    if allowed { "is" } else { "is no longer" }
                );
                self.shared.stats.count(if allowed {
                    "tcp_offload_on"
                } else {
                    "tcp_offload_off"
                });
            }
            Ok(false) => {}
            Err(error) => self.failed("following nf_conntrack_tcp_be_liberal", &error),
        }
    }

    /// A lease whose pod's host veth has been gone for the grace period belongs to a pod that
    /// is gone (or to an ADD that was killed after leasing): freed under the IPAM lock, after
    /// checking once more that the lease and the absence are still what they were.
    async fn free_leaked_leases(
        &mut self,
        network: &str,
        node: &Netlink,
        seen: &mut HashSet<(String, IpAddr, crate::ipam::Owner)>,
    ) {
        let dir = self.shared.options.ipam_data_dir.join(network);
        let Ok(Some(peek)) = DiskStore::peek(&dir) else {
            return;
        };
        let leases = match peek.leases() {
            Ok(leases) => leases,
            Err(error) => return self.failed(&format!("reading the leases of {network}"), &error),
        };
        let links: HashSet<String> = match node.links().await {
            Ok(links) => links.into_iter().map(|link| link.name).collect(),
            // Without the links nothing can be said to be gone.
            Err(error) => return self.failed("listing links", &error),
        };
        let now = Instant::now();
        let grace = self.shared.options.lease_grace;
        let mut expired = Vec::new();
        // Keys not seen missing in this pass are dropped from `missing` by the caller.
        for (ip, owner) in leases_without_veth(network, leases, &links) {
            // By owner too: a recycled address leased to a new pod starts its own clock.
            let key = (network.to_owned(), ip, owner.clone());
            seen.insert(key.clone());
            let since = *self.missing.entry(key).or_insert(now);
            if now.duration_since(since) >= grace {
                expired.push((ip, owner));
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut store = match DiskStore::open(&dir) {
            Ok(store) => store,
            Err(error) => return self.failed(&format!("opening the leases of {network}"), &error),
        };
        // Under the lock: the lease must still be that owner's, and its veth still absent.
        let links: HashSet<String> = match node.links().await {
            Ok(links) => links.into_iter().map(|link| link.name).collect(),
            Err(error) => return self.failed("listing links", &error),
        };
        let current = match store.leases() {
            Ok(current) => current,
            Err(error) => return self.failed(&format!("reading the leases of {network}"), &error),
        };
        let still = leases_without_veth(network, current, &links);
        for (ip, owner) in expired {
            if !still.contains(&(ip, owner.clone())) {
                continue;
            }
            match store.remove(ip) {
                Ok(()) => {
                    log::info!(
                        "reconcile: network {network}: freed {ip} of {owner}: its host veth has been gone for {} s",
                        grace.as_secs()
                    );
                    self.shared.stats.count("free_lease");
                    self.missing.remove(&(network.to_owned(), ip, owner.clone()));
                }
                Err(error) => self.failed(&format!("freeing {ip} of {network}"), &error),
            }
        }
    }
}

#[cfg(test)]
mod defence_tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const HOST: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 8];

    fn after(at_s: u64, claimer: [u8; 6], count: u32) -> Option<Defence> {
        Some(Defence {
            at_ns: at_s * S,
            claimer,
            count,
        })
    }

    #[test]
    fn a_claim_is_defended_once_per_interval_and_only_when_newer_than_the_defence() {
        assert_eq!(defend(None, HOST, 100 * S, 100 * S), Defend::Now);
        // The claim we answered, seen again.
        assert_eq!(defend(after(100, HOST, 1), HOST, 99 * S, 200 * S), Defend::NotYet);
        // A new claim within DEFEND_INTERVAL.
        assert_eq!(
            defend(after(100, HOST, 1), HOST, 105 * S, 105 * S),
            Defend::NotYet
        );
        // After it.
        assert_eq!(defend(after(100, HOST, 1), HOST, 111 * S, 111 * S), Defend::Now);
    }

    #[test]
    fn a_claimer_that_keeps_claiming_is_only_reported_after_the_last_defence() {
        assert_eq!(
            defend(after(100, HOST, DEFENCES), HOST, 200 * S, 200 * S),
            Defend::GaveUp
        );
        // Another claimer is defended against.
        assert_eq!(
            defend(after(100, HOST, DEFENCES), OTHER, 200 * S, 200 * S),
            Defend::Now
        );
    }
}
