//! `flatbridge status`: what the datapath of each network on this node is doing — its
//! programs and where they are attached, the node settings, the pods it knows, the
//! gateways it answers for, and its counters. Run it in the node's network namespace.
use std::{collections::HashMap, net::Ipv4Addr, path::Path};

use anyhow::Context;
use flatbridge_common::{NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NODE_ENABLED, NODE_TCP_OFFLOAD, program_name};
use serde_json::{Value, json};

use super::add::format_mac;
use crate::{
    datapath::{BPF_OBJECT_HASH, Datapath},
    netlink::Netlink,
};

fn ifname(ifindex: u32) -> String {
    if ifindex == 0 {
        return "-".into();
    }
    nix::net::if_::if_indextoname(ifindex)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("(gone #{ifindex})"))
}

/// Ids of the BPF programs a device runs at tc ingress and at tc egress.
type Filters = (Vec<u32>, Vec<u32>);

/// The BPF programs at ingress and egress of each device, from the kernel's tc filters.
fn pod_filters(ifindexes: impl Iterator<Item = u32>) -> anyhow::Result<HashMap<u32, Filters>> {
    let ifindexes: Vec<u32> = ifindexes.collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let netlink = Netlink::open()?;
        let mut filters = HashMap::new();
        for ifindex in ifindexes {
            let ingress = netlink.bpf_filter_programs(ifindex, true).await?;
            let egress = netlink.bpf_filter_programs(ifindex, false).await?;
            filters.insert(ifindex, (ingress, egress));
        }
        Ok(filters)
    })
}

/// Per (program, device): whether the kernel runs it, and how it was attached.
type UplinkAttachments = HashMap<(String, String), (bool, &'static str)>;

/// Whether each uplink program of the datapath is attached to each device it was attached
/// to, as the kernel says, and how.
fn uplink_attachments(datapath: &Datapath) -> anyhow::Result<UplinkAttachments> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let netlink = Netlink::open()?;
        let mut found = HashMap::new();
        for program in [program_name::FROM_UPLINK, program_name::TO_UPLINK] {
            for device in datapath.attached(program) {
                let how = datapath
                    .attachment(program, &device)
                    .map_or("none", |how| how.name());
                let attached = datapath.is_attached(&netlink, program, &device).await;
                found.insert((program.to_owned(), device), (attached, how));
            }
        }
        Ok(found)
    })
}

