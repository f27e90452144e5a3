//! The `flatbridge` binary. With CNI_COMMAND set it is a CNI plugin (a runtime called
//! it); otherwise it offers the operator subcommands.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flatbridge::{
    cmd::Flatbridge,
    cni::{self, CniError, CniVersion, code, config::DEFAULT_BPF_ROOT},
    ipam::config::DEFAULT_DATA_DIR,
    operator::{conflicts, install, node as node_cmd, status as inspect},
};
use ipnetwork::IpNetwork;

#[derive(Parser)]
#[command(
    name = "flatbridge",
    version,
    about = "A CNI plugin for bare-metal Kubernetes on a flat L2 network",
    long_about = "A CNI plugin for bare-metal Kubernetes on a flat L2 network.\n\n\
                  Container runtimes run it with CNI_COMMAND set and the network config on stdin; \
                  without CNI_COMMAND it offers operator subcommands. Run them on the node (in its \
                  network namespace)."
)]
struct Cli {
    #[command(subcommand)]
    command: Operator,
}

#[derive(Subcommand)]
enum Operator {
    /// Show the fast path of each network on this node: programs and where they are
    /// attached, node settings, known pods, gateways answered for, counters.
    Status {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// Where the BPF filesystem is (the `bpfRoot` of the network config).
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        /// Where host-local keeps its leases (the `ipam.dataDir` of the network config).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        ipam_data_dir: PathBuf,
        /// Print JSON for scripts instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Offloaded flows.
    Flows {
        #[command(subcommand)]
        action: FlowsAction,
    },
    /// The node's uplink and bridge.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// The node agent (long-running, one per node): attaches again the programs another
    /// tool removed, sweeps endpoints of vanished pods, frees leases whose pod's veth has been
    /// gone for `--lease-grace-s`, follows nf_conntrack_tcp_be_liberal, and serves Prometheus
    /// metrics, /healthz and /readyz. Exits on SIGTERM.
    Agent {
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, default_value = "127.0.0.1:9750")]
        metrics_addr: SocketAddr,
        /// How often the node is reconciled.
        #[arg(long, default_value_t = 5000)]
        reconcile_ms: u64,
        /// How long a lease's host veth must be gone before the lease is freed.
        #[arg(long, default_value_t = 300)]
        lease_grace_s: u64,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        /// Where host-local keeps its leases (the `ipam.dataDir` of the network config).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        ipam_data_dir: PathBuf,
        /// The node map (a JSON file, e.g. a mounted ConfigMap): the network config and each
        /// node's range by node name. With it the agent installs the binary and this node's
        /// conflist (and again whenever the map changes); without it, it installs nothing.
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// This node's name in the node map (Kubernetes' downward API sets NODE_NAME).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// A `loopback` plugin binary to install beside flatbridge where the host has none
        /// (containerd's CRI needs it).
        #[arg(long)]
        loopback: Option<PathBuf>,
    },
    /// The datapath's counters per second, redrawn every interval (the `top` of the fast
    /// path): each verdict that moved, with packets and bits per second.
    Monitor {
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many frames (for scripts).
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        ipam_data_dir: PathBuf,
    },
    /// GC by hand: sweep the network's endpoints of vanished veths and free its leases whose
    /// pod's host veth is gone, once they are at least --min-age-s old (for nodes without
    /// the agent whose runtime never calls CNI GC).
    Gc {
        #[arg(long)]
        network: String,
        #[arg(long, default_value_t = 60)]
        min_age_s: u64,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        ipam_data_dir: PathBuf,
    },
    /// Install this binary as <cni-bin-dir>/flatbridge and the network config FILE (a
    /// `.conf` or a `.conflist`) as <cni-conf-dir>/10-flatbridge.conflist, each atomically
    /// and only when it changed: what the agent does at start, by hand.
    Install {
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// A `loopback` plugin binary to install beside flatbridge where the host has none
        /// (containerd's CRI needs it).
        #[arg(long)]
        loopback: Option<PathBuf>,
    },
    /// Remove the conflist and binary install wrote, take every program of every network off
    /// its devices and remove every pin and map. Pods keep working over the plain bridge.
    Uninstall {
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
    },
    /// Addresses IPAM keeps out of allocations because another host on the wire answered
    /// an ARP probe or an IPv6 duplicate address detection for them, or claimed them while
    /// ADD ran (address, MAC that answered, age). A marker expires 10 minutes
    /// after it was written: its address is handed out, and so probed, again.
    #[command(args_conflicts_with_subcommands = true)]
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictsAction>,
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// Where host-local keeps its leases (the `ipam.dataDir` of the network config).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConflictsAction {
    /// Remove conflict markers, expired or not, under the IPAM lock, so that their
    /// addresses are handed out (and probed) again. Leases of pods are never touched.
    Clear {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// Only the marker of this address.
        #[arg(long)]
        address: Option<IpAddr>,
        /// Where host-local keeps its leases (the `ipam.dataDir` of the network config).
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Put the uplink (an Ethernet NIC or a bond) under the bridge: the bridge takes the
    /// uplink's MAC, MTU, addresses (IPv4, and configured global IPv6) and routes (with
    /// their metric, source and protocol), so the switch and the rest of the network see
    /// no change; forwarding and conntrack's liberal TCP tracking are turned
    /// on. Idempotent. On failure everything is undone.
    Setup {
        /// The uplink device, e.g. eno1 or bond0.
        #[arg(long)]
        uplink: String,
        #[arg(long, default_value = "cni0")]
        bridge: String,
        /// A pod gateway address this node owns, with its prefix (the `gateway` of the
        /// node's host-local range), e.g. 10.10.1.0/16. Repeatable.
        #[arg(long)]
        gateway: Vec<IpNetwork>,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        /// Where the setup's state (what it moved, for teardown) is kept.
        #[arg(long, default_value = flatbridge::node::STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Give the uplink back its addresses and routes and take it out of the bridge; the
    /// bridge is deleted when no pod is left on it.
    Teardown {
        #[arg(long, default_value = "cni0")]
        bridge: String,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
        #[arg(long, default_value = flatbridge::node::STATE_DIR)]
        state_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum FlowsAction {
    /// Forget every offloaded flow at once: each goes back through the bridge and
    /// netfilter and must be confirmed again (for example after changing policy rules).
    Flush {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
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
    match Cli::parse().command {
        Operator::Agent {
            metrics_addr,
            reconcile_ms,
            lease_grace_s,
            bpf_root,
            ipam_data_dir,
            nodes,
            node_name,
            cni_bin_dir,
            cni_conf_dir,
            loopback,
        } => {
            let install = match (nodes, node_name) {
                (Some(nodes), Some(node_name)) => Some(flatbridge::operator::install::InstallTarget {
                    nodes,
                    node_name,
                    bin_dir: cni_bin_dir,
                    conf_dir: cni_conf_dir,
                    loopback,
                }),
                (Some(_), None) => anyhow::bail!("--nodes needs --node-name (or NODE_NAME)"),
                (None, _) => None,
            };
            flatbridge::agent::run(flatbridge::agent::Options {
                install,
                bpf_root,
                ipam_data_dir,
                metrics_addr,
                period: Duration::from_millis(reconcile_ms.max(100)),
                // Never 0 nor shorter than two passes: a veth must be seen missing twice.
                lease_grace: Duration::from_secs(lease_grace_s.max(1))
                    .max(Duration::from_millis(reconcile_ms.max(100)) * 2),
            })?;
        }
        Operator::Status {
            network,
            bpf_root,
            ipam_data_dir,
            json,
        } => {
            let report = inspect::report(&bpf_root, &ipam_data_dir, network.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render(&report));
            }
        }
        Operator::Flows {
            action: FlowsAction::Flush { network, bpf_root },
        } => {
            let forgotten = inspect::flush_flows(&bpf_root, network.as_deref())?;
            println!("forgot {forgotten} flow directions");
        }
        Operator::Node {
            action:
                NodeAction::Setup {
                    uplink,
                    bridge,
                    gateway,
                    bpf_root,
                    state_dir,
                },
        } => println!(
            "{}",
            node_cmd::setup(&bridge, &uplink, &gateway, &bpf_root, &state_dir)?
        ),
        Operator::Node {
            action:
                NodeAction::Teardown {
                    bridge,
                    bpf_root,
                    state_dir,
                },
        } => println!("{}", node_cmd::teardown(&bridge, &bpf_root, &state_dir)?),
        Operator::Monitor {
            interval_ms,
            count,
            bpf_root,
            ipam_data_dir,
        } => flatbridge::operator::monitor::run(
            &bpf_root,
            &ipam_data_dir,
            Duration::from_millis(interval_ms.max(100)),
            count,
        )?,
        Operator::Gc {
            network,
            min_age_s,
            bpf_root,
            ipam_data_dir,
        } => println!(
            "{}",
            flatbridge::operator::gc::gc(
                &network,
                &bpf_root,
                &ipam_data_dir,
                Duration::from_secs(min_age_s)
            )?
        ),
        Operator::Install {
            cni_bin_dir,
            cni_conf_dir,
            config,
            loopback,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("failed to read {}", config.display()))?;
            let value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
            let binary = std::env::current_exe().context("cannot find this binary")?;
            let mut installed = install::install(&cni_bin_dir, &cni_conf_dir, &value, &binary)?;
            if let Some(loopback) = &loopback {
                installed.loopback = install::install_loopback(&cni_bin_dir, loopback)?;
            }
            println!(
                "{installed}: {} and {}",
                cni_bin_dir.join(install::BINARY).display(),
                cni_conf_dir.join(install::CONFLIST).display()
            );
        }
        Operator::Uninstall {
            cni_bin_dir,
            cni_conf_dir,
            bpf_root,
        } => println!("{}", install::uninstall(&cni_bin_dir, &cni_conf_dir, &bpf_root)?),
        Operator::Conflicts {
            action: None,
            network,
            data_dir,
            json,
        } => {
            let rows = conflicts::list(&data_dir, network.as_deref(), SystemTime::now())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", conflicts::render(&rows));
            }
        }
        Operator::Conflicts {
            action:
                Some(ConflictsAction::Clear {
                    network,
                    address,
                    data_dir,
                }),
            ..
        } => println!("{}", conflicts::clear(&data_dir, network.as_deref(), address)?),
    }
    Ok(())
}
