//! The programs frame by frame: each behaviour is one crafted frame run through the loaded
//! program with BPF_PROG_TEST_RUN, against maps filled as the plugin fills them; the test
//! checks the verdict, the bytes that come out and the counter that moved.
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use flatbridge::{datapath::Datapath, netns::Netns as PluginNetns};
use flatbridge_common::{
    Endpoint, NODE_ANTI_SPOOF, NODE_CONFIRM_FLOWS, NODE_ENABLED, NODE_TCP_OFFLOAD, NodeConfig,
    OFFLOADED_MARK, Verdict, program_name,
};
use flatbridge_tests::{
    BpfFs, Netns,
    frames::{self, ACK, ExtensionHeader, FIN, SYN, arp, arp_request, ethernet, ipv4, tcp, udp},
    require_root,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const BRIDGE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const MAC_OUTSIDE: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];
const IP_A: [u8; 4] = [10, 10, 1, 1];
const IP_B: [u8; 4] = [10, 10, 1, 2];
const IP_C: [u8; 4] = [10, 10, 1, 3];
const IP_GATEWAY: [u8; 4] = [10, 10, 1, 0];
const IP_OUTSIDE: [u8; 4] = [10, 10, 0, 1];

/// `struct __sk_buff` (include/uapi/linux/bpf.h) is 192 bytes; `mark` is at offset 8 and
/// `ifindex` at 40. BPF_PROG_TEST_RUN takes the device the frame "arrived on" from it.
fn skb_ctx(ifindex: u32, mark: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// A node namespace with four real devices (the programs read the ifindex of the device a
/// frame came in on) and a loaded datapath whose maps know pods A, B and C and the gateway.
struct World {
    node: Netns,
    _bpffs: BpfFs,
    datapath: Datapath,
    host_a: u32,
    host_b: u32,
    host_c: u32,
    uplink: u32,
    /// A port with the programs' view of a veth that has no endpoint.
    stray: u32,
}

impl World {
    fn new(flags: u32, with_uplink: bool) -> Self {
        require_root();
        let node = Netns::new("prog");
        for name in ["hosta", "hostb", "hostc", "uplink", "stray"] {
            node.ok(&[
                "ip",
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}-p"),
            ]);
        }
        let [host_a, host_b, host_c, uplink, stray] =
            ["hosta", "hostb", "hostc", "uplink", "stray"].map(|name| node.ifindex(name));
        let bpffs = BpfFs::new("prog");
        let (datapath, _) = Datapath::ensure_loaded(bpffs.path(), "prog").expect("load the datapath");
        datapath
            .set_node_config(&NodeConfig {
                revalidate_ns: 300_000_000,
                bridge_ifindex: 1,
                uplink_ifindex: if with_uplink { uplink } else { 0 },
                flags,
                bridge_mac: BRIDGE_MAC,
                ..NodeConfig::default()
            })
            .expect("node config");
        for (ifindex, ip, mac) in [
            (host_a, IP_A, MAC_A),
            (host_b, IP_B, MAC_B),
            (host_c, IP_C, MAC_C),
        ] {
            let endpoint = Endpoint {
                ifindex,
                ipv4: ip,
                mac,
                ..Endpoint::default()
            };
            datapath
                .add_endpoint(endpoint, &[Ipv4Addr::from(ip)], &[])
                .expect("endpoint");
        }
        let subnet = Ipv4Network::new(Ipv4Addr::from(IP_GATEWAY), 16).expect("subnet");
        datapath.set_gateway(subnet.into(), BRIDGE_MAC).expect("gateway");
        Self {
            node,
            _bpffs: bpffs,
            datapath,
            host_a,
            host_b,
            host_c,
            uplink,
            stray,
        }
    }

    fn default() -> Self {
        Self::new(NODE_ENABLED | NODE_ANTI_SPOOF, true)
    }

    /// Runs `program` on `frame` as if it arrived on `ifindex`; returns the action, the
    /// frame as the program left it, and how much `verdict`'s counter moved.
    fn run(&self, program: &str, ifindex: u32, frame: &[u8], verdict: Verdict) -> (u32, Vec<u8>, u64) {
        let (action, out, _, counted) = self.run_marked(program, ifindex, 0, frame, verdict);
        (action, out, counted)
    }

    /// As [`World::run`], asserting the program's action and that `verdict` counted the frame
    /// once (`what` names the case); returns the frame as it left.
    fn expect(
        &self,
        program: &str,
        ifindex: u32,
        frame: &[u8],
        verdict: Verdict,
        action: u32,
        what: &str,
    ) -> Vec<u8> {
        let (got, out, counted) = self.run(program, ifindex, frame, verdict);
        assert_eq!(
            (got, counted),
            (action, 1),
            "{what}: action and {verdict:?} count"
        );
        out
    }

    /// As [`World::expect`] for a frame from a pod on `port` that goes on to the bridge
    /// unchanged in verdict (`pod_to_bridge`, TC_ACT_OK); returns the frame as it left.
    fn to_bridge(&self, port: u32, frame: &[u8], what: &str) -> Vec<u8> {
        self.expect(FROM_POD, port, frame, Verdict::PodToBridge, TC_ACT_OK, what)
    }

    /// As [`World::run`], with the skb mark set to `mark`; also returns the mark after.
    fn run_marked(
        &self,
        program: &str,
        ifindex: u32,
        mark: u32,
        frame: &[u8],
        verdict: Verdict,
    ) -> (u32, Vec<u8>, u32, u64) {
        let before = self.count(verdict);
        let (action, out, mark_after) = self
            .try_run(program, ifindex, mark, frame)
            .unwrap_or_else(|error| panic!("BPF_PROG_TEST_RUN: {error}"));
        (action, out, mark_after, self.count(verdict) - before)
    }

    /// One test run: the action, the frame as the program left it, the mark after; or why
    /// the kernel refused to run the program on the frame.
    fn try_run(
        &self,
        program: &str,
        ifindex: u32,
        mark: u32,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>, u32), String> {
        let path = self.datapath.layout().program(program);
        let ctx = skb_ctx(ifindex, mark);
        let netns = self.node.path();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    PluginNetns::open(&netns)
                        .expect("node netns")
                        .run(|| {
                            let program = SchedClassifier::from_pin(&path).expect("pinned program");
                            let mut out = vec![0u8; frame.len() + 64];
                            let mut ctx_out = [0u8; 192];
                            let result = program
                                .test_run(TestRunOptions {
                                    data_in: Some(frame),
                                    data_out: Some(&mut out),
                                    ctx_in: Some(&ctx),
                                    ctx_out: Some(&mut ctx_out),
                                    ..TestRunOptions::default()
                                })
                                .map_err(|error| error.to_string())?;
                            out.truncate(result.data_size_out as usize);
                            let mark_after = u32::from_ne_bytes(ctx_out[8..12].try_into().expect("4 bytes"));
                            Ok((result.return_value, out, mark_after))
                        })
                        .expect("enter the node netns")
                })
                .join()
                .expect("test run thread")
        })
    }

    fn count(&self, verdict: Verdict) -> u64 {
        self.datapath
            .counters()
            .expect("counters")
            .iter()
            .find(|count| count.verdict == verdict)
            .map(|count| count.total.packets)
            .expect("verdict counter")
    }
}

const FROM_POD: &str = program_name::FROM_POD;
const FROM_UPLINK: &str = program_name::FROM_UPLINK;

#[test]
fn arp_request_for_a_local_pod_becomes_the_reply() {
    let world = World::default();
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &arp_request(MAC_A, IP_A, IP_B),
        Verdict::PodArpAnswered,
        TC_ACT_REDIRECT,
        "",
    );
    assert_eq!(out, {
        let mut reply = arp(2, MAC_B, IP_B, MAC_A, IP_A);
        reply[..6].copy_from_slice(&MAC_A);
        reply
    });
}

#[test]
fn arp_request_for_the_gateway_is_answered_with_the_bridge_mac() {
    let world = World::default();
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &arp_request(MAC_A, IP_A, IP_GATEWAY),
        Verdict::PodArpAnswered,
        TC_ACT_REDIRECT,
        "",
    );
    assert_eq!(&out[22..28], &BRIDGE_MAC, "sender MAC of the reply");
    assert_eq!(&out[28..32], &IP_GATEWAY, "sender IP of the reply");
}

