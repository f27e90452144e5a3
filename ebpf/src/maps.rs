//! Every map of the datapath: the whole kernel/userspace ABI on one screen. The types live
//! in `flatbridge-common`; the plugin pins these maps under `<bpf_root>/flatbridge/<network>/`.
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use flatbridge_common::{COUNTER_SLOTS, Counter};

/// Packets and bytes per [`flatbridge_common::Verdict`], per CPU so that no two programs
/// ever race on a slot.
#[btf_map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counter, { COUNTER_SLOTS as usize }> = PerCpuArray::new();
