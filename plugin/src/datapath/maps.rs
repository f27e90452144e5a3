//! Typed access to the pinned maps: what the plugin writes on ADD and removes on DEL, and
//! what `flatbridge status` reads. Every entry is written whole, so a program never sees a
//! half-updated endpoint.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use flatbridge_common::{
    ArpClaim, ArpProbe, CniCall, CniCallKey, Counter, Endpoint, FlowConfirmed, FlowKey, FlowKey6, FlowSeen,
    Gateway, Ipv4, Ipv6, Mac, NodeConfig, Verdict, map_name,
};
use ipnetwork::IpNetwork;

use super::{Datapath, DatapathError};
use crate::netlink::Netlink;

/// A flow direction of the flow maps: its key, what ingress saw and, when confirmed, what
/// egress did.
pub type Tracked<K> = (K, FlowSeen, Option<FlowConfirmed>);

/// A verdict and its packets and bytes summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictCount {
    pub verdict: Verdict,
    pub total: Counter,
}

fn ipv4_key(ip: Ipv4Addr) -> Ipv4 {
    Ipv4 { addr: ip.octets() }
}

fn ipv6_key(ip: Ipv6Addr) -> Ipv6 {
    Ipv6 { addr: ip.octets() }
}

/// True when `pod` is behind `gateway` (the gateway's address with the prefix of the pods'
/// subnet): in its subnet, or of its family when the gateway is an IPv6 link-local address
/// (`fe80::1`, the usual IPv6 gateway, reaches every IPv6 pod on the link).
fn is_behind(gateway: &IpNetwork, pod: IpAddr) -> bool {
    gateway.contains(pod)
        || matches!((gateway.ip(), pod), (IpAddr::V6(gateway), IpAddr::V6(_)) if gateway.is_unicast_link_local())
}

/// BPF_NOEXIST: insert only when the key is not there yet.
const NO_EXIST: u64 = 1;

/// True when a BPF_NOEXIST insert failed because the key is there already.
fn already_there(error: &MapError) -> bool {
    matches!(error, MapError::SyscallError(error) if error.io_error.raw_os_error() == Some(libc::EEXIST))
}

/// True when the host veth `ifindex` still exists in the calling thread's namespace.
fn port_exists(ifindex: u32) -> bool {
    nix::net::if_::if_indextoname(ifindex).is_ok()
}

/// Inserts `endpoint` under `key` unless another live port holds the key already: then
/// returns that port. An entry of this very port (a retried ADD) or of a port that is gone
/// (left by a crash) is replaced. BPF_NOEXIST makes two concurrent ADDs of the same key
/// find each other.
fn claim<K: aya::Pod>(
    map: &mut HashMap<MapData, K, Endpoint>,
    key: K,
    endpoint: Endpoint,
) -> Result<Result<(), u32>, MapError> {
    match map.insert(key, endpoint, NO_EXIST) {
        Ok(()) => Ok(Ok(())),
        Err(error) if already_there(&error) => match map.get(&key, 0) {
            Ok(holder) if holder.ifindex != endpoint.ifindex && port_exists(holder.ifindex) => {
                Ok(Err(holder.ifindex))
            }
            _ => map.insert(key, endpoint, 0).map(Ok),
        },
        Err(error) => Err(error),
    }
}

impl Datapath {
    fn open_map(&self, name: &str) -> Result<MapData, DatapathError> {
        let path = self.layout().map(name);
        MapData::from_pin(&path).map_err(|error| self.map_error(name, error))
    }

    fn map_error(&self, name: &str, error: MapError) -> DatapathError {
        DatapathError::Map {
            path: self.layout().map(name),
            source: Box::new(error),
        }
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &str,
    ) -> Result<HashMap<MapData, K, V>, DatapathError> {
        HashMap::try_from(Map::HashMap(self.open_map(name)?)).map_err(|error| self.map_error(name, error))
    }

