//! Bounds-checked access to the headers the programs read. Every access goes through
//! [`header`], which the verifier can follow: a pointer is handed out only when the whole
//! header lies before `data_end`.
use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use flatbridge_common::Verdict;

pub use flatbridge_common::nd::IPPROTO_ICMPV6;

pub use crate::decide::{IPPROTO_TCP, same_mac};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the pre-standard QinQ tag: ethertypes of a tag left in the frame.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_QINQ1: u16 = 0x9100;
pub const ETH_HLEN: usize = size_of::<EthHdr>();
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;
/// skb->pkt_type for frames addressed to this host.
pub const PACKET_HOST: u32 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network order.
    pub proto: u16,
}

/// An ARP packet for IPv4 over Ethernet (RFC 826), all fields in network order.
#[repr(C)]
pub struct ArpIpv4 {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// Byte arrays only: an alignment of 1 spares the misaligned-pointer checks of a debug
/// build, which the verifier would refuse.
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first bytes of a TCP header: ports, sequence numbers, flags.
#[repr(C)]
pub struct TcpHdr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub data_offset: u8,
    pub flags: u8,
}

#[repr(C)]
pub struct UdpHdr {
    pub src_port: u16,
    pub dst_port: u16,
}

/// A pointer to the `T` at `offset` into the frame, when all of it is inside the frame.
#[inline(always)]
pub fn header<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Bytes the frame has in the skb's linear area, the only ones direct access reaches.
#[inline(always)]
fn linear(ctx: &TcContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Makes the first `len` bytes of the frame (all of it, when it is shorter) readable by
/// direct access. A frame built from pages (PACKET_TX_RING, vnet headers) may have only its
/// Ethernet header in the linear area; it is pulled in only then, so the frames of the
/// pods' own stacks (headers linear) pay nothing. Every packet pointer taken before this
/// call is invalid after it.
#[inline(always)]
pub fn readable(ctx: &TcContext, len: usize) -> Result<(), Verdict> {
    let whole = ctx.len() as usize;
    let want = if len < whole { len } else { whole };
    if linear(ctx) >= want {
        return Ok(());
    }
    if ctx.pull_data(want as u32).is_err() || linear(ctx) < want {
        return Err(Verdict::DropMalformed);
    }
    Ok(())
}

/// As [`header`], for the checks of a pod's frames: a header that is not in the frame
/// (truncated, or not readable) is a malformed frame.
#[inline(always)]
pub fn checked_header<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, Verdict> {
    header(ctx, offset).ok_or(Verdict::DropMalformed)
}

/// True for the ethertype of a VLAN tag left inside the frame.
#[inline(always)]
pub fn is_vlan_ethertype(proto: u16) -> bool {
    proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ1
}

/// An untagged Ethernet frame's header and its fields.
pub struct Frame {
    pub eth: *mut EthHdr,
    pub src: [u8; 6],
    pub dst: [u8; 6],
    /// Host order.
    pub proto: u16,
}

/// The Ethernet header, unless the frame is too short for one.
#[inline(always)]
pub fn frame(ctx: &TcContext) -> Option<Frame> {
    let eth: *mut EthHdr = header(ctx, 0)?;
    // SAFETY: `header` checked the Ethernet header lies inside the frame.
    let (src, dst, proto) = unsafe { ((*eth).src, (*eth).dst, u16::from_be((*eth).proto)) };
    Some(Frame { eth, src, dst, proto })
}

/// As [`frame`], and `None` too for a frame with a VLAN tag (which the ingress programs
/// leave to the bridge).
#[inline(always)]
pub fn ethernet(ctx: &TcContext) -> Option<Frame> {
    if has_vlan_tag(ctx) {
        return None;
    }
    frame(ctx)
}

/// True for group (broadcast and multicast) addresses.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// The ifindex of the device the frame arrived on (the device the program is attached to).
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` points at the context the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// True when the frame carries a VLAN tag outside its data: the kernel moves a tag sent
/// in-band into the skb (`skb_vlan_untag`) before tc ingress.
#[inline(always)]
pub fn has_vlan_tag(ctx: &TcContext) -> bool {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// The skb mark.
#[inline(always)]
pub fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).mark }
}
