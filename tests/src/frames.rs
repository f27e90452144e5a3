//! Ethernet frames built byte by byte, for the programs' test runs and for a hostile pod
//! that writes them to an AF_PACKET socket (`raw`).
//!
//! The first builders (`ethernet` to `tcp`) take the destination MAC first, as on the wire,
//! and leave checksums 0: the datapath tests compare their bytes and the programs never
//! look at checksums. Every builder after them takes the source first and fills in correct
//! lengths and checksums, because a receiving kernel drops anything else before a test
//! could see what the datapath did with it.

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// ff02::1, every node on the link.
pub const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// ff02::2, every router on the link.
pub const ALL_ROUTERS: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// ff02::1:2, every DHCPv6 relay agent and server on the link.
pub const ALL_DHCP_AGENTS: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];

/// TCP flag bits for `tcp`.
pub const ACK: u8 = 0x10;
pub const SYN: u8 = 0x02;
pub const FIN: u8 = 0x01;

/// Neighbor Advertisement flag bits (RFC 4861 4.4) for `neighbor_advertisement`.
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HLEN: usize = 40;

/// An Ethernet header alone.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&proto.to_be_bytes());
    frame
}

/// A broadcast ARP packet for IPv4 over Ethernet with operation `op`.
pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut frame = ethernet(BROADCAST_MAC, sha, ETH_P_ARP);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    frame.extend_from_slice(&op.to_be_bytes());
    for part in [&sha[..], &spa, &tha, &tpa] {
        frame.extend_from_slice(part);
    }
    frame
}

/// A broadcast ARP request from `sha`/`spa` for `tpa`.
pub fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    arp(1, sha, spa, [0; 6], tpa)
}

/// Ethernet and IPv4 headers (checksum 0) for a `length`-byte packet of `protocol`.
pub fn ipv4_header(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    length: u16,
) -> Vec<u8> {
    let mut frame = ethernet(dst_mac, src_mac, ETH_P_IP);
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame
}

/// An ICMP echo request (the payload does not matter to the programs).
pub fn ipv4(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut frame = ipv4_header(dst_mac, src_mac, src, dst, 1, 28);
    frame.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    frame
}

/// A UDP datagram from `src:src_port` to `dst:dst_port`.
pub fn udp(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let mut frame = ipv4_header(macs.0, macs.1, src, dst, 17, 32);
    frame.extend_from_slice(&ports.0.to_be_bytes());
    frame.extend_from_slice(&ports.1.to_be_bytes());
    frame.extend_from_slice(&[0, 12, 0, 0, b'd', b'a', b't', b'a']);
    frame
}

/// A TCP segment with `flags`.
pub fn tcp(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], ports: (u16, u16), flags: u8) -> Vec<u8> {
    let mut frame = ipv4_header(macs.0, macs.1, src, dst, 6, 40);
    frame.extend_from_slice(&ports.0.to_be_bytes());
    frame.extend_from_slice(&ports.1.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    frame
}

/// `text` (`02:00:00:00:00:0a`, as `ip link` prints it) as bytes.
pub fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let mut octets = text.split(':');
    for byte in &mut mac {
        *byte = octets
            .next()
            .and_then(|octet| u8::from_str_radix(octet, 16).ok())
            .unwrap_or_else(|| panic!("not a MAC address: {text}"));
    }
    assert!(octets.next().is_none(), "not a MAC address: {text}");
    mac
}

/// `mac` as `ip link` prints it.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// `frame` with a VLAN tag (`tpid`, then `vid` as the whole TCI: a bare VLAN id means
/// PCP 0, DEI 0) inserted after the MACs, outside any tag it has: tag twice for QinQ.
pub fn vlan_tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&tpid.to_be_bytes());
    tagged.extend_from_slice(&vid.to_be_bytes());
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// The Internet checksum (RFC 1071) of `parts` laid end to end.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes = parts.concat();
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 pseudo-header the UDP and TCP checksums cover.
fn ipv4_pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, length: usize) -> Vec<u8> {
    let mut pseudo = [src, dst].concat();
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&checked_u16(length).to_be_bytes());
    pseudo
}

