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
    #[error("{uplink} is already a port of link #{master}; take it out first")]
    UplinkTaken { uplink: String, master: u32 },
    #[error("{0} was not set up by `flatbridge node setup` (its alias holds no setup record)")]
    NotSetUp(String),
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
/// forceAddress does — except those `flatbridge node setup` put there (the node's own
/// address, moved from the uplink, is often in the pods' subnet on a flat L2: removing it
/// would take the node off the network). Without `force` the gateway is added beside them.
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
    if force {
        let node_setup = bridge.alias.as_deref().and_then(UplinkState::decode);
        let kept = |address: &IpNetwork| {
            node_setup
                .as_ref()
                .is_some_and(|state| state.addresses.contains(address) || state.gateways.contains(address))
        };
        for address in &present {
            if address.is_ipv4() == gateway.is_ipv4() && gateway.contains(address.ip()) && !kept(address) {
                netlink.del_addr(bridge.index, *address).await?;
            }
        }
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

/// What `flatbridge node setup` changed, stored as the bridge's alias so that teardown can
/// undo it without any file: `flatbridge-node uplink=<if> addrs=<cidr>,.. routes=<dst>@<gw>,.. gateways=<cidr>,..`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UplinkState {
    pub uplink: String,
    pub addresses: Vec<IpNetwork>,
    /// Routes that went out of the uplink: destination and gateway (none when on-link).
    pub routes: Vec<(IpNetwork, Option<IpAddr>)>,
    pub gateways: Vec<IpNetwork>,
}

const STATE_PREFIX: &str = "flatbridge-node";

impl UplinkState {
    pub fn encode(&self) -> String {
        let join = |items: Vec<String>| items.join(",");
        format!(
            "{STATE_PREFIX} uplink={} addrs={} routes={} gateways={}",
            self.uplink,
            join(self.addresses.iter().map(ToString::to_string).collect()),
            join(
                self.routes
                    .iter()
                    .map(|(dst, gateway)| match gateway {
                        Some(gateway) => format!("{dst}@{gateway}"),
                        None => dst.to_string(),
                    })
                    .collect()
            ),
            join(self.gateways.iter().map(ToString::to_string).collect()),
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        if words.next()? != STATE_PREFIX {
            return None;
        }
        let mut state = UplinkState::default();
        for word in words {
            let (key, value) = word.split_once('=')?;
            let items = value.split(',').filter(|item| !item.is_empty());
            match key {
                "uplink" => state.uplink = value.to_owned(),
                "addrs" => state.addresses = items.map(str::parse).collect::<Result<_, _>>().ok()?,
                "gateways" => state.gateways = items.map(str::parse).collect::<Result<_, _>>().ok()?,
                "routes" => {
                    for item in items {
                        let (dst, gateway) = match item.split_once('@') {
                            Some((dst, gateway)) => (dst, Some(gateway.parse().ok()?)),
                            None => (item, None),
                        };
                        state.routes.push((dst.parse().ok()?, gateway));
                    }
                }
                _ => return None,
            }
        }
        (!state.uplink.is_empty()).then_some(state)
    }
}

/// How `setup_uplink` left the node.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupOutcome {
    /// The uplink was moved under the bridge now.
    Done(UplinkState),
    /// It already was (by an earlier setup); only the gateways and sysctls were ensured.
    AlreadySetUp,
}