#[test]
fn gratuitous_arp_own_address_probes_and_unknown_targets_go_to_the_bridge() {
    let world = World::default();
    for (what, frame) in [
        ("gratuitous", arp_request(MAC_A, IP_A, IP_A)),
        ("probe for its own address", arp_request(MAC_A, [0; 4], IP_A)),
        ("unknown target", arp_request(MAC_A, IP_A, IP_OUTSIDE)),
        ("reply", arp(2, MAC_A, IP_A, MAC_B, IP_B)),
    ] {
        let out = world.to_bridge(world.host_a, &frame, what);
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
}

#[test]
fn spoofed_arp_mac_and_ip_are_dropped() {
    let world = World::default();
    let cases = [
        (
            "ARP sender MAC of another pod",
            arp_request(MAC_A, IP_A, IP_B),
            world.host_b,
            Verdict::DropSpoofedMac,
        ),
        (
            "ARP sender IP of another pod",
            {
                let mut frame = arp_request(MAC_A, IP_B, IP_GATEWAY);
                frame[6..12].copy_from_slice(&MAC_A);
                frame
            },
            world.host_a,
            Verdict::DropSpoofedArp,
        ),
        (
            "ARP probe for another pod's address",
            arp_request(MAC_A, [0; 4], IP_B),
            world.host_a,
            Verdict::DropSpoofedArp,
        ),
        (
            "IPv4 from another pod's address",
            ipv4(MAC_B, MAC_A, IP_GATEWAY, IP_B),
            world.host_a,
            Verdict::DropSpoofedIp,
        ),
        (
            "frame with another pod's MAC",
            ipv4(MAC_OUTSIDE, MAC_B, IP_A, IP_OUTSIDE),
            world.host_a,
            Verdict::DropSpoofedMac,
        ),
    ];
    for (what, frame, port, verdict) in cases {
        world.expect(FROM_POD, port, &frame, verdict, TC_ACT_SHOT, what);
    }
}

#[test]
fn anti_spoofing_off_lets_foreign_sources_through() {
    let world = World::new(NODE_ENABLED, true);
    let (action, _, _) = world.run(
        FROM_POD,
        world.host_a,
        &ipv4(MAC_B, MAC_A, IP_GATEWAY, IP_B),
        Verdict::PodToPod,
    );
    assert_eq!(action, TC_ACT_REDIRECT);
}

#[test]
fn ipv4_to_a_local_pod_is_redirected_into_it() {
    let world = World::default();
    let frame = ipv4(MAC_B, MAC_A, IP_A, IP_B);
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &frame,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "",
    );
    assert_eq!(out, frame, "a redirected frame is not rewritten");
    // To its own port (hairpin) it is the bridge's business.
    world.to_bridge(world.host_b, &ipv4(MAC_B, MAC_B, IP_B, IP_B), "");
}

#[test]
fn ipv4_to_other_macs_leaves_by_the_uplink_and_to_the_node_goes_to_the_bridge() {
    let world = World::default();
    world.expect(
        FROM_POD,
        world.host_a,
        &ipv4(MAC_OUTSIDE, MAC_A, IP_A, IP_OUTSIDE),
        Verdict::PodToUplink,
        TC_ACT_REDIRECT,
        "",
    );
    world.to_bridge(world.host_a, &ipv4(BRIDGE_MAC, MAC_A, IP_A, IP_GATEWAY), "");
    // Without an uplink, unknown MACs go to the bridge.
    let world = World::new(NODE_ENABLED | NODE_ANTI_SPOOF, false);
    world.to_bridge(world.host_a, &ipv4(MAC_OUTSIDE, MAC_A, IP_A, IP_OUTSIDE), "");
}

/// Frames no program takes: from the wire, and from a pod when anti-spoofing is off, they
/// go to the bridge unchanged; from a pod with anti-spoofing on each is dropped, for the
/// reason given.
fn frames_not_taken() -> Vec<(&'static str, Vec<u8>, Verdict)> {
    let mut vlan = ethernet(MAC_B, MAC_A, 0x8100);
    vlan.extend_from_slice(&[0, 7, 0x08, 0]);
    vlan.extend_from_slice(&ipv4(MAC_B, MAC_A, IP_A, IP_B)[14..]);
    let mut ipv6 = ethernet(ALL_NODES_MAC, MAC_A, 0x86dd);
    ipv6.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 59, 64]);
    ipv6.extend_from_slice(&[0u8; 32]);
    let mut odd_arp = arp_request(MAC_A, IP_A, IP_B);
    odd_arp[18] = 8;
    vec![
        ("IPv6 from ::", ipv6, Verdict::DropSpoofedIpv6),
        ("VLAN-tagged", vlan, Verdict::DropVlanTagged),
        // BPF_PROG_TEST_RUN refuses an IPv4 ethertype without a whole IPv4 header, so the
        // runt frames are ARP.
        (
            "runt: an ARP ethertype and nothing after it",
            ethernet([0xff; 6], MAC_A, 0x0806),
            Verdict::DropMalformed,
        ),
        (
            "truncated ARP",
            arp_request(MAC_A, IP_A, IP_B)[..30].to_vec(),
            Verdict::DropMalformed,
        ),
        (
            "ARP with 8-byte hardware addresses",
            odd_arp,
            Verdict::DropMalformed,
        ),
        (
            "LLDP",
            ethernet([0x01, 0x80, 0xc2, 0, 0, 0x0e], MAC_A, 0x88cc),
            Verdict::DropUnknownL3,
        ),
    ]
}

