//! A simulated flat L2 network: a "switch" namespace with a plain Linux bridge, N node
//! namespaces each with an uplink veth to the switch, and an external host on the switch
//! (10.10.0.1, the network's router in the seed recipe) with nothing of flatbridge on it.
//!
//! Node i has the address 10.10.0.(10+i)/16 on its uplink, a default route via 10.10.0.1,
//! runs `flatbridge node setup`, owns the pod gateway 10.10.i.0 and hands out
//! 10.10.i.1–10.10.i.101 to its pods.
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{Netns, Node};

pub const EXTERNAL_IP: &str = "10.10.0.1";

pub struct FabricNode {
    pub node: Node,
    /// 1-based.
    pub index: usize,
}

impl FabricNode {
    /// The node's own address.
    pub fn address(&self) -> String {
        format!("10.10.0.{}", 10 + self.index)
    }

    /// The seed config with this node's range.
    pub fn config(&self, version: &str) -> Value {
        let i = self.index;
        json!({
            "cniVersion": version, "name": "data", "type": "flatbridge", "bridge": "cni0", "promiscMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/16", "rangeStart": format!("10.10.{i}.1"),
                     "rangeEnd": format!("10.10.{i}.101"), "gateway": format!("10.10.{i}.0")}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }
}

pub struct Fabric {
    pub nodes: Vec<FabricNode>,
    pub external: Netns,
    pub switch: Netns,
}

impl Fabric {
    /// A switch, an external host and `count` nodes set up with `flatbridge node setup`;
    /// `plugin` is the binary to run (None: the one built for the tests).
    pub fn new(count: usize, plugin: Option<PathBuf>) -> Self {
        let switch = Netns::new("switch");
        switch.ok(&["ip", "link", "add", "sw0", "type", "bridge"]);
        switch.ok(&["ip", "link", "set", "sw0", "up"]);
        let external = Netns::new("external");
        switch.add_veth("swext", &external, "eth0");
        switch.ok(&["ip", "link", "set", "swext", "master", "sw0"]);
        external.ok(&["ip", "addr", "add", &format!("{EXTERNAL_IP}/16"), "dev", "eth0"]);
        let nodes = (1..=count)
            .map(|index| {
                let node = match &plugin {
                    Some(path) => Node::with_plugin(&format!("node{index}"), path.clone()),
                    None => Node::new(&format!("node{index}")),
                };
                let port = format!("swp{index}");
                node.netns.add_veth("eth0", &switch, &port);
                switch.ok(&["ip", "link", "set", &port, "master", "sw0"]);
                let fabric_node = FabricNode { node, index };
                let address = format!("{}/16", fabric_node.address());
                fabric_node
                    .node
                    .netns
                    .ok(&["ip", "addr", "add", &address, "dev", "eth0"]);
                fabric_node
                    .node
                    .netns
                    .ok(&["ip", "route", "add", "default", "via", EXTERNAL_IP]);
                fabric_node.node.flatbridge(&[
                    "node",
                    "setup",
                    "--uplink",
                    "eth0",
                    "--bridge",
                    "cni0",
                    "--gateway",
                    &format!("10.10.{index}.0/16"),
                ]);
                fabric_node
            })
            .collect();
        Self {
            nodes,
            external,
            switch,
        }
    }
}
