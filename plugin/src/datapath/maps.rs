//! Typed access to the pinned maps: what the plugin writes on ADD and removes on DEL, and
//! what `flatbridge status` reads. Every entry is written whole, so a program never sees a
//! half-updated endpoint.
use std::{collections::BTreeSet, net::Ipv4Addr};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use flatbridge_common::{
    Counter, Endpoint, FlowConfirmed, FlowKey, FlowSeen, Ipv4, Mac, NodeConfig, Verdict, map_name,
};

use super::{Datapath, DatapathError};

/// A verdict and its packets and bytes summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictCount {
    pub verdict: Verdict,
    pub total: Counter,
}

fn ipv4_key(ip: Ipv4Addr) -> Ipv4 {
    Ipv4 { addr: ip.octets() }
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

    /// Every tracked flow direction: what ingress saw and, when confirmed, what egress did.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowSeen, Option<FlowConfirmed>)>, DatapathError> {
        let seen = self.lru_map::<FlowKey, FlowSeen>(map_name::FLOWS)?;
        let confirmed = self.lru_map::<FlowKey, FlowConfirmed>(map_name::CONFIRMED)?;
        Ok(seen
            .iter()
            .filter_map(Result::ok)
            .map(|(key, seen)| (key, seen, confirmed.get(&key, 0).ok()))
            .collect())
    }

    /// Forgets every flow: each goes through the bridge (and netfilter) again and must be
    /// confirmed anew. Returns how many directions were forgotten.
    pub fn flush_flows(&self) -> Result<usize, DatapathError> {
        let mut seen = self.lru_map::<FlowKey, FlowSeen>(map_name::FLOWS)?;
        let mut confirmed = self.lru_map::<FlowKey, FlowConfirmed>(map_name::CONFIRMED)?;
        // Confirmations first: without them nothing is redirected.
        let confirmations: Vec<FlowKey> = confirmed.keys().filter_map(Result::ok).collect();
        for key in &confirmations {
            let _ = confirmed.remove(key);
        }
        let sightings: Vec<FlowKey> = seen.keys().filter_map(Result::ok).collect();
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

    /// Makes a pod known to the programs: by MAC, by each of its IPv4 addresses, by port.
    pub fn add_endpoint(&self, endpoint: Endpoint, addresses: &[Ipv4Addr]) -> Result<(), DatapathError> {
        let mut by_mac = self.hash_map::<Mac, Endpoint>(map_name::PODS_BY_MAC)?;
        let mut by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        let mut ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        for &ip in addresses {
            by_ip
                .insert(ipv4_key(ip), endpoint, 0)
                .map_err(|error| self.map_error(map_name::PODS_BY_IP, error))?;
        }
        by_mac
            .insert(Mac::new(endpoint.mac), endpoint, 0)
            .map_err(|error| self.map_error(map_name::PODS_BY_MAC, error))?;
        // The port last: once it exists, the anti-spoofing check applies to this pod.
        ports
            .insert(endpoint.ifindex, endpoint, 0)
            .map_err(|error| self.map_error(map_name::PORTS, error))
    }

    /// Forgets the pod behind host veth `ifindex`: every entry that points at that port,
    /// and only those (an address already reused by another pod stays). With the port's
    /// entry at hand that is a few direct removals; without it, a scan of the pod maps.
    pub fn remove_endpoint(&self, ifindex: u32) -> Result<bool, DatapathError> {
        let mut by_mac = self.hash_map::<Mac, Endpoint>(map_name::PODS_BY_MAC)?;
        let mut by_ip = self.hash_map::<Ipv4, Endpoint>(map_name::PODS_BY_IP)?;
        let mut ports = self.hash_map::<u32, Endpoint>(map_name::PORTS)?;
        let entry = ports.get(&ifindex, 0).ok();
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
            if endpoint.extra_ipv4s == 0 {
                return Ok(true);
            }
        }
        let stale_ips: Vec<Ipv4> = by_ip
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, endpoint)| endpoint.ifindex == ifindex)
            .map(|(ip, _)| ip)
            .collect();
        for ip in stale_ips {
            let _ = by_ip.remove(&ip);
        }
        if entry.is_none() {
            let stale_macs: Vec<Mac> = by_mac
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, endpoint)| endpoint.ifindex == ifindex)
                .map(|(mac, _)| mac)
                .collect();
            for mac in stale_macs {
                let _ = by_mac.remove(&mac);
            }
        }
        Ok(entry.is_some())
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
        Ok(found)
    }

    /// Answers ARP for `ip` with `mac` (a gateway address the node owns).
    pub fn set_gateway(&self, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), DatapathError> {
        let mut gateways = self.hash_map::<Ipv4, Mac>(map_name::GATEWAYS)?;
        gateways
            .insert(ipv4_key(ip), Mac::new(mac), 0)
            .map_err(|error| self.map_error(map_name::GATEWAYS, error))
    }

    pub fn gateways(&self) -> Result<Vec<(Ipv4Addr, [u8; 6])>, DatapathError> {
        let gateways = self.hash_map::<Ipv4, Mac>(map_name::GATEWAYS)?;
        Ok(gateways
            .iter()
            .filter_map(Result::ok)
            .map(|(ip, mac)| (Ipv4Addr::from(ip.addr), mac.addr))
            .collect())
    }
}
