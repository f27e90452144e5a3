//! The eBPF fast path with real pods and real packets: pod to pod without the bridge, ARP
//! answered by the programs, the uplink in both directions, spoofed frames dropped, and
//! what the operator sees in `flatbridge status` and `bpftool`.
use std::process::Command;

use flatbridge_tests::{Netns, Node, Pod, dual_stack_config, require_root, seed_config};
use serde_json::{Value, json};

const NET: &str = "data";

fn add(node: &Node, pod: &Pod, config: &Value) -> Value {
    node.cni("ADD", &pod.env("eth0"), config).ok("ADD")
}

fn host_veth(result: &Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_owned()
}

fn pod_mac(result: &Value) -> String {
    result["interfaces"][2]["mac"]
        .as_str()
        .expect("pod mac")
        .to_owned()
}

/// The "always" mode (an explicit opt-in for nodes without Services or policy) redirects
/// every frame for a local pod's MAC, so it works even with the target's bridge port
/// disabled; the plain bridge does not. (The default mode needs the bridge for a flow's
/// first packets: see kube_proxy.rs.)
#[test]
fn always_mode_bypasses_the_bridge_even_with_the_port_disabled() {
    require_root();
    for fast_path in [true, false] {
        let node = Node::with_gateway("p2p");
        let mut config = seed_config("1.0.0");
        config["fastPath"] = json!(fast_path);
        config["fastPathMode"] = json!("always");
        let (a, b) = (Pod::new("p2pa"), Pod::new("p2pb"));
        add(&node, &a, &config);
        let result_b = add(&node, &b, &config);
        let address_b = b.ipv4("eth0").expect("b's address");
        assert!(a.ping(&address_b), "fast path {fast_path}: a cannot reach b");
        // With b's bridge port disabled only a path that does not use the bridge works.
        node.netns.ok(&[
            "bridge",
            "link",
            "set",
            "dev",
            &host_veth(&result_b),
            "state",
            "0",
        ]);
        a.netns.ok(&["ip", "neigh", "flush", "dev", "eth0"]);
        let through = a.ping(&address_b);
        assert_eq!(
            through, fast_path,
            "fast path {fast_path}: ping with b's bridge port disabled"
        );
        if fast_path {
            assert!(node.counter(NET, "pod_to_pod") >= 2, "{}", node.status_text());
            assert!(
                node.counter(NET, "pod_arp_answered") >= 1,
                "{}",
                node.status_text()
            );
        } else {
            assert!(node.status()["networks"].as_array().expect("networks").is_empty());
        }
    }
}

#[test]
fn arp_for_pods_and_the_gateway_is_answered_by_the_program() {
    require_root();
    let node = Node::with_gateway("arp");
    let config = seed_config("1.0.0");
    let (a, b) = (Pod::new("arpa"), Pod::new("arpb"));
    add(&node, &a, &config);
    let result_b = add(&node, &b, &config);
    let address_b = b.ipv4("eth0").expect("b's address");
    // Neither b nor the bridge answer ARP themselves now: only the program can.
    b.netns.ok(&["ip", "link", "set", "eth0", "arp", "off"]);
    node.netns.ok(&["ip", "link", "set", "cni0", "arp", "off"]);
    let before = node.counter(NET, "pod_arp_answered");
    let reply = a
        .netns
        .ok(&["arping", "-I", "eth0", "-c", "1", "-w", "2", &address_b]);
    assert!(
        reply.to_lowercase().contains(&pod_mac(&result_b).to_lowercase()),
        "arping for b did not get b's MAC: {reply}"
    );
    let bridge_mac = node.netns.mac("cni0");
    let reply = a
        .netns
        .ok(&["arping", "-I", "eth0", "-c", "1", "-w", "2", "10.10.1.0"]);
    assert!(
        reply.to_lowercase().contains(&bridge_mac),
        "arping for the gateway did not get the bridge's MAC {bridge_mac}: {reply}"
    );
    assert_eq!(node.counter(NET, "pod_arp_answered"), before + 2);
}

/// A node with an uplink veth on its bridge whose other end is an external host.
fn node_with_uplink(tag: &str, external: &Netns) -> Node {
    let node = Node::with_gateway(tag);
    node.add_veth_to_bridge("uplink0", external, "eth0");
    external.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
    node
}