    fn lru_map<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> Result<HashMap<MapData, K, V>, DatapathError> {
        HashMap::try_from(Map::LruHashMap(self.open_map(name)?)).map_err(|error| self.map_error(name, error))
    }

    /// Every tracked IPv4 flow direction: what ingress saw and, when confirmed, what egress
    /// did.
    pub fn flows(&self) -> Result<Vec<Tracked<FlowKey>>, DatapathError> {
        self.tracked(map_name::FLOWS, map_name::CONFIRMED)
    }

    /// Every tracked IPv6 flow direction. Pins older than the IPv6 flow maps have none.
    pub fn flows6(&self) -> Result<Vec<Tracked<FlowKey6>>, DatapathError> {
        if !self.layout().map(map_name::FLOWS6).exists() {
            return Ok(Vec::new());
        }
        self.tracked(map_name::FLOWS6, map_name::CONFIRMED6)
    }

    fn tracked<K: aya::Pod>(
        &self,
        flows: &str,
        confirmations: &str,
    ) -> Result<Vec<Tracked<K>>, DatapathError> {
        let seen = self.lru_map::<K, FlowSeen>(flows)?;
        let confirmed = self.lru_map::<K, FlowConfirmed>(confirmations)?;
        Ok(seen
            .iter()
            .filter_map(Result::ok)
            .map(|(key, seen)| (key, seen, confirmed.get(&key, 0).ok()))
            .collect())
    }

    /// Records a finished CNI call for the agent's metrics.
    pub fn record_call(&self, key: CniCallKey, call: CniCall) -> Result<(), DatapathError> {
        let name = map_name::CNI_CALLS;
        let mut calls = self.lru_map::<CniCallKey, CniCall>(name)?;
        calls
            .insert(key, call, 0)
            .map_err(|error| self.map_error(name, error))
    }

