//! Building the eBPF object (nightly, `-Z build-std=core`, bpf-linker) and the plugin.
use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::util::{exec, root};

/// Where the eBPF object lands; plugin/build.rs embeds it from here.
pub fn object_path() -> PathBuf {
    root().join("target/bpf/flatbridge.bpf.o")
}

/// Builds the eBPF crate and copies the object to [`object_path`].
pub fn ebpf(release: bool) -> anyhow::Result<PathBuf> {
    let target_dir = root().join("target/ebpf");
    let mut cargo = nightly_cargo();
    cargo
        .arg("build")
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root().join("ebpf"));
    if release {
        cargo.arg("--release");
    }
    exec(&mut cargo).context("building the eBPF object failed (is `cargo xtask setup` done?)")?;
    let profile = if release { "release" } else { "debug" };
    let built = target_dir.join(format!("bpfel-unknown-none/{profile}/flatbridge"));
    let object = object_path();
    std::fs::create_dir_all(object.parent().expect("object_path() is inside target/"))?;
    std::fs::copy(&built, &object).with_context(|| format!("copying {built:?} to {object:?}"))?;
    eprintln!("eBPF object: {}", object.display());
    Ok(object)
}

/// Nightly cargo for the eBPF crate. We run under stable cargo, which exports its own
/// toolchain and flags; the nightly build must not inherit them.
/// The release plugin with the release eBPF object in it, as the demo and the bench run it;
/// returns the binary's path.
pub fn release_plugin() -> anyhow::Result<PathBuf> {
    ebpf(true)?;
    exec(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "flatbridge"])
            .current_dir(root()),
    )?;
    Ok(root().join("target/release/flatbridge"))
}

/// The nightly the eBPF crate (and the fuzz target) builds with: pinned, because
/// bpf-linker 0.13 built against LLVM 22 must accept the bitcode its LLVM writes. The same
/// as `channel` in ebpf/rust-toolchain.toml (a test checks); `cargo xtask setup` installs it.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// The oldest stable toolchain the workspace builds with: its `rust-version` (a test
/// checks), which `cargo xtask test` proves by checking the workspace with exactly it.
pub const MSRV: &str = "1.88.0";

pub fn nightly_cargo() -> Command {
    toolchain_cargo(NIGHTLY)
}

/// cargo of `toolchain`, run by rustup, with none of the calling cargo's environment.
pub fn toolchain_cargo(toolchain: &str) -> Command {
    let mut cargo = Command::new("rustup");
    cargo.args(["run", toolchain, "cargo"]);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    cargo
}

/// Builds tests/cnitool, the libcni driver that plays cnitool's role in the tests, with
/// Debian's Go and Debian's libcni sources (GOPATH mode: no module proxy is needed).
pub fn cnitool() -> anyhow::Result<PathBuf> {
    let output = root().join("target/cnitool");
    exec(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&output)
            .arg("./tests/cnitool")
            .current_dir(root())
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOCACHE", root().join("target/go-cache"))
            .env("GOFLAGS", "-mod=mod"),
    )
    .context("building the libcni driver failed (is `cargo xtask setup` done?)")?;
    Ok(output)
}

/// Builds the eBPF object, the libcni test driver, then the workspace.
pub fn all(release: bool) -> anyhow::Result<()> {
    ebpf(release)?;
    cnitool()?;
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--workspace"]).current_dir(root());
    if release {
        cargo.arg("--release");
    }
    exec(&mut cargo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_declares_the_checked_rust_version() {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
        let declared = MSRV.trim_end_matches(".0");
        assert!(
            manifest
                .lines()
                .any(|line| line.trim() == format!("rust-version = \"{declared}\"")),
            "Cargo.toml does not declare rust-version {declared}"
        );
    }

    #[test]
    fn the_ebpf_toolchain_file_names_the_pinned_nightly() {
        let file = std::fs::read_to_string(root().join("ebpf/rust-toolchain.toml")).expect("toolchain file");
        assert!(
            file.lines()
                .any(|line| line.trim() == format!("channel = \"{NIGHTLY}\"")),
            "ebpf/rust-toolchain.toml does not pin {NIGHTLY}:\n{file}"
        );
    }
}
