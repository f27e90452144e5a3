//! Node-side setup shared by all pods of a network: the bridge, the gateway address on it,
//! forwarding. Idempotent: every function checks before it changes anything.
use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnetwork::IpNetwork;

use crate::netlink::{Link, LinkKind, Netlink, NetlinkError, RouteEntry, RouteSpec};

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
    #[error("node setup state {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Sysctl(#[from] crate::kernel::SysctlError),
}

pub struct BridgeSpec<'a> {
    pub name: &'a str,
    /// 0 keeps the kernel's default.
    pub mtu: u32,
    pub promisc: bool,
}

/// Makes sure the bridge exists, is up, and is promiscuous when asked. A new bridge gets
/// an explicit MAC so that it does not change as ports come and go.
pub async fn ensure_bridge(netlink: &Netlink, spec: &BridgeSpec<'_>) -> Result<Link, NodeError> {
    let bridge = match netlink.link_by_name(spec.name).await? {
        Some(link) => link,
        None => {
            match netlink
                .create_bridge(spec.name, spec.mtu, crate::mac::Mac::random().0)
                .await
            {
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
    Ok(crate::kernel::enable_forwarding(gateway.ip())?)
}

/// How long "this bridge has no uplink" is believed before the ports are listed again: a
/// burst of ADDs on an uplink-less node lists them once, and a NIC enslaved by hand later is
/// still noticed within this time.
const NO_UPLINK_RECHECK: Duration = Duration::from_secs(5);

/// The bridge's uplink as found by [`find_uplink`], and what to remember of the search.
pub struct Uplink {
    pub link: Option<Link>,
    /// For the datapath's `no_uplink_seen_ns`: when the ports were last listed without finding
    /// one, 0 when there is one (or the search was not by listing).
    pub no_uplink_seen_ns: u64,
}

/// What an earlier search found, as the datapath remembers it.
#[derive(Clone, Copy, Debug)]
pub struct KnownUplink {
    pub bridge_ifindex: u32,
    /// 0: none was found.
    pub uplink_ifindex: u32,
    /// When the ports were listed without finding one (Unix ns), 0 for never.
    pub no_uplink_seen_ns: u64,
}

/// The bridge's port to the wire: the configured `uplink`, the one `flatbridge node setup`
/// recorded on the bridge, the one an earlier ADD found (in `known`), or else the one port
/// of the bridge that is not a pod's veth (`is_pod_port`). Only the last lists the ports, which grow with
/// the pods; "none" found that way is believed for [`NO_UPLINK_RECHECK`].
pub async fn find_uplink(
    node: &Netlink,
    bridge: &Link,
    configured: Option<&str>,
    known: Option<KnownUplink>,
    is_pod_port: impl Fn(&Link) -> bool,
) -> Result<Uplink, NodeError> {
    let found = |link| Uplink {
        link,
        no_uplink_seen_ns: 0,
    };
    let recorded = bridge
        .alias
        .as_deref()
        .and_then(UplinkState::decode)
        .map(|state| state.uplink);
    if let Some(name) = configured.map(str::to_owned).or(recorded) {
        return match node.link_by_name(&name).await? {
            Some(link) if link.master == Some(bridge.index) => Ok(found(Some(link))),
            Some(_) => {
                log::warn!(
                    "uplink {name} is not a port of {}; the fast path ignores it",
                    bridge.name
                );
                Ok(found(None))
            }
            None => {
                log::warn!("uplink {name} does not exist; the fast path ignores it");
                Ok(found(None))
            }
        };
    }
    let now = unix_ns();
    if let Some(known) = known.filter(|known| known.bridge_ifindex == bridge.index) {
        if known.uplink_ifindex != 0
            && let Some(link) = node.link_by_index(known.uplink_ifindex).await?
            && link.master == Some(bridge.index)
        {
            return Ok(found(Some(link)));
        }
        if known.uplink_ifindex == 0 && still_believed(known.no_uplink_seen_ns, now) {
            return Ok(Uplink {
                link: None,
                no_uplink_seen_ns: known.no_uplink_seen_ns,
            });
        }
    }
    let ports: Vec<Link> = node
        .ports_of(bridge.index)
        .await?
        .into_iter()
        .filter(|link| !is_pod_port(link))
        .collect();
    match ports.as_slice() {
        [uplink] => Ok(found(Some(uplink.clone()))),
        [] => Ok(Uplink {
            link: None,
            no_uplink_seen_ns: now,
        }),
        many => {
            let names: Vec<&str> = many.iter().map(|link| link.name.as_str()).collect();
            log::warn!(
                "bridge {} has several non-pod ports ({}); set \"uplink\" to choose",
                bridge.name,
                names.join(", ")
            );
            Ok(found(None))
        }
    }
}

/// Whether "no uplink", seen at `seen` (Unix ns, 0 = never), still holds at `now`. A clock
/// that went back makes it stale, not eternal.
fn still_believed(seen: u64, now: u64) -> bool {
    let window = crate::kernel::nanos(NO_UPLINK_RECHECK);
    seen != 0 && (seen..seen.saturating_add(window)).contains(&now)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, crate::kernel::nanos)
}

/// What `flatbridge node setup` changed, for teardown and for a setup that resumes after a
/// crash: kept in a file of ours ([`STATE_DIR`]`/<bridge>.json`, written whole or not at
/// all), which holds any number of addresses and routes. The bridge's alias holds only a
/// marker naming the uplink (`flatbridge-node uplink=<if>`): it says the file belongs to
/// this very bridge (one made again at boot has no marker, and the file is then stale),
/// and ADD finds the uplink by it without reading a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UplinkState {
    pub uplink: String,
    /// The uplink's IPv4 addresses and its configured global IPv6 ones.
    pub addresses: Vec<IpNetwork>,
    /// Routes that went out of the uplink, both families, with their attributes.
    pub routes: Vec<RouteSpec>,
    pub gateways: Vec<IpNetwork>,
}

const STATE_PREFIX: &str = "flatbridge-node";
/// Where node setup keeps its state: beside the CNI state of the node (host-local's
/// leases are in /var/lib/cni/networks).
pub const STATE_DIR: &str = "/var/lib/cni/flatbridge/node";

impl UplinkState {
    /// The bridge's alias: the marker only.
    pub fn marker(&self) -> String {
        format!("{STATE_PREFIX} uplink={}", self.uplink)
    }

    /// What an alias says: the uplink of the marker, or a whole state as releases before
    /// the state file wrote it (`addrs=`, `routes=<dst>@<gw>`, `gateways=`).
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
                        state.routes.push(RouteSpec {
                            dst: dst.parse().ok()?,
                            gateway,
                            metric: None,
                            source: None,
                            protocol: 0,
                            scope: 0,
                        });
                    }
                }
                _ => return None,
            }
        }
        (!state.uplink.is_empty()).then_some(state)
    }

    fn path(dir: &Path, bridge: &str) -> PathBuf {
        dir.join(format!("{bridge}.json"))
    }

    /// The state of `bridge` whose alias is `alias`: the file when the marker names its
    /// uplink, else what an older release kept in the alias; `None` when the bridge was
    /// not set up.
    pub fn load(dir: &Path, bridge: &str, alias: Option<&str>) -> Result<Option<Self>, NodeError> {
        let Some(marked) = alias.and_then(Self::decode) else {
            return Ok(None);
        };
        let path = Self::path(dir, bridge);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: Self = serde_json::from_slice(&bytes).map_err(|error| NodeError::State {
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, error),
                })?;
                Ok(Some(if state.uplink == marked.uplink {
                    state
                } else {
                    marked
                }))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Some(marked)),
            Err(source) => Err(NodeError::State { path, source }),
        }
    }

    /// Writes the state of `bridge` whole (a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path, bridge: &str) -> Result<(), NodeError> {
        let path = Self::path(dir, bridge);
        let error = |source| NodeError::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".state-")
            .tempfile_in(dir)
            .map_err(error)?;
        serde_json::to_writer_pretty(temp.as_file_mut(), self)
            .map_err(|json| error(io::Error::other(json)))?;
        temp.as_file().sync_all().map_err(error)?;
        temp.persist(&path).map_err(|persist| error(persist.error))?;
        Ok(())
    }

    fn remove(dir: &Path, bridge: &str) -> Result<(), NodeError> {
        let path = Self::path(dir, bridge);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NodeError::State { path, source }),
        }
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

