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

/// The layout of the maps. A build whose maps differ from those pinned on a node (another
/// key or value layout) cannot reuse them; bump this whenever a map type changes, so that
/// such a node gets a clear error instead of programs reading the wrong bytes.
pub const ABI_VERSION: u32 = 4;

/// Names of the maps as they appear in the object file, in `bpftool map show` and as the
/// file names of their pins.
pub mod map_name {
    /// Per-CPU packet and byte counters, indexed by [`super::Verdict`].
    pub const COUNTERS: &str = "counters";
    /// Local pods by MAC: where to redirect a frame for that MAC.
    pub const PODS_BY_MAC: &str = "pods_by_mac";
    /// Local pods by IPv4 address: ARP answers and source-address checks.
    pub const PODS_BY_IP: &str = "pods_by_ip";
    /// Local pods by IPv6 address (those IPAM leased to them): IPv6 source checks.
    pub const PODS_BY_IPV6: &str = "pods_by_ipv6";
    /// Local pods by the ifindex of their host-side veth: who sits behind a port.
    pub const PORTS: &str = "ports";
    /// IPv4 addresses of the node that pods use as their gateway, and the MAC to answer
    /// ARP with.
    pub const GATEWAYS: &str = "gateways";
    /// IPv6 addresses of the node that pods use as their gateway, and the MAC to answer
    /// neighbour solicitations with.
    pub const GATEWAYS_V6: &str = "gateways_v6";
    /// One [`super::NodeConfig`] at index 0.
    pub const NODE: &str = "node";
    /// Per flow direction, what the ingress programs saw ([`super::FlowSeen`]).
    pub const FLOWS: &str = "flows";
    /// Per flow direction, what the egress programs confirmed ([`super::FlowConfirmed`]).
    pub const CONFIRMED: &str = "confirmed";
    /// As [`FLOWS`], for IPv6 flows ([`super::FlowKey6`]).
    pub const FLOWS6: &str = "flows6";
    /// As [`CONFIRMED`], for IPv6 flows.
    pub const CONFIRMED6: &str = "confirmed6";
    /// The CNI calls of the plugin, one entry each ([`super::CniCall`]), until the agent
    /// reads them for its metrics. No program touches it.
    pub const CNI_CALLS: &str = "cni_calls";
    /// Who claimed which IPv4 address on the wire: the sender of every ARP frame the uplink
    /// received ([`super::ArpClaim`]). Written by from_uplink only.
    pub const ARP_CLAIMS: &str = "arp_claims";
    /// When the plugin last probed an address on the wire ([`super::ArpProbe`]). Written by
    /// the plugin and the agent; no program touches it.
    pub const ARP_PROBES: &str = "arp_probes";
    /// As [`ARP_CLAIMS`], for IPv6 addresses: who neighbour discovery from the wire says uses
    /// an address (the target of an advertisement, the source of a solicitation), for the
    /// addresses in [`ND_PROBES`] and local pods' only. Written by from_uplink only.
    pub const ND_CLAIMS: &str = "nd_claims";
    /// As [`ARP_PROBES`], for the IPv6 addresses probed by duplicate address detection
    /// (written by the plugin and the agent, read by from_uplink).
    pub const ND_PROBES: &str = "nd_probes";

    /// Every map, for loading, pinning and removal.
    pub const ALL: [&str; 17] = [
        COUNTERS,
        PODS_BY_MAC,
        PODS_BY_IP,
        PODS_BY_IPV6,
        PORTS,
        GATEWAYS,
        GATEWAYS_V6,
        NODE,
        FLOWS,
        CONFIRMED,
        FLOWS6,
        CONFIRMED6,
        CNI_CALLS,
        ARP_CLAIMS,
        ARP_PROBES,
        ND_CLAIMS,
        ND_PROBES,
    ];
}

/// Names of the tc programs in the object file.
pub mod program_name {
    /// tc ingress of a pod's host-side veth: frames the pod sends.
    pub const FROM_POD: &str = "from_pod";
    /// tc ingress of the uplink (the NIC or bond enslaved to the bridge): frames from the wire.
    pub const FROM_UPLINK: &str = "from_uplink";
    /// tc egress of a pod's host-side veth: frames the bridge delivered to the pod, after
    /// netfilter.
    pub const TO_POD: &str = "to_pod";
    /// tc egress of the uplink: frames the bridge sends to the wire, after netfilter.
    pub const TO_UPLINK: &str = "to_uplink";

