//! The eBPF datapath seen from userspace: where it is pinned (`pins`), loading and
//! upgrading the embedded object once per network (`loader`), attaching its programs to
//! devices (`attach`), reading and writing its maps (`maps`) and sending frames through it
//! (`inject`). Knows nothing of CNI.
mod attach;
mod inject;
mod loader;
mod maps;
mod pins;
mod sys;

#[cfg(feature = "fault-injection")]
pub use crate::kernel::pretend_no_tcx;
pub use attach::{Attachment, Detached};
pub use loader::Datapath;
pub use maps::{Tracked, VerdictCount};
pub use pins::{PinLayout, ensure_bpffs};

use std::path::PathBuf;

/// The object built by `cargo xtask build-ebpf`, embedded at build time (see build.rs).
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("FLATBRIDGE_BPF_OBJECT"));

/// A fingerprint of [`BPF_OBJECT`]: which build of the programs a node runs.
pub const BPF_OBJECT_HASH: &str = env!("FLATBRIDGE_BPF_HASH");

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot use {path} as the BPF filesystem: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("failed to {action} program {program}: {source}")]
    Program {
        action: &'static str,
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("failed to handle the TCX link of {program} on {ifname}: {source}")]
    Link {
        program: String,
        ifname: String,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("failed to pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("failed to open pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "the {what} is already used by another pod of network {network} on this node (host veth {holder}); \
         a pod cannot take over another's"
    )]
    Taken {
        network: String,
        what: String,
        holder: String,
    },
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error("the datapath of network {network} is not loaded (no {path})")]
    NotLoaded { network: String, path: PathBuf },
    #[error(
        "the maps pinned in {dir} have layout {found}, this build needs layout {expected}: remove {dir} \
         (pods keep working through the bridge) so that the next ADD loads this build, then re-add the pods"
    )]
    IncompatibleMaps {
        dir: PathBuf,
        found: String,
        expected: u32,
    },
}