#[test]
fn frames_the_programs_do_not_own_reach_the_bridge_unchanged() {
    let world = World::default();
    let unchecked = World::new(NODE_ENABLED, true);
    let mut cases: Vec<(&str, Vec<u8>)> = frames_not_taken()
        .into_iter()
        .map(|(what, frame, _)| (what, frame))
        .collect();
    cases.extend([
        ("broadcast IPv4", ipv4([0xff; 6], MAC_A, IP_A, [10, 10, 255, 255])),
        (
            "multicast IPv4",
            ipv4([0x01, 0, 0x5e, 0, 0, 1], MAC_A, IP_A, [224, 0, 0, 1]),
        ),
    ]);
    for (what, frame) in cases {
        let (action, out, _) = world.run(FROM_UPLINK, world.uplink, &frame, Verdict::UplinkToBridge);
        assert_eq!(action, TC_ACT_OK, "{what} from the uplink");
        assert_eq!(out, frame, "{what} from the uplink: the frame was changed");
        let out = unchecked.to_bridge(unchecked.host_a, &frame, what);
        assert_eq!(out, frame, "{what} without anti-spoofing: the frame was changed");
    }
    for what in ["broadcast IPv4", "multicast IPv4"] {
        let frame = if what.starts_with("broadcast") {
            ipv4([0xff; 6], MAC_A, IP_A, [10, 10, 255, 255])
        } else {
            ipv4([0x01, 0, 0x5e, 0, 0, 1], MAC_A, IP_A, [224, 0, 0, 1])
        };
        let out = world.to_bridge(world.host_a, &frame, what);
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
}

#[test]
fn a_checked_pod_cannot_send_what_is_not_its_own() {
    let world = World::default();
    for (what, frame, verdict) in frames_not_taken() {
        world.expect(FROM_POD, world.host_a, &frame, verdict, TC_ACT_SHOT, what);
    }
}

#[test]
fn from_the_uplink_pod_traffic_and_arp_are_handled_and_the_rest_passes() {
    let world = World::default();
    world.expect(
        FROM_UPLINK,
        world.uplink,
        &ipv4(MAC_A, MAC_OUTSIDE, IP_OUTSIDE, IP_A),
        Verdict::UplinkToPod,
        TC_ACT_REDIRECT,
        "",
    );
    let out = world.expect(
        FROM_UPLINK,
        world.uplink,
        &arp_request(MAC_OUTSIDE, IP_OUTSIDE, IP_A),
        Verdict::UplinkArpAnswered,
        TC_ACT_REDIRECT,
        "",
    );
    assert_eq!(&out[..6], &MAC_OUTSIDE, "the reply goes to the asker");
    assert_eq!(&out[22..28], &MAC_A, "the reply names the pod's MAC");
    // Not for the gateway: the node's own stack answers for its addresses.
    for frame in [
        arp_request(MAC_OUTSIDE, IP_OUTSIDE, IP_GATEWAY),
        ipv4(MAC_OUTSIDE, MAC_OUTSIDE, IP_OUTSIDE, IP_OUTSIDE),
        ipv4(BRIDGE_MAC, MAC_OUTSIDE, IP_OUTSIDE, IP_GATEWAY),
    ] {
        let out = world.expect(
            FROM_UPLINK,
            world.uplink,
            &frame,
            Verdict::UplinkToBridge,
            TC_ACT_OK,
            "",
        );
        assert_eq!(out, frame);
    }
}

#[test]
fn without_the_nodes_settings_pods_are_checked_and_nothing_is_offloaded() {
    let world = World::new(0, true);
    world.to_bridge(
        world.host_a,
        &ipv4(MAC_B, MAC_A, IP_A, IP_B),
        "its own frame to another pod",
    );
    for (what, port, frame, verdict) in [
        (
            "from another pod's address",
            world.host_a,
            ipv4(MAC_B, MAC_A, IP_C, IP_B),
            Verdict::DropSpoofedIp,
        ),
        (
            "from a port without an endpoint",
            world.stray,
            ipv4(MAC_B, MAC_OUTSIDE, [10, 10, 1, 9], IP_B),
            Verdict::DropUnknownPort,
        ),
        (
            "an ARP reply for another pod's address",
            world.host_a,
            arp(2, MAC_A, IP_B, MAC_C, IP_C),
            Verdict::DropSpoofedArp,
        ),
        (
            "a router advertisement",
            world.host_a,
            frames::router_advertisement(
                MAC_A,
                ll(MAC_A),
                [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                64,
            ),
            Verdict::DropRouterAdvert,
        ),
        (
            "another ethertype",
            world.host_a,
            ethernet(MAC_B, MAC_A, 0x88b5),
            Verdict::DropUnknownL3,
        ),
    ] {
        world.expect(FROM_POD, port, &frame, verdict, TC_ACT_SHOT, what);
    }
    world.expect(
        FROM_UPLINK,
        world.uplink,
        &arp_request(MAC_OUTSIDE, IP_OUTSIDE, IP_A),
        Verdict::UplinkToBridge,
        TC_ACT_OK,
        "",
    );
}

// --- offloading only what netfilter accepted (the default "confirmed" mode) ---

fn confirmed_world() -> World {
    World::new(
        NODE_ENABLED | NODE_ANTI_SPOOF | NODE_CONFIRM_FLOWS | NODE_TCP_OFFLOAD,
        true,
    )
}

const TO_POD: &str = program_name::TO_POD;
const TO_UPLINK: &str = program_name::TO_UPLINK;

/// A UDP request A -> B and its reply B -> A.
fn udp_pair() -> (Vec<u8>, Vec<u8>) {
    (
        udp((MAC_B, MAC_A), IP_A, IP_B, (40000, 53)),
        udp((MAC_A, MAC_B), IP_B, IP_A, (53, 40000)),
    )
}

/// Both directions through the bridge: each seen at its sender's ingress and delivered,
/// unchanged, at its receiver's egress.
fn through_the_bridge(world: &World, request: &[u8], reply: &[u8]) {
    assert_eq!(
        world.run(FROM_POD, world.host_a, request, Verdict::PodToBridge).0,
        TC_ACT_OK
    );
    world.run(TO_POD, world.host_b, request, Verdict::FlowConfirmed);
    assert_eq!(
        world.run(FROM_POD, world.host_b, reply, Verdict::PodToBridge).0,
        TC_ACT_OK
    );
    world.run(TO_POD, world.host_a, reply, Verdict::FlowConfirmed);
}

#[test]
fn a_flow_is_offloaded_once_both_directions_were_confirmed() {
    let world = confirmed_world();
    let (request, reply) = udp_pair();
    // First packet: only the bridge knows what to do with it.
    world.to_bridge(world.host_a, &request, "");
    let (_, _, confirmed) = world.run(TO_POD, world.host_b, &request, Verdict::FlowConfirmed);
    assert_eq!(confirmed, 1);
    // One direction confirmed is not enough.
    assert_eq!(
        world
            .run(FROM_POD, world.host_a, &request, Verdict::PodToBridge)
            .0,
        TC_ACT_OK
    );
    assert_eq!(
        world.run(FROM_POD, world.host_b, &reply, Verdict::PodToBridge).0,
        TC_ACT_OK
    );
    world.run(TO_POD, world.host_a, &reply, Verdict::FlowConfirmed);
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &request,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "",
    );
    assert_eq!(out, request);
    world.expect(
        FROM_POD,
        world.host_b,
        &reply,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "",
    );
    // ICMP is never offloaded.
    let (action, _, _) = world.run(
        FROM_POD,
        world.host_a,
        &ipv4(MAC_B, MAC_A, IP_A, IP_B),
        Verdict::PodToBridge,
    );
    assert_eq!(action, TC_ACT_OK);
}

#[test]
fn a_confirmation_expires_and_the_flow_goes_back_through_netfilter() {
    let world = confirmed_world();
    let (request, reply) = udp_pair();
    through_the_bridge(&world, &request, &reply);
    assert_eq!(
        world.run(FROM_POD, world.host_a, &request, Verdict::PodToPod).0,
        TC_ACT_REDIRECT
    );
    // The test world revalidates every 300 ms.
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        world
            .run(FROM_POD, world.host_a, &request, Verdict::PodToBridge)
            .0,
        TC_ACT_OK
    );
    world.run(TO_POD, world.host_b, &request, Verdict::FlowConfirmed);
    assert_eq!(
        world.run(FROM_POD, world.host_a, &request, Verdict::PodToPod).0,
        TC_ACT_REDIRECT
    );
}

#[test]
fn a_nated_flow_never_pairs() {
    let world = confirmed_world();
    // The client talks to a Service address; the bridge delivers the frame DNATed to B, and
    // B's reply un-NATed to the client.
    let to_service = udp((MAC_B, MAC_A), IP_A, [10, 96, 0, 10], (40000, 53));
    let delivered = udp((MAC_B, MAC_A), IP_A, IP_B, (40000, 5353));
    let reply = udp((MAC_A, MAC_B), IP_B, IP_A, (5353, 40000));
    let un_nated = udp((MAC_A, MAC_B), [10, 96, 0, 10], IP_A, (53, 40000));
    for _ in 0..3 {
        world.run(FROM_POD, world.host_a, &to_service, Verdict::PodToBridge);
        world.run(TO_POD, world.host_b, &delivered, Verdict::FlowConfirmed);
        world.run(FROM_POD, world.host_b, &reply, Verdict::PodToBridge);
        world.run(TO_POD, world.host_a, &un_nated, Verdict::FlowConfirmed);
    }
    for (port, frame) in [(world.host_a, &to_service), (world.host_b, &reply)] {
        let (action, _, counted) = world.run(FROM_POD, port, frame, Verdict::PodToBridge);
        assert_eq!(
            (action, counted),
            (TC_ACT_OK, 1),
            "a NATed direction was redirected"
        );
    }
}

#[test]
fn a_flooded_frame_confirms_nothing() {
    let world = confirmed_world();
    let (request, reply) = udp_pair();
    // The bridge floods A's frame for B to C's port too: C's egress must not confirm it.
    world.run(FROM_POD, world.host_a, &request, Verdict::PodToBridge);
    let (_, _, confirmed) = world.run(TO_POD, world.host_c, &request, Verdict::FlowConfirmed);
    assert_eq!(confirmed, 0);
    world.run(FROM_POD, world.host_b, &reply, Verdict::PodToBridge);
    world.run(TO_POD, world.host_a, &reply, Verdict::FlowConfirmed);
    assert_eq!(
        world
            .run(FROM_POD, world.host_a, &request, Verdict::PodToBridge)
            .0,
        TC_ACT_OK
    );
}

#[test]
fn tcp_confirms_only_established_segments_and_fin_ends_the_flow() {
    let world = confirmed_world();
    let macs_ab = (MAC_B, MAC_A);
    let macs_ba = (MAC_A, MAC_B);
    let syn = tcp(macs_ab, IP_A, IP_B, (40000, 80), SYN);
    world.run(FROM_POD, world.host_a, &syn, Verdict::PodToBridge);
    let (_, _, confirmed) = world.run(TO_POD, world.host_b, &syn, Verdict::FlowConfirmed);
    assert_eq!(confirmed, 0, "a SYN confirmed the flow");
    let request = tcp(macs_ab, IP_A, IP_B, (40000, 80), ACK);
    let reply = tcp(macs_ba, IP_B, IP_A, (80, 40000), ACK);
    through_the_bridge(&world, &request, &reply);
    assert_eq!(
        world.run(FROM_POD, world.host_a, &request, Verdict::PodToPod).0,
        TC_ACT_REDIRECT
    );
    // A FIN goes through the bridge and ends both directions until a new SYN.
    let fin = tcp(macs_ab, IP_A, IP_B, (40000, 80), FIN | ACK);
    let (action, _, closed) = world.run(FROM_POD, world.host_a, &fin, Verdict::FlowClosed);
    assert_eq!((action, closed), (TC_ACT_OK, 1));
    assert_eq!(
        world
            .run(FROM_POD, world.host_a, &request, Verdict::PodToBridge)
            .0,
        TC_ACT_OK
    );
    assert_eq!(
        world.run(FROM_POD, world.host_b, &reply, Verdict::PodToBridge).0,
        TC_ACT_OK
    );
    world.run(TO_POD, world.host_b, &request, Verdict::FlowConfirmed);
    let (action, _, _) = world.run(FROM_POD, world.host_a, &request, Verdict::PodToBridge);
    assert_eq!(action, TC_ACT_OK, "a half-closed flow was offloaded again");
}

