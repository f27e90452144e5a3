//! tc ingress of the uplink: frames from the wire. The sender of every ARP frame is
//! remembered (`arp_claims`: what ADD's address probes and the conflict report read), and
//! the user of an IPv6 address neighbour discovery names (`nd_claims`, the same for IPv6); ARP
//! requests and IPv6 neighbour solicitations for a local pod's address are answered from the
//! maps, out of the uplink. IPv4 and IPv6 unicast of a flow netfilter accepted (flow.rs)
//! goes straight into its pod; in "always" mode every IPv4 and IPv6 unicast frame for a
//! local pod's MAC does. Everything else goes to the bridge as it is.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{ArpClaim, Ipv4, Ipv6, Mac, NODE_CONFIRM_FLOWS, NodeConfig, OUT_POD, Verdict};

use crate::{
    arp,
    counters::{count, finish},
    flow::{self, now_ns},
    maps::{ARP_CLAIMS, ND_CLAIMS, ND_PROBES, PODS_BY_IP, PODS_BY_IPV6, PODS_BY_MAC, enabled_node},
    ndp,
    parse::{
        ARPOP_REQUEST, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, ethernet,
        header, ifindex, is_group, same_mac,
    },
    redirect,
};

/// Attached to tc ingress (a pinned TCX link, or a clsact filter without TCX) of the bridge's uplink port, before the bridge sees the
/// frame.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let result = try_from_uplink(&ctx);
    finish(&ctx, result)
}

fn pass(ctx: &TcContext) -> Result<i32, Verdict> {
    count(ctx, Verdict::UplinkToBridge);
    Ok(TC_ACT_OK)
}

#[inline(always)]
fn try_from_uplink(ctx: &TcContext) -> Result<i32, Verdict> {
    let Some(Frame { eth, src, dst, proto }) = ethernet(ctx) else {
        return pass(ctx);
    };
    if proto == ETH_P_ARP {
        // Claims are remembered whatever the node's settings: ADD reads them before the
        // first pod has enabled the datapath.
        return arp_from_wire(ctx, eth);
    }
    if proto == ETH_P_IPV6 && is_group(&dst) {
        // Neighbour discovery claims are remembered whatever the settings too.
        return nd_from_wire(ctx);
    }
    let Some(node) = enabled_node() else {
        return pass(ctx);
    };
    let confirm = node.flags & NODE_CONFIRM_FLOWS != 0;
    match proto {
        ETH_P_IP if !is_group(&dst) && confirm => match flow::parse(ctx, &node) {
            Some(flow) => from_wire(ctx, &node, &flow, &src, &dst),
            None => pass(ctx),
        },
        ETH_P_IPV6 if !is_group(&dst) && confirm => match flow::parse6(ctx, &node) {
            Some(flow) => from_wire(ctx, &node, &flow, &src, &dst),
            None => pass(ctx),
        },
        // "always" mode, for frames with a whole IPv4 or IPv6 header: a truncated one goes
        // to the bridge, whose netfilter drops it (5.10's test runs hand programs such frames).
        ETH_P_IP if !is_group(&dst) && header::<Ipv4Hdr>(ctx, ETH_HLEN).is_some() => always(ctx, &node, &dst),
        ETH_P_IPV6 if !is_group(&dst) && header::<Ipv6Hdr>(ctx, ETH_HLEN).is_some() => {
            always(ctx, &node, &dst)
        }
        _ => pass(ctx),
    }
}

/// A flow from the wire: into its pod when offloaded, recorded when it is for a local pod.
#[inline(always)]
fn from_wire<K: flow::Tracked>(
    ctx: &TcContext,
    node: &NodeConfig,
    flow: &flow::Flow<K>,
    src: &[u8; 6],
    dst: &[u8; 6],
) -> Result<i32, Verdict> {
    let (in_ifindex, time) = (ifindex(ctx), now_ns());
    if let Some(out) = flow::offloaded(node, flow, in_ifindex, src, dst, time)
        && out.out_kind == OUT_POD
    {
        return redirect::to_pod(ctx, node, out.out_ifindex, Verdict::UplinkToPod);
    }
    // Only frames for a local pod are flows to record: the node's own traffic and unicast
    // the switch floods to every port would only take room in the flow maps.
    // SAFETY: the value is read and not kept.
    if !same_mac(dst, &node.bridge_mac) && unsafe { PODS_BY_MAC.get(Mac::new(*dst)) }.is_some() {
        flow::record(ctx, node, flow, in_ifindex, src, dst, time);
    }
    pass(ctx)
}