/// Puts the uplink under the bridge and moves its IPv4 addresses and routes to the bridge,
/// which takes the uplink's MAC and MTU (the switch sees no change). Turns on forwarding and
/// conntrack's liberal TCP window tracking (needed for TCP offload). Idempotent. On a
/// failure every step taken is undone, so the node never stays without its address.
pub async fn setup_uplink(
    netlink: &Netlink,
    bridge_name: &str,
    uplink_name: &str,
    gateways: &[IpNetwork],
) -> Result<SetupOutcome, NodeError> {
    let uplink = netlink.require_link(uplink_name).await?;
    let existing = netlink.link_by_name(bridge_name).await?;
    if let Some(bridge) = &existing
        && bridge.kind != LinkKind::Bridge
    {
        return Err(NodeError::NotABridge {
            name: bridge_name.to_owned(),
            kind: bridge.kind.clone(),
        });
    }
    if let Some(master) = uplink.master {
        if existing.as_ref().is_some_and(|bridge| bridge.index == master) {
            let bridge = netlink.require_link(bridge_name).await?;
            // An earlier setup may have died half-way: finish what its state says (every
            // step is idempotent), then add what this call asks for.
            if let Some(state) = bridge.alias.as_deref().and_then(UplinkState::decode)
                && state.uplink == uplink_name
            {
                for address in &state.addresses {
                    netlink.add_addr(bridge.index, *address).await?;
                    netlink.del_addr(uplink.index, *address).await?;
                }
                for (dst, gateway) in &state.routes {
                    netlink.replace_route(*dst, *gateway, bridge.index).await?;
                }
                let mut more = state.clone();
                more.gateways.extend(
                    gateways
                        .iter()
                        .filter(|gateway| !state.gateways.contains(gateway)),
                );
                for gateway in &more.gateways {
                    netlink.add_addr(bridge.index, *gateway).await?;
                }
                if more != state {
                    netlink.set_alias(bridge.index, &more.encode()).await?;
                }
            } else {
                for gateway in gateways {
                    netlink.add_addr(bridge.index, *gateway).await?;
                }
            }
            node_sysctls()?;
            return Ok(SetupOutcome::AlreadySetUp);
        }
        return Err(NodeError::UplinkTaken {
            uplink: uplink_name.to_owned(),
            master,
        });
    }
    let state = UplinkState {
        uplink: uplink_name.to_owned(),
        addresses: netlink
            .addrs(uplink.index)
            .await?
            .into_iter()
            .filter(IpNetwork::is_ipv4)
            .collect(),
        routes: netlink
            .routes(true)
            .await?
            .into_iter()
            .filter(|route| route.oif == Some(uplink.index) && !route.from_kernel)
            .map(|route| (route.dst, route.gateway))
            .collect(),
        gateways: gateways.to_vec(),
    };
    let mut undo = Vec::new();
    let result = move_uplink(netlink, bridge_name, existing, &uplink, &state, &mut undo).await;
    if let Err(error) = result {
        log::error!("node setup failed, undoing it: {error}");
        for step in undo.into_iter().rev() {
            if let Err(undo_error) = step.run(netlink).await {
                log::error!("undoing node setup: {undo_error}");
            }
        }
        return Err(error);
    }
    Ok(SetupOutcome::Done(state))
}

/// One change of `move_uplink`, and how to take it back.
enum UndoStep {
    DeleteLink(u32),
    DeleteAddr(u32, IpNetwork),
    AddAddr(u32, IpNetwork),
    NoMaster(u32),
    Route(IpNetwork, Option<IpAddr>, u32),
}

impl UndoStep {
    async fn run(self, netlink: &Netlink) -> Result<(), NetlinkError> {
        match self {
            UndoStep::DeleteLink(index) => netlink.delete_link(index).await,
            UndoStep::DeleteAddr(index, address) => netlink.del_addr(index, address).await,
            UndoStep::AddAddr(index, address) => netlink.add_addr(index, address).await,
            UndoStep::NoMaster(index) => netlink.set_nomaster(index).await,
            UndoStep::Route(dst, gateway, oif) => netlink.replace_route(dst, gateway, oif).await,
        }
    }
}

