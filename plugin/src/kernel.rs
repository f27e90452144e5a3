//! What flatbridge asks of the kernel outside netlink and bpf(2): its release, its features
//! (found by asking, never from the version: distributions backport), and the sysctls of the
//! calling thread's network namespace. The only module that reads /proc/sys or /sys (`netns`
//! opens /proc/self/task/…/ns only to name the calling thread's namespace).
use std::{io, net::IpAddr, path::Path};

use aya::programs::{SchedClassifier, tc::TcAttachType};

/// A sysctl that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("failed to write {value} to {path}: {source}")]
pub struct SysctlError {
    pub path: String,
    pub value: String,
    #[source]
    pub source: io::Error,
}

/// `uname -r`.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|name| name.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether the kernel has TCX (6.6+): a TCX query of the loopback device fails with EINVAL
/// where it has not. (Test builds can pretend it has not, see [`kernel_lacks`].)
pub fn has_tcx() -> bool {
    if kernel_lacks("tcx") {
        return false;
    }
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok()
}

/// Whether the kernel exposes its own BTF, which the pinned maps' BTF and bpftool's
/// field names come from.
pub fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// Whether `bpf_redirect_peer` leaves pkt_type as the receiving device computed it (before
/// 6.15: PACKET_OTHERHOST for a frame to the pod's MAC), so that the programs must set
/// PACKET_HOST. The kernel cannot be asked without sending a frame, and a version says
/// nothing of backports: taken as true always (one helper call per redirected frame; on
/// 6.15+ the kernel sets the same value again).
pub fn keeps_pkt_type_on_redirect_peer() -> bool {
    true
}

/// `duration` in nanoseconds, saturating (what the kernel's u64 clocks compare with).
pub fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which the flow map's
/// times are in.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|time| {
            u64::try_from(time.tv_sec()).unwrap_or_default() * 1_000_000_000
                + u64::try_from(time.tv_nsec()).unwrap_or_default()
        })
        .unwrap_or_default()
}

const TCP_BE_LIBERAL: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";

/// Whether TCP may be offloaded in this namespace: conntrack accepts packets beyond its
/// window after an offloaded stretch (`nf_conntrack_tcp_be_liberal` = 1), or there is no
/// conntrack at all. Otherwise returning packets would be INVALID and kube-proxy's `ctstate
/// INVALID -j DROP` would kill the connection.
pub fn tcp_offload_allowed() -> bool {
    match std::fs::read_to_string(TCP_BE_LIBERAL) {
        Ok(value) => value.trim() == "1",
        Err(error) => error.kind() == io::ErrorKind::NotFound,
    }
}

/// Writes a sysctl of the calling thread's network namespace unless it has the value.
pub fn write_sysctl(path: &str, value: &str) -> Result<(), SysctlError> {
    if std::fs::read_to_string(Path::new(path)).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| SysctlError {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Turns on IP forwarding for the family of `ip`.
pub fn enable_forwarding(ip: IpAddr) -> Result<(), SysctlError> {
    let path = if ip.is_ipv4() {
        "/proc/sys/net/ipv4/ip_forward"
    } else {
        "/proc/sys/net/ipv6/conf/all/forwarding"
    };
    write_sysctl(path, "1")
}

/// What a node with pods behind a bridge needs: IPv4 forwarding, and conntrack that accepts
/// TCP packets returning to netfilter after an offloaded stretch (kube-proxy's
/// `--conntrack-tcp-be-liberal`), where conntrack is loaded.
pub fn set_node_sysctls() -> Result<(), SysctlError> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    if Path::new(TCP_BE_LIBERAL).exists() {
        write_sysctl(TCP_BE_LIBERAL, "1")?;
    }
    Ok(())
}

/// Settings of a pod's interface `ifname`, written in the pod's namespace before the link
/// comes up. With `arp_notify` the kernel announces the addresses (gratuitous ARP) when the
/// link comes up, so neighbours and switches that knew a previous owner of an address learn
/// the new MAC at once. The pod's IPv6 sources are checked against its leases and its
/// link-local, which must be the one its MAC gives (EUI-64): addresses made from router
/// advertisements on the wire would be dropped, so none are made; `dad` is `enableDad`. IPv6
/// sysctls exist only with IPv6 on, so those are best effort. Returns what could not be set.
pub fn set_pod_interface_sysctls(ifname: &str, dad: bool) -> Vec<SysctlError> {
    let mut failed = Vec::new();
    if let Err(error) = write_sysctl(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1") {
        failed.push(error);
    }
    let ipv6 = format!("/proc/sys/net/ipv6/conf/{ifname}");
    for (name, value) in [
        ("accept_dad", if dad { "1" } else { "0" }),
        ("addr_gen_mode", "0"),
        ("accept_ra", "0"),
        ("autoconf", "0"),
    ] {
        let _ = write_sysctl(&format!("{ipv6}/{name}"), value);
    }
    failed
}

/// Test builds only: whether the tests pretend the kernel lacks `feature` (one of the
/// comma-separated names in `FLATBRIDGE_KERNEL_LACKS`, e.g. `tcx`), to run the paths of
/// older kernels on this one.
#[cfg(feature = "fault-injection")]
pub fn kernel_lacks(feature: &str) -> bool {
    (feature == "tcx" && PRETEND_NO_TCX.load(std::sync::atomic::Ordering::Relaxed))
        || std::env::var("FLATBRIDGE_KERNEL_LACKS")
            .is_ok_and(|lacks| lacks.split(',').any(|lacked| lacked == feature))
}

#[cfg(feature = "fault-injection")]
static PRETEND_NO_TCX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test builds only: the same as `FLATBRIDGE_KERNEL_LACKS=tcx`, for tests that call the
/// library in their own process.
#[cfg(feature = "fault-injection")]
pub fn pretend_no_tcx(pretend: bool) {
    PRETEND_NO_TCX.store(pretend, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn kernel_lacks(_feature: &str) -> bool {
    false
}
