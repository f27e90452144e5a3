//! Offloading only what netfilter accepted. A flow direction is redirected past the bridge
//! only when
//! - the ingress program of the sender's port saw it ([`seen`], map `flows`),
//! - the egress program of another port saw the bridge deliver exactly that frame — same
//!   5-tuple, same MACs, after netfilter and any NAT — to the pod the frame is addressed to
//!   ([`confirm`], map `confirmed`), within the last `revalidate_ns`,
//! - and the reverse direction was confirmed too, in the mirror image: delivered to the
//!   port this direction comes from, sent from the port this direction goes to.
//!
//! A NATed flow never pairs (its tuple changes on the way), a dropped one never reaches an
//! egress hook, and every direction goes back through netfilter once per revalidation
//! period, so rules added later apply within it. Only unicast, unfragmented IPv4 without
//! options, and IPv6 without extension headers, carrying TCP or UDP is considered (each
//! family in maps of its own: `flows`/`confirmed`, `flows6`/`confirmed6`); TCP only when the
//! node allows it, only on
//! packets with ACK and without SYN, FIN or RST; FIN or RST ends both directions until a new
//! SYN. An evicted or missing entry only ever means "slow path".
use aya_ebpf::{btf_maps::LruHashMap, helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use flatbridge_common::{
    FlowConfirmed, FlowKey, FlowKey6, FlowSeen, MAX_FLOWS, NODE_CONFIRM_FLOWS, NODE_ENABLED,
    NODE_TCP_OFFLOAD, NodeConfig, OUT_POD, OUT_UPLINK, Verdict,
};

pub use crate::decide::Flow;
use crate::{
    counters::count,
    decide::{Key, confirmation_holds, differs, may_confirm, mirrors, same_mac, still_confirmed},
    maps::{CONFIRMED, CONFIRMED6, FLOWS, FLOWS6, NODE, PORTS},
    parse::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, Frame, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, TcpHdr, UdpHdr,
        frame, header,
    },
};

type Flows<K> = LruHashMap<K, FlowSeen, { MAX_FLOWS as usize }>;
type Confirmations<K> = LruHashMap<K, FlowConfirmed, { MAX_FLOWS as usize }>;

/// A flow key with the maps of its address family.
pub trait Tracked: Key + 'static {
    fn flows() -> &'static Flows<Self>;
    fn confirmed() -> &'static Confirmations<Self>;
}

impl Tracked for FlowKey {
    #[inline(always)]
    fn flows() -> &'static Flows<Self> {
        &FLOWS
    }

    #[inline(always)]
    fn confirmed() -> &'static Confirmations<Self> {
        &CONFIRMED
    }
}

impl Tracked for FlowKey6 {
    #[inline(always)]
    fn flows() -> &'static Flows<Self> {
        &FLOWS6
    }

    #[inline(always)]
    fn confirmed() -> &'static Confirmations<Self> {
        &CONFIRMED6
    }
}

/// The ports and TCP flags at `l4`, when the transport is one the fast path may handle.
#[inline(always)]
fn transport(ctx: &TcContext, node: &NodeConfig, protocol: u8, l4: usize) -> Option<(u16, u16, u8)> {
    match protocol {
        IPPROTO_TCP if node.flags & NODE_TCP_OFFLOAD != 0 => {
            let tcp: *mut TcpHdr = header(ctx, l4)?;
            // SAFETY: bounds-checked by `header`.
            Some(unsafe { ((*tcp).src_port, (*tcp).dst_port, (*tcp).flags) })
        }
        IPPROTO_UDP => {
            let udp: *mut UdpHdr = header(ctx, l4)?;
            // SAFETY: bounds-checked by `header`.
            Some(unsafe { ((*udp).src_port, (*udp).dst_port, 0) })
        }
        _ => None,
    }
}

/// The flow of an IPv6 frame, when it is one the fast path may handle: TCP or UDP right
/// after the IPv6 header (any extension header takes the bridge).
#[inline(always)]
pub fn parse6(ctx: &TcContext, node: &NodeConfig) -> Option<Flow<FlowKey6>> {
    let ip: *mut Ipv6Hdr = header(ctx, ETH_HLEN)?;
    // SAFETY: `header` checked that the IPv6 header lies inside the frame.
    let (version, protocol, src, dst) = unsafe {
        (
            (*ip).version_class_flow[0] >> 4,
            (*ip).next_header,
            (*ip).src,
            (*ip).dst,
        )
    };
    if version != 6 {
        return None;
    }
    let (src_port, dst_port, tcp_flags) =
        transport(ctx, node, protocol, ETH_HLEN + core::mem::size_of::<Ipv6Hdr>())?;
    Some(Flow {
        key: FlowKey6 {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
            _pad: [0; 3],
        },
        tcp_flags,
    })
}