#[test]
fn tcp_is_not_offloaded_when_the_node_forbids_it() {
    let world = World::new(NODE_ENABLED | NODE_ANTI_SPOOF | NODE_CONFIRM_FLOWS, true);
    let request = tcp((MAC_B, MAC_A), IP_A, IP_B, (40000, 80), ACK);
    let reply = tcp((MAC_A, MAC_B), IP_B, IP_A, (80, 40000), ACK);
    through_the_bridge(&world, &request, &reply);
    assert_eq!(
        world
            .run(FROM_POD, world.host_a, &request, Verdict::PodToBridge)
            .0,
        TC_ACT_OK
    );
}

#[test]
fn flows_to_the_wire_pair_through_the_uplink_and_offloaded_frames_do_not_reconfirm() {
    let world = confirmed_world();
    let request = udp((MAC_OUTSIDE, MAC_A), IP_A, IP_OUTSIDE, (40000, 53));
    let reply = udp((MAC_A, MAC_OUTSIDE), IP_OUTSIDE, IP_A, (53, 40000));
    world.run(FROM_POD, world.host_a, &request, Verdict::PodToBridge);
    world.run(TO_UPLINK, world.uplink, &request, Verdict::FlowConfirmed);
    world.run(FROM_UPLINK, world.uplink, &reply, Verdict::UplinkToBridge);
    world.run(TO_POD, world.host_a, &reply, Verdict::FlowConfirmed);
    world.expect(
        FROM_UPLINK,
        world.uplink,
        &reply,
        Verdict::UplinkToPod,
        TC_ACT_REDIRECT,
        "",
    );
    let (action, _, mark, counted) =
        world.run_marked(FROM_POD, world.host_a, 0, &request, Verdict::PodToUplink);
    assert_eq!((action, counted), (TC_ACT_REDIRECT, 1));
    assert_eq!(
        mark & OFFLOADED_MARK,
        OFFLOADED_MARK,
        "the redirected frame is not marked"
    );
    // That frame passes the uplink's egress hook, which must not count it as a frame
    // netfilter let through, and removes its mark.
    let (action, _, mark, confirmed) =
        world.run_marked(TO_UPLINK, world.uplink, mark, &request, Verdict::FlowConfirmed);
    assert_eq!((action, confirmed, mark & OFFLOADED_MARK), (TC_ACT_OK, 0, 0));
}

// --- isolation: what a pod may send (isolation.rs) ---

fn ll(mac: [u8; 6]) -> [u8; 16] {
    frames::link_local_eui64(mac)
}

const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// IPv4 with `options` words of IP options (IHL 5 + options).
fn ipv4_with_options(frame: &[u8], options: usize) -> Vec<u8> {
    let mut out = frame[..34].to_vec();
    out[14] = 0x45 + u8::try_from(options).expect("few options");
    out.extend(std::iter::repeat_n(1u8, options * 4)); // NOP options
    out.extend_from_slice(&frame[34..]);
    let total = u16::try_from(out.len() - 14).expect("short");
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out
}

#[test]
fn a_pod_cannot_act_as_a_router_or_a_dhcp_server() {
    let world = World::default();
    let prefix = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let ra = frames::router_advertisement(MAC_A, ll(MAC_A), prefix, 64);
    let five_deep = frames::ipv6_with_ext(
        &ra,
        &[
            ExtensionHeader::HopByHop,
            ExtensionHeader::DestinationOptions,
            ExtensionHeader::DestinationOptions,
            ExtensionHeader::DestinationOptions,
            ExtensionHeader::DestinationOptions,
        ],
    );
    let mut icmp_redirect = vec![5, 1, 0, 0];
    icmp_redirect.extend_from_slice(&IP_A);
    icmp_redirect.extend_from_slice(&[0; 28]);
    let dhcp_offer = frames::dhcp_offer(MAC_A, IP_A, [10, 10, 1, 200]);
    let cases = [
        ("router advertisement", ra.clone(), Verdict::DropRouterAdvert),
        (
            "router advertisement behind hop-by-hop and destination options",
            frames::ipv6_with_ext(
                &ra,
                &[ExtensionHeader::HopByHop, ExtensionHeader::DestinationOptions],
            ),
            Verdict::DropRouterAdvert,
        ),
        (
            "router advertisement in an atomic fragment",
            frames::ipv6_with_ext(&ra, &[ExtensionHeader::Fragment]),
            Verdict::DropRouterAdvert,
        ),
        (
            "router advertisement in the first of several fragments",
            frames::ipv6_with_ext(&ra, &[ExtensionHeader::FirstFragment]),
            Verdict::DropRouterAdvert,
        ),
        (
            "router advertisement behind an authentication header",
            frames::ipv6_with_ext(&ra, &[ExtensionHeader::HopByHop, ExtensionHeader::Authentication]),
            Verdict::DropRouterAdvert,
        ),
        (
            "router advertisement behind a mobility header, which the walk does not follow",
            frames::ipv6_with_ext(&ra, &[ExtensionHeader::Other(135)]),
            Verdict::DropMalformed,
        ),
        (
            "router advertisement behind five extension headers",
            five_deep,
            Verdict::DropMalformed,
        ),
        (
            "router renumbering",
            frames::icmpv6(
                MAC_A,
                ALL_NODES_MAC,
                ll(MAC_A),
                frames::ALL_NODES,
                138,
                0,
                &[0; 12],
            ),
            Verdict::DropRouterAdvert,
        ),
        (
            "ICMPv6 redirect",
            frames::icmpv6_redirect(MAC_A, MAC_B, ll(MAC_A), ll(MAC_B), ll(MAC_A), prefix, Some(MAC_A)),
            Verdict::DropIcmpRedirect,
        ),
        (
            "ICMP redirect",
            frames::ipv4_checksummed(MAC_A, MAC_B, IP_A, IP_B, 1, &icmp_redirect),
            Verdict::DropIcmpRedirect,
        ),
        ("DHCP offer", dhcp_offer.clone(), Verdict::DropDhcpServer),
        (
            "DHCP offer with IP options",
            ipv4_with_options(&dhcp_offer, 2),
            Verdict::DropDhcpServer,
        ),
        (
            "DHCP offer from another port than the server's",
            frames::dhcp_offer_from(MAC_A, IP_A, 6767, [10, 10, 1, 200]),
            Verdict::DropDhcpServer,
        ),
        (
            "DHCPv6 advertise",
            frames::dhcpv6_advertise(MAC_A, ll(MAC_A), MAC_B, ll(MAC_B)),
            Verdict::DropDhcpServer,
        ),
        (
            "DHCPv6 to a client's port from another",
            frames::udp_ipv6(MAC_A, MAC_B, ll(MAC_A), ll(MAC_B), 5470, 546, b"advertise"),
            Verdict::DropDhcpServer,
        ),
    ];
    for (what, frame, verdict) in cases {
        world.expect(FROM_POD, world.host_a, &frame, verdict, TC_ACT_SHOT, what);
        // From the wire it is not the pods' business: carried on, unchanged.
        let (action, out, _) = world.run(FROM_UPLINK, world.uplink, &frame, Verdict::UplinkToBridge);
        assert_ne!(action, TC_ACT_SHOT, "{what} from the uplink");
        assert_eq!(out, frame, "{what} from the uplink");
    }
}