/// The IPv6 pseudo-header (RFC 8200 8.1) the UDP and ICMPv6 checksums cover.
fn ipv6_pseudo_header(src: [u8; 16], dst: [u8; 16], next_header: u8, length: usize) -> Vec<u8> {
    let mut pseudo = [src, dst].concat();
    pseudo.extend_from_slice(&checked_u32(length).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next_header]);
    pseudo
}

fn checked_u16(length: usize) -> u16 {
    u16::try_from(length).unwrap_or_else(|_| panic!("{length} bytes do not fit a 16-bit length field"))
}

fn checked_u32(length: usize) -> u32 {
    u32::try_from(length).unwrap_or_else(|_| panic!("{length} bytes do not fit a 32-bit length field"))
}

/// An IPv4 packet of `protocol` around `payload`, with a correct header checksum.
pub fn ipv4_checksummed(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&checked_u16(20 + payload.len()).to_be_bytes());
    header.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    header.extend_from_slice(&src);
    header.extend_from_slice(&dst);
    let checksum = internet_checksum(&[&header]);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = ethernet(dst_mac, src_mac, ETH_P_IP);
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    frame
}

/// A UDP header and `payload` whose checksum covers `pseudo` (0 is sent as 0xffff).
fn udp_datagram(pseudo: &[u8], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&sport.to_be_bytes());
    datagram.extend_from_slice(&dport.to_be_bytes());
    datagram.extend_from_slice(&checked_u16(8 + payload.len()).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let checksum = match internet_checksum(&[pseudo, &datagram]) {
        0 => 0xffff,
        checksum => checksum,
    };
    datagram[6..8].copy_from_slice(&checksum.to_be_bytes());
    datagram
}

/// A UDP/IPv4 datagram with correct lengths and IPv4 and UDP checksums.
pub fn udp_ipv4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let pseudo = ipv4_pseudo_header(src_ip, dst_ip, IPPROTO_UDP, 8 + payload.len());
    let datagram = udp_datagram(&pseudo, sport, dport, payload);
    ipv4_checksummed(src_mac, dst_mac, src_ip, dst_ip, IPPROTO_UDP, &datagram)
}

/// A broadcast DHCPOFFER (BOOTREPLY, option 53 = 2) of `yiaddr` from the server at
/// `src_ip`, as a rogue DHCP server in a pod would send it (chaddr left zero).
pub fn dhcp_offer(src_mac: [u8; 6], src_ip: [u8; 4], yiaddr: [u8; 4]) -> Vec<u8> {
    dhcp_offer_from(src_mac, src_ip, 67, yiaddr)
}

/// As [`dhcp_offer`], from UDP port `src_port`: clients take an offer for their port 68
/// whatever port it came from.
pub fn dhcp_offer_from(src_mac: [u8; 6], src_ip: [u8; 4], src_port: u16, yiaddr: [u8; 4]) -> Vec<u8> {
    // op, htype (Ethernet), hlen, hops, xid, secs, flags (broadcast), ciaddr.
    let mut bootp = vec![2, 1, 6, 0, 0x46, 0x4c, 0x42, 0x54, 0, 0, 0x80, 0, 0, 0, 0, 0];
    bootp.extend_from_slice(&yiaddr);
    // siaddr, giaddr, chaddr (16), sname (64), file (128).
    bootp.resize(bootp.len() + 4 + 4 + 16 + 64 + 128, 0);
    bootp.extend_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 2]);
    bootp.extend_from_slice(&[54, 4]);
    bootp.extend_from_slice(&src_ip);
    bootp.push(255);
    udp_ipv4(src_mac, BROADCAST_MAC, src_ip, [255; 4], src_port, 68, &bootp)
}

