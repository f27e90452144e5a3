//! Bounds-checked access to the headers the programs read. Every access goes through
//! [`header`], which the verifier can follow: a pointer is handed out only when the whole
//! header lies before `data_end`.
use core::mem::size_of;

use aya_ebpf::programs::TcContext;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_HLEN: usize = size_of::<EthHdr>();
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;
/// skb->pkt_type for frames addressed to this host.
pub const PACKET_HOST: u32 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

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

/// Compares MACs byte by byte: the verifier refuses wide loads at odd stack offsets.
#[inline(always)]
pub fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

/// The ifindex of the device the frame arrived on (the device the program is attached to).
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` points at the context the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// True when the frame carries a VLAN tag outside its data (hardware-accelerated tag).
#[inline(always)]
fn has_vlan_tag(ctx: &TcContext) -> bool {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// The skb mark.
#[inline(always)]
pub fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).mark }
}
