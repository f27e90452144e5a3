//! Node-side setup shared by all pods of a network: the bridge, the gateway address on it,
//! forwarding. Idempotent: every function checks before it changes anything.
use std::{io, net::IpAddr, path::Path};

use ipnetwork::IpNetwork;

use crate::netlink::{Link, LinkKind, Netlink, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{name} exists but is a {kind:?} device, not a bridge")]
    NotABridge { name: String, kind: LinkKind },
    #[error("failed to write {value} to {path}: {source}")]
    Sysctl {
        path: String,
        value: String,
        #[source]
        source: io::Error,
    },
}

pub struct BridgeSpec<'a> {
    pub name: &'a str,
    /// 0 keeps the kernel's default.
    pub mtu: u32,
    pub promisc: bool,
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // Reading the kernel's CSPRNG cannot fail on Linux; a zero MAC would still be fixed up.
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut random| io::Read::read_exact(&mut random, &mut mac));
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Makes sure the bridge exists, is up, and is promiscuous when asked. A new bridge gets
/// an explicit MAC so that it does not change as ports come and go.
pub async fn ensure_bridge(netlink: &Netlink, spec: &BridgeSpec<'_>) -> Result<Link, NodeError> {
    let bridge = match netlink.link_by_name(spec.name).await? {
        Some(link) => link,
        None => {
            match netlink.create_bridge(spec.name, spec.mtu, random_mac()).await {
                // Another ADD created it in the meantime.
                Err(error) if error.errno() == Some(libc::EEXIST) => {}
                other => other?,
            }
            netlink.require_link(spec.name).await?
        }
    };
    if bridge.kind != LinkKind::Bridge {
        return Err(NodeError::NotABridge {
            name: spec.name.to_owned(),
            kind: bridge.kind,
        });
    }
    if spec.promisc && !bridge.promisc {
        netlink.set_promisc(bridge.index, true).await?;
    }
    if !bridge.up {
        netlink.set_up(bridge.index).await?;
    }
    Ok(netlink.require_link(spec.name).await?)
}

/// Puts the gateway address on the bridge (isGateway). With `force`, other addresses of the
/// same family in the same subnet are removed first, as the reference plugin's
/// forceAddress does; without it the gateway is added beside them.
pub async fn ensure_gateway(
    netlink: &Netlink,
    bridge: &Link,
    gateway: IpNetwork,
    force: bool,
) -> Result<(), NodeError> {
    let present = netlink.addrs(bridge.index).await?;
    if present.iter().any(|address| address.ip() == gateway.ip()) {
        return Ok(());
    }
    let conflicting = present
        .iter()
        .any(|address| address.is_ipv4() == gateway.is_ipv4() && gateway.contains(address.ip()));
    if force && conflicting {
        netlink
            .del_addrs_of_family(bridge.index, gateway.is_ipv4())
            .await?;
    }
    netlink.add_addr(bridge.index, gateway).await?;
    enable_forwarding(gateway.ip())
}

/// Turns on IP forwarding for the family of `ip` in the calling thread's namespace.
pub fn enable_forwarding(ip: IpAddr) -> Result<(), NodeError> {
    let path = if ip.is_ipv4() {
        "/proc/sys/net/ipv4/ip_forward"
    } else {
        "/proc/sys/net/ipv6/conf/all/forwarding"
    };
    write_sysctl(path, "1")
}

/// Writes a sysctl of the calling thread's network namespace unless it has the value.
pub fn write_sysctl(path: &str, value: &str) -> Result<(), NodeError> {
    let error = |source| NodeError::Sysctl {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    if std::fs::read_to_string(Path::new(path)).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(error)
}
