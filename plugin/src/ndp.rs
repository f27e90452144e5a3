//! IPv6 neighbour discovery frames the plugin sends on the wire (RFC 4861), the IPv6
//! counterparts of arp.rs's: the unsolicited advertisement of a new pod's address, so that
//! neighbours that cached a previous owner's MAC learn the new one at once (7.2.6), and
//! duplicate address detection's solicitation, the probe of an address before it is handed
//! out (RFC 4862 5.4.2). Built here, sent as arp.rs's are (through the datapath, or a packet
//! socket). Knows nothing of CNI.
use std::net::Ipv6Addr;

use flatbridge_common::nd::{
    ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, IPPROTO_ICMPV6, NA_OVERRIDE, ND_MESSAGE_LEN,
    ND_OPT_TARGET_LLADDR, nd_checksum,
};

const ETH_P_IPV6: u16 = 0x86dd;
/// The all-nodes group, ff02::1, and its MAC.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Ethernet, IPv6 and a 32-byte message (the target and one link-layer address option).
pub const ND_FRAME_LEN: usize = 14 + 40 + ND_MESSAGE_LEN as usize;
/// RFC 7527's nonce option: six bytes that tell a prober its own solicitation looped back.
const ND_OPT_NONCE: u8 = 14;

/// A neighbour discovery frame from `mac` and `src` to `dst` (and its MAC `dst_mac`): the
/// message is `message` with its checksum filled in.
fn nd_frame(
    dst_mac: [u8; 6],
    mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    message: [u8; ND_MESSAGE_LEN as usize],
) -> [u8; ND_FRAME_LEN] {
    let mut frame = [0u8; ND_FRAME_LEN];
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // Version 6, no traffic class or flow label; the message's length; ICMPv6; hop limit
    // 255, which receivers of neighbour discovery require.
    frame[14] = 0x60;
    frame[18..20].copy_from_slice(&(ND_MESSAGE_LEN as u16).to_be_bytes());
    frame[20] = IPPROTO_ICMPV6;
    frame[21] = 255;
    frame[22..38].copy_from_slice(&src.octets());
    frame[38..54].copy_from_slice(&dst.octets());
    frame[54..].copy_from_slice(&message);
    // The checksum covers the addresses and the message, from byte 22 on: the programs'
    // own computation (flatbridge_common::nd).
    let mut covered = [0u8; 64];
    covered.copy_from_slice(&frame[22..]);
    let checksum = nd_checksum(&covered);
    frame[54 + 2..54 + 4].copy_from_slice(&checksum);
    frame
}

/// Duplicate address detection's probe of `ip` from `own_mac` (RFC 4862 5.4.2): a
/// solicitation from :: to the solicited-node group of `ip`, without a source link-layer
/// option (forbidden from ::) but with a nonce (RFC 7527), which every solicitation of
/// Linux's own detection carries too and which makes the message the 32 bytes of the
/// others. The owner of `ip` answers with an advertisement to all nodes.
pub fn dad_solicitation(own_mac: [u8; 6], ip: Ipv6Addr) -> [u8; ND_FRAME_LEN] {
    let target = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(target[13]),
        u16::from_be_bytes([target[14], target[15]]),
    );
    let group_mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
    let mut message = [0u8; ND_MESSAGE_LEN as usize];
    message[0] = ICMPV6_NEIGHBOR_SOLICIT;
    message[8..24].copy_from_slice(&target);
    message[24] = ND_OPT_NONCE;
    message[25] = 1;
    message[26..32].copy_from_slice(&nonce());
    nd_frame(group_mac, own_mac, Ipv6Addr::UNSPECIFIED, group, message)
}

/// Six bytes that differ between probes: the clock's nanoseconds and the process.
fn nonce() -> [u8; 6] {
    let mut nonce = [0u8; 6];
    let mixed = crate::kernel::monotonic_ns() ^ (u64::from(std::process::id()) << 40);
    nonce.copy_from_slice(&mixed.to_le_bytes()[..6]);
    nonce
}

/// An unsolicited Neighbor Advertisement that `ip` is at `mac`, from `ip` to all nodes, with
/// Override set and Solicited and Router clear (RFC 4861 7.2.6), sent as if `mac` had sent
/// it.
pub fn unsolicited_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; ND_FRAME_LEN] {
    let mut message = [0u8; ND_MESSAGE_LEN as usize];
    message[0] = ICMPV6_NEIGHBOR_ADVERT;
    message[4] = NA_OVERRIDE;
    message[8..24].copy_from_slice(&ip.octets());
    message[24] = ND_OPT_TARGET_LLADDR;
    message[25] = 1;
    message[26..32].copy_from_slice(&mac);
    nd_frame(ALL_NODES_MAC, mac, ip, ALL_NODES, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn the_advertisement_is_for_all_nodes_from_the_address_and_overrides() {
        let ip: Ipv6Addr = "fd10:10::1:7".parse().expect("address");
        let frame = unsolicited_advertisement(MAC, ip);
        assert_eq!(&frame[0..6], &ALL_NODES_MAC);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(&frame[22..38], &ip.octets(), "source: the address itself");
        assert_eq!(&frame[38..54], &ALL_NODES.octets());
        assert_eq!(frame[21], 255, "hop limit");
        assert_eq!(
            frame[54 + 4],
            NA_OVERRIDE,
            "Override only: not solicited, not a router"
        );
        assert_eq!(&frame[54 + 8..54 + 24], &ip.octets(), "target");
        assert_eq!(&frame[54 + 24..], &[2, 1, 2, 0x11, 0x22, 0x33, 0x44, 0x55]);
    }

    #[test]
    fn the_checksum_sums_to_all_ones_over_the_pseudo_header_and_the_message() {
        let ip: Ipv6Addr = "fe80::11:22ff:fe33:4455".parse().expect("address");
        let frame = unsolicited_advertisement(MAC, ip);
        // Summing everything again, the checksum included, gives 0xffff; a flipped bit
        // does not.
        let sum = |frame: &[u8]| {
            let mut sum: u32 = 32 + 58;
            for pair in frame[22..].chunks(2) {
                sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            sum
        };
        assert_eq!(sum(&frame), 0xffff);
        let mut broken = frame;
        broken[60] ^= 0x10;
        assert_ne!(sum(&broken), 0xffff);
        let probe = dad_solicitation(MAC, "fd10:10::1:7".parse().expect("address"));
        assert_eq!(sum(&probe), 0xffff, "the probe's checksum too");
    }

    #[test]
    fn the_probe_asks_the_solicited_node_group_from_the_unspecified_address() {
        let ip: Ipv6Addr = "fd10:10::ab:cdef".parse().expect("address");
        let frame = dad_solicitation(MAC, ip);
        assert_eq!(&frame[0..6], &[0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(&frame[22..38], &[0; 16], "source ::");
        let group: Ipv6Addr = "ff02::1:ffab:cdef".parse().expect("group");
        assert_eq!(&frame[38..54], &group.octets());
        assert_eq!(frame[21], 255, "hop limit");
        assert_eq!(frame[54], ICMPV6_NEIGHBOR_SOLICIT);
        assert_eq!(&frame[54 + 8..54 + 24], &ip.octets(), "target");
        assert_eq!(
            &frame[54 + 24..54 + 26],
            &[ND_OPT_NONCE, 1],
            "a nonce, no source link-layer address"
        );
        assert_ne!(
            dad_solicitation(MAC, ip)[54 + 26..],
            frame[54 + 26..],
            "every probe its own nonce"
        );
    }
}
