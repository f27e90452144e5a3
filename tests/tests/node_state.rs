//! What the plugin does to the node beyond one pod: STATUS that tells the truth and
//! changes nothing, node setup that finishes what a crash left and teardown that can run
//! twice, both only for their own bridge, forceAddress that never takes the node's own
//! address, network names with dots, and config paths a tenant cannot point anywhere.
use flatbridge_tests::{Node, Pod, fabric::Fabric, require_root, seed_config};
use serde_json::json;

#[test]
fn status_says_when_pods_lost_their_programs_and_when_add_would_fail() {
    require_root();
    let node = Node::new("status");
    let config = seed_config("1.1.0");
    let pod = Pod::new("status");
    let result = node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    node.cni("STATUS", &Default::default(), &config)
        .ok("STATUS of a healthy node");
    let host = result["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_owned();
    // Another tool replaces the pod's qdisc, and the programs with it.
    node.netns.ok(&["tc", "qdisc", "del", "dev", &host, "clsact"]);
    let msg = node
        .cni("STATUS", &Default::default(), &config)
        .error("STATUS", 51);
    assert!(msg.contains(&host), "{msg}");
    node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
    node.cni("STATUS", &Default::default(), &config)
        .ok("STATUS once the pod is gone");

    // A BPF root that is no BPF filesystem and where none may be mounted: ADD would fail.
    let mut elsewhere = config.clone();
    elsewhere["bpfRoot"] = json!("/var/lib/cni");
    let msg = node
        .cni("STATUS", &Default::default(), &elsewhere)
        .error("STATUS", 50);
    assert!(msg.contains("BPF filesystem"), "{msg}");
    let refused = Pod::new("refused");
    let msg = node
        .cni("ADD", &refused.env("eth0"), &elsewhere)
        .error("ADD", 103);
    assert!(msg.contains("/var/lib/cni"), "{msg}");
}

#[test]
fn status_polls_change_nothing_on_a_fresh_node() {
    require_root();
    let node = Node::new("poll");
    let config = seed_config("1.1.0");
    // (A BPF filesystem comes with maps.debug and progs.debug of the kernel's own.)
    let pins = || -> Vec<std::path::PathBuf> {
        let mut pins: Vec<_> = std::fs::read_dir(node.bpffs.path())
            .expect("bpffs")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        pins.sort();
        pins
    };
    let before = pins();
    for _ in 0..3 {
        node.cni("STATUS", &Default::default(), &config).ok("STATUS");
    }
    assert_eq!(pins(), before, "STATUS pinned something");
    assert!(
        !node.ipam_dir("data").exists()
            || std::fs::read_dir(node.ipam_dir("data"))
                .expect("ipam dir")
                .next()
                .is_none(),
        "STATUS wrote into the IPAM directory"
    );
    assert!(
        !node.netns.run(&["ip", "link", "show", "cni0"]).status.success(),
        "STATUS created the bridge"
    );
}

#[test]
fn node_setup_finishes_what_a_crash_left_and_teardown_runs_twice() {
    require_root();
    let fabric = Fabric::new(1, None);
    let node = &fabric.nodes[0].node;
    // As if the first setup had died after putting eth0 under cni0, before moving the
    // address and the route off it.
    node.netns
        .ok(&["ip", "addr", "add", "10.10.0.11/16", "dev", "eth0"]);
    node.netns.ok(&["ip", "route", "del", "default"]);
    let said = node.flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    assert!(said.contains("already"), "{said}");
    let on_uplink = node.netns.ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        on_uplink.trim().is_empty(),
        "the address stayed on the uplink: {on_uplink}"
    );
    let routes = node.netns.ok(&["ip", "route"]);
    assert!(routes.contains("default via 10.10.0.1 dev cni0"), "{routes}");
    node.flatbridge(&["node", "teardown"]);
    let again = node.flatbridge(&["node", "teardown"]);
    assert!(again.contains("nothing to tear down"), "{again}");
    assert!(
        node.netns
            .ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .contains("10.10.0.11/16")
    );
}

