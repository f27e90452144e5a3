//! Simulated nodes for the integration tests, the demo and the benchmarks: worlds of
//! network namespaces and BPF filesystems that exist for one test (or one demo run) and
//! disappear with it, also when it panics.
//!
//! Every namespace and mount is named `fbt-<tag>-<pid>-<n>`, unique per test, so tests run
//! in parallel; leftovers of a killed run are swept when the next run starts. Commands run
//! in a namespace with `nsenter --net`, not `ip netns exec`, which would remount /sys and
//! hide the BPF filesystem.
pub mod bpffs;
pub mod fabric;
pub mod frames;
pub mod netfilter;
pub mod netns;
pub mod node;
pub mod pod;
pub mod raw;
pub mod snapshot;
pub mod sockets;
pub mod sweep;
pub mod tempdir;
pub mod traffic;

pub use bpffs::BpfFs;
pub use netns::Netns;
pub use node::{CniEnv, Node, Reply};
pub use pod::{Pod, VERSIONS, dual_stack_config, seed_config, with_prev_result};
pub use tempdir::TempDir;

use std::{
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

/// Fails the test unless it runs as root: the tests must never skip silently.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "integration tests create namespaces and load BPF programs: run them as root \
         (`cargo xtask test`)"
    );
    sweep::once();
}

/// A name no other test of this or a concurrent run uses: `fbt-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "fbt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Panics with the command's output unless it succeeded; returns its stdout.
pub fn check(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