    /// Attached nowhere: run with BPF_PROG_TEST_RUN to send a frame the plugin built out
    /// of a device (`cb[0]` of the context), instead of a packet socket.
    pub const INJECT: &str = "inject";

    /// The attached programs.
    pub const ALL: [&str; 4] = [FROM_POD, FROM_UPLINK, TO_POD, TO_UPLINK];
    /// The programs on each pod's host veth.
    pub const POD: [&str; 2] = [FROM_POD, TO_POD];
    /// The programs on the uplink.
    pub const UPLINK: [&str; 2] = [FROM_UPLINK, TO_UPLINK];

    /// True for the programs attached to tc egress (the others go on tc ingress).
    pub fn is_egress(program: &str) -> bool {
        program == TO_POD || program == TO_UPLINK
    }
}

/// Map capacities. Changing one changes the ABI: maps pinned by an older version keep
/// theirs until the datapath is removed and loaded again.
pub const MAX_PODS: u32 = 4096;
pub const MAX_GATEWAYS: u32 = 64;
/// Flow directions tracked. An eviction only ever sends a flow back to the slow path; sized
/// for tens of thousands of concurrent connections per node.
pub const MAX_FLOWS: u32 = 65536;

/// The skb mark bit set on frames the fast path sends out of the uplink, so that the
/// uplink's egress program does not take them for frames netfilter let through.
pub const OFFLOADED_MARK: u32 = 0x0020_0000;

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
    // 10 was drop_redirect_failed, retired: with flags 0 the redirect helpers never refuse
    // a frame (a vanished target drops it later, in the kernel), so it never counted.
    /// to_pod / to_uplink: a flow direction netfilter let through unchanged was confirmed.
    FlowConfirmed = 11,
    /// from_pod / from_uplink: a TCP FIN or RST ended a flow (both directions).
    FlowClosed = 12,
    /// from_pod: dropped, the port has no endpoint (the pod is not added yet, or half
    /// deleted): nothing is known to check its frames against.
    DropUnknownPort = 13,
    /// from_pod: dropped, an 802.1Q/802.1ad tag (in the frame or moved to the skb by the
    /// kernel): a pod must not reach other VLANs of the wire.
    DropVlanTagged = 14,
    /// from_pod: dropped, a header the checks need is truncated or cannot be read.
    DropMalformed = 15,
    /// from_pod: dropped, neither IPv4, ARP nor IPv6.
    DropUnknownL3 = 16,
    /// from_pod: dropped, an ICMPv6 router advertisement or router renumbering message
    /// (RA guard, RFC 6105).
    DropRouterAdvert = 17,
    /// from_pod: dropped, an ICMP or ICMPv6 redirect.
    DropIcmpRedirect = 18,
    /// from_pod: dropped, a DHCPv4 or DHCPv6 server message (DHCP guard).
    DropDhcpServer = 19,
    /// from_pod: dropped, source IPv6 neither the pod's link-local nor one of its leased
    /// addresses.
    DropSpoofedIpv6 = 20,
    /// from_pod: dropped, a neighbour solicitation or advertisement for an address that is
    /// not the pod's own, or naming another MAC.
    DropSpoofedNd = 21,
    /// from_uplink: an ARP frame from the wire whose sender claims a local pod's address
    /// with another MAC (an address conflict, RFC 5227 section 2.4). The frame goes on to
    /// the bridge.
    UplinkArpConflict = 22,
    /// from_pod: a neighbour solicitation for a local pod's IPv6 address or the gateway's,
    /// answered by the program.
    PodNdAnswered = 23,
    /// from_uplink: a neighbour solicitation from the wire for a local pod's IPv6 address,
    /// answered by the program.
    UplinkNdAnswered = 24,
    /// to_pod: dropped, an IPv6 neighbour advertisement from the pod's own MAC on its way
    /// back to the pod (the plugin's announcement of a new pod, which the bridge floods to
    /// every port; the pod's kernel would log it as a conflict).
    DropOwnAdvertisement = 25,
    /// from_uplink: a neighbour solicitation or advertisement from the wire that claims a
    /// local pod's IPv6 address with another MAC (an advertisement for it, a solicitation
    /// from it). The frame goes on to the bridge.
    UplinkNdConflict = 26,
}

