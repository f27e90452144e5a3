//! The node's state as one typed value: the kernel's features, each network's programs and
//! where the kernel runs them, its settings, endpoints, gateways, flows and counters, and the
//! addresses IPAM keeps out because another host answered for them. Built once from the
//! pins, the kernel and the lease directories, without writing anything; `flatbridge status`
//! renders it as text or prints it as JSON (`docs/status.schema.json` is its schema, checked
//! by the tests), and whatever exports the node's state reads this same value.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::SystemTime,
};

use flatbridge_common::{
    Endpoint, FlowDirection, FlowKey, FlowKey6, NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NODE_ENABLED,
    NODE_TCP_OFFLOAD, Verdict, program_name,
};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{Attachment, BPF_OBJECT_HASH, Datapath, DatapathError, Tracked},
    ipam::{self, DiskStore, IpamError},
    kernel,
    mac::Mac,
    netlink::{Netlink, NetlinkError},
};

/// The version of the report's shape, in its `schema` field: raised when a field goes away
/// or changes meaning (new fields do not raise it).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no datapath for network {network} under {}: {source}", bpf_root.display())]
    NoDatapath {
        network: String,
        bpf_root: std::path::PathBuf,
        #[source]
        source: DatapathError,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

/// Everything `flatbridge status` knows of the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// The version of this shape (raised when a field goes away or changes meaning).
    pub schema: u32,
    pub kernel: KernelReport,
    /// Every network with a datapath under the BPF root (or the one asked for), by name.
    pub networks: Vec<NetworkReport>,
    /// Addresses another host on the wire answered an ARP probe or an IPv6 duplicate
    /// address detection for, in every network's lease directory.
    pub conflicts: Vec<ConflictReport>,
}

/// What the kernel offers the datapath, found by asking it (never from its version).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct KernelReport {
    /// `uname -r`.
    pub release: String,
    /// TCX links (6.6+): the uplink programs attach over TCX, else as clsact filters.
    pub tcx: bool,
    /// The kernel's own BTF (/sys/kernel/btf/vmlinux).
    pub btf: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkReport {
    /// The network's name (`name` of its config).
    pub network: String,
    /// The directory of its pins.
    pub pins: String,
    /// The build of the programs that were loaded (a hash of the object).
    pub build: String,
    /// Whether that build is this binary's: a different one is upgraded by the next ADD.
    pub build_current: bool,
    pub node: NodeSettings,
    /// The four programs, each with the devices it was attached to.
    pub programs: Vec<ProgramReport>,
    /// The pods the datapath knows, by host veth index.
    pub endpoints: Vec<EndpointReport>,
    /// Gateway addresses the programs answer ARP for.
    pub gateways: Vec<GatewayReport>,
    /// Every tracked flow direction.
    pub flows: Vec<FlowReport>,
    /// One row per verdict of the programs, summed over CPUs, in the datapath's order.
    pub counters: Vec<CounterReport>,
    /// Local pods' addresses that a host on the wire claimed (sent ARP for) with another
    /// MAC since the pod was added: address conflicts (RFC 5227 section 2.4).
    pub wire_conflicts: Vec<WireConflictReport>,
    /// How many addresses the latest ADD probed ahead of their own ADD (the pool the next
    /// ADDs hand out from without waiting for a probe).
    pub probed_ahead: usize,
}

/// A local pod's address that another MAC claimed on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WireConflictReport {
    pub address: IpAddr,
    /// The pod's host-side veth.
    pub host_veth: String,
    pub pod_mac: Mac,
    /// The MAC that claimed the address on the wire.
    pub claimed_by: Mac,
    /// Milliseconds since the last such claim.
    pub seen_ms_ago: u64,
}