/// The MAC an IPv6 multicast address maps to (RFC 2464 7): 33:33 and its last 32 bits.
pub fn ipv6_multicast_mac(group: [u8; 16]) -> [u8; 6] {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

/// The solicited-node multicast address (ff02::1:ffXX:XXXX) of `target`.
pub fn solicited_node(target: [u8; 16]) -> [u8; 16] {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    group
}

/// fe80::/64 with the modified EUI-64 interface identifier of `mac`, the link-local
/// address Linux gives an Ethernet device by default.
pub fn link_local_eui64(mac: [u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// An IPv6 packet carrying `payload` as `next_header`.
pub fn ipv6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    payload: &[u8],
    hop_limit: u8,
) -> Vec<u8> {
    let mut frame = ethernet(dst_mac, src_mac, ETH_P_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&checked_u16(payload.len()).to_be_bytes());
    frame.extend_from_slice(&[next_header, hop_limit]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(payload);
    frame
}

/// An IPv6 extension header for `ipv6_with_ext`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionHeader {
    /// Hop-by-Hop Options (0) holding one PadN option.
    HopByHop,
    /// Destination Options (60) holding one PadN option.
    DestinationOptions,
    /// Fragment (44) with offset 0 and M clear: an atomic fragment (RFC 6946).
    Fragment,
    /// Fragment (44) with offset 0 and M set: the first of several.
    FirstFragment,
    /// Authentication Header (51), 16 bytes: its length counts 4-byte units less two
    /// (RFC 4302), unlike the other headers here.
    Authentication,
    /// A header numbered `0` laid out as options are (8 bytes): one a guard does not know.
    Other(u8),
}

impl ExtensionHeader {
    /// The Next Header value that announces this header.
    pub fn number(self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::DestinationOptions => 60,
            Self::Fragment | Self::FirstFragment => 44,
            Self::Authentication => 51,
            Self::Other(number) => number,
        }
    }

    /// This header, followed by a header of type `next_header`.
    fn bytes(self, next_header: u8) -> Vec<u8> {
        match self {
            // Header Ext Len 0 (8 bytes); PadN (type 1) with 4 bytes of padding.
            Self::HopByHop | Self::DestinationOptions | Self::Other(_) => {
                vec![next_header, 0, 1, 4, 0, 0, 0, 0]
            }
            // Fragment Offset 0, M 0, Identification "FLBT".
            Self::Fragment => vec![next_header, 0, 0, 0, 0x46, 0x4c, 0x42, 0x54],
            Self::FirstFragment => vec![next_header, 0, 0, 1, 0x46, 0x4c, 0x42, 0x54],
            // Payload Len 2: (2 + 2) * 4 = 16 bytes; SPI, sequence number, a 4-byte ICV.
            Self::Authentication => {
                vec![
                    next_header,
                    2,
                    0,
                    0,
                    0,
                    0,
                    1,
                    0,
                    0,
                    0,
                    0,
                    1,
                    0xa5,
                    0xa5,
                    0xa5,
                    0xa5,
                ]
            }
        }
    }
}

/// The IPv6 `frame` (built by any builder here, VLAN tags allowed) with `extensions`
/// chained, in order, between its IPv6 header and its upper-layer payload. The upper-layer
/// checksum stays correct: the pseudo-header covers only the upper layer.
pub fn ipv6_with_ext(frame: &[u8], extensions: &[ExtensionHeader]) -> Vec<u8> {
    let mut ip = 12;
    while matches!(
        u16::from_be_bytes([frame[ip], frame[ip + 1]]),
        ETH_P_8021Q | ETH_P_8021AD
    ) {
        ip += 4;
    }
    assert_eq!(
        u16::from_be_bytes([frame[ip], frame[ip + 1]]),
        ETH_P_IPV6,
        "not an IPv6 frame"
    );
    ip += 2;
    let upper_layer = frame[ip + 6];
    let mut chain = Vec::with_capacity(16 * extensions.len());
    for (index, extension) in extensions.iter().enumerate() {
        let next = extensions
            .get(index + 1)
            .map_or(upper_layer, |following| following.number());
        chain.extend_from_slice(&extension.bytes(next));
    }
    let mut extended = frame[..ip + IPV6_HLEN].to_vec();
    if let Some(first) = extensions.first() {
        extended[ip + 6] = first.number();
    }
    let payload_length = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]);
    let payload_length = checked_u16(usize::from(payload_length) + chain.len());
    extended[ip + 4..ip + 6].copy_from_slice(&payload_length.to_be_bytes());
    extended.extend_from_slice(&chain);
    extended.extend_from_slice(&frame[ip + IPV6_HLEN..]);
    extended
}

/// An ICMPv6 message with its checksum over the pseudo-header of `src` and `dst`.
fn icmpv6_message(src: [u8; 16], dst: [u8; 16], icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![icmp_type, code, 0, 0];
    message.extend_from_slice(body);
    let pseudo = ipv6_pseudo_header(src, dst, IPPROTO_ICMPV6, message.len());
    let checksum = internet_checksum(&[&pseudo, &message]);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    message
}

