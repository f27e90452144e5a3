//! ADD: bridge, address lease, veth pair with its peer created inside the pod, addresses
//! and routes in the pod. Every step that creates something registers its undo; a failure
//! at any step undoes them all, so a failed ADD leaves no lease and no veth behind.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use ipnetwork::IpNetwork;

use super::{block_on, fastpath, fault, host_veth_name, ipam::Ipam, veth_alias};
use crate::{
    arp::ArpSocket,
    cni::{
        CniError, Request, code,
        result::{CniResult, Interface, Route},
    },
    ipam::Owner,
    netlink::{Link, Netlink, VethSpec},
    netns::Netns,
    node::{self, BridgeSpec},
};

/// What a failed ADD must take back, in reverse order of creation.
#[derive(Default)]
struct Undo {
    fast_path: fastpath::Added,
    host_veth: Option<String>,
    leased: bool,
}

impl Undo {
    async fn run(self, node: &Netlink, ipam: Option<&Ipam>, request: &Request, owner: &Owner) {
        // The endpoint goes before the veth, so no program ever redirects to a dead port.
        fastpath::undo_add(request, self.fast_path);
        if let Some(name) = self.host_veth {
            let deleted = match node.link_by_name(&name).await {
                Ok(Some(link)) => node.delete_link(link.index).await,
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = deleted {
                log::error!("rollback: failed to delete veth {name}: {error}");
            }
        }
        if self.leased
            && let Some(ipam) = ipam
            && let Err(error) = ipam.del(request, owner)
        {
            log::error!("rollback: failed to release the addresses of {owner}: {error}");
        }
    }
}

pub fn add(request: &Request) -> Result<CniResult, CniError> {
    let container_id = request.env.require_container_id()?;
    let ifname = request.env.require_ifname()?;
    let netns_path = request.env.require_netns()?;
    let pod_netns = Netns::open(netns_path)?;
    let mac = request.config.requested_mac(request.env.arg("MAC"))?;
    let ipam = Ipam::of(request)?;
    // Bad requests fail before the node is touched (no bridge, no datapath made for them).
    if let Some(Ipam::HostLocal(config)) = &ipam {
        config.check_requested()?;
    }
    let owner = Owner::new(container_id, ifname);
    block_on(async {
        let node = Netlink::open()?;
        let pod = pod_netns.run(Netlink::open)??;
        let mut undo = Undo::default();
        let steps = Steps {
            request,
            ifname,
            pod_netns: &pod_netns,
            mac,
            ipam: ipam.as_ref(),
            owner: &owner,
            node: &node,
            pod: &pod,
        };
        let result = steps.run(&mut undo).await;
        if let Err(error) = &result {
            log::warn!("ADD failed, rolling back: {error}");
            undo.run(&node, ipam.as_ref(), request, &owner).await;
        }
        result
    })
}

struct Steps<'a> {
    request: &'a Request,
    ifname: &'a str,
    pod_netns: &'a Netns,
    mac: Option<[u8; 6]>,
    ipam: Option<&'a Ipam>,
    owner: &'a Owner,
    node: &'a Netlink,
    pod: &'a Netlink,
}