#[test]
fn a_pod_speaks_ipv6_and_neighbour_discovery_only_for_itself() {
    let world = World::default();
    let global = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let udp6 = |src| frames::udp_ipv6(MAC_A, ALL_NODES_MAC, src, frames::ALL_NODES, 5000, 5001, b"data");
    let mut later_fragment = frames::ipv6_with_ext(&udp6(ll(MAC_A)), &[ExtensionHeader::Fragment]);
    // Fragment offset 8 bytes: no UDP header in this one.
    later_fragment[14 + 40 + 3] = 8;
    let dropped = [
        (
            "UDP from another pod's link-local",
            udp6(ll(MAC_B)),
            Verdict::DropSpoofedIpv6,
        ),
        (
            "UDP from an address not leased",
            udp6(global),
            Verdict::DropSpoofedIpv6,
        ),
        ("UDP from ::", udp6([0; 16]), Verdict::DropSpoofedIpv6),
        (
            "advertisement for another pod's address",
            frames::neighbor_advertisement(
                MAC_A,
                ll(MAC_A),
                frames::ALL_NODES,
                ll(MAC_B),
                frames::NA_OVERRIDE,
                MAC_A,
            ),
            Verdict::DropSpoofedNd,
        ),
        (
            "advertisement naming another MAC",
            frames::neighbor_advertisement(
                MAC_A,
                ll(MAC_A),
                frames::ALL_NODES,
                ll(MAC_A),
                frames::NA_OVERRIDE,
                MAC_B,
            ),
            Verdict::DropSpoofedNd,
        ),
        (
            "duplicate address detection for another's address",
            frames::neighbor_solicitation(MAC_A, [0; 16], ll(MAC_B), None),
            Verdict::DropSpoofedNd,
        ),
        (
            "solicitation naming another MAC",
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), ll(MAC_C), Some(MAC_B)),
            Verdict::DropSpoofedNd,
        ),
        (
            "its own solicitation in an atomic fragment",
            frames::ipv6_with_ext(
                &frames::neighbor_solicitation(MAC_A, ll(MAC_A), ll(MAC_C), Some(MAC_A)),
                &[ExtensionHeader::Fragment],
            ),
            Verdict::DropMalformed,
        ),
        (
            "its own advertisement in the first of several fragments",
            frames::ipv6_with_ext(
                &frames::unsolicited_advertisement(MAC_A, ll(MAC_A)),
                &[ExtensionHeader::FirstFragment],
            ),
            Verdict::DropMalformed,
        ),
        (
            "an upper-layer protocol the checks do not know (GRE)",
            {
                let mut gre = udp6(ll(MAC_A));
                gre[14 + 6] = 47;
                gre
            },
            Verdict::DropMalformed,
        ),
        (
            "truncated neighbour solicitation",
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), ll(MAC_C), None)[..14 + 40 + 12].to_vec(),
            Verdict::DropMalformed,
        ),
    ];
    for (what, frame, verdict) in dropped {
        world.expect(FROM_POD, world.host_a, &frame, verdict, TC_ACT_SHOT, what);
    }
    let allowed = [
        ("UDP from its link-local", udp6(ll(MAC_A))),
        (
            "solicitation for another host",
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), ll(MAC_C), Some(MAC_A)),
        ),
        (
            "its own duplicate address detection",
            frames::neighbor_solicitation(MAC_A, [0; 16], ll(MAC_A), None),
        ),
        (
            "advertisement of its own address",
            frames::unsolicited_advertisement(MAC_A, ll(MAC_A)),
        ),
        (
            "router solicitation",
            frames::icmpv6(
                MAC_A,
                [0x33, 0x33, 0, 0, 0, 2],
                ll(MAC_A),
                frames::ALL_ROUTERS,
                133,
                0,
                &[0; 4],
            ),
        ),
        (
            "MLDv2 report from ::",
            frames::icmpv6(
                MAC_A,
                [0x33, 0x33, 0, 0, 0, 0x16],
                [0; 16],
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16],
                143,
                0,
                &[0; 4],
            ),
        ),
        ("a later fragment from its link-local", later_fragment),
        (
            "UDP behind an authentication header",
            frames::ipv6_with_ext(&udp6(ll(MAC_A)), &[ExtensionHeader::Authentication]),
        ),
    ];
    for (what, frame) in allowed {
        let out = world.to_bridge(world.host_a, &frame, what);
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
}

#[test]
fn a_leased_ipv6_address_is_the_pods_and_no_one_elses() {
    let world = World::default();
    let leased: std::net::Ipv6Addr = "fd10:10::1:5".parse().expect("IPv6");
    let port = world.stray;
    let endpoint = Endpoint {
        ifindex: port,
        ipv4: [10, 10, 1, 9],
        mac: MAC_OUTSIDE,
        ipv6s: 1,
        ..Endpoint::default()
    };
    world
        .datapath
        .add_endpoint(endpoint, &[Ipv4Addr::new(10, 10, 1, 9)], &[leased])
        .expect("endpoint with IPv6");
    let from = |src_mac, src: std::net::Ipv6Addr| {
        frames::udp_ipv6(
            src_mac,
            ALL_NODES_MAC,
            src.octets(),
            frames::ALL_NODES,
            5000,
            5001,
            b"v6",
        )
    };
    world.to_bridge(port, &from(MAC_OUTSIDE, leased), "own lease");
    world.expect(
        FROM_POD,
        world.host_a,
        &from(MAC_A, leased),
        Verdict::DropSpoofedIpv6,
        TC_ACT_SHOT,
        "another pod's lease",
    );
    // Another pod cannot claim it (C's port again, as for a pod the kernel gave the
    // ifindex of a dead one).
    let thief = Endpoint {
        ifindex: world.host_c,
        ipv4: IP_C,
        mac: MAC_C,
        ipv6s: 1,
        ..Endpoint::default()
    };
    let refused = world
        .datapath
        .add_endpoint(thief, &[Ipv4Addr::from(IP_C)], &[leased]);
    assert!(
        matches!(refused, Err(flatbridge::datapath::DatapathError::Taken { .. })),
        "a pod took another's IPv6 lease: {refused:?}"
    );
    world.to_bridge(
        port,
        &from(MAC_OUTSIDE, leased),
        "own lease, after a refused claim",
    );
    world.expect(
        FROM_POD,
        world.host_c,
        &from(MAC_C, leased),
        Verdict::DropUnknownPort,
        TC_ACT_SHOT,
        "the refused pod has no endpoint",
    );
}

#[test]
fn a_port_without_an_endpoint_sends_nothing() {
    let world = World::default();
    for (what, frame) in [
        ("ARP", arp_request(MAC_OUTSIDE, [10, 10, 1, 9], IP_B)),
        ("IPv4", ipv4(MAC_B, MAC_OUTSIDE, [10, 10, 1, 9], IP_B)),
        (
            "IPv6",
            frames::udp_ipv6(
                MAC_OUTSIDE,
                ALL_NODES_MAC,
                ll(MAC_OUTSIDE),
                frames::ALL_NODES,
                1,
                2,
                b"x",
            ),
        ),
    ] {
        world.expect(
            FROM_POD,
            world.stray,
            &frame,
            Verdict::DropUnknownPort,
            TC_ACT_SHOT,
            what,
        );
    }
    // Without anti-spoofing there is nothing to check against, and nothing is dropped.
    let unchecked = World::new(NODE_ENABLED, true);
    unchecked.expect(
        FROM_POD,
        unchecked.stray,
        &ipv4(MAC_B, MAC_OUTSIDE, [10, 10, 1, 9], IP_B),
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "",
    );
}

/// The sum of every counter: each run of a program counts the frame exactly once.
fn total(world: &World) -> u64 {
    world
        .datapath
        .counters()
        .expect("counters")
        .iter()
        .map(|count| count.total.packets)
        .sum()
}

#[test]
fn every_length_is_passed_unchanged_or_dropped_never_misdirected() {
    // Whether the world redirects by destination MAC ("always" mode), or only confirmed flows.
    let worlds = [
        ("anti-spoofing, confirmed flows", confirmed_world(), false),
        ("always mode", World::default(), true),
        (
            "always mode without anti-spoofing",
            World::new(NODE_ENABLED, true),
            true,
        ),
    ];
    let prefix = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let bases = [
        ("ARP request for pod B", arp_request(MAC_A, IP_A, IP_B)),
        ("UDP to pod B", udp((MAC_B, MAC_A), IP_A, IP_B, (40000, 53))),
        ("TCP to pod B", tcp((MAC_B, MAC_A), IP_A, IP_B, (40000, 80), ACK)),
        (
            "router advertisement",
            frames::router_advertisement(MAC_A, ll(MAC_A), prefix, 64),
        ),
        (
            "neighbour advertisement",
            frames::neighbor_advertisement(MAC_A, ll(MAC_A), frames::ALL_NODES, ll(MAC_A), 0, MAC_A),
        ),
        (
            "802.1Q-tagged UDP",
            frames::vlan_tagged(&udp((MAC_B, MAC_A), IP_A, IP_B, (1, 2)), 0x8100, 7),
        ),
        (
            "QinQ-tagged UDP",
            frames::vlan_tagged(
                &frames::vlan_tagged(&udp((MAC_B, MAC_A), IP_A, IP_B, (1, 2)), 0x8100, 7),
                0x88a8,
                9,
            ),
        ),
    ];
    let mut runs = 0;
    for (world_name, world, by_mac) in &worlds {
        for (what, base) in &bases {
            for length in 0..=base.len().min(64) {
                let frame = &base[..length];
                for (program, port) in [(FROM_POD, world.host_a), (FROM_UPLINK, world.uplink)] {
                    let before = total(world);
                    let case = format!("{world_name}: {what} cut to {length} bytes, {program}");
                    let Ok((action, out, _)) = world.try_run(program, port, 0, frame) else {
                        // The kernel runs no program on a frame without an Ethernet header,
                        // and test runs refuse an IP ethertype without a whole IP header:
                        // nothing to check there.
                        let ethertype = frame
                            .get(12..14)
                            .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]));
                        let refusable = match ethertype {
                            None => true,
                            Some(0x0800) => length < 34,
                            Some(0x86dd) => length < 54,
                            Some(_) => false,
                        };
                        assert!(refusable, "{case}: the test run was refused");
                        continue;
                    };
                    runs += 1;
                    assert_eq!(total(world) - before, 1, "{case}: not counted exactly once");
                    let whole = length == base.len();
                    match action {
                        TC_ACT_OK => assert_eq!(out, frame, "{case}: changed on its way to the bridge"),
                        TC_ACT_SHOT => {}
                        // In "always" mode a frame goes by its destination MAC once its IPv4
                        // header is whole (and checked): where the bridge would send it.
                        TC_ACT_REDIRECT => assert!(
                            whole || (*by_mac && length >= 34),
                            "{case}: a truncated frame was redirected"
                        ),
                        other => panic!("{case}: action {other}"),
                    }
                }
            }
        }
    }
    assert!(runs > 500, "only {runs} runs: the kernel refused most lengths");
}