    /// Takes every recorded CNI call out of the map: each is returned once, to whoever
    /// removed it.
    pub fn take_calls(&self) -> Result<Vec<CniCall>, DatapathError> {
        let mut calls = self.lru_map::<CniCallKey, CniCall>(map_name::CNI_CALLS)?;
        let keys: Vec<CniCallKey> = calls.keys().filter_map(Result::ok).collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(call) = calls.get(&key, 0)
                && calls.remove(&key).is_ok()
            {
                taken.push(call);
            }
        }
        Ok(taken)
    }

    /// Forgets every flow: each goes through the bridge (and netfilter) again and must be
    /// confirmed anew. Returns how many directions were forgotten.
    pub fn flush_flows(&self) -> Result<usize, DatapathError> {
        let mut forgotten = self.flush::<FlowKey>(map_name::FLOWS, map_name::CONFIRMED)?;
        if self.layout().map(map_name::FLOWS6).exists() {
            forgotten += self.flush::<FlowKey6>(map_name::FLOWS6, map_name::CONFIRMED6)?;
        }
        Ok(forgotten)
    }

    fn flush<K: aya::Pod>(&self, flows: &str, confirmations: &str) -> Result<usize, DatapathError> {
        let mut seen = self.lru_map::<K, FlowSeen>(flows)?;
        let mut confirmed = self.lru_map::<K, FlowConfirmed>(confirmations)?;
        // Confirmations first: without them nothing is redirected.
        let confirmations: Vec<K> = confirmed.keys().filter_map(Result::ok).collect();
        for key in &confirmations {
            let _ = confirmed.remove(key);
        }
        let sightings: Vec<K> = seen.keys().filter_map(Result::ok).collect();
        for key in &sightings {
            let _ = seen.remove(key);
        }
        Ok(sightings.len().max(confirmations.len()))
    }

    /// The datapath's counters, one line per verdict, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<VerdictCount>, DatapathError> {
        let name = map_name::COUNTERS;
        let counters: PerCpuArray<MapData, Counter> =
            PerCpuArray::try_from(Map::PerCpuArray(self.open_map(name)?))
                .map_err(|error| self.map_error(name, error))?;
        Verdict::ALL
            .iter()
            .map(|&verdict| {
                let per_cpu = counters
                    .get(&(verdict as u32), 0)
                    .map_err(|error| self.map_error(name, error))?;
                let total = per_cpu.iter().fold(Counter::default(), |sum, cpu| Counter {
                    packets: sum.packets + cpu.packets,
                    bytes: sum.bytes + cpu.bytes,
                });
                Ok(VerdictCount { verdict, total })
            })
            .collect()
    }

    pub fn node_config(&self) -> Result<NodeConfig, DatapathError> {
        let name = map_name::NODE;
        let node: Array<MapData, NodeConfig> =
            Array::try_from(Map::Array(self.open_map(name)?)).map_err(|error| self.map_error(name, error))?;
        node.get(&0, 0).map_err(|error| self.map_error(name, error))
    }

    pub fn set_node_config(&self, config: &NodeConfig) -> Result<(), DatapathError> {
        let name = map_name::NODE;
        let mut node: Array<MapData, NodeConfig> =
            Array::try_from(Map::Array(self.open_map(name)?)).map_err(|error| self.map_error(name, error))?;
        node.set(0, config, 0)
            .map_err(|error| self.map_error(name, error))
    }

    /// Makes a pod known to the programs: by MAC, by each of its addresses, by port. A MAC
    /// or address another live pod holds is refused (nothing of this pod is left in the
    /// maps then): a pod must never take over another's entries.
    pub fn add_endpoint(
        &self,
        endpoint: Endpoint,
        ipv4s: &[Ipv4Addr],
        ipv6s: &[Ipv6Addr],
    ) -> Result<(), DatapathError> {
        // An endpoint already at the port goes first (see `forget_reused_port`), so that a
        // failed claim below rolls back only what this call wrote.
        self.forget_reused_port(endpoint.ifindex)?;
        let claimed = self.claim_all(endpoint, ipv4s, ipv6s);
        if !matches!(claimed, Ok(())) {
            let _ = self.remove_endpoint(endpoint.ifindex);
            return claimed;
        }
        let mut ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        // The port last: from then on the pod's frames pass its checks (before, they are
        // dropped as from an unknown port).
        ports
            .insert(endpoint.ifindex, endpoint, 0)
            .map_err(|error| self.map_error(map_name::PORTS, error))
    }

    fn claim_all(
        &self,
        endpoint: Endpoint,
        ipv4s: &[Ipv4Addr],
        ipv6s: &[Ipv6Addr],
    ) -> Result<(), DatapathError> {
        let taken = |what: String, holder: u32| DatapathError::Taken {
            network: self.network().to_owned(),
            what,
            holder: nix::net::if_::if_indextoname(holder).map_or_else(
                |_| format!("#{holder}"),
                |name| name.to_string_lossy().into_owned(),
            ),
        };
        let mut by_mac = self.hash_map::<Mac, Endpoint>(map_name::PODS_BY_MAC)?;
        claim(&mut by_mac, Mac::new(endpoint.mac), endpoint)
            .map_err(|error| self.map_error(map_name::PODS_BY_MAC, error))?
            .map_err(|holder| taken(format!("MAC {}", crate::mac::Mac(endpoint.mac)), holder))?;
        let mut by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        for &ip in ipv4s {
            claim(&mut by_ip, ipv4_key(ip), endpoint)
                .map_err(|error| self.map_error(map_name::PODS_BY_IP, error))?
                .map_err(|holder| taken(format!("address {ip}"), holder))?;
        }
        let mut by_ipv6 = self.hash_map::<Ipv6, Endpoint>(map_name::PODS_BY_IPV6)?;
        for &ip in ipv6s {
            claim(&mut by_ipv6, ipv6_key(ip), endpoint)
                .map_err(|error| self.map_error(map_name::PODS_BY_IPV6, error))?
                .map_err(|holder| taken(format!("address {ip}"), holder))?;
        }
        Ok(())
    }

    /// A new pod's port is its own new veth: an endpoint this network still has there is a
    /// dead pod's whose ifindex the kernel gave out again, and is forgotten. Returns
    /// whether there was one.
    pub fn forget_reused_port(&self, ifindex: u32) -> Result<bool, DatapathError> {
        let known = self
            .hash_map::<u32, Endpoint>(map_name::PORTS)?
            .get(&ifindex, 0)
            .is_ok();
        if known {
            self.remove_endpoint(ifindex)?;
        }
        Ok(known)
    }

    /// Forgets the pod behind host veth `ifindex`: every entry that points at that port,
    /// and only those (an address already reused by another pod stays). With the port's
    /// entry at hand that is a few direct removals; without it, a scan of the pod maps.
    pub fn remove_endpoint(&self, ifindex: u32) -> Result<bool, DatapathError> {
        let mut by_mac = self.hash_map::<Mac, Endpoint>(map_name::PODS_BY_MAC)?;
        let mut by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        let mut by_ipv6 = self.hash_map::<Ipv6, Endpoint>(map_name::PODS_BY_IPV6)?;
        let mut ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        let entry = ports.get(&ifindex, 0).ok();
        // The port first: from then on its frames are dropped as from an unknown port.
        let _ = ports.remove(&ifindex);
        let points_here =
            |endpoint: Result<Endpoint, MapError>| endpoint.is_ok_and(|found| found.ifindex == ifindex);
        if let Some(endpoint) = entry {
            let mac = Mac::new(endpoint.mac);
            if points_here(by_mac.get(&mac, 0)) {
                let _ = by_mac.remove(&mac);
            }
            let ip = Ipv4 { addr: endpoint.ipv4 };
            if points_here(by_ip.get(&ip, 0)) {
                let _ = by_ip.remove(&ip);
            }
        }
        let all = entry.is_none();
        if all || entry.is_some_and(|endpoint| endpoint.extra_ipv4s != 0) {
            remove_pointing_at(&mut by_ip, ifindex);
        }
        if all || entry.is_some_and(|endpoint| endpoint.ipv6s != 0) {
            remove_pointing_at(&mut by_ipv6, ifindex);
        }
        if all {
            remove_pointing_at(&mut by_mac, ifindex);
        }
        Ok(entry.is_some())
    }

    /// True when no pod is known (no port entry).
    pub fn has_no_endpoints(&self) -> Result<bool, DatapathError> {
        let ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        Ok(ports.keys().next().is_none())
    }

    /// Every endpoint with its addresses, ordered by port.
    pub fn endpoints(&self) -> Result<Vec<(Endpoint, Vec<Ipv4Addr>)>, DatapathError> {
        let ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        let by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        let mut endpoints: Vec<(Endpoint, Vec<Ipv4Addr>)> = ports
            .iter()
            .filter_map(Result::ok)
            .map(|(_, endpoint)| (endpoint, Vec::new()))
            .collect();
        for (ip, endpoint) in by_ip.iter().filter_map(Result::ok) {
            if let Some((_, addresses)) = endpoints
                .iter_mut()
                .find(|(known, _)| known.ifindex == endpoint.ifindex)
            {
                addresses.push(Ipv4Addr::from(ip.addr));
            }
        }
        endpoints.sort_by_key(|(endpoint, _)| endpoint.ifindex);
        Ok(endpoints)
    }

    /// The leased IPv6 addresses of each port's pod, in order.
    pub fn ipv6_addresses_by_port(
        &self,
    ) -> Result<std::collections::BTreeMap<u32, Vec<Ipv6Addr>>, DatapathError> {
        let by_ipv6 = self.hash_map::<Ipv6, Endpoint>(map_name::PODS_BY_IPV6)?;
        let mut found: std::collections::BTreeMap<u32, Vec<Ipv6Addr>> = std::collections::BTreeMap::new();
        for (ip, endpoint) in by_ipv6.iter().filter_map(Result::ok) {
            found
                .entry(endpoint.ifindex)
                .or_default()
                .push(Ipv6Addr::from(ip.addr));
        }
        for addresses in found.values_mut() {
            addresses.sort();
        }
        Ok(found)
    }

    /// The ports every entry of every pod map points at, for sweeping the ones whose veth
    /// is gone (entries by IP or MAC whose port entry is gone count too).
    pub fn endpoint_ports(&self) -> Result<BTreeSet<u32>, DatapathError> {
        let ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        let by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        let by_mac = self.hash_map::<Mac, Endpoint>(map_name::PODS_BY_MAC)?;
        let mut found: BTreeSet<u32> = ports.keys().filter_map(Result::ok).collect();
        found.extend(
            by_ip
                .iter()
                .filter_map(Result::ok)
                .map(|(_, endpoint)| endpoint.ifindex),
        );
        found.extend(
            by_mac
                .iter()
                .filter_map(Result::ok)
                .map(|(_, endpoint)| endpoint.ifindex),
        );
        let by_ipv6 = self.hash_map::<Ipv6, Endpoint>(map_name::PODS_BY_IPV6)?;
        found.extend(
            by_ipv6
                .iter()
                .filter_map(Result::ok)
                .map(|(_, endpoint)| endpoint.ifindex),
        );
        Ok(found)
    }

    /// Answers ARP (IPv4) or neighbour solicitations (IPv6) for `gateway` (an address the
    /// node owns, with the prefix of the pods' subnet behind it) with `mac`.
    pub fn set_gateway(&self, gateway: IpNetwork, mac: [u8; 6]) -> Result<(), DatapathError> {
        let value = Gateway {
            mac,
            prefix_len: gateway.prefix(),
            _pad: 0,
        };
        match gateway.ip() {
            IpAddr::V4(ip) => {
                let mut gateways = self.hash_map::<Ipv4, Gateway>(map_name::GATEWAYS)?;
                gateways
                    .insert(ipv4_key(ip), value, 0)
                    .map_err(|error| self.map_error(map_name::GATEWAYS, error))
            }
            IpAddr::V6(ip) => {
                let mut gateways = self.hash_map::<Ipv6, Gateway>(map_name::GATEWAYS_V6)?;
                gateways
                    .insert(ipv6_key(ip), value, 0)
                    .map_err(|error| self.map_error(map_name::GATEWAYS_V6, error))
            }
        }
    }

    /// The gateways answered for, IPv4 first. Pins older than the IPv6 gateways' map have
    /// none of those.
    pub fn gateways(&self) -> Result<Vec<(IpNetwork, [u8; 6])>, DatapathError> {
        let ipv4 = self.hash_map::<Ipv4, Gateway>(map_name::GATEWAYS)?;
        let mut found: Vec<(IpNetwork, [u8; 6])> = ipv4
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(ip, gateway)| {
                let network = IpNetwork::new(IpAddr::from(ip.addr), gateway.prefix_len).ok()?;
                Some((network, gateway.mac))
            })
            .collect();
        if self.layout().map(map_name::GATEWAYS_V6).exists() {
            let ipv6 = self.hash_map::<Ipv6, Gateway>(map_name::GATEWAYS_V6)?;
            found.extend(ipv6.iter().filter_map(Result::ok).filter_map(|(ip, gateway)| {
                let network = IpNetwork::new(IpAddr::from(ip.addr), gateway.prefix_len).ok()?;
                Some((network, gateway.mac))
            }));
        }
        Ok(found)
    }

    /// Stops answering for the gateways `stale` picks, and says so. Goes on past a failure
    /// and returns the first.
    pub fn forget_gateways(&self, stale: impl Fn(&IpNetwork) -> bool) -> Result<(), DatapathError> {
        let mut failed = Ok(());
        for (gateway, _) in self.gateways()? {
            if !stale(&gateway) {
                continue;
            }
            match self.remove_gateway(gateway.ip()) {
                Ok(()) => log::info!(
                    "network {}: stopped answering for gateway {}",
                    self.network(),
                    gateway.ip()
                ),
                Err(error) if failed.is_ok() => failed = Err(error),
                Err(error) => log::error!("{error}"),
            }
        }
        failed
    }

    /// Gateways no pod is behind any more, or whose address left the bridge (a teardown, a
    /// config change), are not answered for any more. The caller holds the datapath's lock.
    pub async fn forget_stale_gateways(&self, node: &Netlink) -> Result<(), DatapathError> {
        let bridge = self.node_config()?.bridge_ifindex;
        let on_bridge: Vec<IpAddr> = match node.link_by_index(bridge).await? {
            Some(link) => node.addrs(link.index).await?.iter().map(IpNetwork::ip).collect(),
            None => Vec::new(),
        };
        let pods: Vec<IpAddr> = self
            .pod_ipv4s()?
            .into_iter()
            .map(IpAddr::V4)
            .chain(self.pod_ipv6s()?.into_iter().map(IpAddr::V6))
            .collect();
        self.forget_gateways(|gateway| {
            !on_bridge.contains(&gateway.ip()) || !pods.iter().any(|&pod| is_behind(gateway, pod))
        })
    }

    /// Stops answering for `gateway`.
    pub fn remove_gateway(&self, gateway: IpAddr) -> Result<(), DatapathError> {
        let removed = match gateway {
            IpAddr::V4(ip) => self
                .hash_map::<Ipv4, Gateway>(map_name::GATEWAYS)?
                .remove(&ipv4_key(ip))
                .map_err(|error| (map_name::GATEWAYS, error)),
            IpAddr::V6(ip) => self
                .hash_map::<Ipv6, Gateway>(map_name::GATEWAYS_V6)?
                .remove(&ipv6_key(ip))
                .map_err(|error| (map_name::GATEWAYS_V6, error)),
        };
        match removed {
            Err((_, MapError::KeyNotFound)) | Ok(()) => Ok(()),
            Err((name, error)) => Err(self.map_error(name, error)),
        }
    }

    /// Every IPv6 address IPAM leased to a pod.
    pub fn pod_ipv6s(&self) -> Result<Vec<Ipv6Addr>, DatapathError> {
        let by_ipv6 = self.hash_map::<Ipv6, Endpoint>(map_name::PODS_BY_IPV6)?;
        Ok(by_ipv6
            .keys()
            .filter_map(Result::ok)
            .map(|ip| Ipv6Addr::from(ip.addr))
            .collect())
    }

    /// Every IPv4 address of every pod.
    pub fn pod_ipv4s(&self) -> Result<Vec<Ipv4Addr>, DatapathError> {
        let by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        Ok(by_ip
            .keys()
            .filter_map(Result::ok)
            .map(|ip| Ipv4Addr::from(ip.addr))
            .collect())
    }
}

