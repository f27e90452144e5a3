//! The paths under test, each in namespaces of its own, built once and measured in turns:
//! a bare veth pair (the limit), the plain bridge with and without netfilter, flatbridge's
//! fast path in its two modes, Debian's reference bridge + host-local plugins, a pod
//! reached from an external host through the uplink with the fast path on and off, and a
//! pod reaching a pod on another node through both nodes' uplinks and a switch, with the
//! fast path, with bridge + netfilter and with the reference plugins; and over IPv6 a bare
//! veth pair, bridge + netfilter and the fast path between two dual-stack pods.
use std::path::{Path, PathBuf};

use anyhow::Context;
use flatbridge_tests::{Netns, Node, Pod, seed_config};
use serde_json::{Value, json};

/// Which namespace a device to tune lives in.
#[derive(Clone, Copy)]
enum Place {
    Client,
    Server,
    /// The world's nodes, by index.
    Node(usize),
    Switch,
}

pub struct World {
    pub key: &'static str,
    pub label: &'static str,
    client: Netns,
    server: Netns,
    pub server_ip: String,
    /// The simulated nodes (none for the bare veth pair, two across a switch).
    pub nodes: Vec<Node>,
    /// The switch between the nodes, when there are two.
    switch: Option<Netns>,
    devices: Vec<(Place, String)>,
    /// Keeps pods alive (their namespaces are `client` and `server` when they are pods).
    _pods: Vec<Pod>,
}

impl World {
    pub fn client(&self) -> &Netns {
        &self.client
    }

    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// TSO, GSO and GRO on or off on every device a frame of this path crosses.
    pub fn set_offloads(&self, on: bool) {
        for (place, device) in &self.devices {
            let netns = match place {
                Place::Client => &self.client,
                Place::Server => &self.server,
                Place::Node(index) => &self.nodes[*index].netns,
                Place::Switch => self.switch.as_ref().expect("a switch"),
            };
            super::measure::offloads(netns, device, on);
        }
    }

    /// Bytes netfilter's FORWARD chain accepted on this world's nodes so far.
    pub fn netfilter_bytes(&self) -> u64 {
        self.nodes.iter().map(netfilter_bytes).sum()
    }

    /// Bytes the fast path redirected on this world's nodes so far.
    pub fn fast_path_bytes(&self) -> u64 {
        self.nodes.iter().map(fast_path_bytes).sum()
    }
}