#[test]
fn jumbo_frames_pass_the_checks_as_any_other() {
    let world = World::default();
    let mut jumbo = udp((MAC_B, MAC_A), IP_A, IP_B, (40000, 53));
    jumbo.extend(std::iter::repeat_n(0xab, 3000));
    let total_len = u16::try_from(jumbo.len() - 14).expect("fits");
    jumbo[16..18].copy_from_slice(&total_len.to_be_bytes());
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &jumbo,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "jumbo UDP",
    );
    assert_eq!(out, jumbo);
    let mut spoofed = jumbo.clone();
    spoofed[26..30].copy_from_slice(&IP_B);
    world.expect(
        FROM_POD,
        world.host_a,
        &spoofed,
        Verdict::DropSpoofedIp,
        TC_ACT_SHOT,
        "jumbo, spoofed",
    );
}

#[test]
fn a_confirmed_flow_is_redirected_only_from_the_port_that_confirmed_it() {
    let world = confirmed_world();
    let (request, reply) = udp_pair();
    through_the_bridge(&world, &request, &reply);
    assert_eq!(
        world.run(FROM_POD, world.host_a, &request, Verdict::PodToPod).0,
        TC_ACT_REDIRECT
    );
    // The very same frame (A's addresses and MAC) arriving from the wire is not A's.
    let out = world.expect(
        FROM_UPLINK,
        world.uplink,
        &request,
        Verdict::UplinkToBridge,
        TC_ACT_OK,
        "from the wire",
    );
    assert_eq!(out, request);
    // Nor from another pod's port, when nothing else checks the sender.
    let unchecked = World::new(NODE_ENABLED | NODE_CONFIRM_FLOWS | NODE_TCP_OFFLOAD, true);
    through_the_bridge(&unchecked, &request, &reply);
    unchecked.to_bridge(unchecked.host_c, &request, "from pod C's port");
}

#[test]
fn a_deleted_pods_flows_are_never_followed() {
    let world = confirmed_world();
    let (request, reply) = udp_pair();
    through_the_bridge(&world, &request, &reply);
    assert_eq!(
        world.run(FROM_POD, world.host_a, &request, Verdict::PodToPod).0,
        TC_ACT_REDIRECT
    );
    assert!(world.datapath.remove_endpoint(world.host_b).expect("remove B"));
    world.to_bridge(world.host_a, &request, "to deleted B");
    // A new pod with B's address and MAC behind another port is not reached through B's old one.
    let replacement = Endpoint {
        ifindex: world.stray,
        ipv4: IP_B,
        mac: MAC_B,
        ..Endpoint::default()
    };
    world
        .datapath
        .add_endpoint(replacement, &[Ipv4Addr::from(IP_B)], &[])
        .expect("replacement");
    world.to_bridge(world.host_a, &request, "to B's replacement");
}

#[test]
fn inject_sends_the_frame_it_is_given_out_of_the_device_it_is_told_and_nowhere_else() {
    use flatbridge_tests::raw::{Capture, contains};
    let world = World::default();
    // Both pairs in the node's namespace: the guests of `cargo xtask test-kernel` run these
    // tests there too.
    for (end, peer) in [("injq", "injq-p"), ("injr", "injr-p")] {
        world
            .node
            .ok(&["ip", "link", "add", end, "type", "veth", "peer", "name", peer]);
        world.node.ok(&["ip", "link", "set", end, "up"]);
        world.node.ok(&["ip", "link", "set", peer, "up"]);
    }
    let ifindex = world.node.ifindex("injq");
    let capture = Capture::start(&world.node, "injq-p");
    let elsewhere = Capture::start(&world.node, "injr-p");
    let probe = arp(1, MAC_A, [0; 4], [0; 6], IP_OUTSIDE);
    let inject = |ifindex: u32| {
        let datapath = &world.datapath;
        let frame = probe.clone();
        let netns = world.node.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    PluginNetns::open(&netns)
                        .expect("node netns")
                        .run(|| {
                            datapath
                                .inject(ifindex, &frame)
                                .map_err(|error| error.to_string())
                        })
                        .expect("enter the node netns")
                })
                .join()
                .expect("inject thread")
        })
    };
    inject(ifindex).expect("inject out of the veth");
    assert!(
        capture.wait_for(&probe, std::time::Duration::from_secs(2)),
        "the frame never came out of the veth"
    );
    // No device, or one that does not exist: refused, and nothing is sent.
    assert!(inject(0).is_err(), "inject without a device succeeded");
    assert!(
        inject(999_999).is_err(),
        "inject to a device that does not exist succeeded"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let frames = capture.stop();
    assert_eq!(
        frames.iter().filter(|frame| contains(frame, &probe)).count(),
        1,
        "one frame injected, one seen"
    );
    let others = elsewhere.stop();
    assert_eq!(
        others.iter().filter(|frame| contains(frame, &probe)).count(),
        0,
        "the frame also came out of another device"
    );
}

const IPV6_A: [u8; 16] = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
const IPV6_B: [u8; 16] = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];
const IPV6_GATEWAY: [u8; 16] = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
const IPV6_OUTSIDE: [u8; 16] = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The default world, where A and B also leased `IPV6_A` and `IPV6_B` and the node owns
/// the IPv6 gateway.
fn dual_stack_world() -> World {
    dual_stack(World::default())
}

/// `world` with A and B given their IPv6 leases and the node the IPv6 gateway.
fn dual_stack(world: World) -> World {
    for (ifindex, ip, mac, ipv6) in [
        (world.host_a, IP_A, MAC_A, IPV6_A),
        (world.host_b, IP_B, MAC_B, IPV6_B),
    ] {
        let endpoint = Endpoint {
            ifindex,
            ipv4: ip,
            mac,
            ipv6s: 1,
            ..Endpoint::default()
        };
        world
            .datapath
            .add_endpoint(endpoint, &[Ipv4Addr::from(ip)], &[std::net::Ipv6Addr::from(ipv6)])
            .expect("a pod with IPv6");
    }
    let subnet =
        ipnetwork::IpNetwork::new(std::net::Ipv6Addr::from(IPV6_GATEWAY).into(), 64).expect("subnet");
    world
        .datapath
        .set_gateway(subnet, BRIDGE_MAC)
        .expect("IPv6 gateway");
    world
}

/// The advertisement a host would send: `target` at `mac`, to the asker (`to_mac`, `to`).
fn advertisement(mac: [u8; 6], target: [u8; 16], to_mac: [u8; 6], to: [u8; 16], flags: u8) -> Vec<u8> {
    let mut frame = frames::neighbor_advertisement(mac, target, to, target, flags, mac);
    frame[..6].copy_from_slice(&to_mac);
    frame
}

/// A solicitation for `target` sent to `group` instead of the target's own group.
fn solicitation_to(src_mac: [u8; 6], src: [u8; 16], dst: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut body = vec![0; 4];
    body.extend_from_slice(&target);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&src_mac);
    frames::icmpv6(src_mac, frames::ipv6_multicast_mac(dst), src, dst, 135, 0, &body)
}

