//! `cargo xtask <task>`: the one entry point for everything beyond `cargo build`.
mod bench;
mod build;
mod demo;
mod setup;
mod test;
mod test_kernel;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "flatbridge's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (Debian packages, bpf-linker, rust-src, bpffs). A fast
    /// no-op when everything is there.
    Setup,
    /// Build the eBPF object into target/bpf/flatbridge.bpf.o.
    BuildEbpf {
        /// Build with the release profile (LTO).
        #[arg(long)]
        release: bool,
    },
    /// Build the eBPF object and the plugin.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// The main job, shown: a simulated flat L2 network with N nodes, pods added with the
    /// seed config, pings and iperf3 with the fast path's counters, then DEL and cleanup.
    Demo {
        /// How many nodes share the simulated L2 (1-9).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
    },
    /// Measure the datapath and the CNI calls side by side (a table, bench/results/<date>.json
    /// and bench/results/latest.svg). About 11 minutes; --quick (under target/bench) about 2.5.
    Bench {
        /// One short round and fewer CNI calls: a smoke check.
        #[arg(long)]
        quick: bool,
    },
    /// Set up, check formatting and lints, build, and run every unit and integration test.
    Test {
        /// Arguments passed to the test binaries (a name filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Boot Debian 11's and 12's kernels under qemu and run the seed recipe on each
    /// (part of `test`).
    TestKernel,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf { release } => build::ebpf(release).map(drop),
        Task::Build { release } => build::all(release),
        Task::Demo { nodes } => demo::run(nodes),
        Task::Bench { quick } => bench::run(quick),
        Task::Test { args } => test::run(&args),
        Task::TestKernel => {
            setup::run()?;
            test_kernel::run()
        }
    }
}
