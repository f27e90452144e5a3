//! Answering a neighbour solicitation in place (RFC 4861 7.2.4), the IPv6 counterpart of
//! arp.rs: the solicitation becomes the advertisement and leaves by the device it came in
//! on, so the multicast never reaches the bridge. Only the usual form is answered: no
//! extension headers, hop limit 255, the message 32 bytes with one option, the asker's
//! link-layer address, and a right checksum. Anything else (duplicate address detection
//! from ::, a solicitation with other options, a malformed one) goes on to the bridge and
//! its owner answers, as without the programs.
use aya_ebpf::programs::TcContext;
use flatbridge_common::Verdict;

use flatbridge_common::nd::{
    ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, IPPROTO_ICMPV6, NA_OVERRIDE, NA_ROUTER, NA_SOLICITED,
    ND_MESSAGE_LEN, ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR, nd_checksum, nd_checksum_valid,
};

use crate::{
    decide::is_solicited_node_of,
    parse::{ETH_HLEN, ETH_P_IPV6, EthHdr, Ipv6Hdr, header, readable},
    redirect,
};

/// Where the IPv6 source address starts: the checksum covers it and all that follows.
const ADDRESSES: usize = ETH_HLEN + 8;
const FRAME_LEN: usize = ETH_HLEN + core::mem::size_of::<Ipv6Hdr>() + ND_MESSAGE_LEN as usize;

/// A neighbour solicitation or advertisement with one link-layer address option: the
/// message after the IPv6 header. Byte arrays only (alignment 1).
#[repr(C)]
pub struct NdMessage {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: [u8; 2],
    /// Reserved in a solicitation; the flags in the first byte of an advertisement.
    pub flags: [u8; 4],
    pub target: [u8; 16],
    pub option_type: u8,
    /// In units of 8 bytes.
    pub option_len: u8,
    pub option_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<NdMessage>() == ND_MESSAGE_LEN as usize);

/// A solicitation the programs may answer, with the target it asks about.
pub struct Solicitation {
    eth: *mut EthHdr,
    ip: *mut Ipv6Hdr,
    nd: *mut NdMessage,
    /// The IPv6 addresses and the message: what the checksum covers.
    covered: *mut [u8; 64],
    pub target: [u8; 16],
}

/// The frame's neighbour solicitation, if it is one in the form answered here (see the
/// module's comment). Makes the frame readable (which may move it).
#[inline(always)]
pub fn solicitation(ctx: &TcContext) -> Option<Solicitation> {
    if ctx.len() as usize != FRAME_LEN || readable(ctx, FRAME_LEN).is_err() {
        return None;
    }
    let eth: *mut EthHdr = header(ctx, 0)?;
    let ip: *mut Ipv6Hdr = header(ctx, ETH_HLEN)?;
    let nd: *mut NdMessage = header(ctx, ETH_HLEN + core::mem::size_of::<Ipv6Hdr>())?;
    let covered: *mut [u8; 64] = header(ctx, ADDRESSES)?;
    // SAFETY: every header was bounds-checked above.
    unsafe {
        let (ip_ref, nd_ref) = (&*ip, &*nd);
        if (*eth).proto != ETH_P_IPV6.to_be()
            || ip_ref.version_class_flow[0] >> 4 != 6
            || u16::from_be_bytes(ip_ref.payload_len) != ND_MESSAGE_LEN as u16
            || ip_ref.next_header != IPPROTO_ICMPV6
            || ip_ref.hop_limit != 255
            || nd_ref.icmp_type != ICMPV6_NEIGHBOR_SOLICIT
            || nd_ref.code != 0
            || nd_ref.option_type != ND_OPT_SOURCE_LLADDR
            || nd_ref.option_len != 1
        {
            return None;
        }
        // A multicast sender is no one to answer to.
        if (*eth).src[0] & 1 == 1 {
            return None;
        }
        let (src, dst, target) = (ip_ref.src, ip_ref.dst, nd_ref.target);
        // :: is duplicate address detection, whose answer goes to all nodes and only from
        // the address's owner; a multicast source or target is no question at all.
        if src == [0; 16] || src[0] == 0xff || target[0] == 0xff {
            return None;
        }
        // Sent to the target's solicited-node group, or to the target itself (a
        // reachability check).
        if !(dst == target || is_solicited_node_of(&dst, &target)) {
            return None;
        }
        if !nd_checksum_valid(&*covered) {
            return None;
        }
        Some(Solicitation {
            eth,
            ip,
            nd,
            covered,
            target,
        })
    }
}