#[test]
fn a_neighbour_solicitation_for_a_local_pod_or_the_gateway_becomes_the_advertisement() {
    let world = dual_stack_world();
    let solicited = frames::NA_SOLICITED | frames::NA_OVERRIDE;
    let answered = [
        (
            "for another pod, to its solicited-node group",
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_B, Some(MAC_A)),
            advertisement(MAC_B, IPV6_B, MAC_A, ll(MAC_A), solicited),
        ),
        (
            "for the gateway, to its address and MAC (a reachability check)",
            {
                let mut frame = solicitation_to(MAC_A, ll(MAC_A), IPV6_GATEWAY, IPV6_GATEWAY);
                frame[..6].copy_from_slice(&BRIDGE_MAC);
                frame
            },
            advertisement(
                BRIDGE_MAC,
                IPV6_GATEWAY,
                MAC_A,
                ll(MAC_A),
                solicited | frames::NA_ROUTER,
            ),
        ),
        (
            "for the gateway: a router",
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_GATEWAY, Some(MAC_A)),
            advertisement(
                BRIDGE_MAC,
                IPV6_GATEWAY,
                MAC_A,
                ll(MAC_A),
                solicited | frames::NA_ROUTER,
            ),
        ),
    ];
    for (what, frame, expected) in answered {
        let out = world.expect(
            FROM_POD,
            world.host_a,
            &frame,
            Verdict::PodNdAnswered,
            TC_ACT_REDIRECT,
            what,
        );
        assert_eq!(out, expected, "{what}: the advertisement");
    }
    // From the wire, for a pod: answered out of the uplink; not for the gateway, which the
    // node's own stack answers.
    let out = world.expect(
        FROM_UPLINK,
        world.uplink,
        &frames::neighbor_solicitation(MAC_OUTSIDE, IPV6_OUTSIDE, IPV6_B, Some(MAC_OUTSIDE)),
        Verdict::UplinkNdAnswered,
        TC_ACT_REDIRECT,
        "from the wire",
    );
    assert_eq!(
        out,
        advertisement(MAC_B, IPV6_B, MAC_OUTSIDE, IPV6_OUTSIDE, solicited),
        "the advertisement to the wire"
    );
    let mut bad_checksum = frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_B, Some(MAC_A));
    bad_checksum[14 + 40 + 2] ^= 0xff;
    let mut hop_limit_64 = frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_B, Some(MAC_A));
    hop_limit_64[14 + 7] = 64;
    // (From a pod, bytes after the options are malformed: the checks drop them.)
    let mut trailing = frames::neighbor_solicitation(MAC_OUTSIDE, IPV6_OUTSIDE, IPV6_B, Some(MAC_OUTSIDE));
    trailing.extend_from_slice(&[0, 0]);
    let solicitation_with = |code: u8, options: &[u8]| {
        let mut body = vec![0; 4];
        body.extend_from_slice(&IPV6_B);
        body.extend_from_slice(options);
        let group = frames::solicited_node(IPV6_B);
        frames::icmpv6(
            MAC_A,
            frames::ipv6_multicast_mac(group),
            ll(MAC_A),
            group,
            135,
            code,
            &body,
        )
    };
    let slla = [1, 1, MAC_A[0], MAC_A[1], MAC_A[2], MAC_A[3], MAC_A[4], MAC_A[5]];
    let nonce = [14, 1, 1, 2, 3, 4, 5, 6];
    let not_answered = [
        (
            "a pod asking for its own address",
            world.host_b,
            frames::neighbor_solicitation(MAC_B, ll(MAC_B), IPV6_B, Some(MAC_B)),
        ),
        (
            "its own duplicate address detection",
            world.host_b,
            frames::neighbor_solicitation(MAC_B, [0; 16], IPV6_B, None),
        ),
        (
            "without the asker's link-layer address",
            world.host_a,
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_B, None),
        ),
        ("with a wrong checksum", world.host_a, bad_checksum),
        ("with hop limit 64", world.host_a, hop_limit_64),
        ("with code 1", world.host_a, solicitation_with(1, &slla)),
        (
            "with a nonce option after its link-layer address",
            world.host_a,
            solicitation_with(0, &[slla, nonce].concat()),
        ),
        (
            "with another option instead of its link-layer address",
            world.host_a,
            solicitation_with(0, &nonce),
        ),
        (
            "for a multicast target",
            world.host_a,
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), frames::ALL_NODES, Some(MAC_A)),
        ),
        (
            "sent to another group",
            world.host_a,
            solicitation_to(MAC_A, ll(MAC_A), frames::ALL_NODES, IPV6_B),
        ),
        (
            "for an address no pod has",
            world.host_a,
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_OUTSIDE, Some(MAC_A)),
        ),
        (
            "for another pod's link-local (not leased: its owner answers)",
            world.host_a,
            frames::neighbor_solicitation(MAC_A, ll(MAC_A), ll(MAC_B), Some(MAC_A)),
        ),
    ];
    // One to another pod's own MAC (checking it is still there) is that pod's to answer:
    // in this world's "always" mode it goes straight to it.
    let mut to_b = solicitation_to(MAC_A, ll(MAC_A), IPV6_B, IPV6_B);
    to_b[..6].copy_from_slice(&MAC_B);
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &to_b,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "to another pod's MAC",
    );
    assert_eq!(out, to_b, "to another pod's MAC: the frame was changed");
    for (what, port, frame) in not_answered {
        let out = world.to_bridge(port, &frame, what);
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
    for (what, frame) in [
        (
            "duplicate address detection from the wire",
            frames::neighbor_solicitation(MAC_OUTSIDE, [0; 16], IPV6_B, None),
        ),
        (
            "duplicate address detection from the wire, with a link-layer address",
            frames::neighbor_solicitation(MAC_OUTSIDE, [0; 16], IPV6_B, Some(MAC_OUTSIDE)),
        ),
        ("from the wire, with bytes after the message", trailing),
        (
            "from a multicast sender on the wire",
            frames::neighbor_solicitation([0x33, 0x33, 0, 0, 0, 1], IPV6_OUTSIDE, IPV6_B, Some(MAC_OUTSIDE)),
        ),
        (
            "the gateway, from the wire",
            frames::neighbor_solicitation(MAC_OUTSIDE, IPV6_OUTSIDE, IPV6_GATEWAY, Some(MAC_OUTSIDE)),
        ),
    ] {
        let out = world.expect(
            FROM_UPLINK,
            world.uplink,
            &frame,
            Verdict::UplinkToBridge,
            TC_ACT_OK,
            what,
        );
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
    // Once B is gone, nobody answers for its address.
    world.datapath.remove_endpoint(world.host_b).expect("remove B");
    let frame = frames::neighbor_solicitation(MAC_A, ll(MAC_A), IPV6_B, Some(MAC_A));
    world.to_bridge(world.host_a, &frame, "for a deleted pod");
}

/// A UDP/IPv6 datagram between two MACs and addresses.
fn udp6(macs: ([u8; 6], [u8; 6]), src: [u8; 16], dst: [u8; 16], ports: (u16, u16)) -> Vec<u8> {
    frames::udp_ipv6(macs.1, macs.0, src, dst, ports.0, ports.1, b"data")
}

#[test]
fn ipv6_to_a_local_pod_or_another_mac_bypasses_the_bridge_in_always_mode() {
    let world = dual_stack_world();
    let frame = udp6((MAC_B, MAC_A), IPV6_A, IPV6_B, (40000, 53));
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &frame,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "to B",
    );
    assert_eq!(out, frame, "a redirected frame is not rewritten");
    world.expect(
        FROM_POD,
        world.host_a,
        &udp6((MAC_OUTSIDE, MAC_A), IPV6_A, IPV6_OUTSIDE, (40000, 53)),
        Verdict::PodToUplink,
        TC_ACT_REDIRECT,
        "to the wire",
    );
    world.expect(
        FROM_UPLINK,
        world.uplink,
        &udp6((MAC_B, MAC_OUTSIDE), IPV6_OUTSIDE, IPV6_B, (53, 40000)),
        Verdict::UplinkToPod,
        TC_ACT_REDIRECT,
        "from the wire to B",
    );
    for (what, frame) in [
        (
            "to the node",
            udp6((BRIDGE_MAC, MAC_A), IPV6_A, IPV6_GATEWAY, (40000, 53)),
        ),
        (
            "multicast",
            frames::udp_ipv6(MAC_A, ALL_NODES_MAC, IPV6_A, frames::ALL_NODES, 5000, 5001, b"m"),
        ),
    ] {
        world.to_bridge(world.host_a, &frame, what);
    }
}

