//! `flatbridge node setup | teardown`: put the node's uplink (NIC or bond) under the
//! bridge with the node's address, and take it back out. Run on the node, as root.
use std::path::Path;

use anyhow::Context;
use flatbridge_common::program_name;
use ipnetwork::IpNetwork;

use super::block_on;
use crate::{
    datapath::Datapath,
    netlink::Netlink,
    node::{self, SetupOutcome},
};

pub fn setup(
    bridge: &str,
    uplink: &str,
    gateways: &[IpNetwork],
    bpf_root: &Path,
    state_dir: &Path,
) -> anyhow::Result<String> {
    let outcome = block_on(async {
        let netlink = Netlink::open()?;
        Ok(node::setup_uplink(&netlink, state_dir, bridge, uplink, gateways).await?)
    })
    .with_context(|| format!("setting up {uplink} under {bridge} failed; nothing was left changed"))?;
    // Networks of this bridge that already have pods get their uplink programs now, not at
    // the next ADD.
    let mut attached = Vec::new();
    for datapath in datapaths_of(bridge, bpf_root)? {
        let network = datapath.network().to_owned();
        let uplink_index = nix::net::if_::if_nametoindex(uplink).context("uplink vanished")?;
        {
            // Read, change, write: under the lock an ADD takes to write the settings.
            let _lock = datapath.lock()?;
            let mut config = datapath.node_config()?;
            config.uplink_ifindex = uplink_index;
            config.no_uplink_seen_ns = 0;
            datapath.set_node_config(&config)?;
        }
        for program in program_name::UPLINK {
            datapath.attach(program, uplink)?;
        }
        attached.push(network);
    }
    let mut report = match outcome {
        SetupOutcome::Done(state) => format!(
            "{uplink} is now a port of {bridge}; moved addresses [{}] and {} routes to {bridge}; forwarding and \
             nf_conntrack_tcp_be_liberal on",
            state
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            state.routes.len()
        ),
        SetupOutcome::AlreadySetUp => format!("{uplink} already was a port of {bridge}; nothing to move"),
    };
    if !attached.is_empty() {
        report.push_str(&format!("; uplink programs attached for {}", attached.join(", ")));
    }
    Ok(report)
}

/// The datapaths of the networks whose pods hang off `bridge` (other networks on the node
/// are not this setup's business).
fn datapaths_of(bridge: &str, bpf_root: &Path) -> anyhow::Result<Vec<Datapath>> {
    let Ok(bridge_index) = nix::net::if_::if_nametoindex(bridge) else {
        return Ok(Vec::new());
    };
    Ok(Datapath::networks(bpf_root)
        .iter()
        .filter_map(|network| Datapath::open(bpf_root, network).ok())
        .filter(|datapath| {
            datapath
                .node_config()
                .is_ok_and(|config| config.bridge_ifindex == bridge_index)
        })
        .collect())
}

pub fn teardown(bridge: &str, bpf_root: &Path, state_dir: &Path) -> anyhow::Result<String> {
    let datapaths = datapaths_of(bridge, bpf_root)?;
    let torn = block_on(async {
        let netlink = Netlink::open()?;
        match node::teardown_uplink(&netlink, state_dir, bridge).await {
            Ok(uplink) => Ok(Some(uplink)),
            // Torn down already (or never set up): nothing to give back.
            Err(node::NodeError::NotSetUp(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    })?;
    let Some(uplink) = torn else {
        return Ok(format!(
            "{bridge} has no uplink set up by flatbridge: nothing to tear down"
        ));
    };
    for datapath in datapaths {
        for program in program_name::UPLINK {
            datapath.detach(program, &uplink)?;
        }
        let _lock = datapath.lock()?;
        let mut config = datapath.node_config()?;
        config.uplink_ifindex = 0;
        config.no_uplink_seen_ns = 0;
        datapath.set_node_config(&config)?;
        // Gateway addresses that left the bridge with the uplink are not the node's to
        // answer for any more.
        block_on(async {
            let netlink = Netlink::open()?;
            Ok(datapath.forget_stale_gateways(&netlink).await?)
        })?;
    }
    Ok(format!(
        "{uplink} has its addresses and routes back and is no longer a port of {bridge}"
    ))
}