/// What a neighbour discovery message from the wire says somebody uses: an address, with
/// a MAC, and the ICMPv6 type that said so.
pub struct Claim {
    pub addr: [u8; 16],
    pub mac: [u8; 6],
    pub icmp_type: u8,
}

/// The fixed part of a solicitation or advertisement: type, code, checksum, flags or
/// reserved, target.
const ND_HEAD_LEN: usize = 24;
const CLAIM_MIN_LEN: usize = ETH_HLEN + core::mem::size_of::<Ipv6Hdr>() + ND_HEAD_LEN;

/// The claim the frame makes, if it is a neighbour solicitation or advertisement as RFC 4861
/// 7.1 has hosts accept them (no extension headers, hop limit 255, code 0, and a right
/// checksum when the message has the usual 32 bytes): an advertisement claims its target
/// (unless it says Solicited to a multicast group), a solicitation from an address that
/// address. The MAC is the one the message's first option names (the target's link-layer
/// address of an advertisement, the source's of a solicitation) or else the frame's sender.
/// Duplicate address detection (a solicitation from ::) claims nothing, as an ARP probe
/// does not: the prober does not have the address yet, and flatbridge's own probes, seen by
/// the other nodes, would otherwise keep every probed address "in use". Link-local,
/// multicast and unspecified addresses claim nothing (no pod is given one). Makes the frame
/// readable (which may move it), only for ICMPv6.
#[inline(always)]
pub fn claim(ctx: &TcContext) -> Option<Claim> {
    let len = ctx.len() as usize;
    if len < CLAIM_MIN_LEN {
        return None;
    }
    // Multicast that is not ICMPv6 (mDNS, streams) is not pulled when its IPv6 header is in
    // the linear part already (the usual case).
    if let Some(ip) = header::<Ipv6Hdr>(ctx, ETH_HLEN)
        // SAFETY: bounds-checked by `header`.
        && unsafe { (*ip).next_header } != IPPROTO_ICMPV6
    {
        return None;
    }
    let with_option = len >= FRAME_LEN;
    let want = if with_option { FRAME_LEN } else { CLAIM_MIN_LEN };
    if readable(ctx, want).is_err() {
        return None;
    }
    let eth: *mut EthHdr = header(ctx, 0)?;
    let ip: *mut Ipv6Hdr = header(ctx, ETH_HLEN)?;
    let nd: *mut [u8; ND_HEAD_LEN] = header(ctx, ETH_HLEN + core::mem::size_of::<Ipv6Hdr>())?;
    // SAFETY: every header was bounds-checked above.
    unsafe {
        let (ip_ref, nd_ref) = (&*ip, &*nd);
        let payload_len = usize::from(u16::from_be_bytes(ip_ref.payload_len));
        if (*eth).proto != ETH_P_IPV6.to_be()
            || ip_ref.version_class_flow[0] >> 4 != 6
            || ip_ref.next_header != IPPROTO_ICMPV6
            || ip_ref.hop_limit != 255
            || payload_len < ND_HEAD_LEN
            || nd_ref[1] != 0
        {
            return None;
        }
        let mut target = [0u8; 16];
        target.copy_from_slice(&nd_ref[8..24]);
        let (src, dst) = (ip_ref.src, ip_ref.dst);
        let icmp_type = nd_ref[0];
        let (addr, option) = match icmp_type {
            ICMPV6_NEIGHBOR_ADVERT if dst[0] == 0xff && nd_ref[4] & NA_SOLICITED != 0 => return None,
            ICMPV6_NEIGHBOR_ADVERT => (target, ND_OPT_TARGET_LLADDR),
            ICMPV6_NEIGHBOR_SOLICIT if src != [0; 16] => (src, ND_OPT_SOURCE_LLADDR),
            _ => return None,
        };
        let link_local = addr[0] == 0xfe && addr[1] & 0xc0 == 0x80;
        if addr[0] == 0xff || addr == [0; 16] || link_local {
            return None;
        }
        let mut mac = (*eth).src;
        // A multicast sender is no host (nor is a multicast link-layer option, below).
        if mac[0] & 1 == 1 {
            return None;
        }
        if with_option
            && payload_len >= ND_HEAD_LEN + 8
            && let Some(first) = header::<[u8; 8]>(ctx, CLAIM_MIN_LEN)
        {
            let first = &*first;
            if first[0] == option && first[1] == 1 {
                mac.copy_from_slice(&first[2..8]);
            }
        }
        // Only a frame that is exactly the message (a refusal of messages longer than the
        // frame, added beside checking any length, let 5.10 record a bad checksum's claim;
        // checking any length alone passed there: the next step, see issue 21's note).
        if payload_len == ND_MESSAGE_LEN as usize
            && len == FRAME_LEN
            && let Some(covered) = header::<[u8; 64]>(ctx, ADDRESSES)
            && !nd_checksum_valid(&*covered)
        {
            return None;
        }
        if mac[0] & 1 == 1 {
            return None;
        }
        Some(Claim { addr, mac, icmp_type })
    }
}