#[test]
fn an_ipv6_flow_is_offloaded_once_both_directions_were_confirmed_pod_to_pod_and_with_the_wire() {
    let world = dual_stack(confirmed_world());
    let request = udp6((MAC_B, MAC_A), IPV6_A, IPV6_B, (40000, 53));
    let reply = udp6((MAC_A, MAC_B), IPV6_B, IPV6_A, (53, 40000));
    world.to_bridge(world.host_a, &request, "first");
    through_the_bridge(&world, &request, &reply);
    let out = world.expect(
        FROM_POD,
        world.host_a,
        &request,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "request, offloaded",
    );
    assert_eq!(out, request);
    world.expect(
        FROM_POD,
        world.host_b,
        &reply,
        Verdict::PodToPod,
        TC_ACT_REDIRECT,
        "reply, offloaded",
    );
    // Its two directions are in the IPv6 maps, and the IPv4 maps know nothing of them.
    assert!(world.datapath.flows().expect("IPv4 flows").is_empty());
    let flows6 = world.datapath.flows6().expect("IPv6 flows");
    assert_eq!(flows6.len(), 2, "{flows6:?}");
    assert!(flows6.iter().all(|(_, _, confirmed)| confirmed.is_some()));
    // With the wire: confirmed at the uplink's egress and the pod's, then offloaded both
    // ways.
    let out_request = udp6((MAC_OUTSIDE, MAC_A), IPV6_A, IPV6_OUTSIDE, (40001, 53));
    let in_reply = udp6((MAC_A, MAC_OUTSIDE), IPV6_OUTSIDE, IPV6_A, (53, 40001));
    world.run(FROM_POD, world.host_a, &out_request, Verdict::PodToBridge);
    world.run(TO_UPLINK, world.uplink, &out_request, Verdict::FlowConfirmed);
    world.run(FROM_UPLINK, world.uplink, &in_reply, Verdict::UplinkToBridge);
    world.run(TO_POD, world.host_a, &in_reply, Verdict::FlowConfirmed);
    world.expect(
        FROM_UPLINK,
        world.uplink,
        &in_reply,
        Verdict::UplinkToPod,
        TC_ACT_REDIRECT,
        "from the wire, offloaded",
    );
    world.expect(
        FROM_POD,
        world.host_a,
        &out_request,
        Verdict::PodToUplink,
        TC_ACT_REDIRECT,
        "to the wire, offloaded",
    );
    // ICMPv6 and a datagram behind an extension header are never offloaded.
    let mut echo = frames::icmpv6(MAC_A, MAC_B, IPV6_A, IPV6_B, 128, 0, &[0, 1, 0, 1]);
    echo[..6].copy_from_slice(&MAC_B);
    let behind_options = frames::ipv6_with_ext(&request, &[ExtensionHeader::DestinationOptions]);
    for (what, frame) in [
        ("echo request", echo),
        ("behind destination options", behind_options),
    ] {
        world.to_bridge(world.host_a, &frame, what);
    }
}

#[test]
fn a_pods_own_advertisement_never_comes_back_to_it_and_anothers_does() {
    let world = dual_stack_world();
    let own = frames::unsolicited_advertisement(MAC_B, IPV6_B);
    let (action, _, counted) = world.run(TO_POD, world.host_b, &own, Verdict::DropOwnAdvertisement);
    assert_eq!(
        (action, counted),
        (TC_ACT_SHOT, 1),
        "its own advertisement, back to it"
    );
    // To another pod it is news; from another host, for this pod's address, it is a
    // conflict the pod must hear.
    for (what, port, frame) in [
        ("to another pod", world.host_a, own.clone()),
        (
            "another host's, for its address",
            world.host_b,
            frames::unsolicited_advertisement(MAC_OUTSIDE, IPV6_B),
        ),
    ] {
        let (action, out, counted) = world.run(TO_POD, port, &frame, Verdict::DropOwnAdvertisement);
        assert_eq!((action, counted), (TC_ACT_OK, 0), "{what}");
        assert_eq!(out, frame, "{what}: the frame was changed");
    }
}

/// The claim `world`'s uplink program remembered for `ip`: its MAC and ICMPv6 type.
fn nd_claim(world: &World, ip: [u8; 16]) -> Option<([u8; 6], u16)> {
    world
        .datapath
        .wire_claim(std::net::Ipv6Addr::from(ip).into())
        .expect("read nd_claims")
        .map(|claim| (claim.mac, claim.op))
}

#[test]
fn neighbour_discovery_from_the_wire_is_remembered_as_claims_and_a_pods_address_counted() {
    const HOLDER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
    const TLLA: [u8; 6] = [0x02, 0, 0, 0, 0, 0x78];
    let taken = |last: u8| {
        let mut ip = IPV6_OUTSIDE;
        ip[13] = 1;
        ip[15] = last;
        ip
    };
    // Remembered whatever the node's settings (ADD probes before any pod enabled them), for
    // the addresses the plugin probes (and local pods') only.
    let world = dual_stack(World::new(0, true));
    let probed = |ip: [u8; 16]| {
        world
            .datapath
            .expect_wire_answers(std::net::Ipv6Addr::from(ip).into())
            .expect("nd_probes entry");
    };
    let answer = |ip: [u8; 16]| frames::neighbor_advertisement(HOLDER, ip, frames::ALL_NODES, ip, 0, TLLA);
    let (action, _, _) = world.run(
        FROM_UPLINK,
        world.uplink,
        &answer(taken(9)),
        Verdict::UplinkToBridge,
    );
    assert_eq!(action, TC_ACT_OK, "the advertisement goes on to the bridge");
    assert_eq!(nd_claim(&world, taken(9)), None, "an address nobody probed");
    // An advertisement (the answer to a probe goes to all nodes): its target, by the MAC of
    // its target link-layer option.
    probed(taken(10));
    world.run(
        FROM_UPLINK,
        world.uplink,
        &answer(taken(10)),
        Verdict::UplinkToBridge,
    );
    assert_eq!(nd_claim(&world, taken(10)), Some((TLLA, 136)));
    // A solicitation from an address: its source, by the source link-layer option, or by
    // the frame's sender without one.
    probed(taken(12));
    let asking = frames::neighbor_solicitation(HOLDER, taken(12), taken(99), Some(TLLA));
    world.run(FROM_UPLINK, world.uplink, &asking, Verdict::UplinkToBridge);
    assert_eq!(nd_claim(&world, taken(12)), Some((TLLA, 135)));
    probed(taken(99));
    assert_eq!(
        nd_claim(&world, taken(99)),
        None,
        "asking for an address claims nothing"
    );
    probed(taken(15));
    let bare = frames::neighbor_solicitation(HOLDER, taken(15), taken(99), None);
    world.run(FROM_UPLINK, world.uplink, &bare, Verdict::UplinkToBridge);
    assert_eq!(nd_claim(&world, taken(15)), Some((HOLDER, 135)));
    // Duplicate address detection claims nothing: the plugin's own probe (32 bytes, a nonce
    // first), or another host's without options.
    probed(taken(11));
    let own_probe = flatbridge::ndp::dad_solicitation(HOLDER, std::net::Ipv6Addr::from(taken(11)));
    world.run(FROM_UPLINK, world.uplink, &own_probe, Verdict::UplinkToBridge);
    let detection = frames::neighbor_solicitation(HOLDER, [0; 16], taken(11), None);
    world.run(FROM_UPLINK, world.uplink, &detection, Verdict::UplinkToBridge);
    assert_eq!(nd_claim(&world, taken(11)), None, "detection");
    // No claim either: hop limit not 255 (off-link), a bad checksum, Solicited to all
    // nodes, a link-local target, a multicast sender.
    probed(taken(13));
    let mut routed = answer(taken(13));
    routed[14 + 7] = 64;
    let mut bad_checksum = answer(taken(13));
    bad_checksum[14 + 40 + 2] ^= 0xff;
    let solicited = frames::neighbor_advertisement(
        HOLDER,
        taken(13),
        frames::ALL_NODES,
        taken(13),
        frames::NA_SOLICITED,
        TLLA,
    );
    let mut group_sender = answer(taken(13));
    group_sender[6] |= 1;
    for (what, frame) in [
        ("hop limit 64", routed),
        ("bad checksum", bad_checksum),
        ("solicited to all nodes", solicited),
        ("multicast sender", group_sender),
    ] {
        world.run(FROM_UPLINK, world.uplink, &frame, Verdict::UplinkToBridge);
        assert_eq!(nd_claim(&world, taken(13)), None, "{what}");
    }
    let link_local = ll(HOLDER);
    probed(link_local);
    world.run(
        FROM_UPLINK,
        world.uplink,
        &answer(link_local),
        Verdict::UplinkToBridge,
    );
    assert_eq!(nd_claim(&world, link_local), None, "a link-local address");

    // A claim of a local pod's address under another MAC is a conflict, counted; the pod's
    // own MAC is none.
    let intruder = frames::unsolicited_advertisement(HOLDER, IPV6_B);
    let (action, _, counted) = world.run(FROM_UPLINK, world.uplink, &intruder, Verdict::UplinkNdConflict);
    assert_eq!((action, counted), (TC_ACT_OK, 1), "a claim of B's address");
    assert_eq!(nd_claim(&world, IPV6_B), Some((HOLDER, 136)));
    let own = frames::unsolicited_advertisement(MAC_B, IPV6_B);
    let (_, _, counted) = world.run(FROM_UPLINK, world.uplink, &own, Verdict::UplinkNdConflict);
    assert_eq!(counted, 0, "B's own MAC");
    assert_eq!(nd_claim(&world, IPV6_B), Some((MAC_B, 136)), "the latest claim");
    // IPv4 claims stay in their own map.
    assert_eq!(
        world
            .datapath
            .wire_claim(Ipv4Addr::from(IP_B).into())
            .expect("read arp_claims"),
        None
    );
}