/// In "always" mode even ICMP takes the fast path, both ways through the uplink.
#[test]
fn the_uplink_carries_both_directions_on_the_fast_path() {
    require_root();
    let external = Netns::new("ext");
    let node = node_with_uplink("uplink", &external);
    let pod = Pod::new("upod");
    let mut config = seed_config("1.0.0");
    config["fastPathMode"] = json!("always");
    add(&node, &pod, &config);
    let address = pod.ipv4("eth0").expect("address");
    let status = node.status();
    let report = &status["networks"][0];
    assert_eq!(report["node"]["uplink"], "uplink0", "{report}");
    let uplink_program = &report["programs"][1];
    assert_eq!(uplink_program["name"], "from_uplink");
    assert_eq!(
        uplink_program["devices"],
        json!([{"device": "uplink0", "attached": true, "attach": "tcx"}])
    );

    let before = (
        node.counter(NET, "pod_to_uplink"),
        node.counter(NET, "uplink_to_pod"),
        node.counter(NET, "uplink_arp_answered"),
    );
    external.ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    let out = external.ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &address]);
    assert!(out.contains("3 received"), "{out}");
    assert!(pod.ping("10.10.0.1"), "the pod cannot reach the external host");
    let after = (
        node.counter(NET, "pod_to_uplink"),
        node.counter(NET, "uplink_to_pod"),
        node.counter(NET, "uplink_arp_answered"),
    );
    assert!(after.0 >= before.0 + 4, "pod to uplink: {before:?} -> {after:?}");
    assert!(after.1 >= before.1 + 4, "uplink to pod: {before:?} -> {after:?}");
    assert!(
        after.2 > before.2,
        "the external host's ARP was not answered by the program: {before:?} -> {after:?}"
    );
    // The external host learnt the pod's own MAC.
    let neighbours = external.ok(&["ip", "neigh", "show", &address]);
    let mac = pod.netns.mac("eth0");
    assert!(
        neighbours.contains(&mac),
        "external host has {neighbours}, pod MAC is {mac}"
    );
}

#[test]
fn spoofed_frames_are_dropped_and_counted() {
    require_root();
    let node = Node::with_gateway("spoof");
    let config = seed_config("1.0.0");
    let (a, b) = (Pod::new("spa"), Pod::new("spb"));
    let result_a = add(&node, &a, &config);
    let result_b = add(&node, &b, &config);
    let address_b = b.ipv4("eth0").expect("b's address");
    assert!(a.ping(&address_b));

    // a claims b's address as its source.
    a.netns
        .ok(&["ip", "addr", "add", &format!("{address_b}/32"), "dev", "eth0"]);
    let spoofed_ip = node.counter(NET, "drop_spoofed_ip") + node.counter(NET, "drop_spoofed_arp");
    assert!(
        !a.netns
            .run(&[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                &address_b,
                "10.10.1.0"
            ])
            .status
            .success()
    );
    let after = node.counter(NET, "drop_spoofed_ip") + node.counter(NET, "drop_spoofed_arp");
    assert!(
        after >= spoofed_ip + 2,
        "spoofed source address not dropped: {spoofed_ip} -> {after}"
    );
    a.netns
        .ok(&["ip", "addr", "del", &format!("{address_b}/32"), "dev", "eth0"]);

    // a takes b's MAC.
    let spoofed_mac = node.counter(NET, "drop_spoofed_mac");
    a.netns
        .ok(&["ip", "link", "set", "eth0", "address", &pod_mac(&result_b)]);
    assert!(!a.ping(&address_b));
    assert!(node.counter(NET, "drop_spoofed_mac") > spoofed_mac);
    a.netns
        .ok(&["ip", "link", "set", "eth0", "address", &pod_mac(&result_a)]);
    a.netns.ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(a.ping(&address_b), "a does not recover once it stops spoofing");

    // Turned off, the same spoofing gets through.
    let node = Node::with_gateway("nospoof");
    let mut config = seed_config("1.0.0");
    config["antiSpoof"] = json!(false);
    let (a, b) = (Pod::new("nsa"), Pod::new("nsb"));
    add(&node, &a, &config);
    add(&node, &b, &config);
    a.netns.ok(&["ip", "addr", "add", "10.10.1.50/32", "dev", "eth0"]);
    let address_b = b.ipv4("eth0").expect("b's address");
    assert!(
        a.netns
            .run(&["ping", "-c", "1", "-W", "2", "-I", "10.10.1.50", &address_b])
            .status
            .success()
    );
    assert_eq!(node.counter(NET, "drop_spoofed_ip"), 0);
}

