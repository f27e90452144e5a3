//! The `flatbridge` binary. Invoked by a container runtime (CNI_COMMAND set) it speaks CNI;
//! invoked by a person it offers the operator subcommands.
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "flatbridge",
    version,
    about = "A CNI plugin for bare-metal Kubernetes on a flat L2 network"
)]
struct Cli {}

fn main() {
    Cli::parse();
}
