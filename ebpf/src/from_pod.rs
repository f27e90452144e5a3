//! tc ingress of a pod's host-side veth: every frame the pod sends passes here first.
//! With anti-spoofing on (the default), or without the node's settings, every frame is
//! checked first (isolation.rs): what fails a check is dropped and counted. ARP requests
//! and IPv6 neighbour solicitations for local pods and the gateway are answered here (arp.rs,
//! ndp.rs). IPv4 and IPv6 unicast of a flow netfilter accepted (flow.rs) goes straight
//! into the target pod or out of the uplink; in "always" mode every IPv4 and IPv6 unicast
//! frame for a local pod's MAC does. Everything else — broadcast, multicast, for the node,
//! not (yet) confirmed — goes to the bridge as it is.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{
    Endpoint, FlowConfirmed, Ipv4, Ipv6, Mac, NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NodeConfig,
    OFFLOADED_MARK, OUT_POD, Verdict,
};

use crate::{
    arp,
    counters::{count, finish},
    flow, isolation,
    maps::{GATEWAYS, GATEWAYS_V6, PODS_BY_IP, PODS_BY_IPV6, PODS_BY_MAC, enabled_node},
    ndp,
    parse::{
        ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, ethernet, header,
        ifindex, is_group, mark, same_mac,
    },
    redirect,
};

/// Attached to tc ingress of each pod's host veth (a clsact filter, see the loader). Ingress, because
/// `bpf_redirect_peer` only works from there, and because it sees the frame exactly as the
/// pod sent it.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let result = try_from_pod(&ctx);
    finish(&ctx, result)
}

fn pass(ctx: &TcContext) -> Result<i32, Verdict> {
    count(ctx, Verdict::PodToBridge);
    Ok(TC_ACT_OK)
}

#[inline(always)]
fn try_from_pod(ctx: &TcContext) -> Result<i32, Verdict> {
    let port_ifindex = ifindex(ctx);
    // No settings: before the first ADD's endpoint (its port's programs go on first, with
    // the port down), or because something cleared them. Fail closed: check as
    // anti-spoofing does (which drops the frames of a port with no endpoint), offload
    // nothing.
    let Some(node) = enabled_node() else {
        let (frame, pod) = isolation::checked_frame(ctx, port_ifindex)?;
        match frame.proto {
            ETH_P_ARP => isolation::arp(ctx, &pod, port_ifindex)?,
            ETH_P_IP => isolation::ipv4(ctx, &pod, port_ifindex)?,
            ETH_P_IPV6 => isolation::ipv6(ctx, &pod, port_ifindex)?,
            _ => return Err(Verdict::DropUnknownL3),
        }
        return pass(ctx);
    };
    let (Frame { eth, src, dst, proto }, pod) = if node.flags & NODE_ANTI_SPOOF != 0 {
        let (frame, pod) = isolation::checked_frame(ctx, port_ifindex)?;
        (frame, Some(pod))
    } else {
        match ethernet(ctx) {
            Some(frame) => (frame, None),
            None => return pass(ctx),
        }
    };
    match proto {
        ETH_P_ARP => arp_from_pod(ctx, eth, port_ifindex, pod.as_ref()),
        ETH_P_IP => ipv4_from_pod(ctx, &node, &src, &dst, port_ifindex, pod.as_ref()),
        ETH_P_IPV6 => {
            if let Some(pod) = &pod {
                isolation::ipv6(ctx, pod, port_ifindex)?;
            }
            ipv6_from_pod(ctx, &node, &src, &dst, port_ifindex)
        }
        _ if pod.is_some() => Err(Verdict::DropUnknownL3),
        _ => pass(ctx),
    }
}

/// Checks the sender and answers requests for local pods and the gateway.
#[inline(always)]
fn arp_from_pod(
    ctx: &TcContext,
    eth: *mut EthHdr,
    port_ifindex: u32,
    check: Option<&Endpoint>,
) -> Result<i32, Verdict> {
    let eth = match check {
        Some(pod) => {
            isolation::arp(ctx, pod, port_ifindex)?;
            // The check may have pulled the frame in, which moves it.
            match crate::parse::frame(ctx) {
                Some(frame) => frame.eth,
                None => return Err(Verdict::DropMalformed),
            }
        }
        None => eth,
    };
    let Some(request) = arp::request(ctx) else {
        return pass(ctx);
    };
    // SAFETY: `arp::request` bounds-checked the ARP header.
    let (sender_ip, target_ip) = unsafe { ((*request).spa, (*request).tpa) };
    // A gratuitous ARP announces the sender; it is not a question.
    if sender_ip == target_ip {
        return pass(ctx);
    }
    let target = Ipv4 { addr: target_ip };
    // SAFETY: values are copied out of the maps.
    let answer = match unsafe { PODS_BY_IP.get(target) } {
        // A pod asking for its own address (duplicate address detection) gets no answer.
        Some(pod) if pod.ifindex == port_ifindex => None,
        Some(pod) => Some(pod.mac),
        None => unsafe { GATEWAYS.get(target) }.map(|gateway| gateway.mac),
    };
    match answer {
        Some(mac) => arp::answer(ctx, eth, request, &mac, port_ifindex, Verdict::PodArpAnswered),
        None => pass(ctx),
    }
}

