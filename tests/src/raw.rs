//! A hostile pod's raw sockets: AF_PACKET sockets, opened inside a namespace, that write
//! any frame onto an interface the three ways the kernel builds an skb from user memory,
//! and a capture of what arrives on the other end, as it was on the wire.
use std::{
    ffi::{CString, c_int},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{Netns, frames};

/// `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), which libc does not define:
/// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
const VIRTIO_NET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const ETH_HLEN: u16 = 14;
const ETH_P_8021Q: u16 = 0x8100;
/// Longer than any frame a veth carries (its MTU stops at 64 KiB), plus room for the tag
/// the capture puts back.
const CAPTURE_BUFFER: usize = 65536 + 4;

/// How `send_frame` hands a frame to the kernel, which decides how much of it lands in the
/// linear part of the skb: what a tc program can read between `data` and `data_end`
/// before it pulls. Seen on veth with the net_dev_start_xmit tracepoint (Linux 6.18):
/// 142-byte frame: Plain 142 linear, TxRing 14, VnetHdr 142; 5042-byte frame: 14 for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// sendto() on a SOCK_RAW packet socket: one linear buffer for a frame that fits a page
    /// with the headroom; a longer one keeps only the Ethernet header linear.
    Plain,
    /// A TPACKET_V2 TX ring: only the device's hard header (14 bytes on veth) is copied,
    /// whatever the length; the rest stays in the ring's pages as page fragments.
    TxRing,
    /// sendto() after a virtio_net_hdr (PACKET_VNET_HDR, no offload) with hdr_len 14, as a
    /// VM's vhost-net backend writes: the kernel keeps max(hdr_len, 14) bytes linear only
    /// where `Plain` would too, so today the skb is the same as `Plain`'s; it differs once
    /// offloads (GSO, checksum) are asked for.
    VnetHdr,
}

/// Writes `frame` onto `ifname` in `netns` from a packet socket created there, `how` says
/// how. The socket is bound with protocol 0, so it receives nothing. Waits first until the
/// device can transmit: a test that expects a frame to be stopped must not pass because
/// the kernel dropped it before the datapath saw it.
pub fn send_frame(netns: &Netns, ifname: &str, frame: &[u8], how: Sender) -> io::Result<()> {
    wait_until_transmitting(netns, ifname)?;
    let ifname = ifname.to_owned();
    let frame = frame.to_vec();
    netns.within(move || {
        let ifindex = ifindex(&ifname)?;
        let socket = packet_socket()?;
        match how {
            Sender::Plain => {
                bind(&socket, ifindex, 0)?;
                send_to(&socket, ifindex, &frame, frame.len())
            }
            Sender::TxRing => send_from_tx_ring(&socket, ifindex, &frame),
            Sender::VnetHdr => {
                set_option(&socket, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1 as &c_int)?;
                bind(&socket, ifindex, 0)?;
                let mut message = virtio_net_hdr(ETH_HLEN).to_vec();
                message.extend_from_slice(&frame);
                // The kernel counts the virtio_net_hdr among the bytes sent.
                send_to(&socket, ifindex, &message, message.len())
            }
        }
    })
}

/// Waits up to 3 s until `ifname` has its carrier and a real queue. Until the kernel's
/// link watcher has seen the carrier (usually milliseconds after the link came up, longer
/// when RTNL is busy) the device keeps the noop qdisc, which drops every frame while
/// sendto() reports success.
fn wait_until_transmitting(netns: &Netns, ifname: &str) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // `ip` takes RTNL, so it never sees the carrier without the queue the watcher sets.
        let link = netns.run(&["ip", "-o", "link", "show", "dev", ifname]);
        let link = String::from_utf8_lossy(&link.stdout);
        if link.contains("LOWER_UP") && !link.contains("qdisc noop") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{ifname} in {} cannot transmit: {}", netns.name(), link.trim()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A virtio_net_hdr asking for no offload (no GSO, no checksum) and `hdr_len` linear bytes.
