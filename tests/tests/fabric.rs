//! flatbridge on a simulated flat L2 network: node setup on an uplink, pods on two nodes
//! that reach each other and an external host directly, and the pains of a shared L2
//! (stale ARP after an address is reused, duplicate addresses) solved.
use std::time::{Duration, Instant};

use flatbridge_tests::{
    CniEnv, Netns, Node, Pod, dual_stack_config,
    fabric::{EXTERNAL_IP, EXTERNAL_IPV6, Fabric},
    require_root, traffic,
};

const NET: &str = "data";

fn link_line(netns: &Netns, ifname: &str) -> String {
    netns.ok(&["ip", "-o", "link", "show", "dev", ifname])
}

#[test]
fn node_setup_moves_the_uplink_under_the_bridge_and_teardown_restores_it() {
    require_root();
    let switch = Netns::new("switch");
    let external = Netns::new("external");
    switch.ok(&["ip", "link", "add", "sw0", "type", "bridge"]);
    switch.ok(&["ip", "link", "set", "sw0", "up"]);
    switch.add_veth("swext", &external, "eth0");
    switch.ok(&["ip", "link", "set", "swext", "master", "sw0"]);
    external.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
    let node = Node::new("setup");
    node.netns.add_veth("eth0", &switch, "swp1");
    switch.ok(&["ip", "link", "set", "swp1", "master", "sw0"]);
    node.netns
        .ok(&["ip", "addr", "add", "10.10.0.11/16", "dev", "eth0"]);
    node.netns
        .ok(&["ip", "route", "add", "default", "via", "10.10.0.1"]);
    node.netns
        .ok(&["ip", "route", "add", "192.168.50.0/24", "via", "10.10.0.1"]);
    let uplink_mac = node.netns.mac("eth0");

    let said = node.flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    assert!(said.contains("now a port of cni0"), "{said}");
    assert_eq!(
        node.netns.mac("cni0"),
        uplink_mac,
        "the bridge must keep the uplink's MAC"
    );
    assert!(link_line(&node.netns, "eth0").contains("master cni0"));
    let bridge_addresses = node.netns.ok(&["ip", "-o", "-4", "addr", "show", "dev", "cni0"]);
    for address in ["10.10.0.11/16", "10.10.1.0/16"] {
        assert!(
            bridge_addresses.contains(address),
            "{address} not on cni0: {bridge_addresses}"
        );
    }
    assert!(
        node.netns
            .ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .trim()
            .is_empty()
    );
    let routes = node.netns.ok(&["ip", "route"]);
    assert!(routes.contains("default via 10.10.0.1 dev cni0"), "{routes}");
    assert!(
        routes.contains("192.168.50.0/24 via 10.10.0.1 dev cni0"),
        "{routes}"
    );
    assert_eq!(
        node.netns.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    assert_eq!(
        node.netns
            .ok(&["cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"])
            .trim(),
        "1"
    );
    assert!(
        node.netns
            .run(&["ping", "-c", "1", "-W", "2", "10.10.0.1"])
            .status
            .success()
    );

    let again = node.flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    assert!(again.contains("already"), "{again}");

    let said = node.flatbridge(&["node", "teardown"]);
    assert!(said.contains("eth0"), "{said}");
    assert!(
        !node.netns.run(&["ip", "link", "show", "cni0"]).status.success(),
        "cni0 survived teardown"
    );
    assert!(
        node.netns
            .ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .contains("10.10.0.11/16")
    );
    let routes = node.netns.ok(&["ip", "route"]);
    assert!(routes.contains("default via 10.10.0.1 dev eth0"), "{routes}");
    assert!(
        routes.contains("192.168.50.0/24 via 10.10.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        node.netns
            .run(&["ping", "-c", "1", "-W", "2", "10.10.0.1"])
            .status
            .success()
    );
}

#[test]
fn node_setup_refuses_an_uplink_that_belongs_to_another_bridge_and_changes_nothing() {
    require_root();
    let node = Node::new("taken");
    let peer = Netns::new("peer");
    node.netns.add_veth("eth0", &peer, "eth0");
    node.netns
        .ok(&["ip", "addr", "add", "10.10.0.11/16", "dev", "eth0"]);
    node.netns.ok(&["ip", "link", "add", "br9", "type", "bridge"]);
    node.netns.ok(&["ip", "link", "set", "eth0", "master", "br9"]);
    let output = node
        .command(&flatbridge_tests::node::plugin_binary())
        .args(["node", "setup", "--uplink", "eth0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already a port"), "{stderr}");
    assert!(!node.netns.run(&["ip", "link", "show", "cni0"]).status.success());
    assert!(
        node.netns
            .ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .contains("10.10.0.11/16")
    );
}

#[test]
fn pods_on_two_nodes_and_an_external_host_reach_each_other_directly() {
    require_root();
    let fabric = Fabric::new(2, None);
    let (one, two) = (&fabric.nodes[0], &fabric.nodes[1]);
    let a = Pod::new("a");
    let b = Pod::new("b");
    let result_a = one
        .node
        .cni("ADD", &a.env("eth0"), &one.config("1.0.0"))
        .ok("ADD on node 1");
    two.node
        .cni("ADD", &b.env("eth0"), &two.config("1.0.0"))
        .ok("ADD on node 2");
    let address_a = a.ipv4("eth0").expect("a");
    let address_b = b.ipv4("eth0").expect("b");
    assert!(
        address_a.starts_with("10.10.1.") && address_b.starts_with("10.10.2."),
        "{address_a} {address_b}"
    );

    assert!(a.ping(&address_b), "node 1's pod cannot reach node 2's pod");
    assert!(b.ping(&address_a));
    assert!(a.ping(EXTERNAL_IP), "a pod cannot reach the external gateway");
    let out = fabric.external.ok(&["ping", "-c", "2", "-W", "2", &address_a]);
    assert!(
        out.contains("2 received"),
        "the external host cannot reach a pod directly: {out}"
    );
    // No NAT: the external host sees the pod's own MAC behind the pod's address.
    let neighbour = fabric.external.ok(&["ip", "neigh", "show", &address_a]);
    assert!(neighbour.contains(&a.netns.mac("eth0")), "{neighbour}");
    // The switch learnt where the pod is.
    let pod_mac = result_a["interfaces"][2]["mac"]
        .as_str()
        .expect("mac")
        .to_lowercase();
    let fdb = fabric.switch.ok(&["bridge", "fdb", "show", "br", "sw0"]);
    assert!(
        fdb.lines()
            .any(|line| line.contains(&pod_mac) && line.contains("dev swp1")),
        "{fdb}"
    );

    // Cross-node TCP takes the uplink programs on both ends.
    let before = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    traffic::iperf3(&a.netns, &b.netns, &address_b, &["-t", "2"]).expect("iperf3 across nodes");
    let after = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    assert!(
        after.0 > before.0 + 1000,
        "node 1 did not send through its uplink program: {before:?} -> {after:?}"
    );
    assert!(
        after.1 > before.1 + 1000,
        "node 2 did not receive through its uplink program: {before:?} -> {after:?}"
    );
}

#[test]
fn over_ipv6_pods_on_two_nodes_and_the_external_host_reach_each_other_on_the_fast_path() {
    require_root();
    let fabric = Fabric::dual_stack(2, None);
    let (one, two) = (&fabric.nodes[0], &fabric.nodes[1]);
    // The node keeps its IPv6 address, now on the bridge.
    let on_bridge = one
        .node
        .netns
        .ok(&["ip", "-6", "-o", "addr", "show", "dev", "cni0"]);
    assert!(
        on_bridge.contains(&format!("{}/64", one.ipv6_address())),
        "{on_bridge}"
    );
    let reply = fabric
        .external
        .ok(&["ping", "-c", "1", "-W", "2", &one.ipv6_address()]);
    assert!(reply.contains("1 received"), "the node's IPv6 address: {reply}");
    let (a, b) = (Pod::new("a6"), Pod::new("b6"));
    one.node
        .cni("ADD", &a.env("eth0"), &one.dual_stack_config("1.0.0"))
        .ok("ADD on node 1");
    two.node
        .cni("ADD", &b.env("eth0"), &two.dual_stack_config("1.0.0"))
        .ok("ADD on node 2");
    let (a6, b6) = (a.ipv6("eth0").expect("a"), b.ipv6("eth0").expect("b"));
    assert!(
        a6.starts_with("fd10:10::1:") && b6.starts_with("fd10:10::2:"),
        "{a6} {b6}"
    );
    assert!(a.ping(&b6), "node 1's pod cannot reach node 2's pod over IPv6");
    assert!(b.ping(&a6));
    assert!(
        a.ping(EXTERNAL_IPV6),
        "a pod cannot reach the external host over IPv6"
    );
    let reply = fabric.external.ok(&["ping", "-c", "2", "-W", "2", &a6]);
    assert!(reply.contains("2 received"), "{reply}");
    let neighbour = fabric.external.ok(&["ip", "-6", "neigh", "show", &a6]);
    assert!(
        neighbour.contains(&a.netns.mac("eth0")),
        "no NAT, the pod's own MAC: {neighbour}"
    );

    // Cross-node TCP takes the uplink programs on both ends.
    let before = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    traffic::iperf3(&a.netns, &b.netns, &b6, &["-t", "2"]).expect("iperf3 across nodes over IPv6");
    let after = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    assert!(
        after.0 > before.0 + 1000,
        "node 1's uplink program: {before:?} -> {after:?}"
    );
    assert!(
        after.1 > before.1 + 1000,
        "node 2's uplink program: {before:?} -> {after:?}"
    );
    // And from the external host.
    let before = one.node.counter(NET, "uplink_to_pod");
    traffic::iperf3(&fabric.external, &a.netns, &a6, &["-t", "2"]).expect("iperf3 from the wire over IPv6");
    let after = one.node.counter(NET, "uplink_to_pod");
    assert!(after > before + 1000, "from the wire: {before} -> {after}");
}

#[test]
fn a_reused_address_is_reachable_at_once_without_flushing_caches() {
    require_root();
    let fabric = Fabric::new(1, None);
    let one = &fabric.nodes[0];
    let config = one.config("1.0.0");
    let old = Pod::new("old");
    one.node
        .cni("ADD", &old.env("eth0"), &config)
        .ok("ADD the first pod");
    let address = old.ipv4("eth0").expect("address");
    assert!(
        fabric
            .external
            .ok(&["ping", "-c", "1", "-W", "2", &address])
            .contains("1 received")
    );
    let old_mac = old.netns.mac("eth0");
    assert!(
        fabric
            .external
            .ok(&["ip", "neigh", "show", &address])
            .contains(&old_mac)
    );
    one.node.cni("DEL", &old.env("eth0"), &config).ok("DEL");

    // A new pod gets the same address (asked for, as a StatefulSet's might) and a new MAC.
    let new = Pod::new("new");
    let env = CniEnv {
        args: format!("IgnoreUnknown=1;IP={address}"),
        ..new.env("eth0")
    };
    one.node.cni("ADD", &env, &config).ok("ADD reusing the address");
    let new_mac = new.netns.mac("eth0");
    assert_ne!(new_mac, old_mac);
    let started = Instant::now();
    let reached = fabric
        .external
        .run(&["ping", "-c", "1", "-W", "1", &address])
        .status
        .success();
    assert!(
        reached,
        "the external host could not reach the new pod within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let neighbour = fabric.external.ok(&["ip", "neigh", "show", &address]);
    assert!(
        neighbour.contains(&new_mac),
        "the external host still has {neighbour}"
    );
}

#[test]
fn a_reused_ipv6_address_is_reachable_at_once_without_flushing_caches() {
    require_root();
    let fabric = Fabric::new(1, None);
    let one = &fabric.nodes[0];
    fabric.external.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd10:10::ff/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let config = dual_stack_config("1.0.0");
    let old = Pod::new("old6");
    one.node
        .cni("ADD", &old.env("eth0"), &config)
        .ok("ADD the first pod");
    let (ipv4, ipv6) = (
        old.ipv4("eth0").expect("IPv4 address"),
        old.ipv6("eth0").expect("IPv6 address"),
    );
    let reply = fabric.external.ok(&["ping", "-c", "1", "-W", "2", &ipv6]);
    assert!(reply.contains("1 received"), "{reply}");
    let old_mac = old.netns.mac("eth0");
    let neighbour = fabric.external.ok(&["ip", "-6", "neigh", "show", &ipv6]);
    assert!(neighbour.contains(&old_mac), "{neighbour}");
    one.node.cni("DEL", &old.env("eth0"), &config).ok("DEL");

    // A new pod gets both addresses again (asked for) and a new MAC; the external host
    // still holds the old MAC, as reachable.
    let new = Pod::new("new6");
    let env = CniEnv {
        args: format!("IgnoreUnknown=1;IP={ipv4},{ipv6}"),
        ..new.env("eth0")
    };
    one.node.cni("ADD", &env, &config).ok("ADD reusing the addresses");
    assert_eq!(new.ipv6("eth0").as_deref(), Some(ipv6.as_str()));
    let new_mac = new.netns.mac("eth0");
    assert_ne!(new_mac, old_mac);
    let started = Instant::now();
    let reached = fabric
        .external
        .run(&["ping", "-c", "1", "-W", "1", &ipv6])
        .status
        .success();
    assert!(
        reached,
        "the external host could not reach the new pod over IPv6 within 1 s: {}",
        fabric.external.ok(&["ip", "-6", "neigh", "show", &ipv6])
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let neighbour = fabric.external.ok(&["ip", "-6", "neigh", "show", &ipv6]);
    assert!(
        neighbour.contains(&new_mac),
        "the external host still has {neighbour}"
    );
}

#[test]
fn the_node_itself_reaches_a_reused_address_at_once() {
    require_root();
    let fabric = Fabric::dual_stack(1, None);
    let one = &fabric.nodes[0];
    let config = one.dual_stack_config("1.0.0");
    let old = Pod::new("nold");
    one.node
        .cni("ADD", &old.env("eth0"), &config)
        .ok("ADD the first pod");
    let (ipv4, ipv6) = (old.ipv4("eth0").expect("IPv4"), old.ipv6("eth0").expect("IPv6"));
    for address in [&ipv4, &ipv6] {
        let reply = one.node.netns.ok(&["ping", "-c", "1", "-W", "2", address]);
        assert!(reply.contains("1 received"), "{reply}");
    }
    one.node.cni("DEL", &old.env("eth0"), &config).ok("DEL");
    let new = Pod::new("nnew");
    let env = CniEnv {
        args: format!("IgnoreUnknown=1;IP={ipv4},{ipv6}"),
        ..new.env("eth0")
    };
    one.node.cni("ADD", &env, &config).ok("ADD reusing the addresses");
    // kubelet's probes come from the node: its own neighbour entries must follow.
    for address in [&ipv4, &ipv6] {
        let started = Instant::now();
        let reached = one
            .node
            .netns
            .run(&["ping", "-c", "1", "-W", "1", address])
            .status
            .success();
        assert!(
            reached && started.elapsed() < Duration::from_secs(1),
            "the node could not reach the new pod at {address} within 1 s: {}",
            one.node.netns.ok(&["ip", "neigh", "show", address])
        );
    }
}

#[test]
fn an_address_in_use_on_the_wire_is_never_handed_out() {
    require_root();
    let fabric = Fabric::new(1, None);
    let one = &fabric.nodes[0];
    // The external host holds the first address of node 1's range.
    fabric
        .external
        .ok(&["ip", "addr", "add", "10.10.1.1/16", "dev", "eth0"]);
    let external_mac = fabric.external.mac("eth0");
    let pod = Pod::new("dup");
    let result = one
        .node
        .cni("ADD", &pod.env("eth0"), &one.config("1.0.0"))
        .ok("ADD");
    assert_eq!(result["ips"][0]["address"], "10.10.1.2/16");
    let report = one.node.status();
    let conflicts = report["conflicts"].as_array().cloned().unwrap_or_default();
    assert_eq!(conflicts.len(), 1, "{report}");
    assert_eq!(conflicts[0]["address"], "10.10.1.1");
    assert_eq!(conflicts[0]["mac"], external_mac);
    assert_eq!(conflicts[0]["expired"], false);
    assert!(one.node.status_text().contains("CONFLICT"));
    assert!(
        one.node
            .log()
            .contains("10.10.1.1 is already in use on the network"),
        "{}",
        one.node.log()
    );
    // Next pods skip it too.
    let next = Pod::new("dup2");
    let result = one
        .node
        .cni("ADD", &next.env("eth0"), &one.config("1.0.0"))
        .ok("ADD");
    assert_eq!(result["ips"][0]["address"], "10.10.1.3/16");
    // Asking for it explicitly is refused.
    let third = Pod::new("dup3");
    let env = CniEnv {
        args: "IP=10.10.1.1".into(),
        ..third.env("eth0")
    };
    one.node
        .cni("ADD", &env, &one.config("1.0.0"))
        .error("ADD asking for the conflicting address", 106);
}

#[test]
fn an_ipv6_address_in_use_on_the_wire_is_never_handed_out() {
    ipv6_address_in_use_is_never_handed_out(true);
}

#[test]
fn without_the_fast_path_an_ipv6_address_in_use_on_the_wire_is_never_handed_out() {
    // No datapath: a packet socket on the bridge probes and reads the answers itself.
    ipv6_address_in_use_is_never_handed_out(false);
}

fn ipv6_address_in_use_is_never_handed_out(fast_path: bool) {
    require_root();
    let fabric = Fabric::dual_stack(1, None);
    let one = &fabric.nodes[0];
    let mut config = one.dual_stack_config("1.0.0");
    config["fastPath"] = fast_path.into();
    // The external host holds the first IPv6 address of node 1's range (it added it without
    // a word: Linux's own detection is skipped, as on a host that took it long ago).
    fabric.external.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd10:10::1:1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let external_mac = fabric.external.mac("eth0");
    let pod = Pod::new("dup6");
    let result = one.node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    assert_eq!(result["ips"][0]["address"], "10.10.1.1/16", "{result}");
    assert_eq!(result["ips"][1]["address"], "fd10:10::1:2/64", "{result}");
    let report = one.node.status();
    let conflicts = report["conflicts"].as_array().cloned().unwrap_or_default();
    assert_eq!(conflicts.len(), 1, "{report}");
    assert_eq!(conflicts[0]["address"], "fd10:10::1:1");
    assert_eq!(conflicts[0]["mac"], external_mac);
    assert!(
        one.node
            .log()
            .contains("fd10:10::1:1 is already in use on the network"),
        "{}",
        one.node.log()
    );
    // The pod has only its own addresses, and reaches the external host over IPv6.
    assert_eq!(pod.ipv6("eth0").as_deref(), Some("fd10:10::1:2"));
    assert!(pod.ping(EXTERNAL_IPV6));
    // Next pods skip it too; asking for it explicitly is refused.
    let next = Pod::new("dup6b");
    let result = one.node.cni("ADD", &next.env("eth0"), &config).ok("ADD");
    assert_eq!(result["ips"][1]["address"], "fd10:10::1:3/64", "{result}");
    let third = Pod::new("dup6c");
    let env = CniEnv {
        args: "IP=fd10:10::1:1".into(),
        ..third.env("eth0")
    };
    one.node
        .cni("ADD", &env, &config)
        .error("ADD asking for the conflicting IPv6 address", 106);
}

fn timed_add(node: &Node, pod: &Pod, config: &serde_json::Value) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let result = node.cni("ADD", &pod.env("eth0"), config).ok("ADD");
    (result, started.elapsed())
}

#[test]
fn after_the_first_add_addresses_probed_ahead_are_handed_out_without_waiting() {
    probed_ahead_without_waiting(false);
}

#[test]
fn dual_stack_addresses_probed_ahead_are_handed_out_without_waiting() {
    // The IPv6 addresses too: probed ahead by duplicate address detection.
    probed_ahead_without_waiting(true);
}

fn probed_ahead_without_waiting(dual_stack: bool) {
    require_root();
    let fabric = if dual_stack {
        Fabric::dual_stack(1, None)
    } else {
        Fabric::new(1, None)
    };
    let one = &fabric.nodes[0];
    // A probe time far above what an ADD takes here, so that a wait cannot hide.
    const PROBE_MS: u64 = 1500;
    let mut config = if dual_stack {
        one.dual_stack_config("1.0.0")
    } else {
        one.config("1.0.0")
    };
    config["arpProbeMs"] = PROBE_MS.into();
    let first = Pod::new("ahead0");
    let (result, took) = timed_add(&one.node, &first, &config);
    assert_eq!(result["ips"][0]["address"], "10.10.1.1/16");
    assert!(
        took >= Duration::from_millis(PROBE_MS),
        "the first ADD on a node has nothing probed ahead and must wait for its probe: {took:?}"
    );
    // Both its addresses wait at once: one after the other would take twice the probe time
    // (3 s; at once, 1.5 s and the rest of ADD).
    assert!(
        !dual_stack || took < Duration::from_millis(PROBE_MS * 7 / 4),
        "the first dual-stack ADD waited for its probes one after the other: {took:?}"
    );
    let probed = one.node.status()["networks"][0]["probed_ahead"]
        .as_u64()
        .expect("probed_ahead");
    let expected = if dual_stack { 60 } else { 30 };
    assert!(
        probed >= expected,
        "the first ADD probed only {probed} addresses ahead"
    );
    // The probes age while nothing happens, as between pods on a real node.
    std::thread::sleep(Duration::from_millis(PROBE_MS + 100));
    for (i, expected) in (2..=5).enumerate() {
        let pod = Pod::new(&format!("ahead{}", i + 1));
        let (result, took) = timed_add(&one.node, &pod, &config);
        assert_eq!(result["ips"][0]["address"], format!("10.10.1.{expected}/16"));
        if dual_stack {
            assert_eq!(result["ips"][1]["address"], format!("fd10:10::1:{expected}/64"));
        }
        assert!(
            took < Duration::from_millis(PROBE_MS * 2 / 3),
            "ADD {expected} waited for a probe although its addresses were probed ahead: {took:?}"
        );
        // And the pod is on the wire.
        assert!(
            pod.ping(EXTERNAL_IP),
            "pod {expected} cannot reach the external host"
        );
        if dual_stack {
            assert!(pod.ping(EXTERNAL_IPV6), "pod {expected} over IPv6");
        }
    }
}

#[test]
fn an_address_taken_silently_after_its_probe_fails_the_add_that_hands_it_out() {
    taken_silently_after_its_probe(false);
}

#[test]
fn an_ipv6_address_taken_silently_after_its_probe_fails_the_add_that_hands_it_out() {
    taken_silently_after_its_probe(true);
}

fn taken_silently_after_its_probe(ipv6: bool) {
    require_root();
    let fabric = if ipv6 {
        Fabric::dual_stack(1, None)
    } else {
        Fabric::new(1, None)
    };
    let one = &fabric.nodes[0];
    let mut config = if ipv6 {
        one.dual_stack_config("1.0.0")
    } else {
        one.config("1.0.0")
    };
    config["arpProbeMs"] = 300.into();
    // The family's result slot, its n-th address of node 1's range, and its prefix.
    let (slot, prefix) = if ipv6 { (1, 64) } else { (0, 16) };
    let address = |n: u8| {
        if ipv6 {
            format!("fd10:10::1:{n}")
        } else {
            format!("10.10.1.{n}")
        }
    };
    // The first ADD probes the next addresses once, the second (after half the probe
    // time) a second time: the third address is then handed out without a wait.
    // (Kept alive: a pod dropped takes its veth with it.)
    let earlier: Vec<Pod> = [1, 2]
        .into_iter()
        .map(|n| {
            let pod = Pod::new(&format!("silent{slot}{n}"));
            let (result, _) = timed_add(&one.node, &pod, &config);
            assert_eq!(result["ips"][slot]["address"], format!("{}/{prefix}", address(n)));
            std::thread::sleep(Duration::from_millis(400));
            pod
        })
        .collect();
    // Nobody answered the third's probes; now the external host takes it without a word
    // (Linux sends no ARP when an address is added, nor anything with nodad).
    let held = format!("{}/{prefix}", address(3));
    let mut add = vec!["ip", "addr", "add", held.as_str(), "dev", "eth0"];
    if ipv6 {
        add.push("nodad");
    }
    fabric.external.ok(&add);
    let external_mac = fabric.external.mac("eth0");
    let veths_before = one.node.host_veths();
    let late = Pod::new(&format!("silent{slot}x"));
    let msg = one
        .node
        .cni("ADD", &late.env("eth0"), &config)
        .error("ADD handing out an address taken after its probe", 102);
    assert!(
        msg.contains(&address(3)) && msg.contains(&external_mac),
        "the error names neither the address nor its holder: {msg}"
    );
    assert_eq!(one.node.host_veths(), veths_before, "the failed ADD left a veth");
    // The third address's file is now the conflict marker, nobody's lease; the failed
    // ADD's other leases are gone.
    let leases = one.node.leases(NET);
    assert!(leases.contains(&address(3)), "{leases:?}");
    assert_eq!(leases.len(), if ipv6 { 5 } else { 3 }, "{leases:?}");
    let marker = std::fs::read_to_string(one.node.ipam_dir(NET).join(address(3))).expect("marker");
    assert!(
        !marker.contains(&late.container_id),
        "the failed ADD left its lease: {marker}"
    );
    let report = one.node.status();
    let conflicts = report["conflicts"].as_array().cloned().unwrap_or_default();
    assert!(
        conflicts
            .iter()
            .any(|conflict| conflict["address"] == address(3).as_str()
                && conflict["mac"] == external_mac.as_str()),
        "{report}"
    );
    // The runtime's retry takes the next address.
    let (result, _) = timed_add(&one.node, &late, &config);
    assert_eq!(result["ips"][slot]["address"], format!("{}/{prefix}", address(4)));
    drop(earlier);
}

#[test]
fn pins_of_a_build_without_the_ipv6_maps_are_shown_flushed_deleted_and_upgraded() {
    require_root();
    let fabric = Fabric::dual_stack(1, None);
    let one = &fabric.nodes[0];
    let config = one.dual_stack_config("1.0.0");
    let (first, second) = (Pod::new("oldpins0"), Pod::new("oldpins1"));
    for pod in [&first, &second] {
        one.node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    }
    // The pins an older build left: none of the IPv6 maps, and its own build marker.
    let pins = one.node.bpffs.path().join("flatbridge").join(NET);
    let ipv6_maps = ["nd_claims", "nd_probes", "flows6", "confirmed6", "gateways_v6"];
    for map in ipv6_maps {
        std::fs::remove_file(pins.join(map))
            .unwrap_or_else(|error| panic!("remove the pin of {map}: {error}"));
    }
    for entry in std::fs::read_dir(&pins).expect("pins").flatten() {
        if entry.file_name().to_string_lossy().starts_with("build-") {
            std::fs::remove_dir(entry.path()).expect("remove the build marker");
        }
    }
    std::fs::create_dir(pins.join("build-00000000000000ff")).expect("an older build's marker");
    // Before any ADD loads this build: status, flush and DEL work on them.
    let report = one.node.status();
    let endpoints = report["networks"][0]["endpoints"].as_array().map(Vec::len);
    assert_eq!(endpoints, Some(2), "{report}");
    one.node.flatbridge(&["flows", "flush"]);
    one.node
        .cni("DEL", &first.env("eth0"), &config)
        .ok("DEL on old pins");
    assert!(second.ping(EXTERNAL_IP), "a pod of the old pins");
    // The next ADD loads this build over them and creates the maps they lack.
    let pod = Pod::new("oldpins2");
    let result = one
        .node
        .cni("ADD", &pod.env("eth0"), &config)
        .ok("ADD upgrading the pins");
    // (host-local goes on from the last address it handed out.)
    assert_eq!(result["ips"][1]["address"], "fd10:10::1:3/64", "{result}");
    for map in ipv6_maps {
        assert!(pins.join(map).exists(), "{map} not created by the upgrade");
    }
    assert!(pod.ping(EXTERNAL_IPV6));
    assert!(pod.ping(&second.ipv6("eth0").expect("second's IPv6")));
    // The old pod's IPv6 gateway is answered again (the upgrade's gateways_v6 is new).
    assert!(
        second.ping(EXTERNAL_IPV6),
        "the old pod over IPv6 after the upgrade"
    );
    for pod in [&pod, &second] {
        one.node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
    }
    assert!(one.node.host_veths().is_empty(), "{:?}", one.node.host_veths());
}

#[test]
fn without_the_ipv6_memory_maps_ipv6_addresses_are_probed_over_a_socket() {
    require_root();
    let fabric = Fabric::dual_stack(1, None);
    let one = &fabric.nodes[0];
    let config = one.dual_stack_config("1.0.0");
    let first = Pod::new("nomem0");
    one.node.cni("ADD", &first.env("eth0"), &config).ok("first ADD");
    // The loaded build's pins without the IPv6 claims and probes (removed by hand: an
    // upgrade loads them again, see above): the probes of IPv6 addresses cannot be read
    // back from the datapath.
    let pins = one.node.bpffs.path().join("flatbridge").join(NET);
    for map in ["nd_claims", "nd_probes"] {
        std::fs::remove_file(pins.join(map))
            .unwrap_or_else(|error| panic!("remove the pin of {map}: {error}"));
    }
    fabric.external.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd10:10::1:2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let pod = Pod::new("nomem1");
    let result = one.node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    assert_eq!(result["ips"][1]["address"], "fd10:10::1:3/64", "{result}");
    let report = one.node.status();
    let conflicts = report["conflicts"].as_array().cloned().unwrap_or_default();
    assert!(
        conflicts
            .iter()
            .any(|conflict| conflict["address"] == "fd10:10::1:2"),
        "{report}"
    );
    assert!(pod.ping(EXTERNAL_IPV6));
}
