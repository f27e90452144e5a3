//! The kernel/userspace ABI of flatbridge: every type stored in a BPF map, the counter
//! indices, the map names and where they are pinned. Both the no_std eBPF programs and
//! the plugin compile this crate, so a change here changes both sides at once.
//!
//! Rules: `#[repr(C)]`, fields largest first, explicit `_pad` fields so no uninitialised
//! padding reaches a map key, no `bool`. Every type has a size assertion.
#![no_std]

use core::mem::size_of;

/// Directory under the BPF filesystem root that holds everything flatbridge pins:
/// `<bpf_root>/flatbridge/<network>/{maps,programs,links}`.
pub const PIN_DIR: &str = "flatbridge";

/// Names of the maps as they appear in the object file, in `bpftool map show` and as
/// file names of their pins.
pub mod map_name {
    /// Per-CPU packet and byte counters, indexed by [`super::Verdict`].
    pub const COUNTERS: &str = "counters";
}

/// Names of the tc programs in the object file.
pub mod program_name {
    /// tc ingress of a pod's host-side veth: frames the pod sends.
    pub const FROM_POD: &str = "from_pod";
}

/// What a program did with a frame. The value is the index of its counter in
/// [`map_name::COUNTERS`]. Values are never reused: a retired verdict keeps its number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: handed to the bridge unchanged (TC_ACT_OK).
    PassToBridge = 0,
}

impl Verdict {
    /// Every verdict, in counter order, for readers of the counter map.
    pub const ALL: [Verdict; 1] = [Verdict::PassToBridge];

    /// Short name used by `flatbridge status` and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::PassToBridge => "pass_to_bridge",
        }
    }
}

/// Number of slots in the counter map. Larger than the number of verdicts so that new
/// verdicts fit into maps pinned by an older version without re-creating them.
pub const COUNTER_SLOTS: u32 = 64;

/// One counter slot (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, `#[repr(C)]`, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::Counter {}
}
