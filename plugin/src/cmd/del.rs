//! DEL: idempotent and best effort. A missing namespace, veth or lease is success; every
//! step runs even when an earlier one failed, and the failures are reported together.
use super::{block_on, fastpath, host_veth_name, ipam::Ipam};
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
    // veth still carries it.
    if let Err(error) = block_on(delete_links(request, &owner)) {
        errors.push(error);
    }
    match Ipam::of(request) {
        Ok(Some(ipam)) => {
            if let Err(error) = ipam.del(request, &owner) {
                errors.push(error);
            }
        }
        Ok(None) => {}
        Err(error) => errors.push(error),
    }
    let Some(first) = errors.first().cloned() else {
        log::info!("deleted {owner}");
        return Ok(());
    };
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(first.with_details(all.join("; ")))
}

async fn delete_links(request: &Request, owner: &Owner) -> Result<(), CniError> {
    let node = Netlink::open()?;
    let host_name = host_veth_name(&request.config.net.name, &owner.container_id, &owner.ifname);
    let host = node.link_by_name(&host_name).await?;
    // The endpoint goes before the veth: no ARP answer or new offload points at a dead port
    // (the pod's offloaded flows lapse within the revalidation period, see flow.rs).
    let forgotten = fastpath::del_pod(request, &node, host.as_ref()).await;
    if let Some(host) = &host {
        // Deleting one end of a veth pair deletes both.
        node.delete_link(host.index).await?;
    }
    forgotten?;
    if host.is_some() {
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