#[test]
fn status_and_bpftool_show_the_datapath_by_name() {
    require_root();
    let node = Node::with_gateway("show");
    let config = seed_config("1.0.0");
    let pod = Pod::new("show");
    let result = add(&node, &pod, &config);
    let veth = host_veth(&result);
    let address = pod.ipv4("eth0").expect("address");

    // What the kernel runs, as `status --json` reports it: the pod programs on the pod's
    // host veth, nothing on an uplink (this node has none).
    let status = node.status();
    let networks = status["networks"].as_array().expect("networks");
    assert_eq!(networks.len(), 1, "{status}");
    let report = &networks[0];
    assert_eq!(report["network"], NET, "{report}");
    let programs = report["programs"].as_array().expect("programs");
    let names: Vec<&str> = programs
        .iter()
        .map(|program| program["name"].as_str().expect("program name"))
        .collect();
    assert_eq!(
        names,
        ["from_pod", "from_uplink", "to_pod", "to_uplink"],
        "{report}"
    );
    for program in programs {
        assert!(program["id"].as_u64().is_some(), "program without id: {program}");
        let expected = match program["name"].as_str() {
            Some("from_pod" | "to_pod") => json!([{"device": veth, "attached": true, "attach": "tc-filter"}]),
            _ => json!([]),
        };
        assert_eq!(program["devices"], expected, "{program}");
    }
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{report}");
    assert_eq!(endpoints[0]["host_veth"], veth, "{report}");
    assert_eq!(endpoints[0]["addresses"], json!([address]), "{report}");
    assert_eq!(endpoints[0]["attached"], true, "{report}");

    // The same, as a person reads it.
    let text = node.status_text();
    for expected in [
        "network data",
        "from_pod",
        &veth,
        &address,
        "pod_to_pod",
        "10.10.1.0",
    ] {
        assert!(text.contains(expected), "status lacks {expected:?}:\n{text}");
    }
    assert!(!text.contains("NOT attached"), "{text}");
    let pins = node.bpffs.path().join("flatbridge/data");
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pins.join("pods_by_ip"))
        .output()
        .expect("bpftool");
    let dump = String::from_utf8_lossy(&dump.stdout);
    for field in ["\"addr\"", "\"ifindex\"", "\"mac\"", "\"ipv4\""] {
        assert!(dump.contains(field), "bpftool shows no {field}: {dump}");
    }
    // DEL forgets the pod before its veth goes.
    node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
    let report = &node.status()["networks"][0];
    assert_eq!(report["endpoints"], json!([]));
    assert_eq!(report["programs"][0]["devices"], json!([]));
}

#[test]
fn del_after_the_netns_is_gone_still_forgets_the_pod() {
    require_root();
    let node = Node::with_gateway("gonefp");
    let config = seed_config("1.0.0");
    let (stay, go) = (Pod::new("stay"), Pod::new("go"));
    add(&node, &stay, &config);
    add(&node, &go, &config);
    let env = go.env("eth0");
    drop(go);
    let mut gone = env.clone();
    gone.netns.clear();
    node.cni("DEL", &gone, &config).ok("DEL without netns");
    let report = &node.status()["networks"][0];
    assert_eq!(
        report["endpoints"].as_array().expect("endpoints").len(),
        1,
        "{report}"
    );
    assert_eq!(
        report["programs"][0]["devices"]
            .as_array()
            .expect("devices")
            .len(),
        1,
        "{report}"
    );
}

/// Drops every IPv6 neighbour solicitation that reaches `netns`'s own stack: what still
/// gets an answer was answered by the programs.
fn ignore_solicitations(netns: &Netns) {
    netns.ok(&[
        "ip6tables",
        "-A",
        "INPUT",
        "-p",
        "ipv6-icmp",
        "--icmpv6-type",
        "neighbour-solicitation",
        "-j",
        "DROP",
    ]);
}

/// The neighbour entry `netns` has for `address`, as `ip` prints it.
fn neighbour(netns: &Netns, address: &str) -> String {
    netns.ok(&["ip", "-6", "neigh", "show", address, "dev", "eth0"])
}

