//! The two ways a frame leaves the fast path: out of a device (`bpf_redirect`, to its
//! egress) or into a pod (`bpf_redirect_peer`, to the ingress of the veth peer inside the
//! pod's namespace). Both count the frame under `verdict`. With flags 0 the helpers never
//! refuse: a target that vanished drops the frame later, in the kernel (see flow.rs for why
//! a vanished pod is never a target).
use aya_ebpf::{
    cty::c_long,
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use flatbridge_common::{NODE_SET_PKT_TYPE, NodeConfig, Verdict};

use crate::{counters::count, parse::PACKET_HOST};

#[inline(always)]
fn done(ctx: &TcContext, action: c_long, verdict: Verdict) -> Result<i32, Verdict> {
    count(ctx, verdict);
    // TC_ACT_REDIRECT, always (see above); the helper's own value is what tc acts on.
    Ok(action as i32)
}

/// Out of device `ifindex` (its egress).
#[inline(always)]
pub fn to_device(ctx: &TcContext, ifindex: u32, verdict: Verdict) -> Result<i32, Verdict> {
    // SAFETY: a plain helper call; it only records where the frame goes.
    let action = unsafe { bpf_redirect(ifindex, 0) };
    done(ctx, action, verdict)
}

/// Into the pod behind host veth `ifindex`. Only valid from tc ingress. Before 6.15 the
/// kernel keeps the pkt_type computed against the receiving device's MAC
/// (PACKET_OTHERHOST), which the pod would drop: there (`node.flags` has
/// NODE_SET_PKT_TYPE) the frame is marked as the host's; later kernels do it themselves.
#[inline(always)]
pub fn to_pod(ctx: &TcContext, node: &NodeConfig, ifindex: u32, verdict: Verdict) -> Result<i32, Verdict> {
    if node.flags & NODE_SET_PKT_TYPE != 0 {
        let _ = ctx.change_type(PACKET_HOST);
    }
    // SAFETY: a plain helper call.
    let action = unsafe { bpf_redirect_peer(ifindex, 0) };
    done(ctx, action, verdict)
}
