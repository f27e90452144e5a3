//! ARP on the wire, over an AF_PACKET socket on the node's bridge: RFC 5227 probes, to find
//! out whether someone already uses an address before it is handed out, and gratuitous ARP
//! for a new pod, so that neighbours and switches that knew a previous owner of its address
//! learn the new MAC at once. Knows nothing of CNI.
//!
//! Sent from the bridge device, frames reach every port, the uplink included, whatever
//! state the new pod's port is in (the bridge enables a port only once the kernel's link
//! watcher saw its carrier, a few milliseconds after the pod's link came up: the pod's own
//! announcement at that moment is dropped).
use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
/// What a probe reads of a frame: Ethernet, IPv6 and a neighbour discovery message with
/// one option.
const RECEIVED_LEN: usize = 14 + 40 + 32;
pub const ARP_FRAME_LEN: usize = 42;

/// An Ethernet frame carrying ARP for IPv4.
fn arp_frame(
    dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&sha);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    frame[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 0]);
    frame[20..22].copy_from_slice(&op.to_be_bytes());
    frame[22..28].copy_from_slice(&sha);
    frame[28..32].copy_from_slice(&spa.octets());
    frame[32..38].copy_from_slice(&tha);
    frame[38..42].copy_from_slice(&tpa.octets());
    frame
}

/// An RFC 5227 probe for `ip` from `own_mac`: who has `ip`, asked with sender address
/// 0.0.0.0, broadcast.
pub fn probe_frame(own_mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame([0xff; 6], 1, own_mac, Ipv4Addr::UNSPECIFIED, [0; 6], ip)
}

/// RFC 5227's ARP Announcement that `ip` is at `mac`: a broadcast request whose sender and
/// target are both `ip`, sent as if `mac` had sent it.
pub fn announcement_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    arp_frame([0xff; 6], 1, mac, ip, [0; 6], ip)
}

/// A raw packet socket bound to one device, receiving ARP (or IPv6, see
/// [`ArpSocket::open_ipv6`]).
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
    own_mac: [u8; 6],
    protocol: u16,
}

impl ArpSocket {
    /// Opens a socket on device `ifindex` (in the calling thread's namespace), whose own
    /// MAC is `own_mac`.
    pub fn open(ifindex: u32, own_mac: [u8; 6]) -> io::Result<Self> {
        Self::open_for(ifindex, own_mac, ETH_P_ARP)
    }

    /// As [`ArpSocket::open`], receiving IPv6 (for duplicate address detection's answers).
    pub fn open_ipv6(ifindex: u32, own_mac: [u8; 6]) -> io::Result<Self> {
        Self::open_for(ifindex, own_mac, ETH_P_IPV6)
    }

    fn open_for(ifindex: u32, own_mac: [u8; 6], protocol: u16) -> io::Result<Self> {
        // Created with protocol 0 and given its protocol at bind: a socket that already
        // receives must be unhooked to be rebound, which waits for an RCU grace period.
        // SAFETY: plain syscalls; the returned descriptor is owned right away.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let socket = Self {
            fd,
            ifindex,
            own_mac,
            protocol,
        };
        if protocol == ETH_P_IPV6 {
            socket.only_neighbour_discovery()?;
        }
        let address = socket.address([0; 6]);
        // SAFETY: `address` is a valid sockaddr_ll of the given size.
        let bound = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Lets only neighbour solicitations and advertisements (ICMPv6 right after the IPv6
    /// header, hop limit 255) reach the socket, before it receives anything: the bridge's
    /// other IPv6 traffic would fill its buffer while a probe waits.
    fn only_neighbour_discovery(&self) -> io::Result<()> {
        let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        const LD_H: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
        const LD_B: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
        const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET: u16 = 0x06; // BPF_RET | BPF_K
        let mut program = [
            op(LD_H, 0, 0, 12),
            op(JEQ, 0, 7, u32::from(ETH_P_IPV6)),
            op(LD_B, 0, 0, 20),
            op(JEQ, 0, 5, 58),
            op(LD_B, 0, 0, 21),
            op(JEQ, 0, 3, 255),
            op(LD_B, 0, 0, 54),
            op(JEQ, 2, 0, 136),
            op(JEQ, 1, 0, 135),
            op(RET, 0, 0, 0),
            op(RET, 0, 0, 0xffff),
        ];
        let filter = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `filter` points at `program`, alive for the call.
        let attached = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const filter).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if attached < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn address(&self, dst: [u8; 6]) -> libc::sockaddr_ll {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = self.protocol.to_be();
        address.sll_ifindex = self.ifindex as i32;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&dst);
        address
    }