impl Verdict {
    /// Every verdict, in counter order.
    pub const ALL: [Verdict; 26] = [
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
        Verdict::FlowConfirmed,
        Verdict::FlowClosed,
        Verdict::DropUnknownPort,
        Verdict::DropVlanTagged,
        Verdict::DropMalformed,
        Verdict::DropUnknownL3,
        Verdict::DropRouterAdvert,
        Verdict::DropIcmpRedirect,
        Verdict::DropDhcpServer,
        Verdict::DropSpoofedIpv6,
        Verdict::DropSpoofedNd,
        Verdict::UplinkArpConflict,
        Verdict::PodNdAnswered,
        Verdict::UplinkNdAnswered,
        Verdict::DropOwnAdvertisement,
        Verdict::UplinkNdConflict,
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
            Verdict::FlowConfirmed => "flow_confirmed",
            Verdict::FlowClosed => "flow_closed",
            Verdict::DropUnknownPort => "drop_unknown_port",
            Verdict::DropVlanTagged => "drop_vlan_tagged",
            Verdict::DropMalformed => "drop_malformed",
            Verdict::DropUnknownL3 => "drop_unknown_l3",
            Verdict::DropRouterAdvert => "drop_router_advert",
            Verdict::DropIcmpRedirect => "drop_icmp_redirect",
            Verdict::DropDhcpServer => "drop_dhcp_server",
            Verdict::DropSpoofedIpv6 => "drop_spoofed_ipv6",
            Verdict::DropSpoofedNd => "drop_spoofed_nd",
            Verdict::UplinkArpConflict => "uplink_arp_conflict",
            Verdict::PodNdAnswered => "pod_nd_answered",
            Verdict::UplinkNdAnswered => "uplink_nd_answered",
            Verdict::DropOwnAdvertisement => "drop_own_advertisement",
            Verdict::UplinkNdConflict => "uplink_nd_conflict",
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

/// An IPv6 address (network order) as a map key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv6 {
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Ipv6>() == 16);

/// The link-local IPv6 address of `mac` (fe80::/64 with the modified EUI-64 interface
/// identifier of RFC 4291): the one a pod's kernel gives its interface, as the plugin
/// sets the pod's address generation mode to EUI-64.
pub const fn link_local(mac: [u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// IPv6 neighbour discovery (RFC 4861) as both sides write it: the programs turning a
/// solicitation into an advertisement, the plugin building the announcement of a new pod.
pub mod nd {
    /// Neighbor Advertisement flags (RFC 4861 4.4), in the first byte after the checksum.
    pub const NA_ROUTER: u8 = 0x80;
    pub const NA_SOLICITED: u8 = 0x40;
    pub const NA_OVERRIDE: u8 = 0x20;

    /// The length of the neighbour discovery messages the programs answer and send: type, code,
    /// checksum, four bytes of flags or reserved, the target, one link-layer address option.
    pub const ND_MESSAGE_LEN: u32 = 32;
    pub const IPPROTO_ICMPV6: u8 = 58;
    pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
    pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
    /// Neighbour discovery options naming a link-layer address (RFC 4861 4.6.1).
    pub const ND_OPT_SOURCE_LLADDR: u8 = 1;
    pub const ND_OPT_TARGET_LLADDR: u8 = 2;

    /// The ones' complement sum (RFC 1071) of what the ICMPv6 checksum of a 32-byte neighbour
    /// discovery message covers: `addresses_and_message` is the IPv6 source and destination
    /// followed by the message (as they lie in the frame, from byte 22), plus the rest of the
    /// pseudo-header (RFC 8200 8.1: the upper-layer length and the next header). Folded to 16
    /// bits, not complemented.
    #[inline(always)]
    pub fn nd_sum(addresses_and_message: &[u8; 64]) -> u16 {
        let mut sum = ND_MESSAGE_LEN + IPPROTO_ICMPV6 as u32;
        let mut i = 0;
        while i < 64 {
            sum += u32::from(u16::from_be_bytes([
                addresses_and_message[i],
                addresses_and_message[i + 1],
            ]));
            i += 2;
        }
        // 32 words of at most 0xffff and a small constant: two folds are enough.
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    /// True when the checksum carried in the message is right: the sum over everything, the
    /// checksum included, is all ones.
    #[inline(always)]
    pub fn nd_checksum_valid(addresses_and_message: &[u8; 64]) -> bool {
        nd_sum(addresses_and_message) == 0xffff
    }

    /// The checksum to write into a message whose checksum field is zero, network order.
    #[inline(always)]
    pub fn nd_checksum(addresses_and_message: &[u8; 64]) -> [u8; 2] {
        (!nd_sum(addresses_and_message)).to_be_bytes()
    }
}

/// A gateway address the node owns, as the ARP and neighbour discovery answers need it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gateway {
    /// The MAC that answers for the address (the bridge's).
    pub mac: [u8; 6],
    /// The prefix length of the pods' subnet behind it: the gateway is needed as long as a
    /// pod of the network has an address in it.
    pub prefix_len: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<Gateway>() == 8);

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
    /// The pod's first IPv4 address.
    pub ipv4: [u8; 4],
    pub mac: [u8; 6],
    /// How many more IPv4 addresses the pod has in `pods_by_ip` (so DEL knows whether to
    /// look for them).
    pub extra_ipv4s: u8,
    /// How many IPv6 addresses the pod has in `pods_by_ipv6` (its link-local, derived from
    /// `mac`, is not among them).
    pub ipv6s: u8,
}
const _: () = assert!(size_of::<Endpoint>() == 16);

/// Node-wide settings, written by the plugin, read by every program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// How long an egress confirmation lets a flow direction bypass the bridge; after it
    /// the next frame goes through netfilter again (revalidation).
    pub revalidate_ns: u64,
    /// The bridge; frames for its MAC belong to the node's own stack.
    pub bridge_ifindex: u32,
    /// The uplink port of the bridge, 0 when there is none.
    pub uplink_ifindex: u32,
    /// `NODE_*` bits.
    pub flags: u32,
    pub _pad0: u32,
    pub bridge_mac: [u8; 6],
    pub _pad1: [u8; 2],
    /// Userspace only: when (Unix ns) a look at the bridge's ports last found no uplink, so
    /// that a burst of ADDs does not list every port each time. 0 = not looked yet.
    pub no_uplink_seen_ns: u64,
}
const _: () = assert!(size_of::<NodeConfig>() == 40);

/// NodeConfig.flags: drop frames whose source MAC/IPv4 is not the sending pod's own.
pub const NODE_ANTI_SPOOF: u32 = 1;
/// NodeConfig.flags: the datapath is configured and may redirect (0 = pass everything).
pub const NODE_ENABLED: u32 = 2;
/// NodeConfig.flags: offload only flows netfilter let through unchanged (the safe default).
/// Without it every IPv4 unicast frame for a local pod's MAC is redirected ("always" mode,
/// for nodes without Services or policy).
pub const NODE_CONFIRM_FLOWS: u32 = 4;
/// NodeConfig.flags: TCP may be offloaded (conntrack is liberal about TCP windows, or absent).
pub const NODE_TCP_OFFLOAD: u32 = 8;
/// NodeConfig.flags: the kernel is older than 6.15, whose `bpf_redirect_peer` does not reset
/// pkt_type: frames sent into a pod must be marked PACKET_HOST by the program.
pub const NODE_SET_PKT_TYPE: u32 = 16;

/// One direction of a flow, as the sender sent it: IPv4 addresses and ports in network
/// order. Zeroed padding, so equal flows are equal keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 16);

impl FlowKey {
    /// The other direction of the same flow.
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
            _pad: [0; 3],
        }
    }
}