/// What KUBE-FORWARD's ACCEPT rules took, of both families (a node without the IPv6 chain
/// counts nothing there).
fn netfilter_bytes(node: &Node) -> u64 {
    ["iptables", "ip6tables"]
        .into_iter()
        .map(|tool| {
            let listing = node
                .netns
                .run(&[tool, "-w", "-L", "KUBE-FORWARD", "-v", "-x", "-n"]);
            String::from_utf8_lossy(&listing.stdout)
                .lines()
                .filter(|line| line.contains("ACCEPT"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn fast_path_bytes(node: &Node) -> u64 {
    let output = node
        .command(&node.plugin_path())
        .args(["status", "--json"])
        .output();
    let Ok(output) = output else {
        return 0;
    };
    let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    status["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|network| network["counters"].as_array().cloned().unwrap_or_default())
        .filter(|counter| {
            matches!(
                counter["verdict"].as_str(),
                Some("pod_to_pod" | "pod_to_uplink" | "uplink_to_pod")
            )
        })
        .filter_map(|counter| counter["bytes"].as_u64())
        .sum()
}

/// What kube-proxy leaves in FORWARD on a node with Services: ~50 rules that match nothing
/// here, the conntrack rule that accepts established flows, and a final ACCEPT; in
/// ip6tables too on a dual-stack node.
fn kube_proxy_forward_chain(node: &Node, ipv6: bool) {
    let families: &[bool] = if ipv6 { &[false, true] } else { &[false] };
    for &v6 in families {
        let mut rules: Vec<String> = vec!["-N KUBE-FORWARD".into(), "-A FORWARD -j KUBE-FORWARD".into()];
        for i in 0..50 {
            let (src, dst) = if v6 {
                (format!("fd00:{i}::/64"), format!("fd01:{i}::/64"))
            } else {
                (format!("192.168.{i}.0/24"), format!("172.16.{i}.0/24"))
            };
            rules.push(format!(
                "-A KUBE-FORWARD -s {src} -d {dst} -p tcp --dport {} -j DROP",
                30000 + i
            ));
        }
        rules.push("-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into());
        rules.push("-A KUBE-FORWARD -j ACCEPT".into());
        for rule in rules {
            let mut argv = vec![if v6 { "ip6tables" } else { "iptables" }, "-w"];
            argv.extend(rule.split_whitespace());
            node.netns.ok(&argv);
        }
    }
}

/// How a node's path is configured.
struct NodeSpec {
    key: &'static str,
    label: &'static str,
    /// None: Debian's reference plugins.
    config: Option<Value>,
    netfilter: bool,
    rules: bool,
    /// Where the client is: a pod on the same node, a host on the node's uplink, or a pod
    /// on another node across a switch.
    client: Client,
    /// Dual-stack pods, measured over IPv6.
    ipv6: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    LocalPod,
    ExternalHost,
    OtherNode,
}

/// A node with its bridge (holding the gateway of range `range`, 10.10.<range>.0/16), its
/// netfilter as `spec` says, and the config that hands out 10.10.<range>.1-101.
fn prepare_node(spec: &NodeSpec, plugin: &Path, tag: &str, range: u8) -> (Node, Value) {
    let binary: PathBuf = if spec.config.is_some() {
        plugin.to_path_buf()
    } else {
        "/usr/lib/cni/bridge".into()
    };
    let node = Node::with_plugin(tag, binary);
    node.netns.ok(&["ip", "link", "add", "cni0", "type", "bridge"]);
    node.netns
        .ok(&["ip", "addr", "add", &format!("10.10.{range}.0/16"), "dev", "cni0"]);
    if spec.ipv6 {
        node.netns.ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("fd10:10::{range}:0/64"),
            "dev",
            "cni0",
            "nodad",
        ]);
    }
    node.netns.ok(&["ip", "link", "set", "cni0", "up"]);
    node.netns.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.netns
        .ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"]);
    if !spec.netfilter {
        for table in ["iptables", "ip6tables", "arptables"] {
            node.netns
                .ok(&["sysctl", "-qw", &format!("net.bridge.bridge-nf-call-{table}=0")]);
        }
    }
    if spec.rules {
        kube_proxy_forward_chain(&node, spec.ipv6);
    }
    let mut config = spec.config.clone().unwrap_or_else(|| {
        let mut reference = seed_config("0.3.1");
        reference["type"] = json!("bridge");
        reference
    });
    config["ipam"]["ranges"][0][0]["rangeStart"] = json!(format!("10.10.{range}.1"));
    config["ipam"]["ranges"][0][0]["rangeEnd"] = json!(format!("10.10.{range}.101"));
    config["ipam"]["ranges"][0][0]["gateway"] = json!(format!("10.10.{range}.0"));
    if spec.ipv6 {
        if let Some(ranges) = config["ipam"]["ranges"].as_array_mut() {
            ranges.push(json!([{"subnet": "fd10:10::/64", "rangeStart": format!("fd10:10::{range}:1"),
                                "rangeEnd": format!("fd10:10::{range}:65"), "gateway": format!("fd10:10::{range}:0")}]));
        }
        if let Some(routes) = config["ipam"]["routes"].as_array_mut() {
            routes.push(json!({"dst": "::/0"}));
        }
    }
    // The worlds' wires hold nobody to probe for; ADD's cost is measured elsewhere.
    config["arpProbeMs"] = json!(0);
    (node, config)
}

/// ADDs `pod` on `node`; returns the pod's host veth.
fn add_pod(node: &Node, config: &Value, pod: &Pod, key: &str) -> anyhow::Result<String> {
    let mut env = pod.env("eth0");
    env.path = "/usr/lib/cni".into();
    let reply = node.cni("ADD", &env, config);
    anyhow::ensure!(reply.success, "ADD in {key} failed: {}", reply.stdout);
    Ok(reply.json["interfaces"][1]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn bridge_node(spec: &NodeSpec, plugin: &Path) -> anyhow::Result<World> {
    if spec.client == Client::OtherNode {
        return two_nodes(spec, plugin);
    }
    let (node, config) = prepare_node(spec, plugin, spec.key, 1);
    let mut devices = vec![
        (Place::Client, "eth0".to_owned()),
        (Place::Node(0), "cni0".to_owned()),
    ];
    let add = |pod: &Pod| add_pod(&node, &config, pod, spec.key);
    let (client, server, server_ip, pods) = if spec.client == Client::ExternalHost {
        let external = Netns::new(&format!("{}-ext", spec.key));
        node.add_veth_to_bridge("uplink0", &external, "eth0");
        external.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
        devices.push((Place::Node(0), "uplink0".into()));
        let pod = Pod::new(&format!("{}-pod", spec.key));
        devices.push((Place::Node(0), add(&pod)?));
        devices.push((Place::Server, "eth0".into()));
        let ip = pod.ipv4("eth0").context("pod address")?;
        let server = Netns::open_existing(pod.netns.name());
        (external, server, ip, vec![pod])
    } else {
        let a = Pod::new(&format!("{}-a", spec.key));
        let b = Pod::new(&format!("{}-b", spec.key));
        devices.push((Place::Node(0), add(&a)?));
        devices.push((Place::Node(0), add(&b)?));
        devices.push((Place::Server, "eth0".into()));
        let ip = if spec.ipv6 {
            b.ipv6("eth0").context("pod IPv6 address")?
        } else {
            b.ipv4("eth0").context("pod address")?
        };
        let client = Netns::open_existing(a.netns.name());
        let server = Netns::open_existing(b.netns.name());
        (client, server, ip, vec![a, b])
    };
    Ok(World {
        key: spec.key,
        label: spec.label,
        client,
        server,
        server_ip,
        nodes: vec![node],
        switch: None,
        devices,
        _pods: pods,
    })
}

/// Two nodes, each with its uplink in its bridge and on a plain switch; the client is a
/// pod on the first, the server a pod on the second.
fn two_nodes(spec: &NodeSpec, plugin: &Path) -> anyhow::Result<World> {
    let switch = Netns::new(&format!("{}-sw", spec.key));
    switch.ok(&["ip", "link", "add", "sw0", "type", "bridge"]);
    switch.ok(&["ip", "link", "set", "sw0", "up"]);
    let mut devices = vec![(Place::Client, "eth0".to_owned())];
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for (index, range) in [1u8, 2].into_iter().enumerate() {
        let (node, config) = prepare_node(spec, plugin, &format!("{}-n{range}", spec.key), range);
        let port = format!("swp{range}");
        node.add_veth_to_bridge("uplink0", &switch, &port);
        switch.ok(&["ip", "link", "set", &port, "master", "sw0"]);
        let pod = Pod::new(&format!("{}-p{range}", spec.key));
        let veth = add_pod(&node, &config, &pod, spec.key)?;
        for device in ["cni0", "uplink0", veth.as_str()] {
            devices.push((Place::Node(index), device.to_owned()));
        }
        devices.push((Place::Switch, port));
        nodes.push(node);
        pods.push(pod);
    }
    devices.push((Place::Server, "eth0".into()));
    let server_ip = pods[1].ipv4("eth0").context("pod address")?;
    Ok(World {
        key: spec.key,
        label: spec.label,
        client: Netns::open_existing(pods[0].netns.name()),
        server: Netns::open_existing(pods[1].netns.name()),
        server_ip,
        nodes,
        switch: Some(switch),
        devices,
        _pods: pods,
    })
}

fn veth_pair(ipv6: bool) -> World {
    let client = Netns::new(if ipv6 { "veth6-a" } else { "veth-a" });
    let server = Netns::new(if ipv6 { "veth6-b" } else { "veth-b" });
    client.add_veth("eth0", &server, "eth0");
    let (key, label, server_ip) = if ipv6 {
        client.ok(&["ip", "-6", "addr", "add", "fd99::1/64", "dev", "eth0", "nodad"]);
        server.ok(&["ip", "-6", "addr", "add", "fd99::2/64", "dev", "eth0", "nodad"]);
        ("veth_v6", "IPv6: bare veth pair (the limit)", "fd99::2")
    } else {
        client.ok(&["ip", "addr", "add", "10.99.0.1/24", "dev", "eth0"]);
        server.ok(&["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"]);
        ("veth", "bare veth pair (the limit)", "10.99.0.2")
    };
    World {
        key,
        label,
        client,
        server,
        server_ip: server_ip.into(),
        nodes: Vec::new(),
        switch: None,
        devices: vec![(Place::Client, "eth0".into()), (Place::Server, "eth0".into())],
        _pods: Vec::new(),
    }
}

/// Every path, in the order of the report.
pub fn build(plugin: &Path, with_reference: bool) -> anyhow::Result<Vec<World>> {
    let seed = seed_config("0.3.1");
    let with = |key: &str, value: Value| {
        let mut config = seed.clone();
        config[key] = value;
        config
    };
    let mut specs = vec![
        NodeSpec {
            key: "bridge_nf",
            label: "bridge + netfilter (fastPath false)",
            config: Some(with("fastPath", json!(false))),
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: false,
        },
        NodeSpec {
            key: "bridge",
            label: "bridge, no netfilter (fastPath false)",
            config: Some(with("fastPath", json!(false))),
            netfilter: false,
            rules: false,
            client: Client::LocalPod,
            ipv6: false,
        },
        NodeSpec {
            key: "fastpath",
            label: "flatbridge fast path (default, checked)",
            config: Some(seed.clone()),
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: false,
        },
        NodeSpec {
            key: "fastpath_always",
            label: "flatbridge fast path, \"always\" mode",
            config: Some(with("fastPathMode", json!("always"))),
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: false,
        },
    ];
    if with_reference {
        specs.push(NodeSpec {
            key: "reference",
            label: "reference bridge + host-local + netfilter",
            config: None,
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: false,
        });
    }
    specs.push(NodeSpec {
        key: "uplink_fastpath",
        label: "external host -> pod, fast path",
        config: Some(seed.clone()),
        netfilter: true,
        rules: true,
        client: Client::ExternalHost,
        ipv6: false,
    });
    specs.push(NodeSpec {
        key: "uplink_bridge_nf",
        label: "external host -> pod, bridge + netfilter",
        config: Some(with("fastPath", json!(false))),
        netfilter: true,
        rules: true,
        client: Client::ExternalHost,
        ipv6: false,
    });
    specs.push(NodeSpec {
        key: "cross_fastpath",
        label: "pod -> pod on another node, fast path",
        config: Some(seed.clone()),
        netfilter: true,
        rules: true,
        client: Client::OtherNode,
        ipv6: false,
    });
    specs.push(NodeSpec {
        key: "cross_bridge_nf",
        label: "pod -> pod on another node, bridge + nf",
        config: Some(with("fastPath", json!(false))),
        netfilter: true,
        rules: true,
        client: Client::OtherNode,
        ipv6: false,
    });
    if with_reference {
        specs.push(NodeSpec {
            key: "cross_reference",
            label: "pod -> pod on another node, reference",
            config: None,
            netfilter: true,
            rules: true,
            client: Client::OtherNode,
            ipv6: false,
        });
    }
    let ipv6_specs = [
        NodeSpec {
            key: "bridge_nf_v6",
            label: "IPv6: bridge + netfilter (fastPath false)",
            config: Some(with("fastPath", json!(false))),
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: true,
        },
        NodeSpec {
            key: "fastpath_v6",
            label: "IPv6: flatbridge fast path (checked)",
            config: Some(seed.clone()),
            netfilter: true,
            rules: true,
            client: Client::LocalPod,
            ipv6: true,
        },
    ];
    let mut worlds = vec![veth_pair(false)];
    for spec in &specs {
        eprintln!("bench: building {}", spec.label);
        worlds.push(bridge_node(spec, plugin)?);
    }
    worlds.push(veth_pair(true));
    for spec in &ipv6_specs {
        eprintln!("bench: building {}", spec.label);
        worlds.push(bridge_node(spec, plugin)?);
    }
    Ok(worlds)
}
