//! bpf(2) called directly where aya would cost more than it gives: opening a pinned
//! program through aya (`from_pin`) first probes the kernel's BPF features (nine BTF and
//! five program loads, 0.3 to 0.5 ms measured here), which every ADD would pay.
use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

/// bpf(2) commands (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `union bpf_attr` for BPF_OBJ_GET, up to `file_flags`; the kernel zeroes what follows.
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}
const _: () = assert!(std::mem::size_of::<ObjGet>() == 16);

/// bpf(2) with `attr`, a prefix of `union bpf_attr` for `command`.
///
/// # Safety
/// `attr` must have the layout of `union bpf_attr` for `command` up to its size, and every
/// pointer in it must be valid for what the kernel reads or writes through it until this
/// returns.
unsafe fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the kernel reads (and for test runs writes) no more
    // than the size passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Opens the object pinned at `path` (a program or a map).
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let mut attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: an OBJ_GET attr whose path outlives the call.
    let fd = i32::try_from(unsafe { bpf(BPF_OBJ_GET, &mut attr) }?).map_err(std::io::Error::other)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN, up to `ctx_out`.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}
const _: () = assert!(std::mem::size_of::<TestRun>() == 64);

/// Runs the program `fd` once on `data` with the context `ctx` (BPF_PROG_TEST_RUN, no
/// output copied back); returns the program's return value.
pub fn prog_test_run(fd: std::os::fd::BorrowedFd<'_>, data: &[u8], ctx: &[u8]) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let length = |bytes: usize| u32::try_from(bytes).map_err(std::io::Error::other);
    let mut attr = TestRun {
        prog_fd: fd.as_raw_fd().cast_unsigned(),
        data_size_in: length(data.len())?,
        data_in: data.as_ptr() as u64,
        ctx_size_in: length(ctx.len())?,
        ctx_in: ctx.as_ptr() as u64,
        ..TestRun::default()
    };
    // SAFETY: a TEST_RUN attr whose data and context, of the sizes given, outlive the
    // call; no output buffers.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr.retval)
}

/// Adds the program `fd` (named `name`) to the clsact hook of device `ifindex` (ingress, or
/// egress) as a direct-action bpf filter with `priority` and `handle`, for all protocols:
/// what aya's netlink attach sends, without opening the program through aya.
pub fn add_tc_filter(
    ifindex: u32,
    ingress: bool,
    fd: std::os::fd::BorrowedFd<'_>,
    name: &str,
    priority: u16,
    handle: u32,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    use rtnetlink::{
        packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
        packet_route::{
            RouteNetlinkMessage,
            tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
        },
        sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
    };

    let index = i32::try_from(ifindex).map_err(std::io::Error::other)?;
    let mut message = TcMessage::with_index(index);
    message.header.parent = TcHandle {
        major: TcHandle::INGRESS.major,
        minor: if ingress {
            TcHandle::MIN_INGRESS
        } else {
            TcHandle::MIN_EGRESS
        },
    };
    message.header.handle = TcHandle::from(handle);
    let all = u16::try_from(libc::ETH_P_ALL).map_err(std::io::Error::other)?;
    message.header.info = (u32::from(priority) << 16) | u32::from(all.to_be());
    message.attributes = vec![
        TcAttribute::Kind("bpf".to_owned()),
        TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(fd.as_raw_fd().cast_unsigned())),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]),
    ];
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewTrafficFilter(message));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    set_receive_timeout(&socket, std::time::Duration::from_secs(5))?;
    socket.send(&buffer, 0)?;
    // The kernel answers with one ACK or error for our sequence number (NLM_F_ACK).
    loop {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < reply.len() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                .map_err(std::io::Error::other)?;
            let length = usize::try_from(message.header.length).map_err(std::io::Error::other)?;
            if length == 0 {
                return Err(std::io::Error::other("a netlink message of length 0"));
            }
            if message.header.sequence_number == 1
                && let NetlinkPayload::Error(error) = message.payload
            {
                return match error.code {
                    None => Ok(()),
                    Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                };
            }
            // NLMSG_ALIGN.
            offset += length.next_multiple_of(4);
        }
    }
}

/// SO_RCVTIMEO: a reply that never comes is an error, not a hung ADD.
fn set_receive_timeout(socket: &rtnetlink::sys::Socket, timeout: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: 0,
    };
    // SAFETY: a valid socket and a timeval of the size passed, alive across the call.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(0),
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(std::mem::size_of::<InfoByFd>() == 16);

/// The id of the program pinned at `path`, as `bpftool prog show` prints it.
pub fn pinned_program_id(path: &Path) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let fd = obj_get(path)?;
    // `struct bpf_prog_info` up to `id`: the kernel fills no more than it is given.
    let mut info = [0u32; 2];
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd().cast_unsigned(),
        info_len: u32::try_from(std::mem::size_of_val(&info)).map_err(std::io::Error::other)?,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: an INFO_BY_FD attr whose buffer, of the length given, outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info[1])
}