/// Answers a neighbour solicitation for a local pod or the gateway (the gateway's answer
/// says it is a router); passes the others to the bridge.
#[inline(always)]
fn nd_from_pod(ctx: &TcContext, asked: &ndp::Solicitation, port_ifindex: u32) -> Result<i32, Verdict> {
    let target = Ipv6 { addr: asked.target };
    // SAFETY: values are copied out of the maps.
    let answer = match unsafe { PODS_BY_IPV6.get(target) } {
        // A pod asking for its own address is not told it is there.
        Some(pod) if pod.ifindex == port_ifindex => None,
        Some(pod) => Some((pod.mac, false)),
        None => unsafe { GATEWAYS_V6.get(target) }.map(|gateway| (gateway.mac, true)),
    };
    match answer {
        Some((mac, router)) => ndp::answer(ctx, asked, &mac, router, port_ifindex, Verdict::PodNdAnswered),
        None => pass(ctx),
    }
}

#[inline(always)]
fn ipv4_from_pod(
    ctx: &TcContext,
    node: &NodeConfig,
    src: &[u8; 6],
    dst: &[u8; 6],
    port_ifindex: u32,
    spoof_check: Option<&Endpoint>,
) -> Result<i32, Verdict> {
    if let Some(pod) = spoof_check {
        isolation::ipv4(ctx, pod, port_ifindex)?;
    }
    if is_group(dst) || same_mac(dst, &node.bridge_mac) {
        return pass(ctx);
    }
    if node.flags & NODE_CONFIRM_FLOWS != 0 {
        let Some(flow) = flow::parse(ctx, node) else {
            return pass(ctx);
        };
        return take(ctx, node, flow::seen(ctx, node, &flow, port_ifindex, src, dst));
    }
    // "always" mode: every frame for a local pod's MAC with a whole IPv4 header goes
    // straight to it (a truncated one goes to the bridge, whose netfilter drops it).
    if header::<Ipv4Hdr>(ctx, ETH_HLEN).is_none() {
        return pass(ctx);
    }
    always(ctx, node, dst, port_ifindex)
}

/// IPv6 as IPv4: multicast and frames for the node go to the bridge (a neighbour
/// solicitation among them, to a solicited-node group or to the gateway, is answered
/// first), a confirmed flow (or in "always" mode every frame with a whole IPv6 header for a
/// local pod's MAC) bypasses it. A solicitation sent to a pod's own MAC (checking it is
/// still there) is the pod's to answer.
#[inline(always)]
fn ipv6_from_pod(
    ctx: &TcContext,
    node: &NodeConfig,
    src: &[u8; 6],
    dst: &[u8; 6],
    port_ifindex: u32,
) -> Result<i32, Verdict> {
    if is_group(dst) || same_mac(dst, &node.bridge_mac) {
        return match ndp::solicitation(ctx) {
            Some(asked) => nd_from_pod(ctx, &asked, port_ifindex),
            None => pass(ctx),
        };
    }
    if node.flags & NODE_CONFIRM_FLOWS != 0 {
        let Some(flow) = flow::parse6(ctx, node) else {
            return pass(ctx);
        };
        return take(ctx, node, flow::seen(ctx, node, &flow, port_ifindex, src, dst));
    }
    if header::<Ipv6Hdr>(ctx, ETH_HLEN).is_none() {
        return pass(ctx);
    }
    always(ctx, node, dst, port_ifindex)
}

/// A confirmed flow's way out, or the bridge.
#[inline(always)]
fn take(ctx: &TcContext, node: &NodeConfig, out: Option<FlowConfirmed>) -> Result<i32, Verdict> {
    match out {
        Some(out) if out.out_kind == OUT_POD => {
            redirect::to_pod(ctx, node, out.out_ifindex, Verdict::PodToPod)
        }
        Some(out) => to_uplink(ctx, out.out_ifindex),
        None => pass(ctx),
    }
}

/// "always" mode: a frame for a local pod's MAC goes straight into it, one for any other
/// MAC out of the uplink.
#[inline(always)]
fn always(ctx: &TcContext, node: &NodeConfig, dst: &[u8; 6], port_ifindex: u32) -> Result<i32, Verdict> {
    // SAFETY: the value is copied out of the map.
    if let Some(target) = unsafe { PODS_BY_MAC.get(Mac::new(*dst)) }.copied() {
        if target.ifindex == port_ifindex {
            // Hairpin: the bridge decides.
            return pass(ctx);
        }
        return redirect::to_pod(ctx, node, target.ifindex, Verdict::PodToPod);
    }
    if node.uplink_ifindex != 0 {
        return to_uplink(ctx, node.uplink_ifindex);
    }
    pass(ctx)
}

/// Out of the uplink, marked so that the uplink's egress program does not take the frame
/// for one the bridge (and netfilter) let through.
#[inline(always)]
fn to_uplink(ctx: &TcContext, uplink_ifindex: u32) -> Result<i32, Verdict> {
    ctx.set_mark(mark(ctx) | OFFLOADED_MARK);
    redirect::to_device(ctx, uplink_ifindex, Verdict::PodToUplink)
}
