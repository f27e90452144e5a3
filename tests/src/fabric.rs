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
/// The external host's IPv6 address on a dual-stack fabric.
pub const EXTERNAL_IPV6: &str = "fd10:10::1";

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

    /// The node's own IPv6 address on a dual-stack fabric.
    pub fn ipv6_address(&self) -> String {
        format!("fd10:10::{}", 10 + self.index)
    }

    /// [`FabricNode::config`] with a second range set, IPv6: fd10:10::i:1 to fd10:10::i:65,
    /// gateway fd10:10::i:0, and an IPv6 default route.
    pub fn dual_stack_config(&self, version: &str) -> Value {
        let i = self.index;
        let mut config = self.config(version);
        config["ipam"]["ranges"].as_array_mut().expect("ranges").push(
            json!([{"subnet": "fd10:10::/64", "rangeStart": format!("fd10:10::{i}:1"),
                          "rangeEnd": format!("fd10:10::{i}:65"), "gateway": format!("fd10:10::{i}:0")}]),
        );
        config["ipam"]["routes"]
            .as_array_mut()
            .expect("routes")
            .push(json!({"dst": "::/0"}));
        config
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
        Self::build(count, plugin, false)
    }

    /// As [`Fabric::new`], dual-stack: the external host has fd10:10::1/64, node i
    /// fd10:10::(10+i)/64 on its uplink (moved to the bridge by `node setup`) and the IPv6
    /// pod gateway fd10:10::i:0/64. Every address skips duplicate address detection.
    pub fn dual_stack(count: usize, plugin: Option<PathBuf>) -> Self {
        Self::build(count, plugin, true)
    }

    fn build(count: usize, plugin: Option<PathBuf>, ipv6: bool) -> Self {
        let switch = Netns::new("switch");
        switch.ok(&["ip", "link", "add", "sw0", "type", "bridge"]);
        switch.ok(&["ip", "link", "set", "sw0", "up"]);
        let external = Netns::new("external");
        switch.add_veth("swext", &external, "eth0");
        switch.ok(&["ip", "link", "set", "swext", "master", "sw0"]);
        external.ok(&["ip", "addr", "add", &format!("{EXTERNAL_IP}/16"), "dev", "eth0"]);
        if ipv6 {
            external.ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{EXTERNAL_IPV6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
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
                let gateway = format!("10.10.{index}.0/16");
                let gateway6 = format!("fd10:10::{index}:0/64");
                let mut setup = vec![
                    "node",
                    "setup",
                    "--uplink",
                    "eth0",
                    "--bridge",
                    "cni0",
                    "--gateway",
                    &gateway,
                ];
                if ipv6 {
                    let address = format!("{}/64", fabric_node.ipv6_address());
                    fabric_node
                        .node
                        .netns
                        .ok(&["ip", "-6", "addr", "add", &address, "dev", "eth0", "nodad"]);
                    setup.extend(["--gateway", &gateway6]);
                }
                fabric_node.node.flatbridge(&setup);
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
