//! Answering an ARP request in place: the request becomes the reply and leaves by the
//! device it came in on, so the broadcast never reaches the bridge.
use aya_ebpf::programs::TcContext;
use flatbridge_common::Verdict;

use crate::{
    parse::{ARPOP_REPLY, ARPOP_REQUEST, ArpIpv4, ETH_HLEN, ETH_P_IP, EthHdr, header},
    redirect,
};

/// ARP for IPv4 over Ethernet at `ETH_HLEN`, a request or a reply, if the frame holds it.
#[inline(always)]
pub fn packet(ctx: &TcContext) -> Option<*mut ArpIpv4> {
    let arp: *mut ArpIpv4 = header(ctx, ETH_HLEN)?;
    // SAFETY: `header` checked that the ARP header lies inside the frame.
    let arp_ref = unsafe { &*arp };
    if arp_ref.htype != 1u16.to_be()
        || arp_ref.ptype != ETH_P_IP.to_be()
        || arp_ref.hlen != 6
        || arp_ref.plen != 4
        || (arp_ref.op != ARPOP_REQUEST.to_be() && arp_ref.op != ARPOP_REPLY.to_be())
    {
        return None;
    }
    Some(arp)
}

/// The request for IPv4 over Ethernet at `ETH_HLEN`, if the frame holds one.
#[inline(always)]
pub fn request(ctx: &TcContext) -> Option<*mut ArpIpv4> {
    let arp = packet(ctx)?;
    // SAFETY: bounds-checked by `packet`.
    (unsafe { (*arp).op } == ARPOP_REQUEST.to_be()).then_some(arp)
}

/// Turns the request into the reply "`tpa` is at `answer`" and sends it back out of the
/// device it arrived on (`ifindex`).
#[inline(always)]
pub fn answer(
    ctx: &TcContext,
    eth: *mut EthHdr,
    arp: *mut ArpIpv4,
    answer: &[u8; 6],
    ifindex: u32,
    verdict: Verdict,
) -> Result<i32, Verdict> {
    // SAFETY: both headers were bounds-checked and the program may write the frame.
    unsafe {
        let asker_mac = (*arp).sha;
        let asker_ip = (*arp).spa;
        let wanted_ip = (*arp).tpa;
        (*eth).dst = asker_mac;
        (*eth).src = *answer;
        (*arp).op = ARPOP_REPLY.to_be();
        (*arp).tha = asker_mac;
        (*arp).tpa = asker_ip;
        (*arp).sha = *answer;
        (*arp).spa = wanted_ip;
    }
    redirect::to_device(ctx, ifindex, verdict)
}