/// What the wire said of addresses: who claimed them (`arp_claims` and `nd_claims`,
/// written by the uplink program) and when they were probed (`arp_probes` and
/// `nd_probes`, written here), each family in its own maps. A node whose pins predate
/// these maps has neither: reads find nothing and writes fail, so callers probe and wait as
/// without a datapath.
impl Datapath {
    /// The last claim of `ip` seen on the wire.
    pub fn wire_claim(&self, ip: IpAddr) -> Result<Option<ArpClaim>, DatapathError> {
        match ip {
            IpAddr::V4(ip) => self.entry(map_name::ARP_CLAIMS, ipv4_key(ip)),
            IpAddr::V6(ip) => self.entry(map_name::ND_CLAIMS, ipv6_key(ip)),
        }
    }

    /// Forgets the claims of `ip` (a pod took it: only later claims are conflicts).
    pub fn forget_wire_claim(&self, ip: IpAddr) -> Result<(), DatapathError> {
        match ip {
            IpAddr::V4(ip) => self.forget_entry::<_, ArpClaim>(map_name::ARP_CLAIMS, ipv4_key(ip)),
            IpAddr::V6(ip) => self.forget_entry::<_, ArpClaim>(map_name::ND_CLAIMS, ipv6_key(ip)),
        }
    }

