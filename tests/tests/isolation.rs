//! A hostile pod on a flat L2: pods added by the plugin on a node set up on an uplink to a
//! switch with an external host (the operator's LAN), and pod A sending the frames a
//! container with CAP_NET_RAW can send — tagged, built in pages (PACKET_TX_RING), with
//! another's identity, as a router or DHCP server, IPv6 and neighbour discovery for others.
//! Each must stop at A's port: pod C and the external host capture nothing of it, and the
//! drop is counted under its reason. Each test also sends a frame that must arrive, so a
//! capture that sees nothing proves something.
use std::{thread::sleep, time::Duration};

use flatbridge_tests::{
    Pod,
    fabric::{Fabric, FabricNode},
    frames::{self, BROADCAST_MAC, ExtensionHeader},
    raw::{Capture, Sender, send_frame},
    require_root,
};
use serde_json::{Value, json};

const NET: &str = "data";
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: [u8; 16] = frames::ALL_NODES;

/// A pod as ADD reported it.
struct Added {
    pod: Pod,
    mac: [u8; 6],
    ip: [u8; 4],
    host_veth: String,
}

impl Added {
    fn link_local(&self) -> [u8; 16] {
        frames::link_local_eui64(self.mac)
    }
}

fn add(node: &FabricNode, tag: &str, config: &Value) -> Added {
    let pod = Pod::new(tag);
    let result = node.node.cni("ADD", &pod.env("eth0"), config).ok("ADD");
    let mac = frames::parse_mac(result["interfaces"][2]["mac"].as_str().expect("pod mac"));
    let address = result["ips"][0]["address"].as_str().expect("address");
    let ip: std::net::Ipv4Addr = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("IPv4");
    Added {
        pod,
        mac,
        ip: ip.octets(),
        host_veth: result["interfaces"][1]["name"]
            .as_str()
            .expect("host veth")
            .to_owned(),
    }
}

/// One node on the LAN with pods A, B and C.
struct Lan {
    fabric: Fabric,
    a: Added,
    b: Added,
    c: Added,
}

impl Lan {
    fn new() -> Self {
        require_root();
        let fabric = Fabric::new(1, None);
        let node = &fabric.nodes[0];
        let config = node.config("1.0.0");
        let [a, b, c] = ["a", "b", "c"].map(|tag| add(node, tag, &config));
        Self { fabric, a, b, c }
    }

    fn node(&self) -> &FabricNode {
        &self.fabric.nodes[0]
    }

    fn counter(&self, verdict: &str) -> u64 {
        self.node().node.counter(NET, verdict)
    }

    /// Sends `frame` from pod A (as `how` builds it) and asserts that neither pod C nor the
    /// external host sees `marker`, and that `verdict` counted it.
    fn stopped(&self, what: &str, frame: &[u8], how: Sender, verdict: &str, marker: &[u8]) {
        let before = self.counter(verdict);
        let at_c = Capture::start(&self.c.pod.netns, "eth0");
        let outside = Capture::start(&self.fabric.external, "eth0");
        send_frame(&self.a.pod.netns, "eth0", frame, how)
            .unwrap_or_else(|error| panic!("{what}: send: {error}"));
        sleep(Duration::from_millis(300));
        for (capture, place) in [(at_c, "pod C"), (outside, "the external host")] {
            let leaked = capture
                .stop()
                .iter()
                .any(|seen| flatbridge_tests::raw::contains(seen, marker));
            assert!(!leaked, "{what}: reached {place}");
        }
        let counted = self.counter(verdict) - before;
        assert!(counted >= 1, "{what}: not counted as {verdict}");
    }

    /// Sends `frame` from pod A and asserts that pod C receives it (the control).
    fn arrives(&self, what: &str, frame: &[u8], how: Sender, marker: &[u8]) {
        let at_c = Capture::start(&self.c.pod.netns, "eth0");
        send_frame(&self.a.pod.netns, "eth0", frame, how)
            .unwrap_or_else(|error| panic!("{what}: send: {error}"));
        let seen = at_c.wait_for(marker, Duration::from_secs(2));
        assert!(
            seen,
            "{what}: a frame the checks allow did not reach pod C; counters: {}",
            self.node().node.status()["networks"][0]["counters"]
        );
    }
}

