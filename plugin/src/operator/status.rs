//! `flatbridge status` and `flatbridge flows flush`: the node's report (see
//! [`crate::report`]) as tables for a person or as JSON for scripts, and forgetting the
//! offloaded flows. Run them in the node's network namespace.
use std::path::Path;

use anyhow::Context;

use super::block_on;
use crate::{
    datapath::Datapath,
    netlink::Netlink,
    report::{self, NodeReport, OffloadMode},
};

/// The report of every network (or one).
pub fn report(bpf_root: &Path, ipam_data_dir: &Path, network: Option<&str>) -> anyhow::Result<NodeReport> {
    block_on(async {
        let netlink = Netlink::open()?;
        Ok(report::build(&netlink, bpf_root, ipam_data_dir, network).await?)
    })
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The report as tables for a person.
pub fn render(report: &NodeReport) -> String {
    let mut out = String::new();
    if report.networks.is_empty() {
        out.push_str("no flatbridge datapath on this node (no pod added with the fast path yet)\n");
    }
    let kernel = &report.kernel;
    out.push_str(&format!(
        "kernel {}: uplink programs attach {}; BTF {}\n",
        kernel.release,
        if kernel.tcx {
            "over TCX"
        } else {
            "as clsact filters (no TCX)"
        },
        if kernel.btf { "present" } else { "MISSING" },
    ));
    for conflict in report.conflicts.iter().filter(|conflict| !conflict.expired) {
        out.push_str(&format!(
            "CONFLICT: network {} address {} is used on the wire by {}; it is not handed out until its marker \
             expires (10 minutes after the probe that found it; `flatbridge conflicts clear` releases it now)\n",
            conflict.network, conflict.address, conflict.mac,
        ));
    }
    for network in &report.networks {
        for conflict in &network.wire_conflicts {
            out.push_str(&format!(
                "WIRE CONFLICT: network {} address {} of the pod on {} ({}) was claimed on the wire by {} {} ms ago\n",
                network.network,
                conflict.address,
                conflict.host_veth,
                conflict.pod_mac,
                conflict.claimed_by,
                conflict.seen_ms_ago,
            ));
        }
    }
    for network in &report.networks {
        let node = &network.node;
        out.push_str(&format!(
            "network {}  (pins {}, build {}{})\n",
            network.network,
            network.pins,
            network.build,
            if network.build_current {
                ""
            } else {
                ", not this binary's build"
            }
        ));
        out.push_str(&format!(
            "  node: bridge {} ({}), uplink {}, anti-spoofing {}, fast path {}\n",
            node.bridge,
            node.bridge_mac,
            node.uplink,
            on_off(node.anti_spoof),
            on_off(node.enabled),
        ));
        out.push_str(&format!(
            "  offload: {} mode, TCP {}, revalidation every {} ms\n",
            match node.mode {
                OffloadMode::Confirmed => "confirmed",
                OffloadMode::Always => "always",
            },
            if node.tcp_offload {
                "offloaded"
            } else {
                "not offloaded (nf_conntrack_tcp_be_liberal is 0)"
            },
            node.revalidate_ms,
        ));
        out.push_str("  programs:\n");
        for program in &network.programs {
            let devices: Vec<String> = program
                .devices
                .iter()
                .map(|device| {
                    let mark = if device.attached { "" } else { " (NOT attached)" };
                    format!("{} [{}]{mark}", device.device, device.attach.name())
                })
                .collect();
            out.push_str(&format!(
                "    {:<12} id {:<6} on {}\n",
                program.name,
                program.id.map_or_else(|| "-".to_owned(), |id| id.to_string()),
                if devices.is_empty() {
                    "nothing".into()
                } else {
                    devices.join(", ")
                }
            ));
        }
        out.push_str(&format!("  endpoints ({}):\n", network.endpoints.len()));
        if !network.endpoints.is_empty() {
            out.push_str(&format!(
                "    {:<18} {:<18} {:<16} {}\n",
                "ADDRESS", "MAC", "HOST VETH", "FAST PATH"
            ));
        }
        for endpoint in &network.endpoints {
            // Both families, IPv4 first.
            let addresses: Vec<String> = endpoint
                .addresses
                .iter()
                .map(ToString::to_string)
                .chain(endpoint.ipv6_addresses.iter().map(ToString::to_string))
                .collect();
            out.push_str(&format!(
                "    {:<18} {:<18} {:<16} {}\n",
                addresses.join(","),
                endpoint.mac.to_string(),
                endpoint.host_veth,
                if endpoint.attached {
                    "attached"
                } else {
                    "NOT attached"
                }
            ));
        }
        for gateway in &network.gateways {
            out.push_str(&format!(
                "  answers {} for gateway {} with {} (pods in {})\n",
                if gateway.address.is_ipv4() {
                    "ARP"
                } else {
                    "neighbour solicitations"
                },
                gateway.address,
                gateway.mac,
                gateway.subnet
            ));
        }
        out.push_str(&format!(
            "  wire: {} addresses probed ahead of their ADD\n",
            network.probed_ahead
        ));
        let offloaded: Vec<&report::FlowReport> =
            network.flows.iter().filter(|flow| flow.offloaded).collect();
        out.push_str(&format!(
            "  flows: {} directions tracked, {} offloaded now\n",
            network.flows.len(),
            offloaded.len()
        ));
        // As wide as the widest address shown (an IPv6 one takes up to 47 characters).
        let shown: Vec<_> = offloaded.iter().take(50).collect();
        let width = shown
            .iter()
            .flat_map(|flow| [flow.src.to_string().len(), flow.dst.to_string().len()])
            .max()
            .unwrap_or(0)
            .max(21);
        for flow in shown {
            out.push_str(&format!(
                "    {:<4} {:<width$} -> {:<width$} {} -> {} (confirmed {} ms ago)\n",
                flow.protocol.name(),
                flow.src.to_string(),
                flow.dst.to_string(),
                flow.from,
                flow.to.as_deref().unwrap_or("-"),
                flow.confirmed_ms_ago.unwrap_or_default(),
            ));
        }
        out.push_str(&format!(
            "  counters:\n    {:<22} {:>12} {:>16}\n",
            "VERDICT", "PACKETS", "BYTES"
        ));
        for counter in &network.counters {
            out.push_str(&format!(
                "    {:<22} {:>12} {:>16}\n",
                counter.verdict, counter.packets, counter.bytes
            ));
        }
    }
    out
}

/// Forgets every offloaded flow of every network (or one); returns the directions forgotten.
pub fn flush_flows(bpf_root: &Path, network: Option<&str>) -> anyhow::Result<usize> {
    let networks = match network {
        Some(network) => vec![network.to_owned()],
        None => Datapath::networks(bpf_root),
    };
    let mut forgotten = 0;
    for network in networks {
        let datapath = Datapath::open(bpf_root, &network)
            .with_context(|| format!("no datapath for network {network} under {}", bpf_root.display()))?;
        forgotten += datapath.flush_flows()?;
    }
    Ok(forgotten)
}