fn virtio_net_hdr(hdr_len: u16) -> [u8; VIRTIO_NET_HDR_LEN] {
    let mut header = [0u8; VIRTIO_NET_HDR_LEN];
    header[1] = VIRTIO_NET_HDR_GSO_NONE;
    // A packet socket reads the header in the legacy virtio byte order: the host's.
    header[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
    header
}

/// The index of `ifname` in the calling thread's namespace.
fn ifindex(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// A SOCK_RAW packet socket that hooks no protocol yet: given one only at bind, it never
/// sees frames of other interfaces.
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A link-layer address for interface `ifindex` and `protocol` (host byte order).
fn link_address(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = ifindex as c_int;
    address
}

fn bind(socket: &OwnedFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    let address = link_address(ifindex, protocol);
    // SAFETY: `address` is a valid sockaddr_ll of the given size.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_option<T>(socket: &OwnedFd, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is valid for size_of::<T>() bytes, the size the option expects.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `message` out of `ifindex`; the kernel must report `expected` bytes sent.
fn send_to(socket: &OwnedFd, ifindex: u32, message: &[u8], expected: usize) -> io::Result<()> {
    let address = link_address(ifindex, 0);
    // SAFETY: the buffer and the address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const address).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match usize::try_from(sent) {
        Err(_) => Err(io::Error::last_os_error()),
        Ok(sent) if sent != expected => Err(io::Error::other(format!(
            "the kernel sent {sent} of {expected} bytes"
        ))),
        Ok(_) => Ok(()),
    }
}

/// A shared mapping of a packet socket's ring, unmapped on drop.
struct Ring {
    start: NonNull<u8>,
    length: usize,
}

impl Ring {
    fn map(socket: &OwnedFd, length: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping of the socket's ring; nothing else aliases it.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                socket.as_raw_fd(),
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = NonNull::new(start.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { start, length })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing refers to it any more.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.length) };
    }
}

/// Sends `frame` through a one-slot TPACKET_V2 TX ring and waits until the kernel hands the
/// slot back (it does when the skb, which points into the slot, is freed or orphaned).
fn send_from_tx_ring(socket: &OwnedFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let version = libc::tpacket_versions::TPACKET_V2 as c_int;
    set_option(socket, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
    // Without PACKET_TX_HAS_OFF the kernel reads a V2 frame right after the header, at
    // TPACKET2_HDRLEN - sizeof(struct sockaddr_ll).
    let data_offset = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // One block of one slot, a whole number of pages as the kernel requires.
    let slot = (data_offset + frame.len()).div_ceil(page) * page;
    let slot_size = u32::try_from(slot).map_err(|_| io::Error::other("frame too long for a ring"))?;
    // SAFETY: an all-zero tpacket_req is valid.
    let mut request: libc::tpacket_req = unsafe { std::mem::zeroed() };
    request.tp_block_size = slot_size;
    request.tp_block_nr = 1;
    request.tp_frame_size = slot_size;
    request.tp_frame_nr = 1;
    set_option(socket, libc::SOL_PACKET, libc::PACKET_TX_RING, &request)?;
    let ring = Ring::map(socket, slot)?;
    bind(socket, ifindex, 0)?;

    let header = ring.start.as_ptr().cast::<libc::tpacket2_hdr>();
    // SAFETY: the slot is `slot` >= data_offset + frame.len() bytes of our mapping, and
    // its status is TP_STATUS_AVAILABLE, so the kernel does not touch it.
    unsafe {
        std::ptr::copy_nonoverlapping(frame.as_ptr(), ring.start.as_ptr().add(data_offset), frame.len());
        (&raw mut (*header).tp_len).write(frame.len() as u32);
    }
    // SAFETY: tp_status is the first field, an aligned u32 the kernel and we share; the
    // reference lives no longer than `ring`.
    let status = unsafe { AtomicU32::from_ptr((&raw mut (*header).tp_status).cast()) };
    // Release: the frame and its length are in place before the kernel may see the request.
    status.store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
    // SAFETY: no buffer: the ring is the data.
    let sent = unsafe { libc::send(socket.as_raw_fd(), std::ptr::null(), 0, 0) };
    let send_error = (sent < 0).then(io::Error::last_os_error);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match status.load(Ordering::Acquire) {
            libc::TP_STATUS_AVAILABLE => break,
            // Without PACKET_LOSS the kernel leaves a frame it refuses marked so.
            current if current & libc::TP_STATUS_WRONG_FORMAT != 0 => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the kernel refused the frame in the TX ring (TP_STATUS_WRONG_FORMAT): {}",
                        send_error.map_or_else(|| "no error from send".to_owned(), |error| error.to_string())
                    ),
                ));
            }
            current if Instant::now() > deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the TX ring slot is still in status {current:#x}"),
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    match (send_error, sent) {
        (Some(error), _) => Err(error),
        (None, 0) => Err(io::Error::other(
            "the kernel found no frame to send in the TX ring",
        )),
        (None, _) => Ok(()),
    }
}

