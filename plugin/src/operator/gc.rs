//! `flatbridge gc`: by hand, what the runtime's CNI GC and the agent's reconcile do for a
//! network — sweep the endpoints of vanished veths and free the leases whose pod's host veth
//! is gone — for nodes without the agent and runtimes that never call GC (containerd).
use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::Context;

use super::block_on;
use crate::{
    agent::leases_without_veth,
    datapath::Datapath,
    ipam::{DiskStore, Store},
    netlink::Netlink,
};

/// Frees the leases of `network` whose host veth is gone and that were written at least
/// `min_age` ago (an ADD writes the lease before it makes the veth), under the IPAM lock,
/// and sweeps the network's datapath. Returns what it did.
pub fn gc(network: &str, bpf_root: &Path, ipam_data_dir: &Path, min_age: Duration) -> anyhow::Result<String> {
    let mut said = Vec::new();
    let links: HashSet<String> = block_on(async {
        let netlink = Netlink::open()?;
        if let Ok(datapath) = Datapath::open(bpf_root, network) {
            crate::cmd::sweep(&datapath, &netlink).await?;
            said.push(format!("swept the datapath of {network}"));
        }
        Ok(netlink.links().await?.into_iter().map(|link| link.name).collect())
    })?;
    let dir = ipam_data_dir.join(network);
    if !dir.is_dir() {
        said.push(format!("no leases for {network} in {}", dir.display()));
        return Ok(said.join("; "));
    }
    let mut store =
        DiskStore::open(&dir).with_context(|| format!("failed to open the leases of {network}"))?;
    let now = SystemTime::now();
    let mut freed = Vec::new();
    for (ip, owner) in leases_without_veth(network, store.leases()?, &links) {
        let old_enough = store
            .written_at(ip)?
            .is_some_and(|written| now.duration_since(written).unwrap_or_default() >= min_age);
        if old_enough {
            store.remove(ip)?;
            freed.push(format!("{ip} ({owner})"));
        }
    }
    said.push(if freed.is_empty() {
        "no lease to free".to_owned()
    } else {
        format!("freed {} lease(s): {}", freed.len(), freed.join(", "))
    });
    Ok(said.join("; "))
}