/// One direction of an IPv6 flow, as [`FlowKey`] is of an IPv4 one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey6>() == 40);

impl FlowKey6 {
    /// The other direction of the same flow.
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
            _pad: [0; 3],
        }
    }
}

/// What the programs' decisions and the plugin's report need of a flow direction's key,
/// IPv4 ([`FlowKey`]) or IPv6 ([`FlowKey6`]).
pub trait FlowDirection: Copy {
    /// IPPROTO_TCP or IPPROTO_UDP.
    fn protocol(&self) -> u8;
    /// The other direction of the same flow.
    fn reversed(&self) -> Self;
}

impl FlowDirection for FlowKey {
    #[inline(always)]
    fn protocol(&self) -> u8 {
        self.protocol
    }

    #[inline(always)]
    fn reversed(&self) -> Self {
        FlowKey::reversed(self)
    }
}

impl FlowDirection for FlowKey6 {
    #[inline(always)]
    fn protocol(&self) -> u8 {
        self.protocol
    }

    #[inline(always)]
    fn reversed(&self) -> Self {
        FlowKey6::reversed(self)
    }
}

/// What an ingress program saw of a flow direction. Written only by ingress programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSeen {
    /// bpf_ktime_get_ns() of the last sighting.
    pub seen_ns: u64,
    /// The port the sender is behind.
    pub in_ifindex: u32,
    /// 1 after a TCP FIN or RST, until a new SYN.
    pub closed: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<FlowSeen>() == 32);