/// The node-wide settings the programs run with (the datapath's node map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// False until an ADD wrote the settings (or after something cleared them).
    pub enabled: bool,
    pub mode: OffloadMode,
    /// Whether TCP flows may be offloaded (`nf_conntrack_tcp_be_liberal` was 1 at ADD).
    pub tcp_offload: bool,
    /// How often an offloaded flow must be confirmed by netfilter again.
    pub revalidate_ms: u64,
    /// The pods' bridge, `-` when none is recorded.
    pub bridge: String,
    pub bridge_mac: Mac,
    /// The bridge's port to the wire, `-` when there is none.
    pub uplink: String,
    /// Whether the pods' frames are checked (`antiSpoof`).
    pub anti_spoof: bool,
}

/// `fastPathMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OffloadMode {
    /// Only flows netfilter accepted bypass the bridge.
    Confirmed,
    /// Every frame bypasses the bridge (nodes without Services or policy).
    Always,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgramReport {
    /// `from_pod`, `from_uplink`, `to_pod` or `to_uplink`.
    pub name: String,
    /// Its id, as `bpftool prog show` prints it; null when it is not pinned.
    pub id: Option<u32>,
    pub devices: Vec<DeviceReport>,
}

/// One device a program belongs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceReport {
    pub device: String,
    /// Whether the kernel runs the program there (asked of the kernel, not of the pins).
    pub attached: bool,
    pub attach: AttachMode,
}

/// How a program is attached to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum AttachMode {
    /// A pinned TCX link.
    #[serde(rename = "tcx")]
    Tcx,
    /// A clsact filter with the network's own handle.
    #[serde(rename = "tc-filter")]
    TcFilter,
    /// Recorded nowhere.
    #[serde(rename = "none")]
    None,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::TcFilter => "tc-filter",
            AttachMode::None => "none",
        }
    }
}

