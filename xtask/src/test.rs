//! `cargo xtask test`: what CI runs. Setup, formatting, lints, the eBPF build, then every
//! unit and integration test (the integration tests need root: namespaces and BPF).
use std::process::Command;

use crate::{
    build::{self, nightly_cargo},
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
    build::ebpf(true)?;
    build::cnitool()?;
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
    exec(
        Command::new(cargo)
            .args(["test", "--workspace", "--"])
            .args(test_args)
            .current_dir(root()),
    )
}