async fn move_uplink(
    netlink: &Netlink,
    bridge_name: &str,
    existing: Option<Link>,
    uplink: &Link,
    state: &UplinkState,
    undo: &mut Vec<UndoStep>,
) -> Result<(), NodeError> {
    let mac = uplink.mac.unwrap_or_else(random_mac);
    let bridge = match existing {
        Some(bridge) => {
            if bridge.mac != Some(mac) {
                netlink.set_mac(bridge.index, mac).await?;
            }
            if bridge.mtu != uplink.mtu {
                netlink.set_mtu(bridge.index, uplink.mtu).await?;
            }
            bridge
        }
        None => {
            netlink.create_bridge(bridge_name, uplink.mtu, mac).await?;
            let bridge = netlink.require_link(bridge_name).await?;
            undo.push(UndoStep::DeleteLink(bridge.index));
            bridge
        }
    };
    netlink.set_alias(bridge.index, &state.encode()).await?;
    // Addresses on the bridge first, then the uplink under it, then off the uplink: the
    // node's address is never missing, only briefly on both.
    for address in &state.addresses {
        netlink.add_addr(bridge.index, *address).await?;
        undo.push(UndoStep::DeleteAddr(bridge.index, *address));
    }
    netlink.set_up(bridge.index).await?;
    netlink.set_master(uplink.index, bridge.index).await?;
    undo.push(UndoStep::NoMaster(uplink.index));
    for address in &state.addresses {
        netlink.del_addr(uplink.index, *address).await?;
        undo.push(UndoStep::AddAddr(uplink.index, *address));
    }
    for (dst, gateway) in &state.routes {
        netlink.replace_route(*dst, *gateway, bridge.index).await?;
        undo.push(UndoStep::Route(*dst, *gateway, uplink.index));
    }
    for gateway in &state.gateways {
        netlink.add_addr(bridge.index, *gateway).await?;
        undo.push(UndoStep::DeleteAddr(bridge.index, *gateway));
    }
    node_sysctls()
}

/// Forwarding for the pods' gateway, and conntrack that accepts TCP packets returning to
/// netfilter after an offloaded stretch (kube-proxy's --conntrack-tcp-be-liberal).
fn node_sysctls() -> Result<(), NodeError> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    let liberal = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal";
    if Path::new(liberal).exists() {
        write_sysctl(liberal, "1")?;
    }
    Ok(())
}

/// Undoes `setup_uplink`: the uplink gets its addresses and routes back and leaves the
/// bridge; the bridge is deleted unless pods are still on it. Returns the uplink's name.
pub async fn teardown_uplink(netlink: &Netlink, bridge_name: &str) -> Result<String, NodeError> {
    let Some(bridge) = netlink.link_by_name(bridge_name).await? else {
        return Err(NodeError::NotSetUp(bridge_name.to_owned()));
    };
    let state = bridge
        .alias
        .as_deref()
        .and_then(UplinkState::decode)
        .ok_or_else(|| NodeError::NotSetUp(bridge_name.to_owned()))?;
    let uplink = netlink.require_link(&state.uplink).await?;
    for address in &state.addresses {
        netlink.add_addr(uplink.index, *address).await?;
    }
    netlink.set_nomaster(uplink.index).await?;
    netlink.set_up(uplink.index).await?;
    for (dst, gateway) in &state.routes {
        netlink.replace_route(*dst, *gateway, uplink.index).await?;
    }
    for address in state.addresses.iter().chain(&state.gateways) {
        netlink.del_addr(bridge.index, *address).await?;
    }
    let ports = netlink
        .links()
        .await?
        .into_iter()
        .filter(|link| link.master == Some(bridge.index))
        .count();
    if ports == 0 {
        netlink.delete_link(bridge.index).await?;
    } else {
        netlink.set_alias(bridge.index, "").await?;
        log::warn!("kept bridge {bridge_name}: {ports} pod ports are still on it");
    }
    Ok(state.uplink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_state_round_trips_through_the_alias() {
        let state = UplinkState {
            uplink: "bond0".into(),
            addresses: vec!["10.10.0.11/16".parse().expect("cidr")],
            routes: vec![
                (
                    "0.0.0.0/0".parse().expect("cidr"),
                    Some("10.10.0.1".parse().expect("ip")),
                ),
                ("192.168.5.0/24".parse().expect("cidr"), None),
            ],
            gateways: vec!["10.10.1.0/16".parse().expect("cidr")],
        };
        let text = state.encode();
        assert!(text.len() < 256, "too long for an interface alias: {text}");
        assert_eq!(UplinkState::decode(&text), Some(state));
        assert_eq!(UplinkState::decode("flatbridge:data:abc:eth0"), None);
        assert_eq!(UplinkState::decode("flatbridge-node addrs=x"), None);
    }
}
