//! The kernel/userspace ABI of flatbridge: every type stored in a BPF map, the verdict
//! (counter) numbers, the map and program names and where they are pinned. Both the no_std
//! eBPF programs and the plugin compile this crate, so a change here changes both sides.
//!
//! Rules: `#[repr(C)]`, fields largest first, explicit `_pad` fields so no uninitialised
//! padding reaches a map key, no `bool`, addresses as byte arrays in network order (so
//! `bpftool map dump` shows `[10,10,1,2]`). Every type has a size assertion.
#![no_std]

use core::mem::size_of;

/// Directory under the BPF filesystem root that holds everything flatbridge pins:
/// `<bpf_root>/flatbridge/<network>/`.
pub const PIN_DIR: &str = "flatbridge";

/// Names of the maps as they appear in the object file, in `bpftool map show` and as the
/// file names of their pins.
pub mod map_name {
    /// Per-CPU packet and byte counters, indexed by [`super::Verdict`].
    pub const COUNTERS: &str = "counters";
    /// Local pods by MAC: where to redirect a frame for that MAC.
    pub const PODS_BY_MAC: &str = "pods_by_mac";
    /// Local pods by IPv4 address: ARP answers and source-address checks.
    pub const PODS_BY_IP: &str = "pods_by_ip";
    /// Local pods by the ifindex of their host-side veth: who sits behind a port.
    pub const PORTS: &str = "ports";
    /// Addresses of the node that pods use as their gateway, and the MAC to answer with.
    pub const GATEWAYS: &str = "gateways";
    /// One [`super::NodeConfig`] at index 0.
    pub const NODE: &str = "node";

    /// Every map, for loading, pinning and removal.
    pub const ALL: [&str; 6] = [COUNTERS, PODS_BY_MAC, PODS_BY_IP, PORTS, GATEWAYS, NODE];
}

/// Names of the tc programs in the object file.
pub mod program_name {
    /// tc ingress of a pod's host-side veth: frames the pod sends.
    pub const FROM_POD: &str = "from_pod";
    /// tc ingress of the uplink (the NIC or bond enslaved to the bridge): frames from the wire.
    pub const FROM_UPLINK: &str = "from_uplink";

    pub const ALL: [&str; 2] = [FROM_POD, FROM_UPLINK];
}

/// Map capacities. Changing one changes the ABI: maps pinned by an older version keep
/// theirs until the datapath is removed and loaded again.
pub const MAX_PODS: u32 = 4096;
pub const MAX_GATEWAYS: u32 = 64;

/// What a program did with a frame. The value is the index of its counter in
/// [`map_name::COUNTERS`]. Values are never reused: a retired verdict keeps its number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// from_pod: not ours, handed to the bridge unchanged.
    PodToBridge = 0,
    /// from_pod: redirected straight into a local pod (bpf_redirect_peer).
    PodToPod = 1,
    /// from_pod: sent straight out of the uplink (bpf_redirect).
    PodToUplink = 2,
    /// from_pod: an ARP request for a local pod or the gateway, answered by the program.
    PodArpAnswered = 3,
    /// from_pod: dropped, source MAC not the pod's own.
    DropSpoofedMac = 4,
    /// from_pod: dropped, source IPv4 not one of the pod's own.
    DropSpoofedIp = 5,
    /// from_pod: dropped, ARP sender MAC or IPv4 not the pod's own.
    DropSpoofedArp = 6,
    /// from_uplink: not ours, handed to the bridge unchanged.
    UplinkToBridge = 7,
    /// from_uplink: redirected straight into a local pod.
    UplinkToPod = 8,
    /// from_uplink: an ARP request from the wire for a local pod, answered by the program.
    UplinkArpAnswered = 9,
    /// A redirect helper refused the frame (the target vanished); the frame was dropped.
    DropRedirectFailed = 10,
}

impl Verdict {
    /// Every verdict, in counter order.
    pub const ALL: [Verdict; 11] = [
        Verdict::PodToBridge,
        Verdict::PodToPod,
        Verdict::PodToUplink,
        Verdict::PodArpAnswered,
        Verdict::DropSpoofedMac,
        Verdict::DropSpoofedIp,
        Verdict::DropSpoofedArp,
        Verdict::UplinkToBridge,
        Verdict::UplinkToPod,
        Verdict::UplinkArpAnswered,
        Verdict::DropRedirectFailed,
    ];

    /// Name used by `flatbridge status` and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::PodToBridge => "pod_to_bridge",
            Verdict::PodToPod => "pod_to_pod",
            Verdict::PodToUplink => "pod_to_uplink",
            Verdict::PodArpAnswered => "pod_arp_answered",
            Verdict::DropSpoofedMac => "drop_spoofed_mac",
            Verdict::DropSpoofedIp => "drop_spoofed_ip",
            Verdict::DropSpoofedArp => "drop_spoofed_arp",
            Verdict::UplinkToBridge => "uplink_to_bridge",
            Verdict::UplinkToPod => "uplink_to_pod",
            Verdict::UplinkArpAnswered => "uplink_arp_answered",
            Verdict::DropRedirectFailed => "drop_redirect_failed",
        }
    }
}

/// Number of slots in the counter map: room for new verdicts in maps pinned by an older
/// version.
pub const COUNTER_SLOTS: u32 = 64;

/// One counter slot (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// A MAC address as a map key or value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mac {
    pub addr: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Mac>() == 8);

impl Mac {
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, _pad: [0; 2] }
    }
}

/// An IPv4 address (network order) as a map key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv4 {
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<Ipv4>() == 4);

/// A local pod: its address, its MAC, and the ifindex of its host-side veth (the device
/// `bpf_redirect_peer` targets to reach the pod).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub ifindex: u32,
    pub ipv4: [u8; 4],
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Endpoint>() == 16);

/// Node-wide settings, written by the plugin, read by every program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The bridge; frames for its MAC belong to the node's own stack.
    pub bridge_ifindex: u32,
    /// The uplink port of the bridge, 0 when there is none.
    pub uplink_ifindex: u32,
    /// `NODE_*` bits.
    pub flags: u32,
    pub _pad0: u32,
    pub bridge_mac: [u8; 6],
    pub _pad1: [u8; 2],
}
const _: () = assert!(size_of::<NodeConfig>() == 24);

/// NodeConfig.flags: drop frames whose source MAC/IPv4 is not the sending pod's own.
pub const NODE_ANTI_SPOOF: u32 = 1;
/// NodeConfig.flags: the datapath is configured and may redirect (0 = pass everything).
pub const NODE_ENABLED: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain old data, `#[repr(C)]`, padding made explicit, every bit pattern
    // valid.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Mac {}
    unsafe impl aya::Pod for super::Ipv4 {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::NodeConfig {}
}
