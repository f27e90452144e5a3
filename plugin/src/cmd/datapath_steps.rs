//! The fast path's share of ADD, DEL and GC: the node's settings, the pod's endpoint and
//! the programs on the pod's host veth and on the uplink.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use ipnetwork::IpNetwork;

use flatbridge_common::{
    Endpoint, NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NODE_ENABLED, NODE_SET_PKT_TYPE, NODE_TCP_OFFLOAD,
    NodeConfig, program_name,
};

use super::{all_done, is_pod_veth};
use crate::{
    cni::{CniError, Request, code, result::CniResult},
    datapath::{Datapath, DatapathError},
    kernel,
    netlink::{Link, Netlink},
    node,
};

/// What ADD did to the datapath, for its undo. (The programs on the pod's veth go away
/// with the veth.)
#[derive(Default)]
pub struct Added {
    pub endpoint: Option<u32>,
}

/// Loads the datapath if needed. `bridge` is the pods' bridge: when this call loads the
/// datapath, the bridge's MAC is made permanent (see below).
pub async fn prepare(request: &Request, node: &Netlink, bridge: &Link) -> Result<Datapath, CniError> {
    let config = &request.config;
    let (datapath, loaded_now) = Datapath::ensure_loaded(&config.bpf_root(), &config.net.name)?;
    if loaded_now && let Some(mac) = bridge.mac {
        // The datapath tells frames for the node by the bridge's MAC, and answers ARP for the
        // gateway with it. A bridge whose MAC was never set follows its ports' MACs: set it
        // to what it is now, once, so it stays.
        node.set_mac(bridge.index, mac).await?;
    }
    Ok(datapath)
}

/// The node-wide settings `request` asks for. `bridge` and `uplink` as found by ADD.
fn wanted_node_config(request: &Request, bridge: &Link, uplink: &node::Uplink) -> NodeConfig {
    let config = &request.config;
    let mut flags = NODE_ENABLED;
    if config.anti_spoof() {
        flags |= NODE_ANTI_SPOOF;
    }
    if config.confirm_flows() {
        flags |= NODE_CONFIRM_FLOWS;
    }
    if kernel::keeps_pkt_type_on_redirect_peer() {
        flags |= NODE_SET_PKT_TYPE;
    }
    if kernel::tcp_offload_allowed() {
        flags |= NODE_TCP_OFFLOAD;
    } else if config.confirm_flows() {
        log::info!(
            "TCP stays on the slow path: net.netfilter.nf_conntrack_tcp_be_liberal is 0 \
             (run `flatbridge node setup` or set it to 1)"
        );
    }
    NodeConfig {
        revalidate_ns: config.revalidate_ms() * 1_000_000,
        bridge_ifindex: bridge.index,
        uplink_ifindex: uplink.link.as_ref().map_or(0, |link| link.index),
        flags,
        bridge_mac: bridge.mac.unwrap_or_default(),
        no_uplink_seen_ns: uplink.no_uplink_seen_ns,
        ..NodeConfig::default()
    }
}

/// The settings that decide how every pod of the network is protected: one config must not
/// change them for pods that were added under another.
const SECURITY_FLAGS: u32 = NODE_ANTI_SPOOF | NODE_CONFIRM_FLOWS;

fn describe(node: &NodeConfig) -> String {
    format!(
        "antiSpoof={}, fastPathMode={:?}, revalidateMs={}",
        node.flags & NODE_ANTI_SPOOF != 0,
        if node.flags & NODE_CONFIRM_FLOWS != 0 {
            "confirmed"
        } else {
            "always"
        },
        node.revalidate_ns / 1_000_000
    )
}

/// Refuses settings that differ from those the pods of `network` run with: they apply to
/// every pod of the network on the node, and the pods of every network on one bridge share
/// its L2, so one config (a tenant's, with Multus) could otherwise turn protection off for
/// all of them.
fn settings_agree(
    network: &str,
    own: bool,
    running: &NodeConfig,
    wanted: &NodeConfig,
) -> Result<(), CniError> {
    if running.flags & SECURITY_FLAGS == wanted.flags & SECURITY_FLAGS
        && running.revalidate_ns == wanted.revalidate_ns
    {
        return Ok(());
    }
    let scope = if own {
        "these settings apply to every pod of the network on the node, so all its configs must agree"
    } else {
        "its pods share the bridge, and so the L2, with this network's, so the settings of every network \
         on one bridge must agree"
    };
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "network {network} runs on this node with {}, and this config asks for {}: {scope}. Use the \
             same settings, or delete the network's pods on this node before changing them",
            describe(running),
            describe(wanted)
        ),
    ))
}