fn network_report(datapath: &Datapath) -> anyhow::Result<Value> {
    let layout = datapath.layout();
    let build = layout.markers("build-").into_iter().next().unwrap_or_default();
    let endpoints = datapath.endpoints()?;
    // Pod programs are clsact filters on each host veth; uplink programs are pinned TCX
    // links. Ask the kernel which programs each device really runs.
    let pod_filters = pod_filters(endpoints.iter().map(|(endpoint, _)| endpoint.ifindex))?;
    let uplinks = uplink_attachments(datapath)?;
    let programs: Vec<Value> = program_name::ALL
        .iter()
        .map(|&name| {
            let id = datapath.program_id(name);
            let devices: Vec<Value> = match name {
                program_name::FROM_POD | program_name::TO_POD => endpoints
                    .iter()
                    .map(|(endpoint, _)| {
                        let (ingress, egress) = pod_filters.get(&endpoint.ifindex).cloned().unwrap_or_default();
                        let running = if name == program_name::FROM_POD { ingress } else { egress };
                        json!({"device": ifname(endpoint.ifindex), "attached": id.is_some_and(|id| running.contains(&id)), "attach": "tc-filter"})
                    })
                    .collect(),
                _ => datapath
                    .attached(name)
                    .into_iter()
                    .map(|device| {
                        let (attached, how) = uplinks
                            .get(&(name.to_owned(), device.clone()))
                            .copied()
                            .unwrap_or((false, "none"));
                        json!({"device": device, "attached": attached, "attach": how})
                    })
                    .collect(),
            };
            json!({"name": name, "id": id, "devices": devices})
        })
        .collect();
    let node = datapath.node_config()?;
    let from_pod_id = datapath.program_id(program_name::FROM_POD);
    let endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|(endpoint, addresses)| {
            let (ingress, _) = pod_filters.get(&endpoint.ifindex).cloned().unwrap_or_default();
            json!({
                "addresses": addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mac": format_mac(endpoint.mac),
                "host_veth": ifname(endpoint.ifindex),
                "ifindex": endpoint.ifindex,
                "attached": from_pod_id.is_some_and(|id| ingress.contains(&id)),
            })
        })
        .collect();
    let gateways: Vec<Value> = datapath
        .gateways()?
        .into_iter()
        .map(|(gateway, mac)| {
            json!({"address": gateway.ip().to_string(), "subnet": gateway.to_string(), "mac": format_mac(mac)})
        })
        .collect();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|time| time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64)
        .unwrap_or_default();
    let revalidate_ns = node.revalidate_ns.max(1);
    let flows = datapath.flows()?;
    let flow_rows: Vec<Value> = flows
        .iter()
        .map(|(key, seen, confirmed)| {
            let fresh = |time: u64, window: u64| now.saturating_sub(time) <= window;
            let reverse = flows.iter().find(|(other, _, _)| *other == key.reversed());
            let offloaded = confirmed.is_some_and(|out| {
                fresh(out.confirmed_ns, revalidate_ns)
                    && reverse.is_some_and(|(_, back_seen, back)| {
                        back_seen.closed == 0 && back.is_some_and(|back| back.out_ifindex == seen.in_ifindex)
                    })
            });
            json!({
                "protocol": match key.protocol { 6 => "tcp", 17 => "udp", _ => "?" },
                "src": format!("{}:{}", Ipv4Addr::from(key.src), u16::from_be(key.src_port)),
                "dst": format!("{}:{}", Ipv4Addr::from(key.dst), u16::from_be(key.dst_port)),
                "from": ifname(seen.in_ifindex),
                "to": confirmed.map(|out| ifname(out.out_ifindex)),
                "closed": seen.closed != 0,
                "confirmed_ms_ago": confirmed.map(|out| now.saturating_sub(out.confirmed_ns) / 1_000_000),
                "offloaded": offloaded,
            })
        })
        .collect();
    let counters: Vec<Value> = datapath
        .counters()?
        .into_iter()
        .map(|count| json!({"verdict": count.verdict.name(), "packets": count.total.packets, "bytes": count.total.bytes}))
        .collect();
    Ok(json!({
        "network": datapath.network(),
        "pins": layout.dir().display().to_string(),
        "build": build,
        "build_current": build == BPF_OBJECT_HASH,
        "node": {
            "enabled": node.flags & NODE_ENABLED != 0,
            "mode": if node.flags & NODE_CONFIRM_FLOWS != 0 { "confirmed" } else { "always" },
            "tcp_offload": node.flags & NODE_TCP_OFFLOAD != 0,
            "revalidate_ms": node.revalidate_ns / 1_000_000,
            "bridge": ifname(node.bridge_ifindex),
            "bridge_mac": format_mac(node.bridge_mac),
            "uplink": ifname(node.uplink_ifindex),
            "anti_spoof": node.flags & NODE_ANTI_SPOOF != 0,
        },
        "programs": programs,
        "endpoints": endpoints,
        "gateways": gateways,
        "flows": flow_rows,
        "counters": counters,
    }))
}

/// Addresses marked as used by another host on the wire, in every network's lease
/// directory under `ipam_data_dir`.
fn conflicts(ipam_data_dir: &Path) -> Vec<Value> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(ipam_data_dir).into_iter().flatten().flatten() {
        let network = entry.file_name().to_string_lossy().into_owned();
        for (address, owner) in crate::ipam::read_leases(&entry.path()).unwrap_or_default() {
            if let Some(mac) = owner.conflicting_mac() {
                found.push(json!({"network": network, "address": address.to_string(), "answered_by": mac}));
            }
        }
    }
    found
}

