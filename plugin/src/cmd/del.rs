//! DEL: idempotent and best effort. A missing namespace, veth or lease is success; every
//! step runs even when an earlier one failed, and the failures are reported together.
use super::{all_done, block_on, datapath_steps, fault, host_veth_name, ipam_plugin::IpamPlugin};
use crate::{
    cni::{CniError, Request},
    ipam::Owner,
    netlink::{LinkKind, Netlink},
    netns::Netns,
};

pub fn del(request: &Request) -> Result<(), CniError> {
    let container_id = request.env.require_container_id()?;
    let ifname = request.env.require_ifname()?;
    let owner = Owner::new(container_id, ifname);
    let mut errors: Vec<CniError> = Vec::new();

    // Interfaces first, then the lease: an address must not be handed out again while a
    // veth still carries it, so a veth that could not be deleted keeps its lease (the
    // runtime's retry of DEL, or GC, frees it once the veth is gone).
    match block_on(delete_links(request, &owner, &mut errors)) {
        Ok(()) => {
            release(request, &owner, &mut errors);
            if let Err(error) = fault::point("del:lease") {
                errors.push(error);
            }
        }
        Err(error) => {
            log::warn!("keeping the lease of {owner}: its veth may still be there ({error})");
            errors.push(error);
        }
    }
    if errors.is_empty() {
        log::info!("deleted {owner}");
    }
    all_done(errors)
}

fn release(request: &Request, owner: &Owner, errors: &mut Vec<CniError>) {
    match IpamPlugin::of(request) {
        Ok(Some(ipam)) => {
            if let Err(error) = ipam.del(request, owner) {
                errors.push(error);
            }
        }
        Ok(None) => {}
        Err(error) => errors.push(error),
    }
}

/// Deletes the pod's veth (both ends), and forgets its endpoint first. Errors that do not
/// keep a veth alive (the datapath's) are collected in `errors`; an `Err` is a veth that
/// could not be looked up or deleted.
async fn delete_links(request: &Request, owner: &Owner, errors: &mut Vec<CniError>) -> Result<(), CniError> {
    let node = Netlink::open()?;
    let host_name = host_veth_name(&request.config.net.name, &owner.container_id, &owner.ifname);
    let host = node.link_by_name(&host_name).await?;
    // The endpoint goes before the veth: from then on the port sends nothing (its frames
    // are dropped as from an unknown port) and no ARP answer or offload points at it.
    if let Err(error) = datapath_steps::del_pod(request, &node, host.as_ref()).await {
        errors.push(error);
    }
    fault::point("del:endpoint")?;
    if let Some(host) = &host {
        // Deleting one end of a veth pair deletes both.
        node.delete_link(host.index).await?;
        fault::point("del:veth")?;
        return Ok(());
    }
    // No host veth: a pod interface may still be left from an ADD that failed half-way.
    let Some(path) = &request.env.netns else {
        return Ok(());
    };
    let pod_netns = match Netns::open(path) {
        Ok(netns) => netns,
        Err(error) if error.is_missing() => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let pod = pod_netns.run(Netlink::open)??;
    if let Some(link) = pod.link_by_name(&owner.ifname).await?
        && link.kind == LinkKind::Veth
    {
        pod.delete_link(link.index).await?;
    }
    Ok(())
}