/// The IP packet of `frame` (after an untagged Ethernet header): what the receiving side
/// sees of it whatever trailer it had (br_netfilter trims IP packets to their length).
fn l3(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

fn marker(what: &str) -> Vec<u8> {
    format!("flatbridge-isolation-{what}-{}", std::process::id()).into_bytes()
}

#[test]
fn tagged_frames_never_leave_the_pod() {
    let lan = Lan::new();
    let (a, b) = (&lan.a, &lan.b);
    let mark = marker("tagged");
    // Tagged with B's identity, as the measured attack did; and A's own, which is no better.
    let as_b = frames::udp_ipv4(b.mac, BROADCAST_MAC, b.ip, [255; 4], 5000, 5001, &mark);
    let as_a = frames::udp_ipv4(a.mac, BROADCAST_MAC, a.ip, [255; 4], 5000, 5001, &mark);
    for (what, frame) in [
        ("802.1Q, B's identity", frames::vlan_tagged(&as_b, 0x8100, 7)),
        ("802.1Q, own identity", frames::vlan_tagged(&as_a, 0x8100, 7)),
        ("802.1ad", frames::vlan_tagged(&as_a, 0x88a8, 7)),
        (
            "802.1ad + 802.1Q",
            frames::vlan_tagged(&frames::vlan_tagged(&as_a, 0x8100, 8), 0x88a8, 7),
        ),
        ("priority tag (VID 0)", frames::vlan_tagged(&as_a, 0x8100, 0)),
    ] {
        lan.stopped(what, &frame, Sender::Plain, "drop_vlan_tagged", &mark);
    }
    lan.arrives("untagged, own identity", &as_a, Sender::Plain, &mark);
}

#[test]
fn frames_built_in_pages_are_checked_like_any_other() {
    let lan = Lan::new();
    let (a, b) = (&lan.a, &lan.b);
    let mark = marker("pages");
    let spoofed_ip = frames::udp_ipv4(a.mac, BROADCAST_MAC, b.ip, [255; 4], 5000, 5001, &mark);
    lan.stopped(
        "TX ring, another pod's IPv4 source",
        &spoofed_ip,
        Sender::TxRing,
        "drop_spoofed_ip",
        &mark,
    );
    let mut spoofed_arp = frames::arp(2, a.mac, b.ip, BROADCAST_MAC, [10, 10, 0, 1]);
    spoofed_arp.extend_from_slice(&mark);
    lan.stopped(
        "TX ring, ARP with another pod's address",
        &spoofed_arp,
        Sender::TxRing,
        "drop_spoofed_arp",
        &mark,
    );
    let spoofed_v6 = frames::udp_ipv6(a.mac, ALL_NODES_MAC, b.link_local(), ALL_NODES, 5000, 5001, &mark);
    lan.stopped(
        "TX ring, another pod's IPv6 source",
        &spoofed_v6,
        Sender::TxRing,
        "drop_spoofed_ipv6",
        &mark,
    );
    let own = frames::udp_ipv4(a.mac, BROADCAST_MAC, a.ip, [255; 4], 5000, 5001, &mark);
    lan.arrives("TX ring, own identity", &own, Sender::TxRing, &mark);
}

#[test]
fn a_pod_cannot_act_as_a_router_or_dhcp_server() {
    let lan = Lan::new();
    let (a, c) = (&lan.a, &lan.c);
    let external = &lan.fabric.external;
    // The external host takes router advertisements, as hosts on a LAN do.
    for setting in ["accept_ra=2", "autoconf=1", "forwarding=0"] {
        external.ok(&["sysctl", "-qw", &format!("net.ipv6.conf.eth0.{setting}")]);
    }
    let prefix = [0x20, 0x01, 0x0d, 0xb8, 0, 0x66, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let ra = frames::router_advertisement(a.mac, a.link_local(), prefix, 64);
    lan.stopped(
        "router advertisement",
        &ra,
        Sender::Plain,
        "drop_router_advert",
        l3(&ra),
    );
    let hidden = frames::ipv6_with_ext(
        &ra,
        &[ExtensionHeader::HopByHop, ExtensionHeader::DestinationOptions],
    );
    lan.stopped(
        "router advertisement behind extension headers",
        &hidden,
        Sender::Plain,
        "drop_router_advert",
        l3(&hidden),
    );
    let behind_ah = frames::ipv6_with_ext(&ra, &[ExtensionHeader::Authentication]);
    lan.stopped(
        "router advertisement behind an authentication header",
        &behind_ah,
        Sender::Plain,
        "drop_router_advert",
        l3(&behind_ah),
    );
    lan.stopped(
        "router advertisement from a TX ring",
        &ra,
        Sender::TxRing,
        "drop_router_advert",
        l3(&ra),
    );
    let mark = marker("router");
    let redirect = frames::icmpv6_redirect(
        a.mac,
        ALL_NODES_MAC,
        a.link_local(),
        ALL_NODES,
        a.link_local(),
        [0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        Some(a.mac),
    );
    lan.stopped(
        "ICMPv6 redirect",
        &redirect,
        Sender::Plain,
        "drop_icmp_redirect",
        l3(&redirect),
    );
    let mut icmp_redirect_body = vec![5, 1, 0, 0];
    icmp_redirect_body.extend_from_slice(&a.ip);
    icmp_redirect_body.extend_from_slice(&mark);
    let ipv4_redirect = frames::ipv4_checksummed(a.mac, c.mac, a.ip, c.ip, 1, &icmp_redirect_body);
    lan.stopped(
        "ICMP redirect",
        &ipv4_redirect,
        Sender::Plain,
        "drop_icmp_redirect",
        &mark,
    );
    let offer = frames::dhcp_offer(a.mac, a.ip, [10, 10, 1, 200]);
    lan.stopped(
        "DHCP offer",
        &offer,
        Sender::Plain,
        "drop_dhcp_server",
        l3(&offer),
    );
    let offer_elsewhere = frames::dhcp_offer_from(a.mac, a.ip, 6767, [10, 10, 1, 201]);
    lan.stopped(
        "DHCP offer from another port",
        &offer_elsewhere,
        Sender::Plain,
        "drop_dhcp_server",
        l3(&offer_elsewhere),
    );
    let advertise = frames::dhcpv6_advertise(a.mac, a.link_local(), c.mac, c.link_local());
    lan.stopped(
        "DHCPv6 advertise",
        &advertise,
        Sender::Plain,
        "drop_dhcp_server",
        l3(&advertise),
    );
    sleep(Duration::from_millis(500));
    let addresses = external.ok(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        !addresses.contains("2001:db8:66:"),
        "the external host took an address from the pod's router advertisement: {addresses}"
    );
    // The control: a router solicitation is a pod's to send.
    let solicitation = frames::icmpv6(
        a.mac,
        [0x33, 0x33, 0, 0, 0, 2],
        a.link_local(),
        frames::ALL_ROUTERS,
        133,
        0,
        &[0; 4],
    );
    lan.arrives(
        "router solicitation",
        &solicitation,
        Sender::Plain,
        l3(&solicitation),
    );
}

#[test]
fn ipv6_and_neighbour_discovery_speak_only_for_the_pod() {
    let lan = Lan::new();
    let (a, b, c) = (&lan.a, &lan.b, &lan.c);
    let own_addresses = a.pod.netns.ok(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    let own = std::net::Ipv6Addr::from(a.link_local()).to_string();
    assert!(
        own_addresses.contains(&own),
        "the pod's link-local is not the EUI-64 of its MAC ({own}): {own_addresses}"
    );
    let mark = marker("nd");
    let global = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    for (what, source) in [
        ("another pod's link-local", b.link_local()),
        ("an address not leased", global),
    ] {
        let frame = frames::udp_ipv6(a.mac, ALL_NODES_MAC, source, ALL_NODES, 5000, 5001, &mark);
        lan.stopped(what, &frame, Sender::Plain, "drop_spoofed_ipv6", &mark);
    }
    let unspecified_udp = frames::udp_ipv6(a.mac, ALL_NODES_MAC, [0; 16], ALL_NODES, 5000, 5001, &mark);
    lan.stopped(
        "UDP from ::",
        &unspecified_udp,
        Sender::Plain,
        "drop_spoofed_ipv6",
        &mark,
    );
    let cases = [
        (
            "advertisement for another pod's address",
            frames::neighbor_advertisement(
                a.mac,
                a.link_local(),
                ALL_NODES,
                b.link_local(),
                frames::NA_OVERRIDE,
                a.mac,
            ),
        ),
        (
            "advertisement of its own address with another's MAC",
            frames::neighbor_advertisement(
                a.mac,
                a.link_local(),
                ALL_NODES,
                a.link_local(),
                frames::NA_OVERRIDE,
                b.mac,
            ),
        ),
        (
            "duplicate address detection for another pod's address",
            frames::neighbor_solicitation(a.mac, [0; 16], b.link_local(), None),
        ),
        (
            "solicitation naming another's MAC",
            frames::neighbor_solicitation(a.mac, a.link_local(), c.link_local(), Some(b.mac)),
        ),
    ];
    for (what, frame) in cases {
        lan.stopped(what, &frame, Sender::Plain, "drop_spoofed_nd", l3(&frame));
    }
    let legit = frames::neighbor_solicitation(a.mac, a.link_local(), c.link_local(), Some(a.mac));
    let fragmented = frames::ipv6_with_ext(&legit, &[ExtensionHeader::FirstFragment]);
    lan.stopped(
        "its own solicitation, fragmented",
        &fragmented,
        Sender::Plain,
        "drop_malformed",
        l3(&fragmented),
    );
    lan.arrives(
        "solicitation for pod C, from A",
        &legit,
        Sender::Plain,
        l3(&legit),
    );
    let own_source = frames::udp_ipv6(a.mac, ALL_NODES_MAC, a.link_local(), ALL_NODES, 5000, 5001, &mark);
    lan.arrives("UDP from its own link-local", &own_source, Sender::Plain, &mark);
    // And the pods' own stacks talk IPv6 to each other as before.
    let target = format!("{}%eth0", std::net::Ipv6Addr::from(c.link_local()));
    assert!(
        a.pod
            .netns
            .run(&["ping", "-6", "-c", "1", "-W", "2", &target])
            .status
            .success(),
        "pod A cannot ping pod C's link-local"
    );
}

#[test]
fn other_ethertypes_and_malformed_frames_are_dropped() {
    let lan = Lan::new();
    let a = &lan.a;
    let mark = marker("l3");
    let mut unknown = frames::ethernet(BROADCAST_MAC, a.mac, 0x88b5);
    unknown.extend_from_slice(&mark);
    lan.stopped(
        "local experimental ethertype",
        &unknown,
        Sender::Plain,
        "drop_unknown_l3",
        &mark,
    );
    let mut odd_arp = frames::arp(1, a.mac, a.ip, [0; 6], [10, 10, 0, 1]);
    odd_arp[18] = 8; // hardware address length 8
    odd_arp.extend_from_slice(&mark);
    lan.stopped(
        "ARP with odd lengths",
        &odd_arp,
        Sender::Plain,
        "drop_malformed",
        &mark,
    );
    // A probe (RFC 5227) tells the address's owner it is taken elsewhere: here the LAN's
    // router's.
    let router: std::net::Ipv4Addr = flatbridge_tests::fabric::EXTERNAL_IP.parse().expect("IPv4");
    let mut probe = frames::arp_request(a.mac, [0; 4], router.octets());
    probe.extend_from_slice(&mark);
    lan.stopped(
        "ARP probe for the router's address",
        &probe,
        Sender::Plain,
        "drop_spoofed_arp",
        &mark,
    );
    let mut foreign_mac = frames::udp_ipv4(lan.b.mac, BROADCAST_MAC, a.ip, [255; 4], 5000, 5001, &mark);
    lan.stopped(
        "another pod's MAC",
        &foreign_mac,
        Sender::Plain,
        "drop_spoofed_mac",
        &mark,
    );
    foreign_mac[6..12].copy_from_slice(&a.mac);
    lan.arrives("own MAC", &foreign_mac, Sender::Plain, &mark);
}

#[test]
fn a_port_without_its_endpoint_sends_nothing() {
    let lan = Lan::new();
    let (a, c) = (&lan.a, &lan.c);
    let c_ip = std::net::Ipv4Addr::from(c.ip).to_string();
    assert!(a.pod.ping(&c_ip), "pod A cannot reach pod C to begin with");
    // As a DEL that removed the endpoint but failed to delete the veth leaves it.
    let datapath = flatbridge::datapath::Datapath::open(lan.node().node.bpffs.path(), NET).expect("datapath");
    let ifindex = lan.node().node.netns.ifindex(&a.host_veth);
    assert!(datapath.remove_endpoint(ifindex).expect("remove endpoint"));
    let before = lan.counter("drop_unknown_port");
    assert!(
        !a.pod.ping(&c_ip),
        "a pod without an endpoint still reaches another"
    );
    assert!(
        lan.counter("drop_unknown_port") > before,
        "not counted as drop_unknown_port"
    );
}

#[test]
fn a_node_without_its_settings_still_checks_its_pods() {
    let lan = Lan::new();
    let (a, b, c) = (&lan.a, &lan.b, &lan.c);
    let datapath = flatbridge::datapath::Datapath::open(lan.node().node.bpffs.path(), NET).expect("datapath");
    // As if another tool had cleared them: the programs stay attached to the pods' ports.
    let settings = datapath.node_config().expect("settings");
    datapath
        .set_node_config(&flatbridge_common::NodeConfig::default())
        .expect("clear the settings");
    let mark = marker("unset");
    let spoofed = frames::udp_ipv4(a.mac, BROADCAST_MAC, b.ip, [255; 4], 5000, 5001, &mark);
    lan.stopped(
        "from another pod's address",
        &spoofed,
        Sender::Plain,
        "drop_spoofed_ip",
        &mark,
    );
    let own = frames::udp_ipv4(a.mac, BROADCAST_MAC, a.ip, [255; 4], 5000, 5001, &mark);
    lan.arrives("from its own address", &own, Sender::Plain, &mark);
    let c_ip = std::net::Ipv4Addr::from(c.ip).to_string();
    assert!(a.pod.ping(&c_ip), "pod A cannot reach pod C through the bridge");
    datapath.set_node_config(&settings).expect("restore the settings");
}

// --- what ADD refuses ---

fn error_of(node: &FabricNode, pod: &Pod, config: &Value, args: &str, code: u64) -> String {
    let mut env = pod.env("eth0");
    env.args = args.to_owned();
    node.node.cni("ADD", &env, config).error("ADD", code)
}

/// Nothing of a refused ADD is left: no veth beyond the pods', no lease beyond theirs.
fn assert_only(lan: &Lan, pods: usize) {
    let node = &lan.node().node;
    assert_eq!(
        node.host_veths().len(),
        pods,
        "veths left: {:?}",
        node.host_veths()
    );
    assert_eq!(
        node.leases(NET).len(),
        pods,
        "leases left: {:?}",
        node.leases(NET)
    );
    let status = node.status();
    let endpoints = status["networks"][0]["endpoints"].as_array().map_or(0, Vec::len);
    assert_eq!(endpoints, pods, "endpoints: {status}");
}

#[test]
fn a_pod_cannot_take_another_pods_mac_or_the_nodes() {
    let lan = Lan::new();
    let node = lan.node();
    let config = node.config("1.0.0");
    let thief = Pod::new("thief");
    let a_mac = frames::format_mac(lan.a.mac);
    let msg = error_of(node, &thief, &config, &format!("MAC={a_mac}"), 106);
    assert!(msg.contains(&a_mac) && msg.contains(&lan.a.host_veth), "{msg}");
    assert_only(&lan, 3);
    let mut as_capability = config.clone();
    as_capability["runtimeConfig"] = json!({"mac": a_mac});
    error_of(node, &thief, &as_capability, "", 106);
    assert_only(&lan, 3);
    let bridge_mac = node.node.netns.mac("cni0");
    let msg = error_of(node, &thief, &config, &format!("MAC={bridge_mac}"), 7);
    assert!(msg.contains("cni0"), "{msg}");
    let uplink_mac = node.node.netns.mac("eth0");
    error_of(node, &thief, &config, &format!("MAC={uplink_mac}"), 7);
    assert_only(&lan, 3);
    // Pod A was not disturbed.
    assert!(lan.c.pod.ping(&std::net::Ipv4Addr::from(lan.a.ip).to_string()));
}

#[test]
fn one_config_cannot_weaken_the_others_pods() {
    let lan = Lan::new();
    let node = lan.node();
    let seed = node.config("1.0.0");
    let newcomer = Pod::new("weak");
    for (field, value, named) in [
        ("antiSpoof", json!(false), "antiSpoof"),
        ("fastPathMode", json!("always"), "fastPathMode"),
        ("revalidateMs", json!(60000), "revalidateMs"),
        ("fastPath", json!(false), "fastPath"),
    ] {
        let mut config = seed.clone();
        config[field] = value;
        let msg = error_of(node, &newcomer, &config, "", 7);
        assert!(msg.contains(named) && msg.contains("delete"), "{field}: {msg}");
        assert_only(&lan, 3);
    }
    // With the network's pods gone, its settings follow the config again.
    for pod in [&lan.a, &lan.b, &lan.c] {
        node.node.cni("DEL", &pod.pod.env("eth0"), &seed).ok("DEL");
    }
    let mut relaxed = seed.clone();
    relaxed["antiSpoof"] = json!(false);
    node.node
        .cni("ADD", &newcomer.env("eth0"), &relaxed)
        .ok("ADD without anti-spoofing on an empty node");
    let status = node.node.status();
    assert_eq!(
        status["networks"][0]["node"]["anti_spoof"],
        json!(false),
        "{status}"
    );
}

#[test]
fn no_network_on_the_same_bridge_gets_around_the_checks() {
    let lan = Lan::new();
    let node = lan.node();
    let seed = node.config("1.0.0");
    let other = |changes: &[(&str, Value)]| {
        let mut config = seed.clone();
        config["name"] = json!("other");
        config["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.10.9.1");
        config["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.10.9.9");
        for (field, value) in changes {
            config[*field] = value.clone();
        }
        config
    };
    let tenant = Pod::new("tenant");
    for (field, value) in [("antiSpoof", json!(false)), ("fastPath", json!(false))] {
        let msg = error_of(node, &tenant, &other(&[(field, value)]), "", 7);
        assert!(
            msg.contains("network") && msg.contains("data") && msg.contains(field),
            "{field}: {msg}"
        );
        assert_only(&lan, 3);
        assert!(node.node.leases("other").is_empty(), "{field}: lease left");
    }
    // On a bridge of its own a network has settings of its own.
    node.node
        .cni(
            "ADD",
            &tenant.env("eth0"),
            &other(&[("antiSpoof", json!(false)), ("bridge", json!("cni1"))]),
        )
        .ok("ADD of another network on another bridge");
    node.node
        .cni("DEL", &tenant.env("eth0"), &other(&[("bridge", json!("cni1"))]))
        .ok("DEL");

    // The other way round: pods without checks first, then the first pod with them.
    for pod in [&lan.a, &lan.b, &lan.c] {
        node.node.cni("DEL", &pod.pod.env("eth0"), &seed).ok("DEL");
    }
    let plain = other(&[("fastPath", json!(false))]);
    let added = node.node.cni("ADD", &tenant.env("eth0"), &plain).ok("plain ADD");
    let plain_veth = added["interfaces"][1]["name"]
        .as_str()
        .expect("host veth")
        .to_owned();
    let checked = Pod::new("checked");
    let msg = error_of(node, &checked, &seed, "", 7);
    assert!(msg.contains(&plain_veth), "{msg}");
    assert!(
        node.node.leases(NET).is_empty(),
        "lease left: {:?}",
        node.node.leases(NET)
    );
    assert_eq!(node.node.host_veths().len(), 1, "{:?}", node.node.host_veths());
    node.node
        .cni("DEL", &tenant.env("eth0"), &plain)
        .ok("DEL of the plain pod");
    node.node
        .cni("ADD", &checked.env("eth0"), &seed)
        .ok("ADD once the unchecked pod is gone");
}

#[test]
fn plain_and_checked_pods_added_at_once_never_share_a_bridge() {
    require_root();
    let fabric = Fabric::new(1, None);
    let node = &fabric.nodes[0];
    let checked = node.config("1.0.0");
    let mut plain = checked.clone();
    plain["name"] = json!("other");
    plain["fastPath"] = json!(false);
    plain["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.10.9.1");
    plain["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.10.9.9");
    let mut both = 0;
    for round in 0..12 {
        let pods = [
            (Pod::new(&format!("p{round}")), &plain),
            (Pod::new(&format!("c{round}")), &checked),
            (Pod::new(&format!("d{round}")), &checked),
        ];
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let runs: Vec<_> = pods
                .iter()
                .map(|(pod, config)| {
                    scope.spawn(move || {
                        let out = node.node.cni("ADD", &pod.env("eth0"), config);
                        if !out.success {
                            // Refused for the other pod, and for nothing else.
                            let msg = out.error("ADD beside the other kind of pod", 7);
                            assert!(msg.contains("fast path"), "{msg}");
                            return false;
                        }
                        true
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| run.join().expect("ADD thread"))
                .collect()
        });
        assert!(
            !(outcomes[0] && (outcomes[1] || outcomes[2])),
            "round {round}: a plain pod and a checked pod were both added: {outcomes:?}"
        );
        both += usize::from(outcomes.iter().any(|added| *added));
        for (pod, config) in &pods {
            node.node.cni("DEL", &pod.env("eth0"), config).ok("DEL");
        }
        assert!(
            node.node.host_veths().is_empty(),
            "round {round}: {:?}",
            node.node.host_veths()
        );
    }
    assert!(both > 0, "no ADD ever got through");
}

#[test]
fn gateways_are_answered_only_while_pods_are_behind_them() {
    let lan = Lan::new();
    let node = &lan.node().node;
    let seed = lan.node().config("1.0.0");
    let gateways = |status: Value| status["networks"][0]["gateways"].clone();
    assert_eq!(
        gateways(node.status())[0]["address"],
        json!("10.10.1.0"),
        "{}",
        node.status()
    );
    for pod in [&lan.a, &lan.b] {
        node.cni("DEL", &pod.pod.env("eth0"), &seed).ok("DEL");
    }
    assert_eq!(
        gateways(node.status()).as_array().map_or(0, Vec::len),
        1,
        "pod C still needs it"
    );
    node.cni("DEL", &lan.c.pod.env("eth0"), &seed).ok("DEL");
    assert_eq!(gateways(node.status()), json!([]), "{}", node.status());
    // A pod that asks for the gateway finds the node's own stack answering, not a stale entry.
    let d = add(lan.node(), "d", &seed);
    assert_eq!(gateways(node.status())[0]["address"], json!("10.10.1.0"));
    node.flatbridge(&["node", "teardown", "--bridge", "cni0"]);
    assert_eq!(
        gateways(node.status()),
        json!([]),
        "answered after teardown: {}",
        node.status()
    );
    drop(d);
}

#[test]
fn a_replacement_pod_with_the_same_address_and_mac_is_reached_at_once() {
    let lan = Lan::new();
    let node = lan.node();
    // A long revalidation period: what the old pod's confirmations would blackhole.
    let mut config = node.config("1.0.0");
    config["revalidateMs"] = json!(60000);
    for pod in [&lan.a, &lan.b, &lan.c] {
        node.node
            .cni("DEL", &pod.pod.env("eth0"), &node.config("1.0.0"))
            .ok("DEL");
    }
    let a = add(node, "ra", &config);
    let b = add(node, "rb", &config);
    let b_address = std::net::SocketAddr::from((b.ip, 7000));
    let served = flatbridge_tests::sockets::udp_echo_server(&b.pod.netns, b_address, "old");
    // One flow throughout: the same client port before and after the replacement.
    let exchange = || {
        flatbridge_tests::sockets::udp_exchange_from(
            &a.pod.netns,
            41000,
            b_address,
            20,
            Duration::from_millis(20),
        )
    };
    let replies = exchange();
    assert!(replies.len() >= 15, "no flow to begin with: {replies:?}");
    assert!(lan.counter("pod_to_pod") > 0, "the flow was never offloaded");
    drop(served);
    node.node.cni("DEL", &b.pod.env("eth0"), &config).ok("DEL");
    let again = Pod::new("rb2");
    let mut env = again.env("eth0");
    let ip = std::net::Ipv4Addr::from(b.ip);
    env.args = format!("IP={ip};MAC={}", frames::format_mac(b.mac));
    node.node.cni("ADD", &env, &config).ok("ADD of the replacement");
    let _served = flatbridge_tests::sockets::udp_echo_server(&again.netns, b_address, "new");
    let replies = exchange();
    let answered = replies
        .iter()
        .filter(|(_, text)| text.starts_with("new:"))
        .count();
    assert!(
        answered >= 15,
        "the replacement answered {answered} of 20: {replies:?}"
    );
}
