//! GC: releases every lease and removes every flatbridge veth of this network whose
//! attachment is not in `cni.dev/valid-attachments`.
use std::collections::HashSet;

use super::{block_on, fastpath, ipam::Ipam, parse_veth_alias};
use crate::{
    cni::{CniError, Request, code},
    datapath::Datapath,
    ipam::Owner,
    netlink::Netlink,
};

pub fn gc(request: &Request) -> Result<(), CniError> {
    let valid: HashSet<Owner> = request
        .config
        .net
        .valid_attachments
        .as_ref()
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "GC needs cni.dev/valid-attachments in the config",
            )
        })?
        .iter()
        .map(|attachment| Owner::new(&attachment.container_id, &attachment.ifname))
        .collect();
    let network = &request.config.net.name;
    block_on(async {
        let node = Netlink::open()?;
        for link in node.links().await? {
            let Some((container_id, ifname)) = link
                .alias
                .as_deref()
                .and_then(|alias| parse_veth_alias(alias, network))
            else {
                continue;
            };
            if !valid.contains(&Owner::new(container_id, ifname)) {
                log::info!("GC removes veth {} of {container_id}/{ifname}", link.name);
                node.delete_link(link.index).await?;
            }
        }
        let config = &request.config;
        if let Ok(datapath) = Datapath::open(&config.bpf_root(), network) {
            fastpath::sweep(&datapath, &node).await?;
        }
        Ok(())
    })?;
    if let Some(ipam) = Ipam::of(request)? {
        ipam.gc(request, &valid)?;
    }
    Ok(())
}