impl From<Option<Attachment>> for AttachMode {
    fn from(attachment: Option<Attachment>) -> Self {
        match attachment {
            Some(Attachment::Tcx) => AttachMode::Tcx,
            Some(Attachment::TcFilter) => AttachMode::TcFilter,
            None => AttachMode::None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointReport {
    pub addresses: Vec<Ipv4Addr>,
    /// The IPv6 addresses IPAM leased to the pod (its link-local is not listed).
    #[serde(default)]
    pub ipv6_addresses: Vec<std::net::Ipv6Addr>,
    pub mac: Mac,
    /// The pod's host-side veth, `(gone #N)` when no device has its index.
    pub host_veth: String,
    pub ifindex: u32,
    /// Whether the kernel runs `from_pod` on the host veth.
    pub attached: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GatewayReport {
    pub address: IpAddr,
    /// The gateway with the pods' prefix, e.g. `10.10.1.0/16` or `fd10:10::1:0/64`.
    #[cfg_attr(test, schemars(with = "String"))]
    pub subnet: IpNetwork,
    /// The MAC the programs answer with (the bridge's).
    pub mac: Mac,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowReport {
    pub protocol: FlowProtocol,
    /// `10.10.1.2:80`, or `[fd10:10::1:2]:80`.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The device the direction came in on.
    pub from: String,
    /// The device netfilter delivered it to, once confirmed.
    pub to: Option<String>,
    /// A FIN or RST was seen: the direction is on the slow path until the flow starts again.
    pub closed: bool,
    pub confirmed_ms_ago: Option<u64>,
    /// Whether the direction bypasses the bridge now: freshly confirmed, and its reverse too.
    pub offloaded: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FlowProtocol {
    Tcp,
    Udp,
    Other,
}

impl FlowProtocol {
    pub fn name(self) -> &'static str {
        match self {
            FlowProtocol::Tcp => "tcp",
            FlowProtocol::Udp => "udp",
            FlowProtocol::Other => "other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CounterReport {
    /// The verdict's name, e.g. `pod_to_pod` or `drop_spoofed_ip`.
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
    /// Last, after the numbers: scripts that read `"verdict":"…","packets":N` keep working.
    pub kind: VerdictKind,
}

/// What a verdict did with the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    /// Passed on: to the bridge, a pod or the uplink.
    Forward,
    /// Answered by the program (ARP, IPv6 neighbour discovery).
    Answer,
    /// A flow direction confirmed or ended (the frame itself went on through the bridge).
    Flow,
    /// Dropped.
    Drop,
    /// An address conflict seen on the wire (the frame itself went on to the bridge).
    Conflict,
}

impl VerdictKind {
    pub fn of(verdict: Verdict) -> Self {
        match verdict {
            Verdict::PodToBridge
            | Verdict::PodToPod
            | Verdict::PodToUplink
            | Verdict::UplinkToBridge
            | Verdict::UplinkToPod => VerdictKind::Forward,
            Verdict::PodArpAnswered
            | Verdict::UplinkArpAnswered
            | Verdict::PodNdAnswered
            | Verdict::UplinkNdAnswered => VerdictKind::Answer,
            Verdict::FlowConfirmed | Verdict::FlowClosed => VerdictKind::Flow,
            Verdict::DropSpoofedMac
            | Verdict::DropSpoofedIp
            | Verdict::DropSpoofedArp
            | Verdict::DropUnknownPort
            | Verdict::DropVlanTagged
            | Verdict::DropMalformed
            | Verdict::DropUnknownL3
            | Verdict::DropRouterAdvert
            | Verdict::DropIcmpRedirect
            | Verdict::DropDhcpServer
            | Verdict::DropSpoofedIpv6
            | Verdict::DropSpoofedNd
            | Verdict::DropOwnAdvertisement => VerdictKind::Drop,
            Verdict::UplinkArpConflict | Verdict::UplinkNdConflict => VerdictKind::Conflict,
        }
    }
}

/// An address IPAM keeps out of allocations (see `flatbridge conflicts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConflictReport {
    pub network: String,
    pub address: std::net::IpAddr,
    /// The MAC of the host that answered.
    pub mac: String,
    /// Seconds since the probe that found it.
    pub age_s: u64,
    /// The marker is older than its 10 minutes: the address is handed out (and probed) again.
    pub expired: bool,
}

impl ConflictReport {
    /// The report's row for a conflict of `network`'s store, as of `now`.
    pub fn new(network: &str, conflict: &ipam::Conflict, now: SystemTime) -> Self {
        Self {
            network: network.to_owned(),
            address: conflict.ip,
            mac: conflict.mac.clone(),
            age_s: now.duration_since(conflict.written).unwrap_or_default().as_secs(),
            expired: conflict.expired,
        }
    }
}

/// The report of every network under `bpf_root` (or only `network`) and of the conflicts
/// under `ipam_data_dir`. Reads; never creates, locks or changes anything.
pub async fn build(
    netlink: &Netlink,
    bpf_root: &Path,
    ipam_data_dir: &Path,
    network: Option<&str>,
) -> Result<NodeReport, ReportError> {
    let names = match network {
        Some(network) => vec![network.to_owned()],
        None => Datapath::networks(bpf_root),
    };
    let mut networks = Vec::with_capacity(names.len());
    for name in names {
        let datapath = Datapath::open(bpf_root, &name).map_err(|source| ReportError::NoDatapath {
            network: name.clone(),
            bpf_root: bpf_root.to_path_buf(),
            source,
        })?;
        networks.push(network_report(netlink, &datapath).await?);
    }
    Ok(NodeReport {
        schema: SCHEMA_VERSION,
        kernel: KernelReport {
            release: kernel::release(),
            tcx: kernel::has_tcx(),
            btf: kernel::has_btf(),
        },
        networks,
        conflicts: conflicts(ipam_data_dir, SystemTime::now()),
    })
}

/// The name of the device with `ifindex` in this namespace.
fn ifname(ifindex: u32) -> String {
    if ifindex == 0 {
        return "-".into();
    }
    nix::net::if_::if_indextoname(ifindex)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("(gone #{ifindex})"))
}

async fn network_report(netlink: &Netlink, datapath: &Datapath) -> Result<NetworkReport, ReportError> {
    let layout = datapath.layout();
    let build = layout.markers("build-").into_iter().next().unwrap_or_default();
    let endpoints = datapath.endpoints()?;
    // The programs the kernel runs at ingress and egress of each pod's host veth.
    let mut pod_filters: HashMap<u32, (Vec<u32>, Vec<u32>)> = HashMap::new();
    for (endpoint, _) in &endpoints {
        let ingress = netlink.bpf_filter_programs(endpoint.ifindex, true).await?;
        let egress = netlink.bpf_filter_programs(endpoint.ifindex, false).await?;
        pod_filters.insert(endpoint.ifindex, (ingress, egress));
    }
    let mut programs = Vec::with_capacity(program_name::ALL.len());
    for name in program_name::ALL {
        let id = datapath.program_id(name);
        let devices = if program_name::POD.contains(&name) {
            endpoints
                .iter()
                .map(|(endpoint, _)| {
                    let (ingress, egress) = pod_filters.get(&endpoint.ifindex).cloned().unwrap_or_default();
                    let running = if program_name::is_egress(name) {
                        egress
                    } else {
                        ingress
                    };
                    DeviceReport {
                        device: ifname(endpoint.ifindex),
                        attached: id.is_some_and(|id| running.contains(&id)),
                        attach: AttachMode::TcFilter,
                    }
                })
                .collect()
        } else {
            let mut devices = Vec::new();
            for device in datapath.pinned_devices(name) {
                devices.push(DeviceReport {
                    attached: datapath.runs_on(netlink, name, &device).await,
                    attach: datapath.attachment(name, &device).into(),
                    device,
                });
            }
            devices
        };
        programs.push(ProgramReport {
            name: name.to_owned(),
            id,
            devices,
        });
    }
    let node = datapath.node_config()?;
    let mut ipv6_by_port = datapath.ipv6_addresses_by_port()?;
    let wire_conflicts = wire_conflicts(datapath, &pod_addresses(&endpoints, &ipv6_by_port));
    // Pins older than the probe map have none: nothing is probed ahead.
    let probed_ahead = datapath.wire_probes().map_or(0, |probes| {
        // The latest ADD's next addresses (the agent keeps only those fresh).
        let of_latest_add = crate::cmd::wire::of_latest_add(&probes);
        probes.iter().filter(|(_, probe)| of_latest_add(probe)).count()
    });
    let from_pod_id = datapath.program_id(program_name::FROM_POD);
    let endpoints = endpoints
        .into_iter()
        .map(|(endpoint, addresses)| EndpointReport {
            addresses,
            ipv6_addresses: ipv6_by_port.remove(&endpoint.ifindex).unwrap_or_default(),
            mac: Mac(endpoint.mac),
            host_veth: ifname(endpoint.ifindex),
            ifindex: endpoint.ifindex,
            attached: pod_filters
                .get(&endpoint.ifindex)
                .is_some_and(|(ingress, _)| from_pod_id.is_some_and(|id| ingress.contains(&id))),
        })
        .collect();
    let gateways = datapath
        .gateways()?
        .into_iter()
        .map(|(subnet, mac)| GatewayReport {
            address: subnet.ip(),
            subnet,
            mac: Mac(mac),
        })
        .collect();
    let counters = datapath
        .counters()?
        .into_iter()
        .map(|count| CounterReport {
            verdict: count.verdict.name().to_owned(),
            packets: count.total.packets,
            bytes: count.total.bytes,
            kind: VerdictKind::of(count.verdict),
        })
        .collect();
    Ok(NetworkReport {
        network: datapath.network().to_owned(),
        pins: layout.dir().display().to_string(),
        build_current: build == BPF_OBJECT_HASH,
        build,
        node: NodeSettings {
            enabled: node.flags & NODE_ENABLED != 0,
            mode: if node.flags & NODE_CONFIRM_FLOWS != 0 {
                OffloadMode::Confirmed
            } else {
                OffloadMode::Always
            },
            tcp_offload: node.flags & NODE_TCP_OFFLOAD != 0,
            revalidate_ms: node.revalidate_ns / 1_000_000,
            bridge: ifname(node.bridge_ifindex),
            bridge_mac: Mac(node.bridge_mac),
            uplink: ifname(node.uplink_ifindex),
            anti_spoof: node.flags & NODE_ANTI_SPOOF != 0,
        },
        programs,
        endpoints,
        gateways,
        flows: flows(datapath, node.revalidate_ns)?,
        counters,
        wire_conflicts,
        probed_ahead,
    })
}

/// Every address of every pod, with its endpoint: the IPv4 ones `endpoints` lists and the
/// IPv6 ones of `ipv6_by_port` (`Datapath::ipv6_addresses_by_port`) of those endpoints.
pub fn pod_addresses<'a>(
    endpoints: &'a [(Endpoint, Vec<Ipv4Addr>)],
    ipv6_by_port: &BTreeMap<u32, Vec<Ipv6Addr>>,
) -> Vec<(IpAddr, &'a Endpoint)> {
    endpoints
        .iter()
        .flat_map(|(endpoint, addresses)| {
            let ipv6 = ipv6_by_port.get(&endpoint.ifindex).into_iter().flatten();
            addresses
                .iter()
                .map(|&address| IpAddr::V4(address))
                .chain(ipv6.map(|&address| IpAddr::V6(address)))
                .map(move |address| (address, endpoint))
        })
        .collect()
}

/// The claims on the wire of the pods' addresses (`pods`, see [`pod_addresses`]) by other
/// MACs within the claim memory (`wire::CLAIM_MEMORY`: a conflict nobody repeats for that
/// long is over), most recent first (ADD forgets a pod's addresses' claims, so each is
/// younger than its pod). One lookup per pod address, not a walk of the claim maps (8192
/// entries each). Pins older than a claims map have none of its family.
pub fn wire_conflicts(datapath: &Datapath, pods: &[(IpAddr, &Endpoint)]) -> Vec<WireConflictReport> {
    let now = kernel::monotonic_ns();
    let memory = kernel::nanos(crate::cmd::wire::CLAIM_MEMORY);
    let mut conflicts: Vec<WireConflictReport> = pods
        .iter()
        .filter_map(|&(address, pod)| {
            let claim = datapath.wire_claim(address).ok().flatten()?;
            let age_ns = now.saturating_sub(claim.seen_ns);
            (pod.mac != claim.mac && age_ns <= memory).then(|| WireConflictReport {
                address,
                host_veth: ifname(pod.ifindex),
                pod_mac: Mac(pod.mac),
                claimed_by: Mac(claim.mac),
                seen_ms_ago: age_ns / 1_000_000,
            })
        })
        .collect();
    conflicts.sort_by_key(|conflict| conflict.seen_ms_ago);
    conflicts
}

/// What the report needs of a flow key of either family.
trait ReportedKey: FlowDirection + Eq + std::hash::Hash {
    fn src(&self) -> SocketAddr;
    fn dst(&self) -> SocketAddr;
}

impl ReportedKey for FlowKey {
    fn src(&self) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::from(self.src).into(), u16::from_be(self.src_port))
    }
    fn dst(&self) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::from(self.dst).into(), u16::from_be(self.dst_port))
    }
}

