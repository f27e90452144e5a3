//! tc ingress of a pod's host-side veth: every frame the pod sends passes here first.
//! ARP requests for local pods and the gateway are answered here; frames with a source that
//! is not the pod's own are dropped. IPv4 unicast of a flow netfilter accepted (flow.rs)
//! goes straight into the target pod or out of the uplink; in "always" mode every IPv4
//! unicast frame for a local pod's MAC does. Everything else — broadcast, multicast, IPv6,
//! tagged, malformed, for the node, not (yet) confirmed — goes to the bridge as it is.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{
    Endpoint, Ipv4, Mac, NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NodeConfig, OFFLOADED_MARK, OUT_POD, Verdict,
};

use crate::{
    arp,
    counters::{count, finish},
    flow,
    maps::{GATEWAYS, PODS_BY_IP, PODS_BY_MAC, PORTS, enabled_node},
    parse::{
        ArpIpv4, ETH_HLEN, ETH_P_ARP, ETH_P_IP, EthHdr, Frame, Ipv4Hdr, ethernet, header, ifindex, is_group,
        mark, same_mac,
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
    let (Some(node), Some(Frame { eth, src, dst, proto })) = (enabled_node(), ethernet(ctx)) else {
        return pass(ctx);
    };
    let port_ifindex = ifindex(ctx);
    // SAFETY: the value is copied out of the map; the plugin writes entries whole.
    let port: Option<Endpoint> = unsafe { PORTS.get(port_ifindex) }.copied();
    let check = if node.flags & NODE_ANTI_SPOOF != 0 {
        port
    } else {
        None
    };
    if let Some(pod) = &check
        && !same_mac(&src, &pod.mac)
    {
        return Err(Verdict::DropSpoofedMac);
    }
    match proto {
        ETH_P_ARP => arp_from_pod(ctx, eth, port_ifindex, check.as_ref()),
        ETH_P_IP => ipv4_from_pod(ctx, &node, &src, &dst, port_ifindex, check.as_ref()),
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
    let Some(request) = arp::request(ctx) else {
        // Replies and odd ARP: check the sender if we can, then let the bridge carry it.
        return arp_sender_checked(ctx, port_ifindex, check).and_then(|()| pass(ctx));
    };
    arp_sender_checked(ctx, port_ifindex, check)?;
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
        None => unsafe { GATEWAYS.get(target) }.map(|mac: &Mac| mac.addr),
    };
    match answer {
        Some(mac) => arp::answer(ctx, eth, request, &mac, port_ifindex, Verdict::PodArpAnswered),
        None => pass(ctx),
    }
}

/// With anti-spoofing on, an ARP packet must carry the pod's own MAC and one of its own
/// addresses (or 0.0.0.0, as an address probe does).
#[inline(always)]
fn arp_sender_checked(ctx: &TcContext, port_ifindex: u32, check: Option<&Endpoint>) -> Result<(), Verdict> {
    let Some(pod) = check else {
        return Ok(());
    };
    let Some(arp) = header::<ArpIpv4>(ctx, ETH_HLEN) else {
        return Ok(());
    };
    // SAFETY: bounds-checked just above.
    let (sha, spa) = unsafe { ((*arp).sha, (*arp).spa) };
    if !same_mac(&sha, &pod.mac) {
        return Err(Verdict::DropSpoofedArp);
    }
    if spa != [0; 4] && !owns(port_ifindex, spa) {
        return Err(Verdict::DropSpoofedArp);
    }
    Ok(())
}

/// True when `src_ip` is one of the pod's addresses: its first is in its port entry, others
/// take a lookup. A function of its own, called only when there is an entry: merged into
/// the caller, the compiler may read the entry's fields on the path where there is none,
/// which the verifier refuses.
#[inline(never)]
fn source_allowed(pod: &Endpoint, port_ifindex: u32, src_ip: [u8; 4]) -> bool {
    src_ip == pod.ipv4 || owns(port_ifindex, src_ip)
}

/// True when `ip` is an address of the pod behind `port_ifindex`.
#[inline(always)]
fn owns(port_ifindex: u32, ip: [u8; 4]) -> bool {
    // SAFETY: the value is read and not kept.
    unsafe { PODS_BY_IP.get(Ipv4 { addr: ip }) }.is_some_and(|pod| pod.ifindex == port_ifindex)
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
    let Some(ip) = header::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return pass(ctx);
    };
    // SAFETY: bounds-checked by `header`.
    let src_ip = unsafe { (*ip).src };
    if let Some(pod) = spoof_check
        && !source_allowed(pod, port_ifindex, src_ip)
    {
        return Err(Verdict::DropSpoofedIp);
    }
    if is_group(dst) || same_mac(dst, &node.bridge_mac) {
        return pass(ctx);
    }
    if node.flags & NODE_CONFIRM_FLOWS != 0 {
        let Some(flow) = flow::parse(ctx, node) else {
            return pass(ctx);
        };
        return match flow::seen(ctx, node, &flow, port_ifindex, src, dst) {
            Some(out) if out.out_kind == OUT_POD => {
                redirect::to_pod(ctx, node, out.out_ifindex, Verdict::PodToPod)
            }
            Some(out) => to_uplink(ctx, out.out_ifindex),
            None => pass(ctx),
        };
    }
    // "always" mode: every frame for a local pod's MAC goes straight to it.
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
