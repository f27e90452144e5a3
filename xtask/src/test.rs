//! `cargo xtask test`: what CI runs. Setup, formatting, lints, the eBPF build, a bounded
//! fuzz run, every unit and integration test (the integration tests need root: namespaces
//! and BPF), then the seed recipe on Debian 11's and 12's kernels under qemu
//! (`test_kernel`).
use std::process::Command;

use crate::{
    build::{self, MSRV, nightly_cargo},
    setup,
    util::{exec, root},
};

pub fn run(test_args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    let cargo = env!("CARGO");
    exec(
        Command::new(cargo)
            .args(["fmt", "--all", "--check"])
            .current_dir(root()),
    )?;
    exec(
        nightly_cargo()
            .args(["fmt", "--check"])
            .current_dir(root().join("ebpf")),
    )?;
    // The dependencies' licences and sources, of the workspace and of the eBPF crate.
    for dir in [root(), root().join("ebpf")] {
        exec(
            Command::new(cargo)
                .args(["deny", "check", "licenses", "bans", "sources"])
                .current_dir(dir),
        )?;
    }
    // The Kubernetes manifests against the API's schemas (unknown fields refused).
    let manifests: Vec<_> = std::fs::read_dir(root().join("deploy"))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    exec(
        Command::new(setup::KUBERNETES_VALIDATE)
            .args(["--strict", "--kubernetes-version", "1.30.0"])
            .args(&manifests),
    )?;
    build::ebpf(true)?;
    build::cnitool()?;
    // The declared rust-version, with exactly that toolchain (its own target directory).
    exec(
        build::toolchain_cargo(MSRV)
            .args(["check", "--workspace", "--all-targets", "--quiet", "--target-dir"])
            .arg(root().join("target/msrv"))
            .current_dir(root()),
    )?;
    exec(
        Command::new(cargo)
            .args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
            .current_dir(root()),
    )?;
    exec(
        nightly_cargo()
            .args(["clippy", "--release", "--target-dir"])
            .arg(root().join("target/ebpf"))
            .args(["--", "-D", "warnings"])
            .current_dir(root().join("ebpf")),
    )?;
    fuzz()?;
    exec(
        Command::new(cargo)
            .args(["test", "--workspace", "--"])
            .args(test_args)
            .current_dir(root()),
    )?;
    // A name filter runs just those tests; the kernels' recipe is the whole suite's.
    if test_args.is_empty() {
        crate::test_kernel::run()?;
    }
    Ok(())
}

/// How long the fuzz target runs in every test run.
const FUZZ_SECONDS: u32 = 60;

/// The parsing of everything a runtime hands the plugin (env, config, prevResult), fuzzed
/// for a bounded time from the committed seeds; a crash fails the run and leaves its input
/// in fuzz/artifacts/.
fn fuzz() -> anyhow::Result<()> {
    let corpus = root().join("target/fuzz-corpus/cni_input");
    std::fs::create_dir_all(&corpus)?;
    exec(
        nightly_cargo()
            .args(["fuzz", "run", "cni_input"])
            .arg(&corpus)
            .arg(root().join("fuzz/seeds/cni_input"))
            .args([
                "--",
                &format!("-max_total_time={FUZZ_SECONDS}"),
                "-print_final_stats=1",
            ])
            .current_dir(root().join("fuzz")),
    )
}
