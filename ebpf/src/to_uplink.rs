//! tc egress of the uplink: the frames the bridge sends to the wire, after netfilter and
//! NAT. It changes nothing but its own mark bit; it confirms flow directions (see flow.rs).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{Mac, OFFLOADED_MARK, OUT_UPLINK};

use crate::{
    flow,
    maps::PODS_BY_MAC,
    parse::{ifindex, is_group, mark},
};

/// Attached to tc egress (a pinned TCX link) of the uplink. Unlike a pod's veth, frames the fast path
/// redirects to the uplink do pass this hook; they carry `OFFLOADED_MARK`, which is removed
/// here and keeps them from confirming anything.
#[classifier]
pub fn to_uplink(ctx: TcContext) -> i32 {
    let marked = mark(&ctx);
    if marked & OFFLOADED_MARK != 0 {
        ctx.set_mark(marked & !OFFLOADED_MARK);
        return TC_ACT_OK;
    }
    confirm_for_wire(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn confirm_for_wire(ctx: &TcContext) {
    let Some((node, src, dst, proto)) = flow::egress(ctx) else {
        return;
    };
    // A frame for a local pod that the bridge floods to the wire is not meant for the wire.
    // SAFETY: the value is read and not kept.
    if is_group(&dst) || unsafe { PODS_BY_MAC.get(Mac::new(dst)) }.is_some() {
        return;
    }
    flow::confirm_frame(ctx, &node, proto, ifindex(ctx), OUT_UPLINK, &src, &dst);
}
