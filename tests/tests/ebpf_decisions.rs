//! The eBPF programs' decisions, compiled for the host: `ebpf/src/decide.rs` is included
//! as it is (it needs only `core` and the map ABI), so these tests check the very code the
//! programs run, one decision at a time, without a kernel.
#[path = "../../ebpf/src/decide.rs"]
#[allow(dead_code)]
mod decide;

use decide::*;
use flatbridge_common::{
    FlowConfirmed, FlowKey, FlowSeen,
    nd::{nd_checksum, nd_checksum_valid},
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const SECOND: u64 = 1_000_000_000;

fn flow(protocol: u8, tcp_flags: u8) -> Flow {
    Flow {
        key: FlowKey {
            src: [10, 10, 1, 1],
            dst: [10, 10, 1, 2],
            src_port: 1000u16.to_be(),
            dst_port: 80u16.to_be(),
            protocol,
            _pad: [0; 3],
        },
        tcp_flags,
    }
}

fn seen(in_ifindex: u32, seen_ns: u64, closed: u32) -> FlowSeen {
    FlowSeen {
        seen_ns,
        in_ifindex,
        closed,
        src_mac: MAC_A,
        dst_mac: MAC_B,
        _pad: [0; 4],
    }
}

fn confirmed(in_ifindex: u32, out_ifindex: u32, confirmed_ns: u64, paired: u32) -> FlowConfirmed {
    FlowConfirmed {
        confirmed_ns,
        out_ifindex,
        out_kind: 0,
        in_ifindex,
        paired,
        src_mac: MAC_A,
        dst_mac: MAC_B,
        _pad: [0; 4],
    }
}

#[test]
fn only_established_tcp_and_any_udp_are_steady() {
    const UDP: u8 = 17;
    assert!(flow(UDP, 0).is_steady());
    assert!(flow(IPPROTO_TCP, TCP_ACK).is_steady());
    assert!(
        flow(IPPROTO_TCP, TCP_ACK | 0x08).is_steady(),
        "PSH is established traffic"
    );
    for flags in [
        0,
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_FIN | TCP_ACK,
        TCP_RST,
        TCP_RST | TCP_ACK,
    ] {
        assert!(!flow(IPPROTO_TCP, flags).is_steady(), "flags {flags:#x}");
    }
}

#[test]
fn syn_reopens_fin_or_rst_closes_and_the_rest_keeps_the_state() {
    assert_eq!(flow(IPPROTO_TCP, TCP_SYN).closed_after(1), 0);
    assert_eq!(flow(IPPROTO_TCP, TCP_FIN | TCP_ACK).closed_after(0), 1);
    assert_eq!(flow(IPPROTO_TCP, TCP_RST).closed_after(0), 1);
    assert_eq!(flow(IPPROTO_TCP, TCP_ACK).closed_after(1), 1);
    assert_eq!(flow(IPPROTO_TCP, TCP_ACK).closed_after(0), 0);
    // UDP has no flags: a UDP flow is never opened or closed by a frame.
    assert_eq!(flow(17, TCP_FIN).closed_after(0), 0);
}

#[test]
fn a_confirmation_holds_only_paired_fresh_and_for_the_confirmed_sender() {
    let revalidate = 2 * SECOND;
    let out = confirmed(7, 9, 10 * SECOND, 1);
    assert!(confirmation_holds(
        &out,
        revalidate,
        7,
        &MAC_A,
        &MAC_B,
        11 * SECOND
    ));
    assert!(
        confirmation_holds(&out, revalidate, 7, &MAC_A, &MAC_B, 12 * SECOND),
        "at the edge"
    );
    assert!(
        !confirmation_holds(&out, revalidate, 7, &MAC_A, &MAC_B, 12 * SECOND + 1),
        "stale"
    );
    assert!(
        !confirmation_holds(&out, revalidate, 8, &MAC_A, &MAC_B, 11 * SECOND),
        "another port"
    );
    assert!(
        !confirmation_holds(&out, revalidate, 7, &MAC_B, &MAC_B, 11 * SECOND),
        "another source MAC"
    );
    assert!(
        !confirmation_holds(&out, revalidate, 7, &MAC_A, &MAC_A, 11 * SECOND),
        "another destination MAC"
    );
    let unpaired = confirmed(7, 9, 10 * SECOND, 0);
    assert!(!confirmation_holds(
        &unpaired,
        revalidate,
        7,
        &MAC_A,
        &MAC_B,
        11 * SECOND
    ));
    // A clock read before the confirmation (another CPU) is a huge age, not a negative one.
    assert!(!confirmation_holds(
        &out,
        revalidate,
        7,
        &MAC_A,
        &MAC_B,
        9 * SECOND
    ));
}

#[test]
fn egress_confirms_only_open_unchanged_recent_directions_delivered_elsewhere() {
    let revalidate = 2 * SECOND;
    let open = seen(7, 10 * SECOND, 0);
    assert!(may_confirm(&open, 9, &MAC_A, &MAC_B, 11 * SECOND, revalidate));
    assert!(
        !may_confirm(
            &seen(7, 10 * SECOND, 1),
            9,
            &MAC_A,
            &MAC_B,
            11 * SECOND,
            revalidate
        ),
        "closed"
    );
    assert!(
        !may_confirm(&open, 7, &MAC_A, &MAC_B, 11 * SECOND, revalidate),
        "back out of its own port"
    );
    assert!(
        !may_confirm(&open, 9, &MAC_B, &MAC_B, 11 * SECOND, revalidate),
        "source MAC rewritten"
    );
    assert!(
        !may_confirm(&open, 9, &MAC_A, &MAC_A, 11 * SECOND, revalidate),
        "destination MAC rewritten"
    );
    assert!(
        !may_confirm(&open, 9, &MAC_A, &MAC_B, 13 * SECOND, revalidate),
        "seen too long ago"
    );
}

#[test]
fn a_sighting_is_rewritten_only_when_it_changed_or_needs_refreshing() {
    let refresh = SECOND / 2;
    let old = seen(7, 10 * SECOND, 0);
    assert!(!differs(&old, &seen(7, 10 * SECOND + refresh, 0), refresh));
    assert!(
        differs(&old, &seen(7, 10 * SECOND + refresh + 1, 0), refresh),
        "old enough"
    );
    assert!(differs(&old, &seen(8, 10 * SECOND, 0), refresh), "another port");
    assert!(differs(&old, &seen(7, 10 * SECOND, 1), refresh), "closed");
    let mut other_mac = seen(7, 10 * SECOND, 0);
    other_mac.src_mac = MAC_B;
    assert!(differs(&old, &other_mac, refresh));
}

#[test]
fn a_confirmation_is_rewritten_only_when_it_changed_or_needs_refreshing() {
    let refresh = SECOND / 2;
    let old = confirmed(7, 9, 10 * SECOND, 0);
    assert!(still_confirmed(
        &old,
        &confirmed(7, 9, 10 * SECOND + refresh, 0),
        refresh
    ));
    // Pairing is the reverse direction's to write: not a reason to write this one.
    assert!(still_confirmed(&old, &confirmed(7, 9, 10 * SECOND, 1), refresh));
    assert!(
        !still_confirmed(&old, &confirmed(7, 9, 10 * SECOND + refresh + 1, 0), refresh),
        "old enough"
    );
    assert!(
        !still_confirmed(&old, &confirmed(8, 9, 10 * SECOND, 0), refresh),
        "another sender port"
    );
    assert!(
        !still_confirmed(&old, &confirmed(7, 8, 10 * SECOND, 0), refresh),
        "another way out"
    );
    let mut uplink = confirmed(7, 9, 10 * SECOND, 0);
    uplink.out_kind = 1;
    assert!(
        !still_confirmed(&old, &uplink, refresh),
        "another kind of way out"
    );
    let mut other_mac = confirmed(7, 9, 10 * SECOND, 0);
    other_mac.dst_mac = MAC_A;
    assert!(!still_confirmed(&old, &other_mac, refresh), "another MAC");
}

#[test]
fn the_reverse_mirrors_only_through_the_same_two_ports_while_open_and_recent() {
    // This direction came in on 7 and goes out of 9; its reverse must come in on 9 and have
    // been delivered to 7.
    let this = seen(7, 10 * SECOND, 0);
    let back = confirmed(9, 7, 10 * SECOND, 0);
    let back_seen = seen(9, 10 * SECOND, 0);
    let now = 11 * SECOND;
    assert!(mirrors(&back, &back_seen, &this, 9, now));
    assert!(
        !mirrors(&back, &back_seen, &this, 8, now),
        "delivered to another port"
    );
    assert!(
        !mirrors(&confirmed(9, 6, 10 * SECOND, 0), &back_seen, &this, 9, now),
        "reverse went elsewhere"
    );
    assert!(
        !mirrors(&back, &seen(9, 10 * SECOND, 1), &this, 9, now),
        "reverse closed"
    );
    assert!(
        !mirrors(&back, &back_seen, &this, 9, 10 * SECOND + PAIR_WINDOW_NS + 1),
        "too old"
    );
}

#[test]
fn dhcp_server_messages_are_told_by_their_ports_in_each_family() {
    let ports = |src: u16, dst: u16| {
        let [a, b] = src.to_be_bytes();
        let [c, d] = dst.to_be_bytes();
        [a, b, c, d]
    };
    // An offer from a server (67 -> 68), and anything to a client's port.
    assert!(is_dhcp_server_message(ports(67, 68), false));
    assert!(is_dhcp_server_message(ports(67, 9999), false));
    assert!(is_dhcp_server_message(ports(5000, 68), false));
    // A client's discover (68 -> 67) is a pod's right.
    assert!(!is_dhcp_server_message(ports(68, 67), false));
    assert!(is_dhcp_server_message(ports(547, 546), true));
    assert!(is_dhcp_server_message(ports(5000, 546), true));
    assert!(!is_dhcp_server_message(ports(546, 547), true));
    // The ports of one family mean nothing in the other.
    assert!(!is_dhcp_server_message(ports(547, 546), false));
    assert!(!is_dhcp_server_message(ports(67, 68), true));
}

#[test]
fn the_extension_headers_walked_are_exactly_five() {
    let walked: Vec<u8> = (0..=255).filter(|&next| is_extension(next)).collect();
    assert_eq!(walked, [0, 43, 44, 51, 60]);
}

#[test]
fn the_neighbour_discovery_checksum_is_the_one_every_host_computes() {
    use flatbridge_tests::frames;
    let target = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];
    let own = frames::link_local_eui64(MAC_A);
    for frame in [
        frames::neighbor_solicitation(MAC_A, own, target, Some(MAC_A)),
        frames::neighbor_advertisement(MAC_B, target, own, target, 0x60, MAC_B),
    ] {
        assert_eq!(frame.len(), 14 + 40 + 32);
        let mut covered: [u8; 64] = frame[22..].try_into().expect("64 bytes");
        assert!(nd_checksum_valid(&covered), "the test's own checksum is right");
        let carried = [covered[34], covered[35]];
        covered[34..36].copy_from_slice(&[0, 0]);
        assert!(!nd_checksum_valid(&covered), "a zeroed checksum is wrong");
        assert_eq!(nd_checksum(&covered), carried, "computed as RFC 4443 says");
        // One bit anywhere the checksum covers makes it wrong.
        covered[34..36].copy_from_slice(&carried);
        for byte in [0, 16, 33, 40, 63] {
            covered[byte] ^= 1;
            assert!(!nd_checksum_valid(&covered), "byte {byte} flipped");
            covered[byte] ^= 1;
        }
    }
}

#[test]
fn a_solicited_node_group_is_the_targets_own() {
    let target = [0xfd, 0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56];
    let group = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x12, 0x34, 0x56];
    assert!(is_solicited_node_of(&group, &target));
    for byte in [0, 1, 5, 11, 12, 15] {
        let mut other = group;
        other[byte] ^= 1;
        assert!(!is_solicited_node_of(&other, &target), "byte {byte}");
    }
}
