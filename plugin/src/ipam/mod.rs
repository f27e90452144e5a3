//! Address management with host-local's semantics and on-disk format, so that leases the
//! reference `host-local` plugin wrote stay valid and the two can share a data directory.
//! Knows nothing of CNI: `cmd/` turns its leases into results.
pub mod allocator;
pub mod config;
pub mod range;
pub mod store;

use std::{net::IpAddr, path::PathBuf};

pub use allocator::{
    Allocation, CONFLICT_RETRY, Conflict, Released, allocate, clear_conflicts, conflicts, mark_conflict,
    release, release_unused, upcoming, usage,
};
pub use config::IpamConfig;
pub use range::{Range, RangeSet};
pub use store::{DiskStore, MemoryStore, Owner, Store, check_writable, read_leases};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid IPAM configuration: {0}")]
    InvalidConfig(String),
    #[error("no free address left in range set {range_set} ({ranges})")]
    Exhausted { range_set: usize, ranges: String },
    #[error("requested address {ip} is not in any range set")]
    RequestedOutOfRange { ip: IpAddr },
    #[error("requested address {ip} is the gateway of its range")]
    RequestedIsGateway { ip: IpAddr },
    #[error("requested address {ip} is already leased to {holder}")]
    RequestedTaken { ip: IpAddr, holder: String },
    #[error("container {owner} already holds {held} in range set {range_set}, not the requested {requested}")]
    HeldOther {
        owner: String,
        held: IpAddr,
        requested: IpAddr,
        range_set: usize,
    },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {seconds} s waiting for the IPAM lock {path}")]
    LockTimeout { path: PathBuf, seconds: u64 },
}