/// Every frame arriving on one interface, collected by a thread until `stop` or drop.
/// Frames the namespace itself sends out of the interface are left out, and a VLAN tag the
/// kernel took off into the skb's metadata is put back, so frames read as on the wire.
pub struct Capture {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `ifname` in `netns`: the socket is bound, so capturing, once
    /// this returns.
    pub fn start(netns: &Netns, ifname: &str) -> Self {
        let name = ifname.to_owned();
        let socket = netns
            .within(move || open_capture(&name))
            .unwrap_or_else(|error| panic!("capture on {ifname} in {}: {error}", netns.name()));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (collected, stopped) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = vec![0u8; CAPTURE_BUFFER];
            while !stopped.load(Ordering::Relaxed) {
                match receive(&socket, &mut buffer) {
                    Ok(Some(frame)) => collected
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(frame),
                    Ok(None) => {}
                    Err(error) => {
                        eprintln!("capture stopped: {error}");
                        break;
                    }
                }
            }
        });
        Self {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// The frames captured so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits up to `timeout` for a captured frame that contains `needle`.
    pub fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|frame| contains(frame, needle));
            if seen {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops capturing and returns every frame captured.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        self.finish();
        std::mem::take(&mut *self.frames.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A packet socket receiving every protocol on `ifname`, with auxiliary data (for VLAN
/// tags) and a short receive timeout so that the thread sees `stop` soon.
fn open_capture(ifname: &str) -> io::Result<OwnedFd> {
    let ifindex = ifindex(ifname)?;
    let socket = packet_socket()?;
    set_option(&socket, libc::SOL_PACKET, libc::PACKET_AUXDATA, &1 as &c_int)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    set_option(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    bind(&socket, ifindex, libc::ETH_P_ALL as u16)?;
    Ok(socket)
}

/// The next incoming frame, `None` when the timeout passed or the frame was outgoing.
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    // u64s, so the control messages are aligned as cmsghdr requires.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: an all-zero msghdr is valid.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = (&raw mut address).cast();
    message.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `message` is valid for the length beside it.
    let read = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut message, 0) };
    let Ok(read) = usize::try_from(read) else {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(error),
        };
    };
    if address.sll_pkttype == libc::PACKET_OUTGOING {
        return Ok(None);
    }
    let frame = &buffer[..read];
    Ok(Some(match vlan_tci(&message) {
        Some((tpid, tci)) => frames::vlan_tagged(frame, tpid, tci),
        None => frame.to_vec(),
    }))
}

/// The VLAN tag the kernel moved out of the frame into the skb, from PACKET_AUXDATA.
fn vlan_tci(message: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `message` was filled by recvmsg; the CMSG macros stay within msg_control.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(message) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header returned by CMSG_FIRSTHDR/CMSG_NXTHDR is in bounds.
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        if level == libc::SOL_PACKET && kind == libc::PACKET_AUXDATA {
            // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata, maybe unaligned.
            let aux = unsafe {
                libc::CMSG_DATA(cmsg)
                    .cast::<libc::tpacket_auxdata>()
                    .read_unaligned()
            };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                ETH_P_8021Q
            };
            return Some((tpid, aux.tp_vlan_tci));
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(message, cmsg) };
    }
    None
}

/// Whether `needle` occurs anywhere in `haystack` (a marker in a captured frame).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}