    /// Sends `frame`, a whole Ethernet frame (one of [`probe_frame`] and
    /// [`announcement_frame`], or an IPv6 neighbour discovery message), out of the device;
    /// the kernel takes its protocol from the frame's ethertype.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an Ethernet frame",
            ));
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        let mut address = self.address(dst);
        address.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        // SAFETY: the buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits up to `timeout` for a frame; `None` on timeout.
    fn receive(&self, timeout: Duration) -> io::Result<Option<[u8; RECEIVED_LEN]>> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut buffer = [0u8; RECEIVED_LEN];
        // SAFETY: the buffer is valid for its length.
        let read = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if read < 0 {
            let error = io::Error::last_os_error();
            // A spurious wakeup: let the caller look at the clock and wait again.
            return if error.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(error)
            };
        }
        Ok(Some(buffer))
    }
}

impl ArpSocket {
    /// Announces that `ip` is at `mac` (RFC 5227's ARP Announcement: a broadcast request
    /// whose sender and target are both `ip`), twice, as if the pod had sent it.
    pub fn announce(&self, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
        let frame = announcement_frame(mac, ip);
        self.send(&frame)?;
        self.send(&frame)
    }

    /// One RFC 5227 probe for `ip`, waiting for no answer (the uplink program remembers
    /// answers).
    pub fn send_probe(&self, ip: Ipv4Addr) -> io::Result<()> {
        self.send(&probe_frame(self.own_mac, ip))
    }

    /// A probe for `ip` that waits: sends `frame` (RFC 5227's ARP probe, or duplicate
    /// address detection's solicitation from ::) twice within `wait`. Returns the MAC of
    /// whoever claims `ip` meanwhile, or `None` when nobody does in time. The socket must
    /// receive `ip`'s family.
    pub fn probe(&self, frame: &[u8], ip: IpAddr, wait: Duration) -> io::Result<Option<[u8; 6]>> {
        let started = Instant::now();
        let mut probes_sent = 0;
        loop {
            let elapsed = started.elapsed();
            if probes_sent < 2 && elapsed >= wait / 2 * probes_sent {
                self.send(frame)?;
                probes_sent += 1;
            }
            if elapsed >= wait {
                return Ok(None);
            }
            let next_probe = if probes_sent < 2 { wait / 2 } else { wait };
            let Some(reply) = self.receive(next_probe.saturating_sub(elapsed))? else {
                continue;
            };
            if let Some(mac) = claimed_by(&reply, ip)
                && mac != self.own_mac
            {
                return Ok(Some(mac));
            }
        }
    }
}