#[test]
fn neighbour_solicitations_for_pods_and_the_gateway_are_answered_by_the_programs() {
    require_root();
    let node = Node::with_gateway("nd");
    node.netns.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd10:10::1:0/64",
        "dev",
        "cni0",
        "nodad",
    ]);
    let config = dual_stack_config("1.0.0");
    let (a, b) = (Pod::new("nda"), Pod::new("ndb"));
    add(&node, &a, &config);
    let result_b = add(&node, &b, &config);
    let address_b = b.ipv6("eth0").expect("b's IPv6 address");
    // Neither b nor the node answer solicitations themselves now: only the programs can.
    ignore_solicitations(&b.netns);
    ignore_solicitations(&node.netns);
    let before = node.counter(NET, "pod_nd_answered");
    assert!(a.ping(&address_b), "a cannot reach b over IPv6");
    assert!(a.ping("fd10:10::1:0"), "a cannot reach the gateway over IPv6");
    let b_mac = pod_mac(&result_b).to_lowercase();
    let entry = neighbour(&a.netns, &address_b);
    assert!(
        entry.contains(&format!("lladdr {b_mac}")) && !entry.contains("router"),
        "a's neighbour entry for b (MAC {b_mac}): {entry}"
    );
    let bridge_mac = node.netns.mac("cni0");
    let entry = neighbour(&a.netns, "fd10:10::1:0");
    assert!(
        entry.contains(&format!("lladdr {bridge_mac}")) && entry.contains("router"),
        "a's neighbour entry for the gateway (bridge MAC {bridge_mac}, a router): {entry}"
    );
    // a asked for b and the gateway; b asked for a, to answer.
    let answered = node.counter(NET, "pod_nd_answered") - before;
    assert!(answered >= 3, "{answered} solicitations answered by the programs");
}

#[test]
fn a_solicitation_from_the_wire_for_a_pod_is_answered_out_of_the_uplink() {
    require_root();
    let external = Netns::new("ndext");
    let node = node_with_uplink("ndup", &external);
    external.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd10:10::ff/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let pod = Pod::new("ndpod");
    add(&node, &pod, &dual_stack_config("1.0.0"));
    let address = pod.ipv6("eth0").expect("the pod's IPv6 address");
    ignore_solicitations(&pod.netns);
    let before = node.counter(NET, "uplink_nd_answered");
    let out = external.ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &address]);
    assert!(out.contains("2 received"), "{out}");
    assert!(
        node.counter(NET, "uplink_nd_answered") > before,
        "the external host's solicitation was not answered by the program"
    );
    let mac = pod.netns.mac("eth0");
    let entry = neighbour(&external, &address);
    assert!(
        entry.contains(&format!("lladdr {mac}")),
        "external host has {entry}, pod MAC is {mac}"
    );
}

/// ADD's announcement of a pod's IPv6 address leaves by the bridge, which floods it to
/// every port: the pod's own port stops it (the pod's kernel would log its own MAC
/// advertising its own address as a conflict), the others let it through. Sent here once
/// the ports forward (ADD's own copies may come before the pod's port does).
#[test]
fn a_pods_own_announcement_stops_at_its_own_port_and_no_other() {
    require_root();
    let node = Node::with_gateway("ownna");
    let config = dual_stack_config("1.0.0");
    let (a, b) = (Pod::new("ona"), Pod::new("onb"));
    let result_a = add(&node, &a, &config);
    add(&node, &b, &config);
    let address_a = a.ipv6("eth0").expect("a's IPv6 address");
    assert!(b.ping(&address_a), "b cannot reach a over IPv6");
    let mac = flatbridge_tests::frames::parse_mac(&pod_mac(&result_a));
    let ip: std::net::Ipv6Addr = address_a.parse().expect("IPv6 address");
    let frame = flatbridge::ndp::unsolicited_advertisement(mac, ip);
    let bridge = node.netns.ifindex("cni0");
    let before = node.counter(NET, "drop_own_advertisement");
    let datapath = flatbridge::datapath::Datapath::open(node.bpffs.path(), NET).expect("datapath");
    flatbridge::netns::Netns::open(node.netns.path())
        .expect("node netns")
        .run(|| datapath.inject(bridge, &frame))
        .expect("enter the node netns")
        .expect("send the announcement out of the bridge");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        node.counter(NET, "drop_own_advertisement"),
        before + 1,
        "the announcement was stopped at a's port, and only there"
    );
    let log = Command::new("dmesg").output().expect("dmesg");
    let conflict = format!("NA: {} advertised our address", pod_mac(&result_a).to_lowercase());
    assert!(
        !String::from_utf8_lossy(&log.stdout).contains(&conflict),
        "a's kernel saw its own announcement: {conflict}"
    );
}
