//! tc egress of a pod's host-side veth: the frames the bridge delivers to the pod, after
//! netfilter and NAT. It changes nothing; it confirms flow directions (see flow.rs).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::OUT_POD;

use crate::{
    flow,
    maps::PORTS,
    parse::{ifindex, same_mac},
};

/// Attached to tc egress of each pod's host veth (a clsact filter). Frames sent with
/// `bpf_redirect_peer` never pass here, so only frames that went through the bridge (and
/// netfilter) can confirm a flow. A frame confirms only for the pod it is addressed to: a
/// frame the bridge floods to every port (its FDB forgot the MAC) confirms nothing.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
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