/// The report of every network (or one), as JSON.
pub fn report(bpf_root: &Path, ipam_data_dir: &Path, network: Option<&str>) -> anyhow::Result<Value> {
    let networks = match network {
        Some(network) => vec![network.to_owned()],
        None => Datapath::networks(bpf_root),
    };
    let reports = networks
        .iter()
        .map(|network| {
            let datapath = Datapath::open(bpf_root, network)
                .with_context(|| format!("no datapath for network {network} under {}", bpf_root.display()))?;
            network_report(&datapath)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kernel = json!({
        "release": nix::sys::utsname::uname().map(|name| name.release().to_string_lossy().into_owned()).unwrap_or_default(),
        "tcx": crate::datapath::has_tcx(),
    });
    Ok(json!({ "kernel": kernel, "networks": reports, "conflicts": conflicts(ipam_data_dir) }))
}

/// The report as tables for a person.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let networks = report["networks"].as_array().cloned().unwrap_or_default();
    if networks.is_empty() {
        out.push_str("no flatbridge datapath on this node (no pod added with the fast path yet)\n");
    }
    out.push_str(&format!(
        "kernel {}: uplink programs attach {}\n",
        report["kernel"]["release"].as_str().unwrap_or("?"),
        if report["kernel"]["tcx"] == true {
            "over TCX"
        } else {
            "as clsact filters (no TCX)"
        }
    ));
    for conflict in report["conflicts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "CONFLICT: network {} address {} is used on the wire by {}; it is not handed out until its marker \
             expires (10 minutes after the probe that found it; `flatbridge conflicts clear` releases it now)\n",
            conflict["network"].as_str().unwrap_or_default(),
            conflict["address"].as_str().unwrap_or_default(),
            conflict["answered_by"].as_str().unwrap_or_default(),
        ));
    }
    let text = |value: &Value| {
        value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string())
    };
    for network in networks {
        let node = &network["node"];
        out.push_str(&format!(
            "network {}  (pins {}, build {}{})\n",
            text(&network["network"]),
            text(&network["pins"]),
            text(&network["build"]),
            if network["build_current"] == true {
                ""
            } else {
                ", not this binary's build"
            }
        ));
        out.push_str(&format!(
            "  node: bridge {} ({}), uplink {}, anti-spoofing {}, fast path {}\n",
            text(&node["bridge"]),
            text(&node["bridge_mac"]),
            text(&node["uplink"]),
            if node["anti_spoof"] == true { "on" } else { "off" },
            if node["enabled"] == true { "on" } else { "off" },
        ));
        out.push_str(&format!(
            "  offload: {} mode, TCP {}, revalidation every {} ms\n",
            text(&node["mode"]),
            if node["tcp_offload"] == true {
                "offloaded"
            } else {
                "not offloaded (nf_conntrack_tcp_be_liberal is 0)"
            },
            text(&node["revalidate_ms"]),
        ));
        out.push_str("  programs:\n");
        for program in network["programs"].as_array().into_iter().flatten() {
            let devices: Vec<String> = program["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|device| {
                    let mark = if device["attached"] == true {
                        ""
                    } else {
                        " (NOT attached)"
                    };
                    format!("{} [{}]{mark}", text(&device["device"]), text(&device["attach"]))
                })
                .collect();
            out.push_str(&format!(
                "    {:<12} id {:<6} on {}\n",
                text(&program["name"]),
                text(&program["id"]),
                if devices.is_empty() {
                    "nothing".into()
                } else {
                    devices.join(", ")
                }
            ));
        }
        let endpoints = network["endpoints"].as_array().cloned().unwrap_or_default();
        out.push_str(&format!("  endpoints ({}):\n", endpoints.len()));
        if !endpoints.is_empty() {
            out.push_str(&format!(
                "    {:<18} {:<18} {:<16} {}\n",
                "ADDRESS", "MAC", "HOST VETH", "FAST PATH"
            ));
        }
        for endpoint in &endpoints {
            let addresses: Vec<String> = endpoint["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            out.push_str(&format!(
                "    {:<18} {:<18} {:<16} {}\n",
                addresses.join(","),
                text(&endpoint["mac"]),
                text(&endpoint["host_veth"]),
                if endpoint["attached"] == true {
                    "attached"
                } else {
                    "NOT attached"
                }
            ));
        }
        for gateway in network["gateways"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  answers ARP for gateway {} with {} (pods in {})\n",
                text(&gateway["address"]),
                text(&gateway["mac"]),
                text(&gateway["subnet"])
            ));
        }
        let flows = network["flows"].as_array().cloned().unwrap_or_default();
        let offloaded: Vec<&Value> = flows.iter().filter(|flow| flow["offloaded"] == true).collect();
        out.push_str(&format!(
            "  flows: {} directions tracked, {} offloaded now\n",
            flows.len(),
            offloaded.len()
        ));
        for flow in offloaded.iter().take(50) {
            out.push_str(&format!(
                "    {:<4} {:<22} -> {:<22} {} -> {} (confirmed {} ms ago)\n",
                text(&flow["protocol"]),
                text(&flow["src"]),
                text(&flow["dst"]),
                text(&flow["from"]),
                text(&flow["to"]),
                text(&flow["confirmed_ms_ago"]),
            ));
        }
        out.push_str(&format!(
            "  counters:\n    {:<22} {:>12} {:>16}\n",
            "VERDICT", "PACKETS", "BYTES"
        ));
        for counter in network["counters"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {:<22} {:>12} {:>16}\n",
                text(&counter["verdict"]),
                text(&counter["packets"]),
                text(&counter["bytes"])
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