impl ReportedKey for FlowKey6 {
    fn src(&self) -> SocketAddr {
        SocketAddr::new(Ipv6Addr::from(self.src).into(), u16::from_be(self.src_port))
    }
    fn dst(&self) -> SocketAddr {
        SocketAddr::new(Ipv6Addr::from(self.dst).into(), u16::from_be(self.dst_port))
    }
}

/// The flow maps as rows, IPv4 first: a direction is offloaded while its confirmation is
/// fresh and its reverse, not closed, was confirmed back out of the port it came in on.
fn flows(datapath: &Datapath, revalidate_ns: u64) -> Result<Vec<FlowReport>, DatapathError> {
    let mut rows = flow_rows(&datapath.flows()?, revalidate_ns);
    rows.extend(flow_rows(&datapath.flows6()?, revalidate_ns));
    Ok(rows)
}

fn flow_rows<K: ReportedKey>(flows: &[Tracked<K>], revalidate_ns: u64) -> Vec<FlowReport> {
    let now = kernel::monotonic_ns();
    let window = revalidate_ns.max(1);
    // Each direction's reverse by key: a full flow map is 65536 directions.
    let by_key: HashMap<_, _> = flows.iter().map(|flow| (flow.0, flow)).collect();
    flows
        .iter()
        .map(|(key, seen, confirmed)| {
            let reverse = by_key.get(&key.reversed()).copied();
            let offloaded = confirmed.is_some_and(|out| {
                now.saturating_sub(out.confirmed_ns) <= window
                    && reverse.is_some_and(|(_, back_seen, back)| {
                        back_seen.closed == 0 && back.is_some_and(|back| back.out_ifindex == seen.in_ifindex)
                    })
            });
            FlowReport {
                protocol: match key.protocol() {
                    6 => FlowProtocol::Tcp,
                    17 => FlowProtocol::Udp,
                    _ => FlowProtocol::Other,
                },
                src: key.src(),
                dst: key.dst(),
                from: ifname(seen.in_ifindex),
                to: confirmed.map(|out| ifname(out.out_ifindex)),
                closed: seen.closed != 0,
                confirmed_ms_ago: confirmed.map(|out| now.saturating_sub(out.confirmed_ns) / 1_000_000),
                offloaded,
            }
        })
        .collect()
}