/// Puts the uplink under the bridge and moves its addresses (IPv4, and configured global
/// IPv6) and its routes (both families, with metric, source, protocol and scope) to the
/// bridge, which takes the uplink's MAC and MTU (the switch sees no change). Turns on
/// forwarding and conntrack's liberal TCP window tracking (needed for TCP offload).
/// Idempotent, and resumable: the state is written before anything changes, so a setup
/// that died half-way is finished by the next. On a failure every step taken is undone,
/// so the node never stays without its address.
pub async fn setup_uplink(
    netlink: &Netlink,
    state_dir: &Path,
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
            if let Some(state) = UplinkState::load(state_dir, bridge_name, bridge.alias.as_deref())?
                && state.uplink == uplink_name
            {
                for address in &state.addresses {
                    netlink.add_moved_addr(bridge.index, *address).await?;
                    netlink.del_addr(uplink.index, *address).await?;
                }
                for route in &state.routes {
                    netlink.replace_route_spec(route, bridge.index).await?;
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
                    more.save(state_dir, bridge_name)?;
                }
            } else {
                for gateway in gateways {
                    netlink.add_addr(bridge.index, *gateway).await?;
                }
            }
            crate::kernel::set_node_sysctls()?;
            return Ok(SetupOutcome::AlreadySetUp);
        }
        return Err(NodeError::UplinkTaken {
            uplink: uplink_name.to_owned(),
            master,
        });
    }
    let mut routes = Vec::new();
    for ipv4 in [true, false] {
        routes.extend(
            netlink
                .routes(ipv4)
                .await?
                .iter()
                .filter(|route| route.oif == Some(uplink.index) && moves_with_the_link(route))
                .map(RouteSpec::from),
        );
    }
    let state = UplinkState {
        uplink: uplink_name.to_owned(),
        addresses: netlink.own_addrs(uplink.index).await?,
        routes,
        gateways: gateways.to_vec(),
    };
    // Before any change: a setup killed half-way leaves what the next one needs to finish.
    state.save(state_dir, bridge_name)?;
    let mut undo = Vec::new();
    let result = move_uplink(netlink, bridge_name, existing, &uplink, &state, &mut undo).await;
    if let Err(error) = result {
        log::error!("node setup failed, undoing it: {error}");
        for step in undo.into_iter().rev() {
            if let Err(undo_error) = step.run(netlink).await {
                log::error!("undoing node setup: {undo_error}");
            }
        }
        if let Err(remove_error) = UplinkState::remove(state_dir, bridge_name) {
            log::error!("undoing node setup: {remove_error}");
        }
        return Err(error);
    }
    Ok(SetupOutcome::Done(state))
}