/// The flow of an IPv4 frame, when it is one the fast path may handle.
#[inline(always)]
pub fn parse(ctx: &TcContext, node: &NodeConfig) -> Option<Flow> {
    let ip: *mut Ipv4Hdr = header(ctx, ETH_HLEN)?;
    // SAFETY: `header` checked that the IPv4 header lies inside the frame.
    let (version_ihl, frag_off, protocol, src, dst) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).frag_off,
            (*ip).protocol,
            (*ip).src,
            (*ip).dst,
        )
    };
    // IPv4 without options, not a fragment (neither MF nor an offset).
    if version_ihl != 0x45 || u16::from_be(frag_off) & 0x3fff != 0 {
        return None;
    }
    let (src_port, dst_port, tcp_flags) = transport(ctx, node, protocol, ETH_HLEN + 20)?;
    Some(Flow {
        key: FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
            _pad: [0; 3],
        },
        tcp_flags,
    })
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Ingress: decides, and records what the egress check needs. Returns the confirmed way
/// out when this frame may bypass the bridge, `None` when it must go through it.
///
/// The hot path — an established flow inside its confirmation — reads one entry
/// (`confirmed`) and writes nothing. Everything else records the sighting in `flows`:
/// SYN reopens a flow, FIN or RST closes both directions (and drops their confirmations, so
/// the next packets take the bridge), and the egress programs confirm only open flows they
/// saw recently.
#[inline(always)]
pub fn seen<K: Tracked>(
    ctx: &TcContext,
    node: &NodeConfig,
    flow: &Flow<K>,
    in_ifindex: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
) -> Option<FlowConfirmed> {
    let time = now_ns();
    if let Some(out) = offloaded(node, flow, in_ifindex, src_mac, dst_mac, time) {
        return Some(out);
    }
    record(ctx, node, flow, in_ifindex, src_mac, dst_mac, time);
    None
}

/// Records the sighting of a frame that goes through the bridge (see [`seen`]).
#[inline(always)]
pub fn record<K: Tracked>(
    ctx: &TcContext,
    node: &NodeConfig,
    flow: &Flow<K>,
    in_ifindex: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
    time: u64,
) {
    let previous = K::flows().get_ptr(flow.key);
    // SAFETY (all map reads): the pointers come from lookups and are read at once; the
    // programs write entries whole.
    let previous_closed = previous.map_or(0, |seen| unsafe { (*seen).closed });
    let closed = flow.closed_after(previous_closed);
    let record = FlowSeen {
        seen_ns: time,
        in_ifindex,
        closed,
        src_mac: *src_mac,
        dst_mac: *dst_mac,
        _pad: [0; 4],
    };
    let changed = match previous {
        None => true,
        Some(seen) => differs(unsafe { &*seen }, &record, node.revalidate_ns / 4),
    };
    if changed {
        let _ = K::flows().insert(flow.key, record, 0);
    }
    if flow.ends() {
        // The end of one direction ends the other: mark it closed too, and forget both
        // confirmations. (An egress program confirming on another CPU at this very moment
        // could write one back; it then expires within the revalidation period, after which
        // the closed flow is never confirmed again.)
        let reverse = flow.key.reversed();
        if let Some(mut other) = unsafe { K::flows().get(reverse) }.copied() {
            other.closed = 1;
            let _ = K::flows().insert(reverse, other, 0);
        }
        let _ = K::confirmed().remove(flow.key);
        let _ = K::confirmed().remove(reverse);
        count(ctx, Verdict::FlowClosed);
    }
}

/// The confirmed way out of this frame: its direction is established, and its
/// confirmation fresh, paired and still valid for this very frame.
#[inline(always)]
pub fn offloaded<K: Tracked>(
    node: &NodeConfig,
    flow: &Flow<K>,
    in_ifindex: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
    time: u64,
) -> Option<FlowConfirmed> {
    if !flow.is_steady() {
        return None;
    }
    // SAFETY: the value is copied out of the map.
    let out: FlowConfirmed = unsafe { K::confirmed().get(flow.key) }.copied()?;
    // The reverse direction must mirror this one (worked out by `confirm`), and the frame
    // must come in where the confirmed sender is: another port (or the wire) sending the
    // same addresses goes through the bridge.
    if !confirmation_holds(&out, node.revalidate_ns, in_ifindex, src_mac, dst_mac, time) {
        return None;
    }
    match out.out_kind {
        // The pod must still be there: DEL removes its endpoint before its veth, and a
        // replacement pod (same address and MAC, another port) is reached through the
        // bridge until its own flows are confirmed, never through the old port.
        OUT_POD if !still_the_pod(out.out_ifindex, &out.dst_mac) => None,
        OUT_UPLINK if out.out_ifindex != node.uplink_ifindex => None,
        _ => Some(out),
    }
}