/// The fast-path networks under `bpf_root` with pods on bridge `bridge` (by ifindex), and
/// their settings. Fails closed: a datapath that exists but cannot be read is an error.
fn networks_on_bridge(bpf_root: &Path, bridge: u32) -> Result<Vec<(String, NodeConfig)>, CniError> {
    let mut found = Vec::new();
    for network in Datapath::networks(bpf_root) {
        let datapath = match Datapath::open(bpf_root, &network) {
            Ok(datapath) => datapath,
            Err(DatapathError::NotLoaded { .. }) => continue,
            Err(error) => return Err(error.into()),
        };
        let settings = datapath.node_config()?;
        if settings.flags & NODE_ENABLED != 0
            && settings.bridge_ifindex == bridge
            && !datapath.has_no_endpoints()?
        {
            found.push((network, settings));
        }
    }
    Ok(found)
}

/// A config without the fast path must not add a pod to a bridge where pods are checked
/// (of any network): its pod would have none of their isolation checks. Called before the
/// pod's port is made and again once it is on the bridge, under the node's datapath lock:
/// a first checked pod that comes in between finds the port (see [`refuse_unchecked_pods`]),
/// or this finds that pod.
pub fn check_plain_bridge_allowed(request: &Request, bridge: &Link) -> Result<(), CniError> {
    let bpf_root = request.config.bpf_root();
    let _lock = Datapath::lock_node(&bpf_root)?;
    let checked: Vec<String> = networks_on_bridge(&bpf_root, bridge.index)?
        .into_iter()
        .filter(|(_, settings)| settings.flags & NODE_ANTI_SPOOF != 0)
        .map(|(network, _)| network)
        .collect();
    if checked.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "{} has pods of network(s) {} with the fast path and its isolation checks on this node, and this \
             config (network {}) has \"fastPath\": false: its pod would bypass their checks on the same L2. \
             Use the same settings, or delete those pods on this node first",
            bridge.name,
            checked.join(", "),
            request.config.net.name
        ),
    ))
}

/// The first pod with isolation checks on a bridge must not share it with pods that have
/// none: flatbridge's ports (by their alias) without a program of ours on their ingress,
/// that is pods a config without the fast path added. Runs after the pod's endpoint is in
/// and before the node's lock is let go (see [`EndpointAdded`]), so that a plain ADD that
/// comes later finds the endpoint (see [`check_plain_bridge_allowed`]) and a checked ADD
/// that comes later is not taken for the first while this one may still be refused.
pub async fn refuse_unchecked_pods(
    request: &Request,
    datapath: &Datapath,
    node: &Netlink,
    bridge: &Link,
    host: &Link,
    added: EndpointAdded,
) -> Result<(), CniError> {
    if !added.first_checked() {
        return Ok(());
    }
    let refused = unchecked_pods(request, node, bridge, host).await;
    if refused.is_err() {
        // Before the lock goes: an ADD that takes it next must not count this pod.
        datapath.remove_endpoint(host.index)?;
    }
    drop(added);
    refused
}

