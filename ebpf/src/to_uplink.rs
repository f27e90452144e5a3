//! tc egress of the uplink: the frames the bridge sends to the wire, after netfilter and
//! NAT. It changes nothing but its own mark bit; it confirms flow directions (see flow.rs).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::{Mac, NODE_CONFIRM_FLOWS, NODE_ENABLED, OFFLOADED_MARK, OUT_UPLINK};

use crate::{
    flow,
    maps::{NODE, PODS_BY_MAC},
    parse::{ETH_P_IP, EthHdr, header, ifindex, is_group, mark},
};

/// Attached to tc egress (TCX) of the uplink. Unlike a pod's veth, frames the fast path
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
    let Some(node) = NODE.get(0).copied() else {
        return;
    };
    if node.flags & (NODE_ENABLED | NODE_CONFIRM_FLOWS) != NODE_ENABLED | NODE_CONFIRM_FLOWS {
        return;
    }
    let Some(eth) = header::<EthHdr>(ctx, 0) else {
        return;
    };
    // SAFETY: bounds-checked by `header`.
    let (src, dst, proto) = unsafe { ((*eth).src, (*eth).dst, u16::from_be((*eth).proto)) };
    // A frame for a local pod that the bridge floods to the wire is not meant for the wire.
    // SAFETY: the value is read and not kept.
    if proto != ETH_P_IP || is_group(&dst) || unsafe { PODS_BY_MAC.get(Mac::new(dst)) }.is_some() {
        return;
    }
    if let Some(flow) = flow::parse(ctx, &node) {
        flow::confirm(ctx, &node, &flow, ifindex(ctx), OUT_UPLINK, &src, &dst);
    }
}