    /// When `ip` was probed, if it was.
    pub fn wire_probe(&self, ip: IpAddr) -> Result<Option<ArpProbe>, DatapathError> {
        match ip {
            IpAddr::V4(ip) => self.entry(map_name::ARP_PROBES, ipv4_key(ip)),
            IpAddr::V6(ip) => self.entry(map_name::ND_PROBES, ipv6_key(ip)),
        }
    }

    /// Every probed address, IPv4 first. Fails only when the IPv4 map cannot be read (pins
    /// that predate the IPv6 one have only IPv4 probes).
    pub fn wire_probes(&self) -> Result<Vec<(IpAddr, ArpProbe)>, DatapathError> {
        let mut probes = self.entries(map_name::ARP_PROBES, |ip: Ipv4| IpAddr::from(ip.addr))?;
        probes.extend(
            self.entries(map_name::ND_PROBES, |ip: Ipv6| IpAddr::from(ip.addr))
                .unwrap_or_default(),
        );
        Ok(probes)
    }

    /// Records that `ip` was probed at `now_ns`; the probe before stays as the previous one.
    /// Concurrent writers may lose one's record: it then looks probed less, never more.
    pub fn record_wire_probe(&self, ip: IpAddr, now_ns: u64) -> Result<ArpProbe, DatapathError> {
        let record = |probe: &mut ArpProbe| {
            probe.previous_ns = probe.last_ns;
            probe.last_ns = now_ns;
        };
        match ip {
            IpAddr::V4(ip) => self.change_probes(map_name::ARP_PROBES, &[ipv4_key(ip)], record),
            IpAddr::V6(ip) => self.change_probes(map_name::ND_PROBES, &[ipv6_key(ip)], record),
        }
        .map(|probes| probes[0])
    }