/// An ICMPv6 message (`body` follows type, code and checksum) with a correct checksum and
/// hop limit 255, as Neighbor Discovery requires.
pub fn icmpv6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    icmp_type: u8,
    code: u8,
    body: &[u8],
) -> Vec<u8> {
    let message = icmpv6_message(src, dst, icmp_type, code, body);
    ipv6(src_mac, dst_mac, src, dst, IPPROTO_ICMPV6, &message, 255)
}

/// A link-layer address option (RFC 4861 4.6.1): 1 source, 2 target.
fn link_layer_option(kind: u8, mac: [u8; 6]) -> [u8; 8] {
    [kind, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// A Router Advertisement to ff02::1 from router `src_ll` at `src_mac`: default router for
/// 1800 s, one on-link and autonomous prefix (valid 86400 s, preferred 14400 s) that a host
/// with accept_ra and autoconf turns into a SLAAC address, and the source link-layer option.
pub fn router_advertisement(src_mac: [u8; 6], src_ll: [u8; 16], prefix: [u8; 16], prefix_len: u8) -> Vec<u8> {
    // Cur Hop Limit 64, M and O clear, Router Lifetime, Reachable Time 0, Retrans Timer 0.
    let mut body = vec![64, 0];
    body.extend_from_slice(&1800u16.to_be_bytes());
    body.extend_from_slice(&[0; 8]);
    // Prefix Information (type 3, 32 bytes): L and A set.
    body.extend_from_slice(&[3, 4, prefix_len, 0xc0]);
    body.extend_from_slice(&86400u32.to_be_bytes());
    body.extend_from_slice(&14400u32.to_be_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&prefix);
    body.extend_from_slice(&link_layer_option(1, src_mac));
    icmpv6(
        src_mac,
        ipv6_multicast_mac(ALL_NODES),
        src_ll,
        ALL_NODES,
        134,
        0,
        &body,
    )
}

/// A Redirect (137) telling `dst` that `target` is a better first hop to `destination`,
/// with a target link-layer option when `tlla` is given.
pub fn icmpv6_redirect(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    destination: [u8; 16],
    tlla: Option<[u8; 6]>,
) -> Vec<u8> {
    let mut body = vec![0; 4];
    body.extend_from_slice(&target);
    body.extend_from_slice(&destination);
    if let Some(mac) = tlla {
        body.extend_from_slice(&link_layer_option(2, mac));
    }
    icmpv6(src_mac, dst_mac, src, dst, 137, 0, &body)
}

/// A Neighbor Advertisement (136) that `target` is at `tlla`; `flags` is the byte of
/// `NA_ROUTER | NA_SOLICITED | NA_OVERRIDE` bits. A multicast `dst` gets its multicast MAC,
/// a unicast one the broadcast MAC (which Linux accepts unless
/// drop_unicast_in_l2_multicast is set): overwrite `frame[..6]` to aim at one host.
pub fn neighbor_advertisement(
    src_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    flags: u8,
    tlla: [u8; 6],
) -> Vec<u8> {
    let mut body = vec![flags, 0, 0, 0];
    body.extend_from_slice(&target);
    body.extend_from_slice(&link_layer_option(2, tlla));
    let dst_mac = if dst[0] == 0xff {
        ipv6_multicast_mac(dst)
    } else {
        BROADCAST_MAC
    };
    icmpv6(src_mac, dst_mac, src, dst, 136, 0, &body)
}

/// An unsolicited Neighbor Advertisement (Override) that `ip` is at `mac`, from `ip` and
/// `mac` to all nodes: what a host sends to announce (or defend) its address.
pub fn unsolicited_advertisement(mac: [u8; 6], ip: [u8; 16]) -> Vec<u8> {
    neighbor_advertisement(mac, ip, ALL_NODES, ip, NA_OVERRIDE, mac)
}

/// A Neighbor Solicitation (135) for `target`, to its solicited-node group and MAC, with a
/// source link-layer option when `slla` is given (none for DAD, whose `src` is ::).
pub fn neighbor_solicitation(
    src_mac: [u8; 6],
    src: [u8; 16],
    target: [u8; 16],
    slla: Option<[u8; 6]>,
) -> Vec<u8> {
    let group = solicited_node(target);
    let mut body = vec![0; 4];
    body.extend_from_slice(&target);
    if let Some(mac) = slla {
        body.extend_from_slice(&link_layer_option(1, mac));
    }
    icmpv6(src_mac, ipv6_multicast_mac(group), src, group, 135, 0, &body)
}

/// A UDP/IPv6 datagram (hop limit 64) with a correct UDP checksum.
pub fn udp_ipv6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let pseudo = ipv6_pseudo_header(src, dst, IPPROTO_UDP, 8 + payload.len());
    let datagram = udp_datagram(&pseudo, sport, dport, payload);
    ipv6(src_mac, dst_mac, src, dst, IPPROTO_UDP, &datagram, 64)
}

/// A DHCPv6 ADVERTISE (port 547 to 546) from a server at `src_ll` to the client at
/// `dst_mac`/`dst`: a Server Identifier (DUID-LL of `src_mac`) and Preference 255, which
/// tells a client to take this server at once. It carries no Client Identifier, so a
/// conforming client discards it: it is for checking what the datapath lets through.
pub fn dhcpv6_advertise(src_mac: [u8; 6], src_ll: [u8; 16], dst_mac: [u8; 6], dst: [u8; 16]) -> Vec<u8> {
    // msg-type ADVERTISE, transaction-id.
    let mut message = vec![2, 0x46, 0x4c, 0x42];
    // OPTION_SERVERID (2), 10 bytes: DUID-LL (3), hardware type Ethernet (1), the MAC.
    message.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1]);
    message.extend_from_slice(&src_mac);
    // OPTION_PREFERENCE (7), 1 byte.
    message.extend_from_slice(&[0, 7, 0, 1, 255]);
    udp_ipv6(src_mac, dst_mac, src_ll, dst, 547, 546, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETH_HLEN: usize = 14;
    const MAC_POD: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// Where the IPv6 header starts, and where the upper layer and its type are, skipping
    /// the extension headers built here.
    fn ipv6_layers(frame: &[u8]) -> (usize, usize, u8) {
        let ip = ETH_HLEN;
        let mut next = frame[ip + 6];
        let mut upper = ip + IPV6_HLEN;
        while matches!(next, 0 | 44 | 60) {
            next = frame[upper];
            upper += 8;
        }
        (ip, upper, next)
    }

    /// The checksum over pseudo-header and upper layer is 0 when the one inside is right.
    fn ipv6_upper_layer_verifies(frame: &[u8]) -> bool {
        let (ip, upper, next) = ipv6_layers(frame);
        let src: [u8; 16] = frame[ip + 8..ip + 24].try_into().expect("16 bytes");
        let dst: [u8; 16] = frame[ip + 24..ip + 40].try_into().expect("16 bytes");
        let pseudo = ipv6_pseudo_header(src, dst, next, frame.len() - upper);
        internet_checksum(&[&pseudo, &frame[upper..]]) == 0
    }

    #[test]
    fn the_checksum_matches_rfc_1071s_example() {
        // RFC 1071 3: the sum of these bytes is ddf2, so the checksum is its complement.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&bytes]), !0xddf2);
        assert_eq!(
            internet_checksum(&[&bytes[..3], &bytes[3..]]),
            !0xddf2,
            "odd split"
        );
        assert_eq!(
            internet_checksum(&[&bytes[..7]]),
            !0xddf2 + 0xf7,
            "odd length pads with 0"
        );
    }

    #[test]
    fn udp_ipv4_has_right_lengths_and_checksums() {
        let frame = udp_ipv4(
            MAC_POD,
            MAC_PEER,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            4000,
            53,
            b"marker",
        );
        assert_eq!(frame.len(), 14 + 20 + 8 + 6);
        assert_eq!(
            &frame[..12],
            &[MAC_PEER, MAC_POD].concat()[..],
            "destination MAC first"
        );
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]),
            34,
            "IPv4 total length"
        );
        assert_eq!(internet_checksum(&[&frame[14..34]]), 0, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([frame[38], frame[39]]), 14, "UDP length");
        let pseudo = ipv4_pseudo_header([10, 0, 0, 1], [10, 0, 0, 2], 17, 14);
        assert_eq!(internet_checksum(&[&pseudo, &frame[34..]]), 0, "UDP checksum");
        assert_ne!(&frame[40..42], &[0, 0], "UDP checksum filled in");
    }

    #[test]
    fn a_dhcp_offer_is_a_broadcast_bootreply_with_the_options() {
        let frame = dhcp_offer(MAC_POD, [10, 0, 0, 1], [10, 0, 0, 77]);
        assert_eq!(&frame[..6], &BROADCAST_MAC);
        assert_eq!(&frame[30..34], &[255; 4]);
        assert_eq!(internet_checksum(&[&frame[14..34]]), 0, "IPv4 header checksum");
        assert_eq!(&frame[34..38], &[0, 67, 0, 68], "server port to client port");
        let bootp = &frame[42..];
        assert_eq!(bootp[0], 2, "BOOTREPLY");
        assert_eq!(&bootp[16..20], &[10, 0, 0, 77], "yiaddr");
        assert_eq!(&bootp[236..240], &[99, 130, 83, 99], "magic cookie");
        assert_eq!(&bootp[240..], &[53, 1, 2, 54, 4, 10, 0, 0, 1, 255]);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[16], frame[17]])),
            frame.len() - 14
        );
    }

    #[test]
    fn vlan_tags_go_outside_the_existing_ones() {
        let frame = udp_ipv4(MAC_POD, MAC_PEER, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"x");
        // The outer TCI carries PCP 5 as well as VLAN 100.
        let qinq = vlan_tagged(&vlan_tagged(&frame, 0x8100, 20), 0x88a8, 0xa064);
        assert_eq!(qinq.len(), frame.len() + 8);
        assert_eq!(&qinq[..12], &frame[..12]);
        assert_eq!(&qinq[12..20], &[0x88, 0xa8, 0xa0, 0x64, 0x81, 0x00, 0x00, 20]);
        assert_eq!(&qinq[20..], &frame[12..]);
    }

    #[test]
    fn the_link_local_address_uses_the_modified_eui_64() {
        // fe80::5054:ff:fe12:3456, as Linux derives it for 52:54:00:12:34:56.
        let expected = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56,
        ];
        assert_eq!(link_local_eui64(MAC_POD), expected);
    }

    #[test]
    fn a_router_advertisement_has_a_valid_checksum_and_its_options() {
        let prefix = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let frame = router_advertisement(MAC_POD, link_local_eui64(MAC_POD), prefix, 64);
        // Ethernet, IPv6, RA header 16, Prefix Information 32, source link-layer 8.
        assert_eq!(frame.len(), 14 + 40 + 16 + 32 + 8);
        assert_eq!(&frame[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[18], frame[19]])),
            56,
            "payload length"
        );
        assert_eq!((frame[20], frame[21]), (58, 255), "ICMPv6 with hop limit 255");
        assert_eq!(&frame[38..54], &ALL_NODES);
        assert_eq!((frame[54], frame[55]), (134, 0));
        assert_eq!(
            u16::from_be_bytes([frame[60], frame[61]]),
            1800,
            "router lifetime"
        );
        assert_eq!(&frame[70..74], &[3, 4, 64, 0xc0], "prefix option, L and A");
        assert_eq!(&frame[86..102], &prefix);
        assert_eq!(&frame[102..], &link_layer_option(1, MAC_POD));
        assert!(ipv6_upper_layer_verifies(&frame));
        let mut corrupted = frame.clone();
        corrupted[90] ^= 1;
        assert!(
            !ipv6_upper_layer_verifies(&corrupted),
            "the check catches a flipped bit"
        );
    }

    #[test]
    fn neighbor_discovery_messages_go_where_rfc_4861_says() {
        let own = link_local_eui64(MAC_POD);
        let target = link_local_eui64(MAC_PEER);
        let solicitation = neighbor_solicitation(MAC_POD, own, target, Some(MAC_POD));
        let group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x0b];
        assert_eq!(&solicitation[..6], &[0x33, 0x33, 0xff, 0, 0, 0x0b]);
        assert_eq!(&solicitation[38..54], &group);
        assert_eq!(solicitation.len(), 14 + 40 + 24 + 8);
        assert!(ipv6_upper_layer_verifies(&solicitation));
        assert_eq!(
            neighbor_solicitation(MAC_POD, [0; 16], target, None).len(),
            14 + 40 + 24
        );

        let flags = NA_ROUTER | NA_OVERRIDE;
        let advertisement = neighbor_advertisement(MAC_POD, own, ALL_NODES, target, flags, MAC_POD);
        assert_eq!(&advertisement[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!((advertisement[54], advertisement[58]), (136, 0xa0));
        assert!(ipv6_upper_layer_verifies(&advertisement));
        let unicast = neighbor_advertisement(MAC_POD, own, target, target, 0, MAC_POD);
        assert_eq!(&unicast[..6], &BROADCAST_MAC);

        let redirect = icmpv6_redirect(MAC_POD, MAC_PEER, own, target, own, prefix_host(), Some(MAC_POD));
        assert_eq!(redirect.len(), 14 + 40 + 40 + 8);
        assert_eq!(redirect[54], 137);
        assert!(ipv6_upper_layer_verifies(&redirect));
    }

    fn prefix_host() -> [u8; 16] {
        [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    }

    #[test]
    fn udp_ipv6_and_dhcpv6_have_valid_checksums() {
        let own = link_local_eui64(MAC_POD);
        let client = link_local_eui64(MAC_PEER);
        let datagram = udp_ipv6(MAC_POD, MAC_PEER, own, client, 1000, 2000, b"odd");
        assert_eq!(datagram.len(), 14 + 40 + 8 + 3);
        assert_eq!(u16::from_be_bytes([datagram[18], datagram[19]]), 11);
        assert_eq!(u16::from_be_bytes([datagram[58], datagram[59]]), 11, "UDP length");
        assert!(ipv6_upper_layer_verifies(&datagram));

        let advertise = dhcpv6_advertise(MAC_POD, own, MAC_PEER, client);
        assert_eq!(&advertise[54..58], &[0x02, 0x23, 0x02, 0x22], "547 to 546");
        assert_eq!(advertise[62], 2, "ADVERTISE");
        assert!(ipv6_upper_layer_verifies(&advertise));
    }

    #[test]
    fn extension_headers_chain_and_keep_the_checksum() {
        let prefix = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let advertisement = router_advertisement(MAC_POD, link_local_eui64(MAC_POD), prefix, 64);
        let chain = [
            ExtensionHeader::HopByHop,
            ExtensionHeader::DestinationOptions,
            ExtensionHeader::Fragment,
        ];
        let extended = ipv6_with_ext(&advertisement, &chain);
        assert_eq!(extended.len(), advertisement.len() + 24);
        assert_eq!(u16::from_be_bytes([extended[18], extended[19]]), 56 + 24);
        assert_eq!(extended[20], 0, "hop-by-hop first");
        assert_eq!((extended[54], extended[62], extended[70]), (60, 44, 58));
        assert_eq!(&extended[72..74], &[0, 0], "fragment offset 0, M clear");
        assert_eq!(&extended[78..], &advertisement[54..]);
        assert_eq!(ipv6_layers(&extended).2, 58);
        assert!(ipv6_upper_layer_verifies(&extended));

        let tagged = vlan_tagged(&advertisement, 0x8100, 7);
        let tagged_extended = ipv6_with_ext(&tagged, &[ExtensionHeader::DestinationOptions]);
        assert_eq!((tagged_extended[24], tagged_extended[58]), (60, 58));
        assert_eq!(ipv6_with_ext(&advertisement, &[]), advertisement);

        let behind_ah = ipv6_with_ext(&advertisement, &[ExtensionHeader::Authentication]);
        assert_eq!(behind_ah.len(), advertisement.len() + 16);
        assert_eq!((behind_ah[20], behind_ah[54], behind_ah[55]), (51, 58, 2));
        assert_eq!(&behind_ah[70..], &advertisement[54..]);
        let first = ipv6_with_ext(&advertisement, &[ExtensionHeader::FirstFragment]);
        assert_eq!(&first[56..58], &[0, 1], "fragment offset 0, M set");
    }

    #[test]
    fn a_mac_parses_as_ip_prints_it() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), MAC_POD);
    }
}