async fn unchecked_pods(
    request: &Request,
    node: &Netlink,
    bridge: &Link,
    host: &Link,
) -> Result<(), CniError> {
    let bpf_root = request.config.bpf_root();
    let mut ours = Vec::new();
    for network in Datapath::networks(&bpf_root) {
        match Datapath::open(&bpf_root, &network) {
            Ok(datapath) => ours.extend(datapath.program_id(program_name::FROM_POD)),
            Err(DatapathError::NotLoaded { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let mut unchecked = Vec::new();
    for port in node.ports_of(bridge.index).await? {
        if port.index == host.index || !is_pod_veth(&port) {
            continue;
        }
        let programs = node.bpf_filter_programs(port.index, true).await?;
        if !programs.iter().any(|id| ours.contains(id)) {
            unchecked.push(format!("{} ({})", port.name, port.alias.unwrap_or_default()));
        }
    }
    if unchecked.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "{} has flatbridge pods without the fast path's isolation checks: {}. A pod with them would share \
             the L2 with pods that can spoof it; delete those pods first",
            bridge.name,
            unchecked.join(", ")
        ),
    ))
}

/// Makes the pod known to the programs, before its veth comes up (its programs are on
/// already, see `Datapath::attach_pod`; until its endpoint exists they drop its frames):
/// the node's settings, the pod's MAC and addresses, and the uplink programs, attached
/// once. A MAC or address another pod holds is refused, and so are settings that differ
/// from those of the network's pods or of other networks' pods on the same bridge.
/// Returns with the node's lock still held when this is the first checked pod on the
/// bridge, for [`refuse_unchecked_pods`].
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the ADD's state"
)]
pub fn add_endpoint(
    request: &Request,
    datapath: &Datapath,
    bridge: &Link,
    host: &Link,
    uplink: &node::Uplink,
    pod_mac: [u8; 6],
    result: &CniResult,
    added: &mut Added,
) -> Result<EndpointAdded, CniError> {
    let config = &request.config;
    let wanted = wanted_node_config(request, bridge, uplink);
    let ipv4s: Vec<Ipv4Addr> = result.ipv4s().collect();
    let ipv6s: Vec<Ipv6Addr> = result.ipv6s().collect();
    let endpoint = Endpoint {
        ifindex: host.index,
        ipv4: ipv4s.first().map_or([0; 4], Ipv4Addr::octets),
        mac: pod_mac,
        extra_ipv4s: u8::try_from(ipv4s.len().saturating_sub(1)).unwrap_or(u8::MAX),
        ipv6s: u8::try_from(ipv6s.len()).unwrap_or(u8::MAX),
    };
    let lock = datapath.lock()?;
    let running = datapath.node_config()?;
    if running.flags & NODE_ENABLED != 0 && !datapath.has_no_endpoints()? {
        settings_agree(&config.net.name, true, &running, &wanted)?;
    }
    let bpf_root = config.bpf_root();
    let on_bridge = networks_on_bridge(&bpf_root, bridge.index)?;
    for (network, settings) in &on_bridge {
        if *network != config.net.name {
            settings_agree(network, false, settings, &wanted)?;
        }
    }
    let first_checked = wanted.flags & NODE_ANTI_SPOOF != 0
        && !on_bridge
            .iter()
            .any(|(_, settings)| settings.flags & NODE_ANTI_SPOOF != 0);
    // The port is new: what any network still has at its ifindex is a dead pod's.
    for network in Datapath::networks(&bpf_root) {
        if network != config.net.name
            && let Ok(other) = Datapath::open(&bpf_root, &network)
        {
            other.forget_reused_port(host.index)?;
        }
    }
    datapath.set_node_config(&wanted)?;
    datapath.add_endpoint(endpoint, &ipv4s, &ipv6s)?;
    added.endpoint = Some(host.index);
    Ok(EndpointAdded {
        lock: first_checked.then_some(lock),
    })
}

/// The uplink programs on the bridge's uplink, attached once (again, when another tool
/// removed them).
pub async fn ensure_uplink_programs(
    datapath: &Datapath,
    node: &Netlink,
    uplink: &node::Uplink,
) -> Result<(), CniError> {
    if let Some(uplink) = &uplink.link {
        for program in program_name::UPLINK {
            if let Some(how) = datapath.ensure_attached(node, program, &uplink.name).await? {
                log::info!("attached {program} to {} ({})", uplink.name, how.name());
            }
        }
    }
    Ok(())
}

