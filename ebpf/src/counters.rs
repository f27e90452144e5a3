//! Accounting of every decision a program takes.
use aya_ebpf::programs::TcContext;
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
