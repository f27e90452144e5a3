//! The programs' decisions as plain functions of the values they read: no context, no maps,
//! no helpers, only `core` and the map ABI. The host's tests compile this very file
//! (tests/tests/ebpf_decisions.rs includes it) and check each decision directly; the
//! BPF_PROG_TEST_RUN and namespace tests check the programs that call them.
use flatbridge_common::{FlowConfirmed, FlowKey, FlowSeen};

pub const IPPROTO_TCP: u8 = 6;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DHCPV6_CLIENT_PORT: u16 = 546;
pub const DHCPV6_SERVER_PORT: u16 = 547;

pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DEST_OPTIONS: u8 = 60;
/// The authentication header, whose length counts 4-byte units less two (RFC 4302).
pub const IPV6_AUTH: u8 = 51;

/// How long the reverse direction's confirmation counts for pairing: as long as conntrack
/// keeps an idle UDP flow (30 s).
pub const PAIR_WINDOW_NS: u64 = 30_000_000_000;

/// Compares MACs byte by byte: the verifier refuses wide loads at odd stack offsets.
#[inline(always)]
pub fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

/// What the decisions need of a flow direction's key, IPv4 or IPv6.
pub use flatbridge_common::FlowDirection as Key;

/// A frame's flow direction and TCP flags (0 for UDP).
pub struct Flow<K = FlowKey> {
    pub key: K,
    pub tcp_flags: u8,
}

impl<K: Key> Flow<K> {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.key.protocol() == IPPROTO_TCP
    }

    /// A SYN: the flow starts (again).
    #[inline(always)]
    pub fn opens(&self) -> bool {
        self.is_tcp() && self.tcp_flags & TCP_SYN != 0
    }

    /// A FIN or RST: the flow ends, both directions.
    #[inline(always)]
    pub fn ends(&self) -> bool {
        self.is_tcp() && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }

    /// Only established traffic may be confirmed or offloaded: for TCP, ACK without SYN,
    /// FIN or RST (confirming the handshake would leave conntrack in SYN_RECV).
    #[inline(always)]
    pub fn is_steady(&self) -> bool {
        !self.is_tcp() || self.tcp_flags & (TCP_ACK | TCP_SYN | TCP_FIN | TCP_RST) == TCP_ACK
    }

    /// Whether the direction counts as closed after this frame, given what it was.
    #[inline(always)]
    pub fn closed_after(&self, previous_closed: u32) -> u32 {
        if self.opens() {
            0
        } else if self.ends() {
            1
        } else {
            previous_closed
        }
    }
}

/// Whether the confirmed way out `out` of a direction may take this very frame at `time`:
/// paired with its reverse, fresh within `revalidate_ns`, and the frame comes in where the
/// confirmed sender is, with the same MACs (another port, or the wire, sending the same
/// addresses goes through the bridge). Whether the way out is still there is the caller's.
#[inline(always)]
pub fn confirmation_holds(
    out: &FlowConfirmed,
    revalidate_ns: u64,
    in_ifindex: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
    time: u64,
) -> bool {
    out.paired != 0
        && time.wrapping_sub(out.confirmed_ns) <= revalidate_ns
        && out.in_ifindex == in_ifindex
        && same_mac(&out.src_mac, src_mac)
        && same_mac(&out.dst_mac, dst_mac)
}

/// True when `old` must be replaced by `new`: something changed, or it is old enough that
/// the egress check of recent sightings needs it refreshed. A function of its own, called
/// only with an entry that exists: merged into the caller, the compiler may read the
/// entry's fields on the path where there is none, which the verifier refuses.
#[inline(never)]
pub fn differs(old: &FlowSeen, new: &FlowSeen, refresh_ns: u64) -> bool {
    old.closed != new.closed
        || old.in_ifindex != new.in_ifindex
        || !same_mac(&old.src_mac, &new.src_mac)
        || !same_mac(&old.dst_mac, &new.dst_mac)
        || new.seen_ns.wrapping_sub(old.seen_ns) > refresh_ns
}

