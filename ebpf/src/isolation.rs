//! What a pod may send onto the L2, checked on every frame it sends when anti-spoofing is on
//! (the default). On a flat network a pod's frames reach every host on the switch, so each
//! check fails closed: a frame that cannot be read far enough to be checked is dropped, not
//! passed. A pod sends only
//! - from its own port's endpoint (a port without one is not a pod yet, or not any more),
//! - untagged frames, with its own source MAC, of IPv4, ARP or IPv6,
//! - ARP with its own MAC and one of its own addresses (or 0.0.0.0, as a probe of one of
//!   its own addresses),
//! - IPv4 from its own addresses, IPv6 from its link-local or its leased addresses (or ::
//!   for ICMPv6, as DAD and MLD do) with a known upper-layer protocol,
//! - no router advertisements, redirects or DHCP server messages, from a server's port or
//!   to a client's (RA guard, RFC 6105; DHCP guard), no neighbour discovery on behalf of
//!   another address or MAC, and no fragmented neighbour discovery (RFC 6980).
//!
//! Every drop has its own verdict, counted by `counters::finish`.
use aya_ebpf::programs::TcContext;
use flatbridge_common::{
    Endpoint, Ipv4, Ipv6, Verdict, link_local,
    nd::{ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR},
};

use crate::{
    decide::{IPV6_AUTH, IPV6_FRAGMENT, is_dhcp_server_message, is_extension},
    maps::{PODS_BY_IP, PODS_BY_IPV6, PORTS},
    parse::{
        ArpIpv4, ETH_HLEN, ETH_P_IP, Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr,
        Ipv6Hdr, TcpHdr, UdpHdr, checked_header, frame, has_vlan_tag, is_vlan_ethertype, readable, same_mac,
    },
};

/// The IPv4 header without options; after the options, what the checks read (ICMP's type,
/// UDP's ports) and what flow tracking reads (the TCP header up to its flags). Asking a
/// frame for no more than that matters: a TCP segment's linear area ends with its TCP
/// header (54 to 66 bytes), and pulling more copies payload out of the pages of a cloned
/// skb on every segment (measured: an extra memcpy of 5.7 % of the CPU and 40 % of the
/// no-GSO throughput between two pods).
const IPV4_FIXED: usize = ETH_HLEN + 20;
const ICMP_REDIRECT: u8 = 5;
const ICMPV6_ROUTER_SOLICIT: u8 = 133;
const ICMPV6_ROUTER_ADVERT: u8 = 134;
const ICMPV6_REDIRECT: u8 = 137;
const ICMPV6_ROUTER_RENUMBERING: u8 = 138;
/// IPv6 extension headers followed to find the upper-layer header; a chain longer than
/// this is dropped (RFC 7112 wants the whole chain in the first fragment, RFC 7113 says an
/// RA guard must not be evaded by one).
const MAX_EXTENSION_HEADERS: usize = 4;
/// Neighbour discovery options looked at; a message with more is dropped.
const MAX_ND_OPTIONS: usize = 4;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_NONE: u8 = 59;
const IPPROTO_SCTP: u8 = 132;

/// The frame and the endpoint of the port it came in on, when the frame may be looked at
/// further: the port is a pod's, the frame untagged and from the pod's own MAC.
#[inline(always)]
pub fn checked_frame(ctx: &TcContext, port_ifindex: u32) -> Result<(Frame, Endpoint), Verdict> {
    // SAFETY: the value is copied out of the map; the plugin writes entries whole.
    let pod = unsafe { PORTS.get(port_ifindex) }
        .copied()
        .ok_or(Verdict::DropUnknownPort)?;
    if has_vlan_tag(ctx) {
        return Err(Verdict::DropVlanTagged);
    }
    readable(ctx, ETH_HLEN)?;
    let frame = frame(ctx).ok_or(Verdict::DropMalformed)?;
    if is_vlan_ethertype(frame.proto) {
        return Err(Verdict::DropVlanTagged);
    }
    if !same_mac(&frame.src, &pod.mac) {
        return Err(Verdict::DropSpoofedMac);
    }
    Ok((frame, pod))
}

