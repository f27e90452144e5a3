//! STATUS: can this node serve an ADD now, and are the pods it has whole? 50 when an ADD
//! would fail (the bridge name is taken by another kind of device, the datapath cannot be
//! loaded on this kernel or BPF filesystem, the IPAM store cannot take a lease, a range set
//! is full); 51 when ADDs would work but pods already there are degraded (a program of
//! theirs, or of the uplink, was detached by another tool). A poll changes nothing on the
//! node: no lock, no file written, nothing pinned.
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
            Ok(datapath) if datapath.is_loaded() => Ok(datapath
                .detached(&node)
                .await?
                .iter()
                .map(ToString::to_string)
                .collect()),
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
             programs; `flatbridge agent` attaches them again within its reconcile period, or \
             delete and re-add those pods)",
            config.net.name,
            degraded.join("; ")
        ),
    ))
}