/// FlowConfirmed.out_kind: the port is a pod's host veth (redirect with redirect_peer).
pub const OUT_POD: u32 = 1;
/// FlowConfirmed.out_kind: the port is the uplink (redirect to its egress).
pub const OUT_UPLINK: u32 = 2;

/// What an egress program confirmed of a flow direction: the bridge delivered it, after
/// netfilter, unchanged, to `out_ifindex`. Written only by egress programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowConfirmed {
    /// bpf_ktime_get_ns() of the last confirmation.
    pub confirmed_ns: u64,
    pub out_ifindex: u32,
    /// OUT_POD or OUT_UPLINK.
    pub out_kind: u32,
    /// The port the confirmed sender is behind: only frames arriving there are redirected.
    pub in_ifindex: u32,
    /// 1 once the reverse direction was confirmed as this one's mirror image (delivered to
    /// the port this one comes from, sent from the port this one goes to). Worked out when a
    /// direction is confirmed, so the per-packet check reads one entry.
    pub paired: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<FlowConfirmed>() == 40);

/// CNI calls the plugin records for the agent (map `cni_calls`, an LRU: calls no agent reads
/// go after [`MAX_CNI_CALLS`]).
pub const MAX_CNI_CALLS: u32 = 4096;

/// A CNI call: which process, when it started. Unique per call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CniCallKey {
    pub pid: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC at the start of the call.
    pub started_ns: u64,
}
const _: () = assert!(size_of::<CniCallKey>() == 16);

/// How a CNI call ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CniCall {
    /// One of [`cni_verb`].
    pub verb: u32,
    /// The CNI error code, 0 for success.
    pub code: u32,
    /// How long it took.
    pub micros: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<CniCall>() == 16);

/// `CniCall::verb`.
pub mod cni_verb {
    pub const ADD: u32 = 1;
    pub const DEL: u32 = 2;
    pub const CHECK: u32 = 3;
    pub const STATUS: u32 = 4;
    pub const GC: u32 = 5;

    pub const fn name(verb: u32) -> &'static str {
        match verb {
            ADD => "ADD",
            DEL => "DEL",
            CHECK => "CHECK",
            STATUS => "STATUS",
            GC => "GC",
            _ => "unknown",
        }
    }
}

/// Entries of `arp_claims`: senders on the wire remembered, least recently seen forgotten
/// first.
pub const MAX_ARP_CLAIMS: u32 = 8192;
/// Entries of `arp_probes`: the addresses probed ahead of their ADD.
pub const MAX_ARP_PROBES: u32 = 1024;

/// An ARP frame from the wire named this MAC as the sender of an address (a request, a
/// reply or an announcement; probes, whose sender is 0.0.0.0, claim nothing); in
/// `nd_claims`, a neighbour discovery message named it as the user of an IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArpClaim {
    /// CLOCK_MONOTONIC when the frame arrived.
    pub seen_ns: u64,
    pub mac: [u8; 6],
    /// The ARP operation, host order (1 request, 2 reply); in `nd_claims`, the ICMPv6 type
    /// (135 solicitation, 136 advertisement).
    pub op: u16,
}
const _: () = assert!(size_of::<ArpClaim>() == 16);

/// When an address was probed on the wire (CLOCK_MONOTONIC, 0 = never): the last probe and
/// the one before it, so that re-probing an address does not make it look new, and when an
/// ADD last named it among the next addresses IPAM hands out (the entries of the latest
/// ADD are the ones the agent keeps fresh; the others are let go).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArpProbe {
    pub last_ns: u64,
    pub previous_ns: u64,
    pub wanted_ns: u64,
}
const _: () = assert!(size_of::<ArpProbe>() == 24);

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain old data, `#[repr(C)]`, padding made explicit, every bit pattern
    // valid.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Mac {}
    unsafe impl aya::Pod for super::Ipv4 {}
    unsafe impl aya::Pod for super::Ipv6 {}
    unsafe impl aya::Pod for super::Gateway {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::NodeConfig {}
    unsafe impl aya::Pod for super::CniCallKey {}
    unsafe impl aya::Pod for super::CniCall {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::FlowSeen {}
    unsafe impl aya::Pod for super::FlowConfirmed {}
    unsafe impl aya::Pod for super::ArpClaim {}
    unsafe impl aya::Pod for super::ArpProbe {}
}
