//! `cargo xtask setup`: installs every prerequisite on a fresh Debian bookworm machine.
//! Each step checks first and does nothing when its piece is already there, so running it
//! again costs a second or two.
use std::process::Command;

use anyhow::{Context, bail};

use crate::{
    build::{MSRV, NIGHTLY},
    util::{exec, output, succeeds},
};

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22, which bpf-linker links against"),
    ("libpolly-22-dev", "needed to link bpf-linker against LLVM 22"),
    ("bpftool", "inspecting programs and maps (tests, operators)"),
    ("iproute2", "ip/bridge/tc in the tests and demo"),
    ("iputils-ping", "ping in the tests and demo"),
    ("iputils-arping", "ARP probes in the tests"),
    ("iperf3", "throughput in the demo and benchmarks"),
    ("sockperf", "latency in the benchmarks"),
    ("ethtool", "turning veth offloads off in the benchmarks"),
    ("iptables", "kube-proxy-like rules in the tests and benchmarks"),
    ("tcpdump", "looking at frames while debugging"),
    (
        "util-linux",
        "nsenter, to run commands in a node namespace without hiding bpffs",
    ),
    (
        "containernetworking-plugins",
        "the reference bridge/host-local plugins we compare against, and loopback",
    ),
    ("golang-go", "building the libcni test driver (cnitool's role)"),
    (
        "qemu-system-x86",
        "booting the kernels of older distributions (xtask test-kernel)",
    ),
    ("busybox-static", "the shell and tools of the test-kernel guest"),
    ("cpio", "packing the test-kernel guest's initramfs"),
    ("kmod", "modprobe, and depmod for the test-kernel guest's modules"),
    (
        "prometheus",
        "promtool, which checks the agent's metrics in the tests",
    ),
    (
        "golang-github-appc-cni-dev",
        "libcni, the library container runtimes call plugins with",
    ),
];

/// bpf-linker 0.13.0 is the release we know works with LLVM 22 on this distribution; its
/// default feature set wants LLVM 23, which bookworm does not ship.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    ensure_root()?;
    install_packages()?;
    install_nightly()?;
    install_msrv()?;
    install_bpf_linker()?;
    install_cargo_fuzz()?;
    install_cargo_deny()?;
    install_kubernetes_validate()?;
    mount_bpffs()?;
    kernel_modules()?;
    eprintln!(
        "setup: everything is in place ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ensure_root() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "setup, the tests and the demo create network namespaces, load BPF programs and install \
             packages: run them as root"
        );
    }
    Ok(())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn package_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|out| out.stdout.ends_with(b"install ok installed"))
}

fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<_> = PACKAGES
        .iter()
        .filter(|(package, _)| !package_installed(package))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages: all {} present", PACKAGES.len());
        return Ok(());
    }
    for (package, why) in &missing {
        eprintln!("setup: installing {package}: {why}");
    }
    exec(Command::new("apt-get").args(["update", "-q"])).context("apt-get update failed")?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing.iter().map(|(package, _)| package))
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| {
        let names: Vec<_> = missing.iter().map(|(package, _)| *package).collect();
        format!("installing {} failed", names.join(" "))
    })
}

/// The pinned nightly (see [`NIGHTLY`]) with rust-src (`-Z build-std=core` builds core for
/// bpfel-unknown-none from it), rustfmt and clippy.
fn install_nightly() -> anyhow::Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
            .context("rustup is required (the eBPF crate builds with a pinned nightly)")?;
    let components = String::from_utf8_lossy(&installed.stdout).into_owned();
    let missing: Vec<&str> = ["rust-src", "rustfmt", "clippy"]
        .into_iter()
        .filter(|component| !components.lines().any(|line| line.starts_with(component)))
        .collect();
    if installed.status.success() && missing.is_empty() {
        eprintln!("setup: {NIGHTLY} with rust-src, rustfmt and clippy: present");
        return Ok(());
    }
    eprintln!(
        "setup: installing {NIGHTLY} (the eBPF crate's toolchain, pinned for bpf-linker's LLVM 22) with rust-src, \
         rustfmt and clippy"
    );
    exec(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src,rustfmt,clippy",
    ]))
}

/// The workspace's `rust-version` toolchain (see [`MSRV`]), minimal: only to check that the
/// code builds with it.
fn install_msrv() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["run", MSRV, "rustc", "--version"]));
    if installed.is_ok_and(|out| out.status.success()) {
        eprintln!("setup: Rust {MSRV} (the declared rust-version): present");
        return Ok(());
    }
    eprintln!(
        "setup: installing Rust {MSRV}: the tests check the workspace builds with its declared rust-version"
    );
    exec(Command::new("rustup").args(["toolchain", "install", MSRV, "--profile", "minimal"]))
}

/// kubernetes-validate (PyPI), pinned, in a virtual environment of its own: the tests check
/// deploy/ against the Kubernetes API's schemas with it, offline.
pub const KUBERNETES_VALIDATE: &str = "/var/cache/flatbridge/kubernetes-validate/bin/kubernetes-validate";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

