//! Accounting of every decision, and the single exit for frames that are dropped.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use flatbridge_common::Verdict;

use crate::maps::COUNTERS;

/// Adds the frame to its verdict's per-CPU counter. Only this CPU writes this slot, so a
/// plain add is race-free; readers sum the CPUs.
#[inline(always)]
pub fn count(ctx: &TcContext, verdict: Verdict) {
    if let Some(slot) = COUNTERS.get_ptr_mut(verdict as u32) {
        // SAFETY: the slot belongs to this CPU and lives as long as the map.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(ctx.len());
        }
    }
}

/// Every dropped frame leaves through here: counted under its reason, then shot.
#[inline(always)]
pub fn drop_frame(ctx: &TcContext, reason: Verdict) -> i32 {
    count(ctx, reason);
    TC_ACT_SHOT
}

/// Ends a program: a verdict that is an error drops the frame, anything else was counted
/// by the program and is returned as it is.
#[inline(always)]
pub fn finish(ctx: &TcContext, result: Result<i32, Verdict>) -> i32 {
    match result {
        Ok(action) => action,
        Err(reason) => drop_frame(ctx, reason),
    }
}