/// Whether egress may confirm the direction ingress saw as `seen`, now that the bridge
/// delivered a frame with these MACs to `out_ifindex` at `time`: open, delivered somewhere
/// else than where it came from, unchanged (no MAC rewritten on the way), and seen within
/// `revalidate_ns`.
#[inline(always)]
pub fn may_confirm(
    seen: &FlowSeen,
    out_ifindex: u32,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
    time: u64,
    revalidate_ns: u64,
) -> bool {
    seen.closed == 0
        && seen.in_ifindex != out_ifindex
        && same_mac(&seen.src_mac, src_mac)
        && same_mac(&seen.dst_mac, dst_mac)
        && time.wrapping_sub(seen.seen_ns) <= revalidate_ns
}

/// True when the confirmation `old` already says what `new` would, and is younger than
/// `refresh_ns`: writing it again would change nothing the ingress check reads but the time.
/// Pairing is not compared: the reverse direction's own confirmation pairs both. Called only
/// with an entry that exists (see `differs`).
#[inline(never)]
pub fn still_confirmed(old: &FlowConfirmed, new: &FlowConfirmed, refresh_ns: u64) -> bool {
    old.out_ifindex == new.out_ifindex
        && old.out_kind == new.out_kind
        && old.in_ifindex == new.in_ifindex
        && same_mac(&old.src_mac, &new.src_mac)
        && same_mac(&old.dst_mac, &new.dst_mac)
        && new.confirmed_ns.wrapping_sub(old.confirmed_ns) <= refresh_ns
}

/// True when the reverse direction mirrors this one: delivered to the port this one comes
/// from, sent from the port this one was delivered to, open, and confirmed recently. A
/// function of its own, called only when both entries exist (see `differs`).
#[inline(never)]
pub fn mirrors(
    back: &FlowConfirmed,
    back_seen: &FlowSeen,
    seen: &FlowSeen,
    out_ifindex: u32,
    time: u64,
) -> bool {
    back.out_ifindex == seen.in_ifindex
        && back_seen.in_ifindex == out_ifindex
        && back_seen.closed == 0
        && time.wrapping_sub(back.confirmed_ns) <= PAIR_WINDOW_NS
}

/// A DHCP (IPv4) or DHCPv6 server's message, told by its UDP ports (network order bytes
/// `ports`: source then destination): from a server's port, or to a client's. A pod is
/// never a DHCP server on the L2 (DHCP guard).
#[inline(always)]
pub fn is_dhcp_server_message(ports: [u8; 4], ipv6: bool) -> bool {
    let (server, client) = if ipv6 {
        (DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT)
    } else {
        (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)
    };
    u16::from_be_bytes([ports[0], ports[1]]) == server || u16::from_be_bytes([ports[2], ports[3]]) == client
}

/// The IPv6 extension headers the walk follows to the upper-layer header.
#[inline(always)]
pub fn is_extension(next: u8) -> bool {
    next == IPV6_HOP_BY_HOP
        || next == IPV6_ROUTING
        || next == IPV6_FRAGMENT
        || next == IPV6_DEST_OPTIONS
        || next == IPV6_AUTH
}

/// The solicited-node multicast group of `target` (ff02::1:ffXX:XXXX, RFC 4291 2.7.1) is
/// `group`.
#[inline(always)]
pub fn is_solicited_node_of(group: &[u8; 16], target: &[u8; 16]) -> bool {
    let mut zero = true;
    let mut i = 2;
    while i < 11 {
        zero &= group[i] == 0;
        i += 1;
    }
    zero && group[0] == 0xff
        && group[1] == 0x02
        && group[11] == 1
        && group[12] == 0xff
        && group[13] == target[13]
        && group[14] == target[14]
        && group[15] == target[15]
}
