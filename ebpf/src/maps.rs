//! Every map of the datapath: the whole kernel/userspace ABI on one screen. The types live
//! in `flatbridge-common`; the plugin pins these maps under `<bpf_root>/flatbridge/<network>/`
//! and keeps them in step with the pods. The names must match `flatbridge_common::map_name`.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use flatbridge_common::{
    ArpClaim, ArpProbe, COUNTER_SLOTS, CniCall, CniCallKey, Counter, Endpoint, FlowConfirmed, FlowKey,
    FlowKey6, FlowSeen, Gateway, Ipv4, Ipv6, MAX_ARP_CLAIMS, MAX_ARP_PROBES, MAX_CNI_CALLS, MAX_FLOWS,
    MAX_GATEWAYS, MAX_PODS, Mac, NODE_ENABLED, NodeConfig,
};

/// Packets and bytes per [`flatbridge_common::Verdict`], per CPU so that no two programs
/// ever race on a slot.
#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

/// Local pods by MAC.
#[btf_map(name = "pods_by_mac")]
pub static PODS_BY_MAC: HashMap<Mac, Endpoint, { MAX_PODS as usize }> = HashMap::new();

/// Local pods by IPv4 address (a pod with two IPv4 addresses has two entries).
#[btf_map(name = "pods_by_ip")]
pub static PODS_BY_IP: HashMap<Ipv4, Endpoint, { MAX_PODS as usize }> = HashMap::new();

/// Local pods by the IPv6 addresses IPAM leased to them.
#[btf_map(name = "pods_by_ipv6")]
pub static PODS_BY_IPV6: HashMap<Ipv6, Endpoint, { MAX_PODS as usize }> = HashMap::new();

/// Local pods by the ifindex of their host-side veth.
#[btf_map(name = "ports")]
pub static PORTS: HashMap<u32, Endpoint, { MAX_PODS as usize }> = HashMap::new();

/// IPv4 gateway addresses the node owns, with the MAC that answers for them.
#[btf_map(name = "gateways")]
pub static GATEWAYS: HashMap<Ipv4, Gateway, { MAX_GATEWAYS as usize }> = HashMap::new();

/// IPv6 gateway addresses the node owns, with the MAC that answers for them.
#[btf_map(name = "gateways_v6")]
pub static GATEWAYS_V6: HashMap<Ipv6, Gateway, { MAX_GATEWAYS as usize }> = HashMap::new();

/// The node's settings at index 0.
#[btf_map(name = "node")]
pub static NODE: Array<NodeConfig, 1> = Array::new();

/// The node's settings, when the plugin has enabled the datapath.
#[inline(always)]
pub fn enabled_node() -> Option<NodeConfig> {
    NODE.get(0).copied().filter(|node| node.flags & NODE_ENABLED != 0)
}

/// Per flow direction, what the ingress programs saw. Only ingress programs write it.
#[btf_map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, FlowSeen, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Per flow direction, what the egress programs confirmed. Only egress programs write it,
/// so a confirmation never races with an ingress update of the same entry.
#[btf_map(name = "confirmed")]
pub static CONFIRMED: LruHashMap<FlowKey, FlowConfirmed, { MAX_FLOWS as usize }> = LruHashMap::new();

/// As `flows`, for IPv6 flows.
#[btf_map(name = "flows6")]
pub static FLOWS6: LruHashMap<FlowKey6, FlowSeen, { MAX_FLOWS as usize }> = LruHashMap::new();

/// As `confirmed`, for IPv6 flows.
#[btf_map(name = "confirmed6")]
pub static CONFIRMED6: LruHashMap<FlowKey6, FlowConfirmed, { MAX_FLOWS as usize }> = LruHashMap::new();

/// The plugin's CNI calls, written by the plugin and read (and deleted) by the agent for
/// its metrics; no program touches it. In the object so that it is created and pinned with
/// the others.
#[btf_map(name = "cni_calls")]
pub static CNI_CALLS: LruHashMap<CniCallKey, CniCall, { MAX_CNI_CALLS as usize }> = LruHashMap::new();

/// Who sent ARP for which address on the wire, and when: the plugin hands out no address
/// someone claimed since it was probed, and reports claims of local pods' addresses.
#[btf_map(name = "arp_claims")]
pub static ARP_CLAIMS: LruHashMap<Ipv4, ArpClaim, { MAX_ARP_CLAIMS as usize }> = LruHashMap::new();

/// When the plugin probed the addresses it will hand out next. Userspace only; in the
/// object so that it is created and pinned with the others.
#[btf_map(name = "arp_probes")]
pub static ARP_PROBES: LruHashMap<Ipv4, ArpProbe, { MAX_ARP_PROBES as usize }> = LruHashMap::new();

/// As `arp_claims`, for IPv6: who neighbour discovery from the wire says uses an address.
#[btf_map(name = "nd_claims")]
pub static ND_CLAIMS: LruHashMap<Ipv6, ArpClaim, { MAX_ARP_CLAIMS as usize }> = LruHashMap::new();

/// As `arp_probes`, for IPv6 duplicate address detection. Written by userspace; from_uplink
/// remembers claims only of the addresses in it (and of local pods').
#[btf_map(name = "nd_probes")]
pub static ND_PROBES: LruHashMap<Ipv6, ArpProbe, { MAX_ARP_PROBES as usize }> = LruHashMap::new();