/// The source MAC of the frame when it is a neighbour advertisement in the form the plugin
/// sends (ndp.rs of the plugin): Ethernet, IPv6, a 32-byte advertisement.
#[inline(always)]
pub fn advertisement_sender(ctx: &TcContext) -> Option<[u8; 6]> {
    if ctx.len() as usize != FRAME_LEN {
        return None;
    }
    let eth: *mut EthHdr = header(ctx, 0)?;
    let ip: *mut Ipv6Hdr = header(ctx, ETH_HLEN)?;
    let nd: *mut NdMessage = header(ctx, ETH_HLEN + core::mem::size_of::<Ipv6Hdr>())?;
    // SAFETY: every header was bounds-checked above.
    unsafe {
        ((*eth).proto == ETH_P_IPV6.to_be()
            && (*ip).next_header == IPPROTO_ICMPV6
            && (*nd).icmp_type == ICMPV6_NEIGHBOR_ADVERT)
            .then_some((*eth).src)
    }
}

/// Turns the solicitation into the advertisement "the target is at `answer`" (Solicited and
/// Override, and Router when `router`), to the asker only, and sends it back out of the
/// device it arrived on (`ifindex`).
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    asked: &Solicitation,
    answer: &[u8; 6],
    router: bool,
    ifindex: u32,
    verdict: Verdict,
) -> Result<i32, Verdict> {
    let flags = NA_SOLICITED | NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    // SAFETY: `solicitation` bounds-checked every header, and nothing moved the frame
    // since; the program may write it.
    unsafe {
        let (eth, ip, nd) = (&mut *asked.eth, &mut *asked.ip, &mut *asked.nd);
        eth.dst = eth.src;
        eth.src = *answer;
        ip.version_class_flow = [0x60, 0, 0, 0];
        ip.dst = ip.src;
        ip.src = asked.target;
        nd.icmp_type = ICMPV6_NEIGHBOR_ADVERT;
        nd.code = 0;
        nd.checksum = [0; 2];
        nd.flags = [flags, 0, 0, 0];
        nd.option_type = ND_OPT_TARGET_LLADDR;
        nd.option_len = 1;
        nd.option_mac = *answer;
        nd.checksum = nd_checksum(&*asked.covered);
    }
    redirect::to_device(ctx, ifindex, verdict)
}