    /// Records that an ADD at `stamp_ns` named each of `ips` among the next addresses to
    /// hand out (a later stamp of a concurrent ADD stays); returns what is known of their
    /// probes, one result per family that `ips` has (IPv4 first: a family whose map fails
    /// leaves the other's). One open of each family's map for all of them.
    pub fn want_wire_probes(
        &self,
        ips: &[IpAddr],
        stamp_ns: u64,
    ) -> Vec<Result<Vec<(IpAddr, ArpProbe)>, DatapathError>> {
        let want = |probe: &mut ArpProbe| probe.wanted_ns = probe.wanted_ns.max(stamp_ns);
        let (mut v4, mut v6) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for &ip in ips {
            match ip {
                IpAddr::V4(v4_ip) => (v4.0.push(ip), v4.1.push(ipv4_key(v4_ip))),
                IpAddr::V6(v6_ip) => (v6.0.push(ip), v6.1.push(ipv6_key(v6_ip))),
            };
        }
        let mut wanted = Vec::with_capacity(2);
        if !v4.1.is_empty() {
            let probes = self.change_probes(map_name::ARP_PROBES, &v4.1, want);
            wanted.push(probes.map(|probes| v4.0.into_iter().zip(probes).collect()));
        }
        if !v6.1.is_empty() {
            let probes = self.change_probes(map_name::ND_PROBES, &v6.1, want);
            wanted.push(probes.map(|probes| v6.0.into_iter().zip(probes).collect()));
        }
        wanted
    }