/// True when the port's endpoint is the pod with `mac`.
#[inline(always)]
fn still_the_pod(port_ifindex: u32, mac: &[u8; 6]) -> bool {
    // SAFETY: the value is read and not kept.
    unsafe { PORTS.get(port_ifindex) }.is_some_and(|pod| same_mac(&pod.mac, mac))
}

/// Where both egress programs start: the node's settings and the frame's source and
/// destination MACs and ethertype, when the node confirms flows and the frame is IPv4 or
/// IPv6.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> Option<(NodeConfig, [u8; 6], [u8; 6], u16)> {
    let node = NODE.get(0).copied()?;
    if node.flags & (NODE_ENABLED | NODE_CONFIRM_FLOWS) != NODE_ENABLED | NODE_CONFIRM_FLOWS {
        return None;
    }
    let Frame { src, dst, proto, .. } = frame(ctx)?;
    (proto == ETH_P_IP || proto == ETH_P_IPV6).then_some((node, src, dst, proto))
}

/// Egress: confirms the frame's flow direction, of either family (see [`confirm`]).
#[inline(always)]
pub fn confirm_frame(
    ctx: &TcContext,
    node: &NodeConfig,
    proto: u16,
    out_ifindex: u32,
    out_kind: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
) {
    if proto == ETH_P_IP {
        if let Some(flow) = parse(ctx, node) {
            confirm(ctx, node, &flow, out_ifindex, out_kind, src_mac, dst_mac);
        }
    } else if let Some(flow) = parse6(ctx, node) {
        confirm(ctx, node, &flow, out_ifindex, out_kind, src_mac, dst_mac);
    }
}

/// Egress: the bridge delivered this frame to `out_ifindex`. If an ingress program saw the
/// very same frame recently, netfilter let the direction through unchanged: confirm it.
#[inline(always)]
pub fn confirm<K: Tracked>(
    ctx: &TcContext,
    node: &NodeConfig,
    flow: &Flow<K>,
    out_ifindex: u32,
    out_kind: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
) {
    if !flow.is_steady() {
        return;
    }
    // SAFETY: the value is copied out of the map.
    let Some(seen) = unsafe { K::flows().get(flow.key) }.copied() else {
        return;
    };
    let time = now_ns();
    if !may_confirm(&seen, out_ifindex, src_mac, dst_mac, time, node.revalidate_ns) {
        return;
    }
    let mut record = FlowConfirmed {
        confirmed_ns: time,
        out_ifindex,
        out_kind,
        in_ifindex: seen.in_ifindex,
        paired: 0,
        src_mac: *src_mac,
        dst_mac: *dst_mac,
        _pad: [0; 4],
    };
    // A direction that stays on the bridge (one-way UDP, or one whose reverse is not
    // confirmed yet) passes here with every frame: its confirmation is written again only
    // when it changes or a quarter of the revalidation period has passed, as `seen` does.
    if let Some(old) = K::confirmed().get_ptr(flow.key)
        // SAFETY: a pointer from a lookup, read at once.
        && still_confirmed(unsafe { &*old }, &record, node.revalidate_ns / 4)
    {
        return;
    }
    let reverse = flow.key.reversed();
    let back = K::confirmed().get_ptr(reverse);
    let back_seen = K::flows().get_ptr(reverse);
    let paired = match (back, back_seen) {
        // SAFETY: pointers from lookups, read at once.
        (Some(back), Some(back_seen)) => mirrors(
            unsafe { &*back },
            unsafe { &*back_seen },
            &seen,
            out_ifindex,
            time,
        ),
        _ => false,
    };
    record.paired = u32::from(paired);
    if K::confirmed().insert(flow.key, record, 0).is_ok() {
        count(ctx, Verdict::FlowConfirmed);
    }
    // The reverse direction was confirmed first, when this one was not yet: it pairs now.
    if paired && let Some(back) = back {
        // SAFETY: as above; the entry is copied, changed and written whole.
        let mut other = unsafe { *back };
        if other.paired == 0 {
            other.paired = 1;
            let _ = K::confirmed().insert(reverse, other, 0);
        }
    }
}