#[test]
fn node_setup_moves_ipv6_and_every_route_with_its_attributes_and_gives_them_back() {
    require_root();
    let fabric = Fabric::new(1, None);
    let node = &fabric.nodes[0].node;
    node.flatbridge(&["node", "teardown"]);
    let ip = |args: &[&str]| node.netns.ok(args);
    ip(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::11/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    ip(&[
        "ip",
        "route",
        "replace",
        "default",
        "via",
        "10.10.0.1",
        "dev",
        "eth0",
        "metric",
        "50",
        "proto",
        "dhcp",
    ]);
    ip(&[
        "ip",
        "route",
        "add",
        "192.168.77.0/24",
        "via",
        "10.10.0.1",
        "dev",
        "eth0",
        "src",
        "10.10.0.11",
        "metric",
        "300",
    ]);
    ip(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8::1",
        "dev",
        "eth0",
        "metric",
        "1024",
    ]);
    ip(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:99::/48",
        "via",
        "2001:db8::1",
        "dev",
        "eth0",
        "metric",
        "7",
    ]);
    // More routes than the 255 bytes of an interface alias could ever hold.
    for i in 0..40 {
        ip(&[
            "ip",
            "route",
            "add",
            &format!("172.16.{i}.0/24"),
            "via",
            "10.10.0.1",
            "dev",
            "eth0",
        ]);
    }
    let routes_of = |dev: &str| {
        let mut routes = ip(&["ip", "route", "show", "dev", dev]);
        routes.push_str(&ip(&["ip", "-6", "route", "show", "dev", dev]));
        routes
    };
    let expected = [
        "default via 10.10.0.1 proto dhcp metric 50",
        "192.168.77.0/24 via 10.10.0.1 src 10.10.0.11 metric 300",
        "172.16.39.0/24 via 10.10.0.1",
        "2001:db8:99::/48 via 2001:db8::1 metric 7",
        "default via 2001:db8::1 metric 1024",
    ];
    let before = routes_of("eth0");
    for route in expected {
        assert!(
            before.contains(route),
            "the test's own route {route} is missing: {before}"
        );
    }
    node.flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    let on_bridge = routes_of("cni0");
    for route in expected {
        assert!(
            on_bridge.contains(route),
            "{route} did not move to cni0: {on_bridge}"
        );
    }
    let left = routes_of("eth0");
    assert!(!left.contains("via"), "routes stayed on the uplink: {left}");
    let addresses = ip(&["ip", "-6", "addr", "show", "dev", "cni0", "scope", "global"]);
    assert!(addresses.contains("2001:db8::11/64"), "{addresses}");
    assert!(
        !addresses.contains("tentative") && !addresses.contains("dadfailed"),
        "the moved address is not usable: {addresses}"
    );
    let on_uplink = ip(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    assert!(
        on_uplink.trim().is_empty(),
        "the IPv6 address stayed on the uplink: {on_uplink}"
    );
    node.flatbridge(&["node", "teardown"]);
    let back = routes_of("eth0");
    for route in expected {
        assert!(back.contains(route), "{route} did not come back to eth0: {back}");
    }
    assert!(ip(&["ip", "-6", "addr", "show", "dev", "eth0"]).contains("2001:db8::11/64"));
}

#[test]
fn node_setup_touches_only_the_networks_of_its_bridge() {
    require_root();
    let fabric = Fabric::new(1, None);
    let fabric_node = &fabric.nodes[0];
    let node = &fabric_node.node;
    node.flatbridge(&["node", "teardown"]);
    // Another network on another bridge, and one on cni0.
    let mut other = seed_config("1.0.0");
    other["name"] = json!("other");
    other["bridge"] = json!("cni1");
    other["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.10.9.1");
    other["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.10.9.9");
    let other_pod = Pod::new("other");
    node.cni("ADD", &other_pod.env("eth0"), &other).ok("ADD on cni1");
    let pod = Pod::new("mine");
    node.cni("ADD", &pod.env("eth0"), &fabric_node.config("1.0.0"))
        .ok("ADD on cni0");
    node.flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    let status = node.status();
    let uplink_devices = |network: &str| {
        status["networks"]
            .as_array()
            .and_then(|networks| networks.iter().find(|report| report["network"] == network))
            .and_then(|report| report["programs"].as_array())
            .and_then(|programs| programs.iter().find(|program| program["name"] == "from_uplink"))
            .map(|program| program["devices"].clone())
            .unwrap_or_else(|| panic!("no from_uplink in {network}: {status}"))
    };
    assert_eq!(uplink_devices("data")[0]["device"], json!("eth0"), "{status}");
    assert_eq!(
        uplink_devices("other"),
        json!([]),
        "cni1's network got cni0's uplink: {status}"
    );
}

#[test]
fn force_address_never_takes_the_nodes_own_address() {
    require_root();
    let fabric = Fabric::new(1, None);
    let fabric_node = &fabric.nodes[0];
    let mut config = fabric_node.config("1.0.0");
    config["isGateway"] = json!(true);
    config["forceAddress"] = json!(true);
    let pod = Pod::new("force");
    fabric_node.node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    let addresses = fabric_node
        .node
        .netns
        .ok(&["ip", "-o", "-4", "addr", "show", "dev", "cni0"]);
    assert!(
        addresses.contains("10.10.0.11/16"),
        "the node lost its address: {addresses}"
    );
    assert!(
        fabric
            .external
            .run(&["ping", "-c", "1", "-W", "2", "10.10.0.11"])
            .status
            .success(),
        "the node is unreachable"
    );
}

#[test]
fn a_network_name_with_dots_works() {
    require_root();
    let node = Node::new("dots");
    let mut config = seed_config("1.0.0");
    config["name"] = json!("data.v1");
    let pod = Pod::new("dots");
    node.cni("ADD", &pod.env("eth0"), &config)
        .ok("ADD of network data.v1");
    assert!(
        node.bpffs
            .path()
            .join("flatbridge/data%2ev1/pods_by_mac")
            .exists()
    );
    let status = node.status();
    assert_eq!(status["networks"][0]["network"], json!("data.v1"), "{status}");
    node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
}