/// An ARP packet must be IPv4 over Ethernet, carry the pod's own MAC and one of its own
/// addresses, or 0.0.0.0 as a probe (RFC 5227) of one of its own: a probe for another's
/// address tells its owner the address is in use elsewhere.
#[inline(always)]
pub fn arp(ctx: &TcContext, pod: &Endpoint, port_ifindex: u32) -> Result<(), Verdict> {
    readable(ctx, ETH_HLEN + core::mem::size_of::<ArpIpv4>())?;
    let arp: *mut ArpIpv4 = checked_header(ctx, ETH_HLEN)?;
    // SAFETY: bounds-checked by `checked_header`.
    let (htype, ptype, hlen, plen, sha, spa, tpa) = unsafe {
        (
            (*arp).htype,
            (*arp).ptype,
            (*arp).hlen,
            (*arp).plen,
            (*arp).sha,
            (*arp).spa,
            (*arp).tpa,
        )
    };
    if htype != 1u16.to_be() || ptype != ETH_P_IP.to_be() || hlen != 6 || plen != 4 {
        return Err(Verdict::DropMalformed);
    }
    let speaks_for = if spa == [0; 4] { tpa } else { spa };
    if !same_mac(&sha, &pod.mac) || !owns_ipv4(pod, port_ifindex, speaks_for) {
        return Err(Verdict::DropSpoofedArp);
    }
    Ok(())
}

/// IPv4 from one of the pod's addresses, and neither an ICMP redirect nor a DHCP server's
/// message (from the server port, or to the client port from any).
#[inline(always)]
pub fn ipv4(ctx: &TcContext, pod: &Endpoint, port_ifindex: u32) -> Result<(), Verdict> {
    readable(ctx, IPV4_FIXED)?;
    let ip: *mut Ipv4Hdr = checked_header(ctx, ETH_HLEN)?;
    // SAFETY: bounds-checked by `checked_header`.
    let (version_ihl, frag_off, protocol, src) =
        unsafe { ((*ip).version_ihl, (*ip).frag_off, (*ip).protocol, (*ip).src) };
    if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
        return Err(Verdict::DropMalformed);
    }
    if !owns_ipv4(pod, port_ifindex, src) {
        return Err(Verdict::DropSpoofedIp);
    }
    // A later fragment has no transport header; the first one had it checked.
    if u16::from_be(frag_off) & 0x1fff != 0 {
        return Ok(());
    }
    let l4 = ETH_HLEN + usize::from(version_ihl & 0x0f) * 4;
    match protocol {
        // Nothing to check; readable for flow tracking.
        IPPROTO_TCP => readable(ctx, l4 + core::mem::size_of::<TcpHdr>())?,
        IPPROTO_ICMP => {
            readable(ctx, l4 + 4)?;
            // Type, code and checksum: a one-byte read would be compiled into a bounds
            // check the verifier cannot follow.
            let icmp: *mut [u8; 4] = checked_header(ctx, l4)?;
            // SAFETY: bounds-checked by `checked_header`.
            if unsafe { (*icmp)[0] } == ICMP_REDIRECT {
                return Err(Verdict::DropIcmpRedirect);
            }
        }
        IPPROTO_UDP => {
            readable(ctx, l4 + core::mem::size_of::<UdpHdr>())?;
            let ports: *mut [u8; 4] = checked_header(ctx, l4)?;
            // SAFETY: bounds-checked by `checked_header`.
            let ports = unsafe { *ports };
            if is_dhcp_server_message(ports, false) {
                return Err(Verdict::DropDhcpServer);
            }
        }
        _ => {}
    }
    Ok(())
}