    /// Makes sure `ip` has an entry in its family's probe map (all zero when new: never
    /// probed), before a probe goes out: the uplink program remembers the answers for the
    /// IPv6 addresses in `nd_probes` only.
    /// (IPv4: nothing to do, every ARP sender is remembered.) Never overwrites an entry: a
    /// concurrent record or stamp stays.
    pub fn expect_wire_answers(&self, ip: IpAddr) -> Result<(), DatapathError> {
        let IpAddr::V6(ip) = ip else {
            return Ok(());
        };
        let name = map_name::ND_PROBES;
        let mut probes = self.lru_map::<Ipv6, ArpProbe>(name)?;
        match probes.insert(ipv6_key(ip), ArpProbe::default(), NO_EXIST) {
            Ok(()) => Ok(()),
            Err(error) if already_there(&error) => Ok(()),
            Err(error) => Err(self.map_error(name, error)),
        }
    }

    /// Forgets the probes of `ip` (handed out, or found in use).
    pub fn forget_wire_probe(&self, ip: IpAddr) -> Result<(), DatapathError> {
        match ip {
            IpAddr::V4(ip) => self.forget_entry::<_, ArpProbe>(map_name::ARP_PROBES, ipv4_key(ip)),
            IpAddr::V6(ip) => self.forget_entry::<_, ArpProbe>(map_name::ND_PROBES, ipv6_key(ip)),
        }
    }

