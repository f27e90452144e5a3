//! GC: releases every lease and removes every flatbridge veth of this network whose
//! attachment is not in `cni.dev/valid-attachments`.
use std::collections::HashSet;

use super::{all_done, block_on, datapath_steps, ipam_plugin::IpamPlugin, parse_veth_alias};
use crate::{
    cni::{CniError, Request, code},
    datapath::Datapath,
    ipam::Owner,
    netlink::Netlink,
};

pub fn gc(request: &Request) -> Result<(), CniError> {
    let mut valid: HashSet<Owner> = request
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
    // Every step runs whatever the others did; the failures are reported together.
    let mut errors: Vec<CniError> = Vec::new();
    // Attachments whose veth is still there (its delete failed) keep their leases: the
    // address is in use until the veth goes, and the next GC tries again.
    let mut still_there: Vec<Owner> = Vec::new();
    // Without the list of links, which veths are still there is unknown: no lease is freed.
    let mut listed = false;
    let swept = block_on(async {
        let node = Netlink::open()?;
        let links = node.links().await?;
        listed = true;
        for link in links {
            let Some((container_id, ifname)) = link
                .alias
                .as_deref()
                .and_then(|alias| parse_veth_alias(alias, network))
            else {
                continue;
            };
            if !valid.contains(&Owner::new(container_id, ifname)) {
                log::info!("GC removes veth {} of {container_id}/{ifname}", link.name);
                if let Err(error) = node.delete_link(link.index).await {
                    errors.push(error.into());
                    still_there.push(Owner::new(container_id, ifname));
                }
            }
        }
        let config = &request.config;
        if let Ok(datapath) = Datapath::open(&config.bpf_root(), network) {
            datapath_steps::sweep(&datapath, &node).await?;
        }
        Ok::<(), CniError>(())
    });
    if let Err(error) = swept {
        errors.push(error);
    }
    valid.extend(still_there);
    if !listed {
        return all_done(errors);
    }
    match IpamPlugin::of(request) {
        Ok(Some(ipam)) => {
            if let Err(error) = ipam.gc(request, &valid) {
                errors.push(error);
            }
        }
        Ok(None) => {}
        Err(error) => errors.push(error),
    }
    all_done(errors)
}
