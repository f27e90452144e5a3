//! tc egress of a pod's host-side veth: the frames the bridge delivers to the pod, after
//! netfilter and NAT. It changes nothing; it confirms flow directions (see flow.rs), and
//! keeps a pod's own neighbour advertisement from coming back to it.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use flatbridge_common::{OUT_POD, Verdict};

use crate::{
    counters::count,
    flow,
    maps::PORTS,
    ndp,
    parse::{ifindex, same_mac},
};

/// Attached to tc egress of each pod's host veth (a clsact filter). Frames sent with
/// `bpf_redirect_peer` never pass here, so only frames that went through the bridge (and
/// netfilter) can confirm a flow. A frame confirms only for the pod it is addressed to: a
/// frame the bridge floods to every port (its FDB forgot the MAC) confirms nothing.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    // ADD announces a new pod's IPv6 addresses as the pod, from the bridge, which floods
    // the advertisement to every port, the pod's own included: its kernel would take its
    // own MAC advertising its own address for another host's (a kernel warning per
    // announcement, and a failed duplicate address detection while the address is
    // tentative). A pod never needs its own advertisement back.
    if let Some(sender) = ndp::advertisement_sender(&ctx)
        // SAFETY: the value is read and not kept.
        && unsafe { PORTS.get(ifindex(&ctx)) }.is_some_and(|pod| same_mac(&pod.mac, &sender))
    {
        count(&ctx, Verdict::DropOwnAdvertisement);
        return TC_ACT_SHOT;
    }
    confirm_for_pod(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn confirm_for_pod(ctx: &TcContext) {
    let Some((node, src, dst, proto)) = flow::egress(ctx) else {
        return;
    };
    let port = ifindex(ctx);
    // SAFETY: the value is copied out of the map.
    let is_for_this_pod = unsafe { PORTS.get(port) }.is_some_and(|pod| same_mac(&pod.mac, &dst));
    if !is_for_this_pod {
        return;
    }
    flow::confirm_frame(ctx, &node, proto, port, OUT_POD, &src, &dst);
}
