//! tc ingress of the uplink: frames from the wire. ARP requests for a local pod's address
//! are answered from the map, out of the uplink. IPv4 unicast of a flow netfilter accepted
//! (flow.rs) goes straight into its pod; in "always" mode every IPv4 unicast frame for a
//! local pod's MAC does. Everything else goes to the bridge as it is.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{Ipv4, Mac, NODE_CONFIRM_FLOWS, OUT_POD, Verdict};

use crate::{
    arp,
    counters::{count, finish},
    flow,
    maps::{PODS_BY_IP, PODS_BY_MAC, enabled_node},
    parse::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, Frame, Ipv4Hdr, ethernet, header, ifindex, is_group},
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
    let (Some(node), Some(Frame { eth, src, dst, proto })) = (enabled_node(), ethernet(ctx)) else {
        return pass(ctx);
    };
    match proto {
        ETH_P_ARP => {
            let Some(request) = arp::request(ctx) else {
                return pass(ctx);
            };
            // SAFETY: bounds-checked by `arp::request`.
            let (sender_ip, target_ip) = unsafe { ((*request).spa, (*request).tpa) };
            if sender_ip == target_ip {
                return pass(ctx);
            }
            // SAFETY: the value is copied out of the map.
            match unsafe { PODS_BY_IP.get(Ipv4 { addr: target_ip }) }.copied() {
                Some(pod) => arp::answer(
                    ctx,
                    eth,
                    request,
                    &pod.mac,
                    ifindex(ctx),
                    Verdict::UplinkArpAnswered,
                ),
                None => pass(ctx),
            }
        }
        ETH_P_IP if !is_group(&dst) && node.flags & NODE_CONFIRM_FLOWS != 0 => {
            let Some(flow) = flow::parse(ctx, &node) else {
                return pass(ctx);
            };
            match flow::seen(ctx, &node, &flow, ifindex(ctx), &src, &dst) {
                Some(out) if out.out_kind == OUT_POD => {
                    redirect::to_pod(ctx, &node, out.out_ifindex, Verdict::UplinkToPod)
                }
                _ => pass(ctx),
            }
        }
        ETH_P_IP if !is_group(&dst) => {
            // "always" mode, for frames with a whole IPv4 header: a truncated one goes to the
            // bridge, whose netfilter drops it (5.10's test runs hand programs such frames).
            if header::<Ipv4Hdr>(ctx, ETH_HLEN).is_none() {
                return pass(ctx);
            }
            // SAFETY: the value is copied out of the map.
            match unsafe { PODS_BY_MAC.get(Mac::new(dst)) }.copied() {
                Some(pod) => redirect::to_pod(ctx, &node, pod.ifindex, Verdict::UplinkToPod),
                None => pass(ctx),
            }
        }
        _ => pass(ctx),
    }
}