/// What [`add_endpoint`] leaves: the node's lock, while the pod is the first checked one
/// on its bridge and the bridge has yet to be looked at for unchecked pods. Dropping it
/// lets the lock go.
pub struct EndpointAdded {
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl EndpointAdded {
    fn first_checked(&self) -> bool {
        self.lock.is_some()
    }
}

/// What is left once the pod is up: the gateways the node owns (their address is on the
/// bridge) are answered by the programs (ARP and neighbour solicitations). `bridge` as it is now; should its MAC have changed
/// when the pod's port joined (a bridge whose MAC was never set), the node's settings
/// follow.
pub async fn finish_pod(
    datapath: &Datapath,
    node: &Netlink,
    bridge: &Link,
    result: &CniResult,
) -> Result<(), CniError> {
    let bridge_mac = bridge.mac.unwrap_or_default();
    let running = datapath.node_config()?;
    if running.bridge_mac != bridge_mac {
        let _lock = datapath.lock()?;
        let running = datapath.node_config()?;
        datapath.set_node_config(&NodeConfig {
            bridge_mac,
            ..running
        })?;
    }
    let bridge_addresses = node.addrs(bridge.index).await?;
    for ip in &result.ips {
        if let Some(gateway) = ip.gateway
            && gateway.is_ipv4() == ip.address.is_ipv4()
            && bridge_addresses.iter().any(|address| address.ip() == gateway)
        {
            let subnet = IpNetwork::new(gateway, ip.address.prefix()).map_err(|error| {
                CniError::new(code::INVALID_CONFIG, format!("gateway {gateway}: {error}"))
            })?;
            datapath.set_gateway(subnet, bridge_mac)?;
        }
    }
    Ok(())
}

/// Takes back what [`add_endpoint`] did; errors are logged, the rollback goes on.
pub fn undo_add(request: &Request, added: Added) {
    let config = &request.config;
    let Ok(datapath) = Datapath::open(&config.bpf_root(), &config.net.name) else {
        return;
    };

    if let Some(ifindex) = added.endpoint {
        let removed = datapath.lock().map_err(CniError::from).and_then(|_lock| {
            datapath.remove_endpoint(ifindex)?;
            if datapath.has_no_endpoints()? {
                datapath.forget_gateways(|_| true)?;
            }
            Ok(())
        });
        if let Err(error) = removed {
            log::error!("rollback: {error}");
        }
    }
}

/// DEL's share: forget the pod behind `host`, before its veth goes. The programs on the
/// veth go away with it. When the veth is already gone (the pod's namespace was deleted
/// first), its port is unknown: sweep every endpoint whose veth vanished. The pod's
/// confirmed flows stay in their LRU map but are never followed again: the programs redirect
/// to a pod's port only while its endpoint names the MAC the flow was confirmed for (see
/// flow.rs). A network without a datapath is fine.
pub async fn del_pod(request: &Request, node: &Netlink, host: Option<&Link>) -> Result<(), CniError> {
    let config = &request.config;
    let Ok(datapath) = Datapath::open(&config.bpf_root(), &config.net.name) else {
        return Ok(());
    };
    let _lock = datapath.lock()?;
    match host {
        Some(host) => {
            datapath.remove_endpoint(host.index)?;
        }
        None => sweep_locked(&datapath, node).await?,
    }
    // The network's last pod took its gateways' reason to be answered with it.
    if datapath.has_no_endpoints()? {
        datapath.forget_gateways(|_| true)?;
    }
    Ok(())
}

/// Removes endpoints whose host veth no longer exists, link pins of devices that are gone,
/// and gateways no pod is behind any more; goes on past failures and reports them all.
///
/// The map is read before the links are listed: an endpoint is written only once its veth
/// exists, so a pod that ADD makes in the meantime either is not read yet or has its veth
/// listed — it is never taken for one whose veth vanished.
pub async fn sweep(datapath: &Datapath, node: &Netlink) -> Result<(), CniError> {
    let _lock = datapath.lock()?;
    sweep_locked(datapath, node).await
}

async fn sweep_locked(datapath: &Datapath, node: &Netlink) -> Result<(), CniError> {
    let ports = datapath.endpoint_ports()?;
    let pinned: Vec<(&str, Vec<String>)> = program_name::ALL
        .iter()
        .map(|&program| (program, datapath.pinned_devices(program)))
        .collect();
    let links = node.links().await?;
    let mut errors: Vec<CniError> = Vec::new();
    for ifindex in ports {
        if !links.iter().any(|link| link.index == ifindex) {
            match datapath.remove_endpoint(ifindex) {
                Ok(_) => log::info!("removed the endpoint of vanished port #{ifindex}"),
                Err(error) => errors.push(error.into()),
            }
        }
    }
    for (program, ifnames) in pinned {
        for ifname in ifnames {
            if !links.iter().any(|link| link.name == ifname)
                && let Err(error) = datapath.detach(program, &ifname)
            {
                errors.push(error.into());
            }
        }
    }
    if let Err(error) = datapath.forget_stale_gateways(node).await {
        errors.push(error.into());
    }
    all_done(errors)
}