impl Steps<'_> {
    async fn run(&self, undo: &mut Undo) -> Result<CniResult, CniError> {
        let config = &self.request.config;
        let net = &config.net;
        let bridge = node::ensure_bridge(
            self.node,
            &BridgeSpec {
                name: &net.bridge,
                mtu: net.mtu,
                promisc: net.promisc_mode,
            },
        )
        .await?;
        fault::point("add:bridge")?;
        let datapath = if config.fast_path() {
            Some(fastpath::prepare(self.request, self.node, &bridge).await?)
        } else {
            fastpath::check_plain_bridge_allowed(self.request, &bridge)?;
            None
        };
        fault::point("add:datapath")?;
        // Without an explicit mtu, pods follow the bridge (which follows its uplink).
        let mtu = if net.mtu != 0 { net.mtu } else { bridge.mtu };
        let host_name = host_veth_name(&net.name, &self.owner.container_id, self.ifname);
        self.clear_leftovers(&host_name).await?;

        // What the datapath already knows of the uplink saves listing the bridge's ports.
        let known = datapath.as_ref().and_then(|datapath| datapath.node_config().ok());
        let uplink = fastpath::find_uplink(self.node, &bridge, net.uplink.as_deref(), known.as_ref()).await?;
        self.refuse_node_mac(&bridge, uplink.link.as_ref())?;
        let wire = Self::wire(&bridge, uplink.link.as_ref())?;
        let mut result = match self.ipam {
            Some(ipam) => self.lease(ipam, wire.as_ref(), undo).await?,
            None => CniResult::default(),
        };
        fault::point("add:lease")?;

        self.node
            .create_veth(&VethSpec {
                host_name: &host_name,
                peer_name: self.ifname,
                peer_netns: self.pod_netns.file(),
                mtu,
                peer_mac: self.mac,
            })
            .await?;
        undo.host_veth = Some(host_name.clone());
        fault::point("add:veth")?;
        let host = self.node.require_link(&host_name).await?;
        // The veth is still down: the programs go on now, cheaply (see attach_pod), and the
        // pod's endpoint before the veth comes up, so that no frame of the pod ever passes
        // unchecked.
        if let Some(datapath) = &datapath {
            datapath.attach_pod(&host_name)?;
            fault::point("add:programs")?;
            let pod_mac = self.pod.require_link(self.ifname).await?.mac.unwrap_or_default();
            let added = fastpath::add_endpoint(
                self.request,
                datapath,
                &bridge,
                &host,
                &uplink,
                pod_mac,
                &result,
                &mut undo.fast_path,
            )?;
            fastpath::refuse_unchecked_pods(self.request, datapath, self.node, &bridge, &host, added).await?;
            fastpath::ensure_uplink_programs(datapath, self.node, &uplink).await?;
            fault::point("add:endpoint")?;
        }
        // Who owns this veth, for GC and for people reading `ip link`.
        self.node
            .set_alias(
                host.index,
                &veth_alias(&net.name, &self.owner.container_id, self.ifname),
            )
            .await?;
        // The port's own IPv6 would only add chatter (DAD, router solicitations, MLD) that
        // takes the RTNL lock in a kworker for every new pod.
        if let Err(error) = self.node.stop_ipv6_autoconf(host.index).await {
            log::warn!("{error}");
        }
        self.node.set_master(host.index, bridge.index).await?;
        if net.hairpin_mode {
            self.node.set_hairpin(host.index, true).await?;
        }
        if datapath.is_none() {
            // Again, now that the port is on the bridge (still down): a first checked pod
            // may have come in the meantime.
            fastpath::check_plain_bridge_allowed(self.request, &bridge)?;
        }
        self.node.set_up(host.index).await?;
        fault::point("add:port")?;

        let pod_link = self.configure_pod(&mut result).await?;
        fault::point("add:pod")?;

        if config.is_gateway() {
            for ip in &result.ips {
                if let Some(gateway) = ip.gateway {
                    let address = IpNetwork::new(gateway, ip.address.prefix()).map_err(|error| {
                        CniError::new(code::INVALID_CONFIG, format!("gateway {gateway}: {error}"))
                    })?;
                    node::ensure_gateway(self.node, &bridge, address, net.force_address).await?;
                }
            }
        }
        fault::point("add:gateway")?;
        // The devices as they are now: a bridge's MAC changes when its first port arrives
        // unless it was set explicitly (as flatbridge does for bridges it creates).
        let host = self.node.require_link(&host_name).await?;
        let bridge = self.node.require_link(&net.bridge).await?;
        let pod_mac = pod_link.mac.unwrap_or_default();
        if let Some(wire) = &wire {
            for ip in ipv4s(&result) {
                if let Err(error) = wire.announce(pod_mac, ip) {
                    log::warn!("gratuitous ARP for {ip} failed: {error}");
                }
            }
        }
        if let Some(datapath) = &datapath {
            fastpath::finish_pod(datapath, self.node, &bridge, &result).await?;
        }
        fault::point("add:finish")?;

        result.interfaces = vec![
            interface(&bridge, None),
            interface(&host, None),
            interface(&pod_link, Some(self.pod_netns.path().display().to_string())),
        ];
        for ip in &mut result.ips {
            ip.interface = Some(2);
        }
        if let Some(dns) = &net.dns
            && !dns.is_empty()
        {
            result.dns = dns.clone();
        }
        log::info!(
            "added {} in {} as {} (host {host_name})",
            self.ifname,
            self.pod_netns.path().display(),
            result
                .ips
                .iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(result)
    }

    /// A pod must not take the MAC of the node's bridge or uplink: with it, it would speak
    /// for the node on the wire.
    fn refuse_node_mac(&self, bridge: &Link, uplink: Option<&Link>) -> Result<(), CniError> {
        let Some(requested) = self.mac else {
            return Ok(());
        };
        for device in std::iter::once(bridge).chain(uplink) {
            if device.mac == Some(requested) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "the requested MAC {} is the MAC of the node's {}: choose another",
                        format_mac(requested),
                        device.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A socket for ARP on the wire, when the bridge has an uplink (without one there is no
    /// wire to probe or announce on).
    fn wire(bridge: &Link, uplink: Option<&Link>) -> Result<Option<ArpSocket>, CniError> {
        if uplink.is_none() {
            return Ok(None);
        }
        let socket = ArpSocket::open(bridge.index, bridge.mac.unwrap_or_default()).map_err(|error| {
            CniError::new(
                code::IO_FAILURE,
                format!("failed to open an ARP socket on {}: {error}", bridge.name),
            )
        })?;
        Ok(Some(socket))
    }

    /// Leases the pod's addresses. On a wire, each IPv4 address is probed first (RFC 5227);
    /// one that somebody answers for is marked as conflicting in IPAM, logged, and replaced
    /// by another.
    async fn lease(
        &self,
        ipam: &Ipam,
        wire: Option<&ArpSocket>,
        undo: &mut Undo,
    ) -> Result<CniResult, CniError> {
        const ATTEMPTS: usize = 5;
        let wait = self.request.config.arp_probe();
        for _ in 0..ATTEMPTS {
            // Before the call: a delegated plugin that allocated and then failed must get
            // its DEL too (DEL of nothing is success).
            undo.leased = true;
            let result = ipam.add(self.request, self.owner)?;
            let Some(wire) = wire.filter(|_| !wait.is_zero()) else {
                return Ok(result);
            };
            let Some((ip, mac)) = probe_all(wire, &result, wait)? else {
                return Ok(result);
            };
            let holder = format_mac(mac);
            if !ipam.can_reallocate() {
                return Err(CniError::new(
                    code::ADDRESS_CONFLICT,
                    format!("address {ip} is already in use on the network by {holder}"),
                ));
            }
            log::warn!(
                "address {ip} is already in use on the network by {holder}: marked as conflicting in IPAM"
            );
            ipam.mark_conflict(self.request, ip, mac)?;
        }
        Err(CniError::new(
            code::ADDRESS_CONFLICT,
            format!(
                "{ATTEMPTS} addresses in a row were already in use on the network; see the log and `flatbridge status`"
            ),
        ))
    }

    /// A host veth with this attachment's name is left over from an earlier ADD of the same
    /// container and interface (a retry after a crash): remove it. An interface with the
    /// pod's name that is not ours is an error, not something to delete.
    async fn clear_leftovers(&self, host_name: &str) -> Result<(), CniError> {
        if let Some(stale) = self.node.link_by_name(host_name).await? {
            log::warn!("removing leftover veth {host_name} of an earlier ADD");
            fastpath::del_pod(self.request, self.node, Some(&stale)).await?;
            self.node.delete_link(stale.index).await?;
        }
        if self.pod.link_by_name(self.ifname).await?.is_some() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "an interface named {} already exists in {}",
                    self.ifname,
                    self.pod_netns.path().display()
                ),
            ));
        }
        Ok(())
    }

    /// Brings the pod's interface and loopback up and gives it its addresses and routes.
    async fn configure_pod(&self, result: &mut CniResult) -> Result<Link, CniError> {
        let config = &self.request.config;
        let pod_link = self.pod.require_link(self.ifname).await?;
        if let Some(lo) = self.pod.link_by_name("lo").await? {
            self.pod.set_up(lo.index).await?;
        }
        let arp_notify = format!("/proc/sys/net/ipv4/conf/{}/arp_notify", self.ifname);
        let ipv6_conf = format!("/proc/sys/net/ipv6/conf/{}", self.ifname);
        let dad = if config.net.enable_dad { "1" } else { "0" };
        self.pod_netns.run(|| {
            // With arp_notify the kernel announces the addresses (gratuitous ARP) when the
            // link comes up, so neighbours and switches that knew a previous owner of an
            // address learn the new MAC at once. IPv6 sysctls exist only with IPv6 on.
            if let Err(error) = node::write_sysctl(&arp_notify, "1") {
                log::warn!("{error}");
            }
            // The pod's IPv6 sources are checked against its leases and its link-local,
            // which must be the one its MAC gives (EUI-64); addresses made from router
            // advertisements on the wire would be dropped, so none are made.
            for (name, value) in [
                ("accept_dad", dad),
                ("addr_gen_mode", "0"),
                ("accept_ra", "0"),
                ("autoconf", "0"),
            ] {
                let _ = node::write_sysctl(&format!("{ipv6_conf}/{name}"), value);
            }
        })?;
        // Addresses before the link comes up, so that the announcement carries them; routes
        // after, as the kernel refuses routes through a link that is down.
        for ip in &result.ips {
            self.pod.add_addr(pod_link.index, ip.address).await?;
        }
        self.pod.set_up(pod_link.index).await?;
        if config.net.is_default_gateway {
            for ip in &result.ips {
                let default = if ip.address.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let default: IpNetwork = default.parse().expect("a valid default route");
                if let Some(gateway) = ip.gateway
                    && !result.routes.iter().any(|route| route.dst == default)
                {
                    result.routes.push(Route {
                        dst: default,
                        gw: Some(gateway),
                    });
                }
            }
        }
        for route in &result.routes {
            // A route without a gateway goes via the gateway of its family.
            let gateway = route.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .find(|ip| ip.address.is_ipv4() == route.dst.is_ipv4())
                    .and_then(|ip| ip.gateway)
            });
            self.pod.add_route(route.dst, gateway, pod_link.index).await?;
        }
        Ok(self.pod.require_link(self.ifname).await?)
    }
}

/// The IPv4 addresses of a result.
fn ipv4s(result: &CniResult) -> impl Iterator<Item = Ipv4Addr> + '_ {
    result.ips.iter().filter_map(|ip| match ip.address.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

/// Probes every IPv4 address of `result` on the wire; the first one somebody answers for,
/// with the answerer's MAC.
fn probe_all(
    wire: &ArpSocket,
    result: &CniResult,
    wait: Duration,
) -> Result<Option<(IpAddr, [u8; 6])>, CniError> {
    for ip in ipv4s(result) {
        let answer = wire.probe(ip, wait).map_err(|error| {
            CniError::new(
                code::IO_FAILURE,
                format!("failed to probe {ip} on the wire: {error}"),
            )
        })?;
        if let Some(mac) = answer {
            return Ok(Some((IpAddr::V4(ip), mac)));
        }
    }
    Ok(None)
}

fn interface(link: &Link, sandbox: Option<String>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.map(format_mac).unwrap_or_default(),
        mtu: Some(link.mtu),
        sandbox,
    }
}

pub use crate::mac::format as format_mac;