/// Who `frame` says uses `ip`, if it does. IPv4: any ARP packet whose sender is `ip` (a
/// reply, or another prober's announcement; probes have sender 0.0.0.0). IPv6: as the
/// uplink program's claims (ebpf/src/ndp.rs): a neighbour advertisement for `ip` (not one
/// that says Solicited to a group), or a solicitation from `ip`, by the MAC of the
/// message's first option when it is the link-layer address, else the frame's sender;
/// duplicate address detection (from ::) claims nothing.
fn claimed_by(frame: &[u8; RECEIVED_LEN], ip: IpAddr) -> Option<[u8; 6]> {
    let mut sender = [0u8; 6];
    match ip {
        IpAddr::V4(ip) => {
            let sender_ip = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
            sender.copy_from_slice(&frame[22..28]);
            (frame[12..14] == ETH_P_ARP.to_be_bytes() && sender_ip == ip).then_some(sender)
        }
        IpAddr::V6(ip) => {
            sender.copy_from_slice(&frame[6..12]);
            let is_nd = frame[12..14] == ETH_P_IPV6.to_be_bytes()
                && frame[20] == 58
                && frame[21] == 255
                && frame[55] == 0;
            let (src, dst, target) = (&frame[22..38], &frame[38..54], &frame[62..78]);
            let (claimed, option) = match frame[54] {
                136 if dst[0] == 0xff && frame[58] & 0x40 != 0 => return None,
                136 => (target, 2),
                135 => (src, 1),
                _ => return None,
            };
            if !is_nd || claimed != ip.octets() || sender[0] & 1 == 1 {
                return None;
            }
            let payload_len = u16::from_be_bytes([frame[18], frame[19]]);
            if payload_len >= 32 && frame[78] == option && frame[79] == 1 {
                sender.copy_from_slice(&frame[80..86]);
            }
            let mut covered = [0u8; 64];
            covered.copy_from_slice(&frame[22..86]);
            if sender[0] & 1 == 1
                || (payload_len == 32 && !flatbridge_common::nd::nd_checksum_valid(&covered))
            {
                return None;
            }
            Some(sender)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_claims_of_its_address_only() {
        let mac = [2, 0, 0, 0, 0, 9];
        let v4 = Ipv4Addr::new(10, 10, 1, 7);
        let mut reply = [0u8; RECEIVED_LEN];
        reply[..ARP_FRAME_LEN].copy_from_slice(&arp_frame(mac, 2, mac, v4, [0; 6], v4));
        assert_eq!(claimed_by(&reply, IpAddr::V4(v4)), Some(mac));
        assert_eq!(claimed_by(&reply, "10.10.1.8".parse().expect("ip")), None);
        let probe = probe_frame(mac, v4);
        reply[..ARP_FRAME_LEN].copy_from_slice(&probe);
        assert_eq!(claimed_by(&reply, IpAddr::V4(v4)), None, "a probe claims nothing");

        let v6: std::net::Ipv6Addr = "fd10:10::1:7".parse().expect("ip");
        let advertisement = crate::ndp::unsolicited_advertisement(mac, v6);
        let mut frame = [0u8; RECEIVED_LEN];
        frame.copy_from_slice(&advertisement[..RECEIVED_LEN]);
        assert_eq!(claimed_by(&frame, IpAddr::V6(v6)), Some(mac));
        assert_eq!(claimed_by(&frame, "fd10:10::1:8".parse().expect("ip")), None);
        let mut routed = frame;
        routed[21] = 64;
        assert_eq!(claimed_by(&routed, IpAddr::V6(v6)), None, "hop limit not 255");
        let mut solicited = frame;
        solicited[58] |= 0x40;
        assert_eq!(
            claimed_by(&solicited, IpAddr::V6(v6)),
            None,
            "Solicited, to all nodes"
        );
        // By the MAC its option names, not the frame's sender.
        let mut relayed = frame;
        relayed[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        assert_eq!(claimed_by(&relayed, IpAddr::V6(v6)), Some(mac));
        let detection = crate::ndp::dad_solicitation(mac, v6);
        frame.copy_from_slice(&detection[..RECEIVED_LEN]);
        assert_eq!(
            claimed_by(&frame, IpAddr::V6(v6)),
            None,
            "duplicate address detection claims nothing"
        );
    }

    #[test]
    fn frames_follow_rfc_826_and_5227() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(10, 10, 1, 7);
        let probe = arp_frame([0xff; 6], 1, mac, Ipv4Addr::UNSPECIFIED, [0; 6], ip);
        assert_eq!(&probe[12..22], &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&probe[22..28], &mac);
        assert_eq!(
            &probe[28..32],
            &[0, 0, 0, 0],
            "a probe's sender address is 0.0.0.0"
        );
        assert_eq!(&probe[38..42], &[10, 10, 1, 7]);
        let announcement = arp_frame([0xff; 6], 1, mac, ip, [0; 6], ip);
        assert_eq!(
            &announcement[28..32],
            &announcement[38..42],
            "an announcement names itself twice"
        );
    }
}