/// The conflict markers of every network's lease directory under `ipam_data_dir`, read
/// without locking or creating anything. A directory that cannot be read is skipped: a
/// report of the datapath must not fail on a lease directory.
pub fn conflicts(ipam_data_dir: &Path, now: SystemTime) -> Vec<ConflictReport> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(ipam_data_dir) else {
        return found;
    };
    let mut networks: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    networks.sort();
    for network in networks {
        let Ok(Some(store)) = DiskStore::peek(&ipam_data_dir.join(&network)) else {
            continue;
        };
        for conflict in ipam::conflicts(&store, now).unwrap_or_default() {
            found.push(ConflictReport::new(&network, &conflict, now));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/status.schema.json");

    fn schema_text() -> String {
        let schema = schemars::schema_for!(NodeReport);
        serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
    }

    /// The committed schema is the one the types give: change a field and this fails until
    /// `FLATBRIDGE_WRITE_SCHEMA=1 cargo test -p flatbridge report` rewrites the file.
    #[test]
    fn the_documented_schema_is_the_types() {
        let generated = schema_text();
        if std::env::var_os("FLATBRIDGE_WRITE_SCHEMA").is_some() {
            std::fs::write(SCHEMA_FILE, &generated).expect("write the schema");
        }
        let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/status.schema.json is not the schema of report::NodeReport; run \
             FLATBRIDGE_WRITE_SCHEMA=1 cargo test -p flatbridge report and commit the file"
        );
    }

    #[test]
    fn every_verdict_has_a_kind_and_drops_are_the_drop_verdicts() {
        for verdict in Verdict::ALL {
            let kind = VerdictKind::of(verdict);
            assert_eq!(
                kind == VerdictKind::Drop,
                verdict.name().starts_with("drop_"),
                "{}",
                verdict.name()
            );
        }
    }

    #[test]
    fn a_report_round_trips_and_unknown_fields_are_refused() {
        let report = NodeReport {
            schema: SCHEMA_VERSION,
            kernel: KernelReport {
                release: "6.1.0".into(),
                tcx: false,
                btf: true,
            },
            networks: vec![],
            conflicts: vec![ConflictReport {
                network: "data".into(),
                address: "10.10.1.9".parse().expect("an address"),
                mac: "02:00:00:00:00:01".into(),
                age_s: 3,
                expired: false,
            }],
        };
        let text = serde_json::to_string(&report).expect("serialise");
        assert_eq!(serde_json::from_str::<NodeReport>(&text).expect("parse"), report);
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
        value["kernel"]["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<NodeReport>(value).is_err());
    }
}