/// IPv6 from the pod's link-local or leased addresses; no router messages, no DHCPv6
/// server messages, and neighbour discovery only for the pod's own addresses and MAC.
#[inline(always)]
pub fn ipv6(ctx: &TcContext, pod: &Endpoint, port_ifindex: u32) -> Result<(), Verdict> {
    let fixed = ETH_HLEN + core::mem::size_of::<Ipv6Hdr>();
    readable(ctx, fixed + 8)?;
    let ip: *mut Ipv6Hdr = checked_header(ctx, ETH_HLEN)?;
    // SAFETY: bounds-checked by `checked_header`.
    let (version, src, first_next) =
        unsafe { ((*ip).version_class_flow[0] >> 4, (*ip).src, (*ip).next_header) };
    if version != 6 {
        return Err(Verdict::DropMalformed);
    }
    // Walk the extension headers to the upper-layer one.
    let mut next = first_next;
    let mut offset = fixed;
    let mut later_fragment = false;
    let mut fragmented = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        if !is_extension(next) {
            break;
        }
        readable(ctx, offset + 8)?;
        let ext: *mut [u8; 8] = checked_header(ctx, offset)?;
        // SAFETY: bounds-checked by `checked_header`.
        let ext = unsafe { *ext };
        let this = next;
        next = ext[0];
        if this == IPV6_FRAGMENT {
            // Eight bytes, whatever its second byte says; a fragment after the first has
            // no upper-layer header.
            offset += 8;
            fragmented = true;
            if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                later_fragment = true;
                break;
            }
        } else if this == IPV6_AUTH {
            offset += (usize::from(ext[1]) + 2) * 4;
        } else {
            offset += (usize::from(ext[1]) + 1) * 8;
        }
    }
    let unspecified = src == [0; 16];
    if !(unspecified || owns_ipv6(pod, port_ifindex, &src)) {
        return Err(Verdict::DropSpoofedIpv6);
    }
    if later_fragment {
        // No upper-layer header here: the first fragment carried it and was checked.
        return if unspecified {
            Err(Verdict::DropSpoofedIpv6)
        } else {
            Ok(())
        };
    }
    if is_extension(next) {
        return Err(Verdict::DropMalformed);
    }
    match next {
        IPPROTO_ICMPV6 => icmpv6(ctx, pod, port_ifindex, offset, unspecified, fragmented),
        // :: is a source only neighbour discovery and MLD use.
        _ if unspecified => Err(Verdict::DropSpoofedIpv6),
        IPPROTO_UDP => {
            readable(ctx, offset + 4)?;
            let ports: *mut [u8; 4] = checked_header(ctx, offset)?;
            // SAFETY: bounds-checked by `checked_header`.
            let ports = unsafe { *ports };
            if is_dhcp_server_message(ports, true) {
                return Err(Verdict::DropDhcpServer);
            }
            Ok(())
        }
        // Nothing to check; readable for flow tracking.
        IPPROTO_TCP => readable(ctx, offset + core::mem::size_of::<TcpHdr>()),
        IPPROTO_ESP | IPPROTO_NONE | IPPROTO_SCTP => Ok(()),
        // Any other next header: an extension header this walk does not follow (mobility,
        // HIP, shim6) would hide what comes after it (RFC 7113), and tunnels (IPIP, GRE)
        // are no pod's business on the L2. Counted as malformed.
        _ => Err(Verdict::DropMalformed),
    }
}