/// "always" mode: a frame for a local pod's MAC goes straight into it.
#[inline(always)]
fn always(ctx: &TcContext, node: &NodeConfig, dst: &[u8; 6]) -> Result<i32, Verdict> {
    // SAFETY: the value is copied out of the map.
    match unsafe { PODS_BY_MAC.get(Mac::new(*dst)) }.copied() {
        Some(pod) => redirect::to_pod(ctx, node, pod.ifindex, Verdict::UplinkToPod),
        None => pass(ctx),
    }
}

/// Remembers who neighbour discovery from the wire says uses an IPv6 address the plugin
/// probed or a local pod has (and counts a claim of a pod's address under another MAC),
/// then answers a solicitation for a local pod's address, out of the uplink. Only those
/// addresses: every other IPv6 address of a busy wire would crowd the answers to the
/// plugin's probes out of the LRU map.
#[inline(always)]
fn nd_from_wire(ctx: &TcContext) -> Result<i32, Verdict> {
    if let Some(claim) = ndp::claim(ctx) {
        let user = Ipv6 { addr: claim.addr };
        let remembered = ArpClaim {
            seen_ns: now_ns(),
            mac: claim.mac,
            op: u16::from(claim.icmp_type),
        };
        // SAFETY (both): the values are read and not kept. Two lookups, not one test of
        // both (the verifier refuses the OR of two map value pointers that makes).
        if let Some(pod) = unsafe { PODS_BY_IPV6.get(user) } {
            // As for ARP: a failed insert costs one remembered claim.
            let _ = ND_CLAIMS.insert(user, remembered, 0);
            if !same_mac(&pod.mac, &claim.mac) {
                count(ctx, Verdict::UplinkNdConflict);
            }
        } else if unsafe { ND_PROBES.get(user) }.is_some() {
            let _ = ND_CLAIMS.insert(user, remembered, 0);
        }
    }
    if enabled_node().is_none() {
        return pass(ctx);
    }
    let Some(asked) = ndp::solicitation(ctx) else {
        return pass(ctx);
    };
    // SAFETY: the value is copied out of the map.
    match unsafe { PODS_BY_IPV6.get(Ipv6 { addr: asked.target }) }.copied() {
        Some(pod) => ndp::answer(
            ctx,
            &asked,
            &pod.mac,
            false,
            ifindex(ctx),
            Verdict::UplinkNdAnswered,
        ),
        None => pass(ctx),
    }
}

/// Remembers who claims the sender address (and counts a claim of a local pod's address
/// under another MAC), then answers a request for a local pod's address out of the uplink.
#[inline(always)]
fn arp_from_wire(ctx: &TcContext, eth: *mut EthHdr) -> Result<i32, Verdict> {
    let Some(arp) = arp::packet(ctx) else {
        return pass(ctx);
    };
    // SAFETY: bounds-checked by `arp::packet`.
    let (op, sender_mac, sender_ip, target_ip) = unsafe { ((*arp).op, (*arp).sha, (*arp).spa, (*arp).tpa) };
    if sender_ip != [0; 4] {
        let sender = Ipv4 { addr: sender_ip };
        let claim = ArpClaim {
            seen_ns: now_ns(),
            mac: sender_mac,
            op: u16::from_be(op),
        };
        // An LRU insert never fails for want of room; a failure costs one remembered claim.
        let _ = ARP_CLAIMS.insert(sender, claim, 0);
        // SAFETY: the value is read and not kept.
        if let Some(pod) = unsafe { PODS_BY_IP.get(sender) }
            && !same_mac(&pod.mac, &sender_mac)
        {
            count(ctx, Verdict::UplinkArpConflict);
        }
    }
    if op != ARPOP_REQUEST.to_be() || sender_ip == target_ip || enabled_node().is_none() {
        return pass(ctx);
    }
    // SAFETY: the value is copied out of the map.
    match unsafe { PODS_BY_IP.get(Ipv4 { addr: target_ip }) }.copied() {
        Some(pod) => arp::answer(ctx, eth, arp, &pod.mac, ifindex(ctx), Verdict::UplinkArpAnswered),
        None => pass(ctx),
    }
}
