//! The hostile pod's tools on their own, between two namespaces joined by a veth pair:
//! every way of sending reaches the other end byte for byte, the capture gives frames back
//! as they were on the wire (VLAN tags included, its own frames left out), and a Linux host
//! takes the Router Advertisement builder's output for a real router's.
use std::time::{Duration, Instant};

use flatbridge_tests::{
    Netns,
    frames::{
        ExtensionHeader, ipv6_with_ext, link_local_eui64, parse_mac, router_advertisement, udp_ipv4,
        vlan_tagged,
    },
    raw::{Capture, Sender, contains, send_frame},
    require_root,
};

const POD_IF: &str = "hostile0";
const PEER_IF: &str = "victim0";
const POD_IP: [u8; 4] = [192, 0, 2, 1];
const PEER_IP: [u8; 4] = [192, 0, 2, 2];

/// A hostile pod and its peer on the two ends of a veth pair, both up.
struct Link {
    pod: Netns,
    peer: Netns,
    pod_mac: [u8; 6],
    peer_mac: [u8; 6],
}

fn link(tag: &str) -> Link {
    let pod = Netns::new(&format!("{tag}-pod"));
    let peer = Netns::new(&format!("{tag}-peer"));
    pod.add_veth(POD_IF, &peer, PEER_IF);
    let pod_mac = parse_mac(&pod.mac(POD_IF));
    let peer_mac = parse_mac(&peer.mac(PEER_IF));
    Link {
        pod,
        peer,
        pod_mac,
        peer_mac,
    }
}

/// A payload no other frame of this or a concurrent run carries.
fn marker(what: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("flatbridge-raw-{what}-{}-{nanos}", std::process::id()).into_bytes()
}

/// Sends a UDP frame with a marker `how` from the pod; the peer's capture must see it
/// byte for byte, and the pod's own capture must not (it is outgoing there).
fn a_frame_reaches_the_peer(tag: &str, how: Sender) {
    require_root();
    let link = link(tag);
    let marker = marker(tag);
    let frame = udp_ipv4(link.pod_mac, link.peer_mac, POD_IP, PEER_IP, 40000, 9, &marker);
    let at_peer = Capture::start(&link.peer, PEER_IF);
    let at_pod = Capture::start(&link.pod, POD_IF);
    assert!(
        !at_peer.frames().iter().any(|seen| contains(seen, &marker)),
        "the marker arrived before it was sent"
    );

    send_frame(&link.pod, POD_IF, &frame, how).unwrap_or_else(|error| panic!("send {how:?}: {error}"));

    assert!(
        at_peer.wait_for(&marker, Duration::from_secs(2)),
        "the frame sent {how:?} never reached the peer"
    );
    let arrived = at_peer.stop();
    assert!(
        arrived.contains(&frame),
        "the frame sent {how:?} arrived changed: {:02x?}",
        arrived.iter().find(|seen| contains(seen, &marker))
    );
    let left = at_pod.stop();
    assert!(
        !left.iter().any(|seen| contains(seen, &marker)),
        "the sender's capture kept its own outgoing frame"
    );
}

#[test]
fn a_frame_sent_plainly_reaches_the_peer() {
    a_frame_reaches_the_peer("plain", Sender::Plain);
}

#[test]
fn a_frame_sent_from_a_tx_ring_reaches_the_peer() {
    a_frame_reaches_the_peer("txring", Sender::TxRing);
}

#[test]
fn a_frame_sent_after_a_virtio_net_hdr_reaches_the_peer() {
    a_frame_reaches_the_peer("vnethdr", Sender::VnetHdr);
}

/// The receiving kernel moves the outer tag into the skb's metadata before packet sockets
/// see the frame; the capture must put it back.
#[test]
fn the_capture_keeps_both_tags_of_a_qinq_frame() {
    require_root();
    let link = link("qinq");
    let marker = marker("qinq");
    let inner = udp_ipv4(link.pod_mac, link.peer_mac, POD_IP, PEER_IP, 40000, 9, &marker);
    // PCP 3 on the outer tag: the whole TCI must come back, not just the VLAN id.
    let frame = vlan_tagged(&vlan_tagged(&inner, 0x8100, 20), 0x88a8, 0x6064);
    let capture = Capture::start(&link.peer, PEER_IF);

    send_frame(&link.pod, POD_IF, &frame, Sender::Plain).expect("send the QinQ frame");

    assert!(
        capture.wait_for(&marker, Duration::from_secs(2)),
        "the QinQ frame never arrived"
    );
    let arrived = capture.stop();
    let seen = arrived
        .iter()
        .find(|seen| contains(seen, &marker))
        .expect("a frame with the marker");
    assert_eq!(seen, &frame, "tags lost or changed");
}

/// Polls `ip -6 addr` in `netns` for up to `timeout` for an address starting `prefix`.
fn address_appears(netns: &Netns, ifname: &str, prefix: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if netns
            .ok(&["ip", "-6", "-o", "addr", "show", "dev", ifname])
            .contains(prefix)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A peer configured as a SLAAC host (accept_ra, autoconf, not forwarding) whose IPv6 is
/// up: until the kernel gave the device its link-local address it has no route for ff02::1
/// either, and drops an RA as Ip6InNoRoutes.
fn slaac_host(link: &Link) {
    for (key, value) in [("forwarding", "0"), ("accept_ra", "1"), ("autoconf", "1")] {
        link.peer
            .ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{PEER_IF}.{key}={value}")]);
    }
    assert!(
        address_appears(&link.peer, PEER_IF, "inet6 fe80::", Duration::from_secs(3)),
        "IPv6 never came up on the peer"
    );
}

const PREFIX_1: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const PREFIX_2: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[test]
fn a_linux_host_configures_an_address_from_the_router_advertisement() {
    require_root();
    let link = link("ra");
    slaac_host(&link);
    assert!(
        !address_appears(&link.peer, PEER_IF, "2001:db8:1:", Duration::ZERO),
        "the prefix is there before the advertisement"
    );
    let advertisement = router_advertisement(link.pod_mac, link_local_eui64(link.pod_mac), PREFIX_1, 64);

    send_frame(&link.pod, POD_IF, &advertisement, Sender::Plain).expect("send the RA");

    assert!(
        address_appears(&link.peer, PEER_IF, "2001:db8:1:", Duration::from_secs(3)),
        "no SLAAC address from the RA: {}",
        link.peer.ok(&["ip", "-6", "addr", "show", "dev", PEER_IF])
    );
}

/// The extension headers keep the RA valid: Linux skips a Destination Options header and
/// still verifies the ICMPv6 checksum over the upper layer alone.
#[test]
fn a_router_advertisement_behind_destination_options_is_accepted_too() {
    require_root();
    let link = link("raext");
    slaac_host(&link);
    let advertisement = router_advertisement(link.pod_mac, link_local_eui64(link.pod_mac), PREFIX_2, 64);
    let extended = ipv6_with_ext(&advertisement, &[ExtensionHeader::DestinationOptions]);

    send_frame(&link.pod, POD_IF, &extended, Sender::TxRing).expect("send the RA");

    assert!(
        address_appears(&link.peer, PEER_IF, "2001:db8:2:", Duration::from_secs(3)),
        "no SLAAC address from the RA behind Destination Options: {}",
        link.peer.ok(&["ip", "-6", "addr", "show", "dev", PEER_IF])
    );
}