/// Routes the node's configuration made (static, DHCP, the boot scripts'): not the
/// kernel's for an address's prefix, nor one learnt from router advertisements (it comes
/// back on the bridge, which hears them now), nor IPv6 link-local or multicast ones, which
/// every link has of its own.
fn moves_with_the_link(route: &RouteEntry) -> bool {
    let own_to_every_link = match route.dst {
        IpNetwork::V6(dst) => dst.ip().is_unicast_link_local() || dst.ip().is_multicast(),
        IpNetwork::V4(_) => false,
    };
    !route.from_kernel && !route.from_ra && !own_to_every_link
}

/// One change of `move_uplink`, and how to take it back.
enum UndoStep {
    DeleteLink(u32),
    DeleteAddr(u32, IpNetwork),
    AddAddr(u32, IpNetwork),
    NoMaster(u32),
    Route(RouteSpec, u32),
    Alias(u32, String),
    Mac(u32, [u8; 6]),
    Mtu(u32, u32),
}

impl UndoStep {
    async fn run(self, netlink: &Netlink) -> Result<(), NetlinkError> {
        match self {
            UndoStep::DeleteLink(index) => netlink.delete_link(index).await,
            UndoStep::DeleteAddr(index, address) => netlink.del_addr(index, address).await,
            UndoStep::AddAddr(index, address) => netlink.add_moved_addr(index, address).await,
            UndoStep::NoMaster(index) => netlink.set_nomaster(index).await,
            UndoStep::Route(route, oif) => netlink.replace_route_spec(&route, oif).await,
            UndoStep::Alias(index, alias) => netlink.set_alias(index, &alias).await,
            UndoStep::Mac(index, mac) => netlink.set_mac(index, mac).await,
            UndoStep::Mtu(index, mtu) => netlink.set_mtu(index, mtu).await,
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
    let mac = uplink.mac.unwrap_or_else(|| crate::mac::Mac::random().0);
    let bridge = match existing {
        Some(bridge) => {
            if bridge.mac != Some(mac) {
                netlink.set_mac(bridge.index, mac).await?;
                if let Some(old) = bridge.mac {
                    undo.push(UndoStep::Mac(bridge.index, old));
                }
            }
            if bridge.mtu != uplink.mtu {
                netlink.set_mtu(bridge.index, uplink.mtu).await?;
                undo.push(UndoStep::Mtu(bridge.index, bridge.mtu));
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
    netlink.set_alias(bridge.index, &state.marker()).await?;
    undo.push(UndoStep::Alias(
        bridge.index,
        bridge.alias.clone().unwrap_or_default(),
    ));
    // Addresses on the bridge first, then the uplink under it, then off the uplink: the
    // node's address is never missing, only briefly on both.
    for address in &state.addresses {
        netlink.add_moved_addr(bridge.index, *address).await?;
        undo.push(UndoStep::DeleteAddr(bridge.index, *address));
    }
    netlink.set_up(bridge.index).await?;
    netlink.set_master(uplink.index, bridge.index).await?;
    undo.push(UndoStep::NoMaster(uplink.index));
    for address in &state.addresses {
        netlink.del_addr(uplink.index, *address).await?;
        undo.push(UndoStep::AddAddr(uplink.index, *address));
    }
    for route in &state.routes {
        netlink.replace_route_spec(route, bridge.index).await?;
        undo.push(UndoStep::Route(route.clone(), uplink.index));
    }
    for gateway in &state.gateways {
        netlink.add_addr(bridge.index, *gateway).await?;
        undo.push(UndoStep::DeleteAddr(bridge.index, *gateway));
    }
    Ok(crate::kernel::set_node_sysctls()?)
}

/// Undoes `setup_uplink`: the uplink gets its addresses and routes back and leaves the
/// bridge; the bridge is deleted unless pods are still on it, and the state file goes.
/// Returns the uplink's name.
pub async fn teardown_uplink(
    netlink: &Netlink,
    state_dir: &Path,
    bridge_name: &str,
) -> Result<String, NodeError> {
    let Some(bridge) = netlink.link_by_name(bridge_name).await? else {
        // A file without its bridge (made again at boot, say) describes nothing left.
        UplinkState::remove(state_dir, bridge_name)?;
        return Err(NodeError::NotSetUp(bridge_name.to_owned()));
    };
    let Some(state) = UplinkState::load(state_dir, bridge_name, bridge.alias.as_deref())? else {
        UplinkState::remove(state_dir, bridge_name)?;
        return Err(NodeError::NotSetUp(bridge_name.to_owned()));
    };
    let uplink = netlink.require_link(&state.uplink).await?;
    for address in &state.addresses {
        netlink.add_moved_addr(uplink.index, *address).await?;
    }
    netlink.set_nomaster(uplink.index).await?;
    netlink.set_up(uplink.index).await?;
    for route in &state.routes {
        netlink.replace_route_spec(route, uplink.index).await?;
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
    UplinkState::remove(state_dir, bridge_name)?;
    Ok(state.uplink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_uplink_is_believed_only_within_the_recheck_window() {
        let seen = 1_000_000_000_000;
        let window = u64::try_from(NO_UPLINK_RECHECK.as_nanos()).expect("five seconds fit in u64 ns");
        assert!(!still_believed(0, seen), "never looked");
        assert!(still_believed(seen, seen));
        assert!(still_believed(seen, seen + window - 1));
        assert!(!still_believed(seen, seen + window), "window over");
        assert!(!still_believed(seen, seen - 1), "clock went back");
    }

    #[test]
    fn the_alias_holds_a_marker_and_old_aliases_still_read() {
        let state = UplinkState {
            uplink: "bond0".into(),
            ..UplinkState::default()
        };
        assert_eq!(state.marker(), "flatbridge-node uplink=bond0");
        assert_eq!(UplinkState::decode(&state.marker()), Some(state));
        let old = UplinkState::decode(
            "flatbridge-node uplink=eth0 addrs=10.10.0.11/16 routes=0.0.0.0/0@10.10.0.1,192.168.5.0/24 \
             gateways=10.10.1.0/16",
        )
        .expect("an alias of an older release");
        assert_eq!(
            old.addresses,
            vec!["10.10.0.11/16".parse::<IpNetwork>().expect("cidr")]
        );
        assert_eq!(old.routes.len(), 2);
        assert_eq!(old.routes[0].gateway, Some("10.10.0.1".parse().expect("ip")));
        assert_eq!(UplinkState::decode("flatbridge:data:abc:eth0"), None);
        assert_eq!(UplinkState::decode("flatbridge-node addrs=x"), None);
    }

    #[test]
    fn the_state_file_holds_more_than_an_alias_and_belongs_to_its_marker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let routes: Vec<RouteSpec> = (0..40)
            .map(|i| RouteSpec {
                dst: format!("192.168.{i}.0/24").parse().expect("cidr"),
                gateway: Some("10.10.0.1".parse().expect("ip")),
                metric: Some(100 + i),
                source: Some("10.10.0.11".parse().expect("ip")),
                protocol: 4,
                scope: 0,
            })
            .collect();
        let state = UplinkState {
            uplink: "eth0".into(),
            addresses: vec![
                "10.10.0.11/16".parse().expect("cidr"),
                "2001:db8::11/64".parse().expect("cidr"),
            ],
            routes,
            gateways: vec![],
        };
        state.save(dir.path(), "cni0").expect("save");
        let marker = state.marker();
        assert_eq!(
            UplinkState::load(dir.path(), "cni0", Some(&marker)).expect("load"),
            Some(state.clone())
        );
        // A bridge without the marker (made again at boot) was not set up.
        assert_eq!(UplinkState::load(dir.path(), "cni0", None).expect("load"), None);
        // A marker for another uplink: the file is not this setup's.
        let other = UplinkState::load(dir.path(), "cni0", Some("flatbridge-node uplink=bond0"))
            .expect("load")
            .expect("marked");
        assert_eq!(other.uplink, "bond0");
        assert!(other.routes.is_empty());
        UplinkState::remove(dir.path(), "cni0").expect("remove");
        UplinkState::remove(dir.path(), "cni0").expect("remove twice");
    }
}
