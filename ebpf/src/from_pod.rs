//! tc ingress of a pod's host-side veth: every frame the pod sends passes here first.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use flatbridge_common::Verdict;

use crate::counters::count;

/// Attached to tc ingress (TCX) of each pod's host veth. For now it only accounts for the
/// frame and hands it to the bridge unchanged.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    count(&ctx, Verdict::PassToBridge);
    TC_ACT_OK
}
