//! tc ingress of the uplink: frames from the wire. IPv4 unicast for a local pod's MAC goes
//! straight into the pod; ARP requests for a local pod's address are answered from the
//! map, out of the uplink. Everything else goes to the bridge as it is.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{Ipv4, Mac, NODE_ENABLED, Verdict};

use crate::{
    arp,
    counters::{count, finish},
    maps::{NODE, PODS_BY_IP, PODS_BY_MAC},
    parse::{ETH_P_ARP, ETH_P_IP, EthHdr, has_vlan_tag, header, ifindex, is_group},
    redirect,
};

/// Attached to tc ingress (TCX) of the bridge's uplink port, before the bridge sees the
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
    let enabled = NODE.get(0).is_some_and(|node| node.flags & NODE_ENABLED != 0);
    if !enabled || has_vlan_tag(ctx) {
        return pass(ctx);
    }
    let Some(eth) = header::<EthHdr>(ctx, 0) else {
        return pass(ctx);
    };
    // SAFETY: `header` checked the Ethernet header lies inside the frame.
    let (dst, proto) = unsafe { ((*eth).dst, u16::from_be((*eth).proto)) };
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
        ETH_P_IP if !is_group(&dst) => {
            // SAFETY: the value is copied out of the map.
            match unsafe { PODS_BY_MAC.get(Mac::new(dst)) }.copied() {
                Some(pod) => redirect::to_pod(ctx, pod.ifindex, Verdict::UplinkToPod),
                None => pass(ctx),
            }
        }
        _ => pass(ctx),
    }
}
