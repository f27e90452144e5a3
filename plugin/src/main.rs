//! The `flatbridge` binary. With CNI_COMMAND set it is a CNI plugin (a runtime called
//! it); otherwise it offers the operator subcommands.
use clap::Parser;
use flatbridge::{
    cmd::Flatbridge,
    cni::{self, CniError, CniVersion, code},
};

#[derive(Parser)]
#[command(
    name = "flatbridge",
    version,
    about = "A CNI plugin for bare-metal Kubernetes on a flat L2 network",
    long_about = "A CNI plugin for bare-metal Kubernetes on a flat L2 network.\n\n\
                  Container runtimes run it with CNI_COMMAND set and the network config on stdin; \
                  without CNI_COMMAND it offers operator subcommands."
)]
struct Cli {}

fn main() {
    if std::env::var_os("CNI_COMMAND").is_some() {
        // stdout is the protocol: even a bug must end in an error JSON, never in a bare
        // panic message the runtime cannot parse.
        std::panic::set_hook(Box::new(|info| {
            let error = CniError::new(code::INTERNAL, format!("flatbridge crashed: {info}"));
            log::error!("{error}");
            println!("{}", error.to_json(CniVersion::LATEST));
        }));
        std::process::exit(cni::run(&Flatbridge));
    }
    Cli::parse();
}
