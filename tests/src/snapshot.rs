//! The whole of what flatbridge keeps on a node, to compare before and after: a failed or
//! killed call must leave it as it was.
use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

use crate::Node;

/// Everything of flatbridge's a node holds, for every network.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeState {
    links: BTreeSet<String>,
    /// The lease files of every network (`last_reserved_ip.*`, host-local's round-robin
    /// pointer, and its lock file may change: neither holds an address).
    leases: BTreeSet<String>,
    /// Per network: its endpoints and the gateways it answers for.
    networks: Vec<(Value, Vec<Value>, Value)>,
    pins: BTreeSet<String>,
    filters: String,
}

fn files_under(dir: &Path, prefix: &str, into: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            files_under(&entry.path(), &name, into);
        }
        into.insert(name);
    }
}

pub fn state(node: &Node) -> NodeState {
    let links = node
        .netns
        .ok(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
        .collect();
    let status = node.status();
    let networks = status["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|network| {
            let mut endpoints: Vec<Value> = network["endpoints"].as_array().cloned().unwrap_or_default();
            endpoints.sort_by_key(|endpoint| endpoint["host_veth"].to_string());
            (network["network"].clone(), endpoints, network["gateways"].clone())
        })
        .collect();
    let mut leases = BTreeSet::new();
    files_under(&node.ipam_dir("data").with_file_name(""), "", &mut leases);
    leases.retain(|name| !name.contains("last_reserved_ip") && !name.ends_with("/lock"));
    let mut pins = BTreeSet::new();
    files_under(node.bpffs.path(), "", &mut pins);
    let filters = node
        .netns
        .run(&["tc", "filter", "show", "dev", "eth0", "ingress"]);
    NodeState {
        links,
        leases,
        networks,
        pins,
        filters: String::from_utf8_lossy(&filters.stdout).into_owned(),
    }
}