fn install_kubernetes_validate() -> anyhow::Result<()> {
    let found = output(Command::new(KUBERNETES_VALIDATE).arg("--version"));
    if found.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(KUBERNETES_VALIDATE_VERSION)) {
        eprintln!("setup: kubernetes-validate {KUBERNETES_VALIDATE_VERSION}: present");
        return Ok(());
    }
    eprintln!(
        "setup: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION}: the tests validate deploy/ with it"
    );
    let venv = "/var/cache/flatbridge/kubernetes-validate";
    exec(Command::new("python3").args(["-m", "venv", venv]))?;
    exec(Command::new(format!("{venv}/bin/pip")).args([
        "install",
        "--quiet",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"));
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    if version.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == wanted) {
        eprintln!("setup: {wanted}: present");
        return Ok(());
    }
    eprintln!("setup: installing {wanted} against LLVM 22: rustc links BPF objects with it");
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building bpf-linker failed")
}

/// cargo-fuzz runs the fuzz target that `cargo xtask test` runs for a bounded time.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// cargo-deny checks the licences, sources and duplicates of the dependencies.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn install_cargo_fuzz() -> anyhow::Result<()> {
    install_cargo_tool(
        "fuzz",
        CARGO_FUZZ_VERSION,
        "the tests fuzz the parsing of what runtimes hand the plugin",
    )
}

fn install_cargo_deny() -> anyhow::Result<()> {
    install_cargo_tool(
        "deny",
        CARGO_DENY_VERSION,
        "the tests check the dependencies' licences and sources",
    )
}

/// `cargo install cargo-<tool>` at exactly `version`, unless `cargo <tool> --version` says
/// it is there.
fn install_cargo_tool(tool: &str, version: &str, why: &str) -> anyhow::Result<()> {
    let crate_name = format!("cargo-{tool}");
    let found = output(Command::new("cargo").args([tool, "--version"]));
    let wanted = format!("{crate_name} {version}");
    if found.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == wanted) {
        eprintln!("setup: {wanted}: present");
        return Ok(());
    }
    eprintln!("setup: installing {wanted}: {why}");
    exec(
        Command::new("cargo")
            .args([
                "install",
                &crate_name,
                "--locked",
                "--force",
                "--version",
                version,
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .with_context(|| format!("building {crate_name} failed"))
}

/// What the tests (and a node) need of the kernel that Debian's kernels build as modules:
/// each with a probe that uses it, run in a network namespace of its own (made and gone
/// with the probe, nothing touches the machine's), and what it is for.
const KERNEL_MODULES: [(&str, &str, &str); 6] = [
    (
        "veth",
        "ip link add fbprobe0 type veth peer name fbprobe1",
        "the pods' veth pairs",
    ),
    (
        "bridge",
        "ip link add fbprobebr type bridge",
        "the bridge pods hang off",
    ),
    (
        "sch_ingress",
        "ip link add fbprobe0 type veth peer name fbprobe1 && tc qdisc add dev fbprobe0 clsact",
        "the clsact qdisc the tc programs hang off",
    ),
    (
        "cls_bpf",
        "ip link add fbprobe0 type veth peer name fbprobe1 && tc qdisc add dev fbprobe0 clsact \
         && tc filter add dev fbprobe0 ingress bpf bytecode '1,6 0 0 0,'",
        "tc filters that run BPF programs",
    ),
    (
        "br_netfilter",
        "test -e /proc/sys/net/bridge/bridge-nf-call-iptables",
        "kube-proxy's rules on bridged traffic (the kube_proxy tests)",
    ),
    (
        "nf_conntrack",
        "test -e /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
        "the conntrack the offload confirmation relies on",
    ),
];

fn kernel_has(probe: &str) -> bool {
    succeeds(Command::new("unshare").args(["--net", "sh", "-c", probe]))
}

/// Makes sure the kernel has what [`KERNEL_MODULES`] lists, loading a module where it is
/// missing, and says which one is missing, and what for, when it cannot be loaded.
fn kernel_modules() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (module, probe, what) in KERNEL_MODULES {
        if kernel_has(probe) {
            continue;
        }
        let loaded = succeeds(Command::new("modprobe").arg(module));
        if loaded && kernel_has(probe) {
            eprintln!("setup: kernel module {module}: loaded");
            continue;
        }
        missing.push(format!("{module} ({what})"));
    }
    if !missing.is_empty() {
        bail!(
            "the kernel lacks what the tests and the plugin need, and modprobe cannot load it: {}. Install \
             the running kernel's modules (Debian: linux-image-$(uname -r)) or use a kernel that has them",
            missing.join(", ")
        );
    }
    eprintln!(
        "setup: kernel modules: {}: present",
        KERNEL_MODULES.map(|(module, _, _)| module).join(", ")
    );
    Ok(())
}

/// The plugin mounts bpffs itself when its root is not one; mounting the default root here
/// lets `bpftool` and operators see pins from the first run.
fn mount_bpffs() -> anyhow::Result<()> {
    if succeeds(Command::new("mountpoint").args(["-q", "/sys/fs/bpf"])) {
        eprintln!("setup: bpffs at /sys/fs/bpf: mounted");
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at /sys/fs/bpf: pinned maps, programs and links live there");
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