    /// Reads the probes of each of `keys` in the probe map `name` (none yet: all zero),
    /// changes them and writes them back; one open of the map.
    fn change_probes<K: aya::Pod>(
        &self,
        name: &str,
        keys: &[K],
        change: impl Fn(&mut ArpProbe),
    ) -> Result<Vec<ArpProbe>, DatapathError> {
        let mut probes = self.lru_map::<K, ArpProbe>(name)?;
        keys.iter()
            .map(|key| {
                let mut probe = match probes.get(key, 0) {
                    Ok(probe) => probe,
                    Err(MapError::KeyNotFound) => ArpProbe::default(),
                    Err(error) => return Err(self.map_error(name, error)),
                };
                change(&mut probe);
                probes
                    .insert(key, probe, 0)
                    .map_err(|error| self.map_error(name, error))?;
                Ok(probe)
            })
            .collect()
    }

    /// The entry of `key` in the LRU map `name`, if there is one.
    fn entry<K: aya::Pod, V: aya::Pod>(&self, name: &str, key: K) -> Result<Option<V>, DatapathError> {
        let map = self.lru_map::<K, V>(name)?;
        match map.get(&key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(self.map_error(name, error)),
        }
    }

    /// Every entry of the LRU map `name`, its key turned into an address by `address`.
    fn entries<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &str,
        address: impl Fn(K) -> IpAddr,
    ) -> Result<Vec<(IpAddr, V)>, DatapathError> {
        let map = self.lru_map::<K, V>(name)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| (address(key), value))
            .collect())
    }

    /// Removes the entry of `key` from the LRU map `name`; none is success.
    fn forget_entry<K: aya::Pod, V: aya::Pod>(&self, name: &str, key: K) -> Result<(), DatapathError> {
        let mut map = self.lru_map::<K, V>(name)?;
        match map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(error) => Err(self.map_error(name, error)),
        }
    }
}

/// Removes every entry of `map` that points at port `ifindex`.
fn remove_pointing_at<K: aya::Pod>(map: &mut HashMap<MapData, K, Endpoint>, ifindex: u32) {
    let stale: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, endpoint)| endpoint.ifindex == ifindex)
        .map(|(key, _)| key)
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_serves_its_subnet_and_a_link_local_one_every_ipv6_pod() {
        let network = |text: &str| text.parse::<IpNetwork>().expect("network");
        let ip = |text: &str| text.parse::<IpAddr>().expect("address");
        assert!(is_behind(&network("10.10.1.0/16"), ip("10.10.1.7")));
        assert!(!is_behind(&network("10.10.1.0/16"), ip("10.11.1.7")));
        assert!(is_behind(&network("fd10:10::1:0/64"), ip("fd10:10::1:7")));
        assert!(!is_behind(&network("fd10:10::1:0/64"), ip("fd10:11::1:7")));
        assert!(is_behind(&network("fe80::1/64"), ip("fd10:10::1:7")));
        assert!(!is_behind(&network("fe80::1/64"), ip("10.10.1.7")));
    }
}