/// Router messages are never a pod's; neighbour discovery must be about the pod itself.
#[inline(always)]
fn icmpv6(
    ctx: &TcContext,
    pod: &Endpoint,
    port_ifindex: u32,
    offset: usize,
    unspecified: bool,
    fragmented: bool,
) -> Result<(), Verdict> {
    // Type, code, checksum, flags or reserved, and the target of NS/NA.
    let nd_len = 24;
    readable(ctx, offset + nd_len + MAX_ND_OPTIONS * 8)?;
    let head: *mut [u8; 4] = checked_header(ctx, offset)?;
    // SAFETY: bounds-checked by `checked_header`.
    let icmp_type = unsafe { (*head)[0] };
    // Neighbour discovery is never fragmented: a host ignores such a message (RFC 6980),
    // and a guard that cannot see all of it must not let it pass.
    match icmp_type {
        ICMPV6_ROUTER_ADVERT | ICMPV6_ROUTER_RENUMBERING => Err(Verdict::DropRouterAdvert),
        ICMPV6_REDIRECT => Err(Verdict::DropIcmpRedirect),
        _ if fragmented && (ICMPV6_ROUTER_SOLICIT..=ICMPV6_REDIRECT).contains(&icmp_type) => {
            Err(Verdict::DropMalformed)
        }
        ICMPV6_NEIGHBOR_SOLICIT | ICMPV6_NEIGHBOR_ADVERT => {
            let target: *mut [u8; 16] = checked_header(ctx, offset + 8)?;
            // SAFETY: bounds-checked by `checked_header`.
            let target = unsafe { *target };
            // A solicitation from an address asks about another host: fine. One from ::
            // is duplicate address detection, which only the address's owner may do (a
            // pod probing another's address makes it give the address up). An
            // advertisement speaks for its target: only for the pod's own.
            let speaks_for_target = icmp_type == ICMPV6_NEIGHBOR_ADVERT || unspecified;
            if speaks_for_target && !owns_ipv6(pod, port_ifindex, &target) {
                return Err(Verdict::DropSpoofedNd);
            }
            nd_options(ctx, pod, offset + nd_len)
        }
        // MLD, echo, errors, router solicitations.
        _ if unspecified && !(130..=143).contains(&icmp_type) => Err(Verdict::DropSpoofedIpv6),
        _ => Ok(()),
    }
}

/// Every link-layer address option of a neighbour discovery message names the pod's MAC.
/// Linux believes the first option of a type, so all of them up to the end of the message
/// are read; a message with more options than that is dropped.
#[inline(always)]
fn nd_options(ctx: &TcContext, pod: &Endpoint, start: usize) -> Result<(), Verdict> {
    let mut offset = start;
    for _ in 0..MAX_ND_OPTIONS {
        let Some(option) = crate::parse::header::<[u8; 8]>(ctx, offset) else {
            // Fewer than 8 bytes left: the end of the message (or a truncated option).
            return if offset >= ctx.len() as usize {
                Ok(())
            } else {
                Err(Verdict::DropMalformed)
            };
        };
        // SAFETY: bounds-checked by `header`.
        let option = unsafe { *option };
        let (kind, units) = (option[0], usize::from(option[1]));
        if units == 0 {
            return Err(Verdict::DropMalformed);
        }
        if (kind == ND_OPT_SOURCE_LLADDR || kind == ND_OPT_TARGET_LLADDR)
            && (units != 1
                || !same_mac(
                    &[option[2], option[3], option[4], option[5], option[6], option[7]],
                    &pod.mac,
                ))
        {
            return Err(Verdict::DropSpoofedNd);
        }
        offset += units * 8;
    }
    if offset >= ctx.len() as usize {
        Ok(())
    } else {
        Err(Verdict::DropMalformed)
    }
}

/// True when `ip` is one of the pod's IPv4 addresses: its first is in its endpoint, others
/// take a lookup.
#[inline(always)]
fn owns_ipv4(pod: &Endpoint, port_ifindex: u32, ip: [u8; 4]) -> bool {
    ip == pod.ipv4 || owns_ipv4_other(port_ifindex, ip)
}

/// True when `ip` is one of the addresses of the pod behind `port_ifindex`.
#[inline(always)]
pub fn owns_ipv4_other(port_ifindex: u32, ip: [u8; 4]) -> bool {
    // SAFETY: the value is read and not kept.
    unsafe { PODS_BY_IP.get(Ipv4 { addr: ip }) }.is_some_and(|pod| pod.ifindex == port_ifindex)
}

/// True when `ip` is the pod's link-local address or one IPAM leased to it.
#[inline(always)]
fn owns_ipv6(pod: &Endpoint, port_ifindex: u32, ip: &[u8; 16]) -> bool {
    if *ip == link_local(pod.mac) {
        return true;
    }
    // SAFETY: the value is read and not kept.
    pod.ipv6s != 0
        && unsafe { PODS_BY_IPV6.get(Ipv6 { addr: *ip }) }.is_some_and(|owner| owner.ifindex == port_ifindex)
}
