//! STATUS: can this node serve an ADD now, and are the pods it has whole? 50 when an ADD
//! would fail (the bridge name is taken by another kind of device, the datapath cannot be
//! loaded on this kernel or BPF filesystem, the IPAM store cannot take a lease, a range set
//! is full); 51 when ADDs would work but pods already there are degraded (a program of
//! theirs, or of the uplink, was detached by another tool). A poll changes nothing on the
//! node: no lock, no file written, nothing pinned.
use flatbridge_common::{NODE_ENABLED, program_name};

use super::{block_on, ipam_plugin::IpamPlugin};
use crate::{
    cni::{CniError, Request, code},
    datapath::Datapath,
    netlink::{LinkKind, Netlink},
};

pub fn status(request: &Request) -> Result<(), CniError> {
    let config = &request.config;
    let bridge = &config.net.bridge;
    let not_available = |why: String| CniError::new(code::NOT_AVAILABLE, why);
    let degraded = block_on(async {
        let node = Netlink::open()?;
        // A missing bridge is fine: the first ADD creates it.
        if let Some(link) = node.link_by_name(bridge).await?
            && link.kind != LinkKind::Bridge
        {
            return Err(not_available(format!(
                "{bridge} exists but is not a bridge, so no pod can be added"
            )));
        }
        if !config.fast_path() {
            return Ok(Vec::new());
        }
        match Datapath::open(&config.bpf_root(), &config.net.name) {
            Ok(datapath) if datapath.is_loaded() => detached(&datapath, &node).await,
            // Not loaded yet, or another build: the next ADD loads this one. Would it load?
            _ => match Datapath::probe(&config.bpf_root()) {
                Ok(()) => Ok(Vec::new()),
                Err(error) => Err(not_available(format!(
                    "the eBPF datapath cannot be loaded on this node, so ADD would fail: {error}"
                ))),
            },
        }
    })?;
    if let Some(ipam) = IpamPlugin::of(request)? {
        ipam.status(request)?;
    }
    if degraded.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        code::LIMITED_CONNECTIVITY,
        format!(
            "pods of network {} may have limited connectivity: {} (another tool removed the \
             programs; delete and re-add those pods to get them back)",
            config.net.name,
            degraded.join("; ")
        ),
    ))
}

/// The devices whose programs are not (all) attached, as the kernel says.
async fn detached(datapath: &Datapath, node: &Netlink) -> Result<Vec<String>, CniError> {
    let mut missing = Vec::new();
    let from_pod = datapath.program_id(program_name::FROM_POD);
    let to_pod = datapath.program_id(program_name::TO_POD);
    for (endpoint, _) in datapath.endpoints()? {
        let Some(link) = node.link_by_index(endpoint.ifindex).await? else {
            // Gone with its pod; the next DEL or GC forgets it.
            continue;
        };
        let ingress = node.bpf_filter_programs(link.index, true).await?;
        let egress = node.bpf_filter_programs(link.index, false).await?;
        let attached =
            from_pod.is_some_and(|id| ingress.contains(&id)) && to_pod.is_some_and(|id| egress.contains(&id));
        if !attached {
            missing.push(format!("host veth {} has lost its programs", link.name));
        }
    }
    let settings = datapath.node_config()?;
    if settings.flags & NODE_ENABLED != 0
        && settings.uplink_ifindex != 0
        && let Some(uplink) = node.link_by_index(settings.uplink_ifindex).await?
    {
        for program in program_name::UPLINK {
            if !datapath.runs_on(node, program, &uplink.name).await {
                missing.push(format!("uplink {} has lost {program}", uplink.name));
            }
        }
    }
    Ok(missing)
}
