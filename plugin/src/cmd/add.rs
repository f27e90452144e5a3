//! ADD: bridge, address lease, veth pair with its peer created inside the pod, addresses
//! and routes in the pod. Every step that creates something registers its undo; a failure
//! at any step undoes them all, so a failed ADD leaves no lease and no veth behind.

use ipnetwork::IpNetwork;

use super::{
    block_on, datapath_steps, fault, host_veth_name,
    ipam_plugin::IpamPlugin,
    is_pod_veth, veth_alias,
    wire::{self, LateCheck, Outcome, Wire},
};
use crate::{
    cni::{
        CniError, Request, code,
        result::{CniResult, Interface, Route},
    },
    datapath::Datapath,
    ipam::Owner,
    kernel,
    mac::Mac,
    netlink::{Link, Netlink, VethSpec},
    netns::Netns,
    node::{self, BridgeSpec},
};

/// What a failed ADD must take back, in reverse order of creation.
#[derive(Default)]
struct Undo {
    fast_path: datapath_steps::Added,
    host_veth: Option<String>,
    leased: bool,
}

impl Undo {
    async fn run(self, node: &Netlink, ipam: Option<&IpamPlugin>, request: &Request, owner: &Owner) {
        // The endpoint goes before the veth, so no program ever redirects to a dead port.
        datapath_steps::undo_add(request, self.fast_path);
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
    let ipam = IpamPlugin::of(request)?;
    // Bad requests fail before the node is touched (no bridge, no datapath made for them).
    if let Some(IpamPlugin::HostLocal(config)) = &ipam {
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
    ipam: Option<&'a IpamPlugin>,
    owner: &'a Owner,
    node: &'a Netlink,
    pod: &'a Netlink,
}

impl Steps<'_> {
    /// ADD, step by step; each step's undo is recorded in `undo` as soon as it is made.
    async fn run(&self, undo: &mut Undo) -> Result<CniResult, CniError> {
        let net = &self.request.config.net;
        let (bridge, datapath) = self.bridge_and_datapath().await?;
        let host_name = host_veth_name(&net.name, &self.owner.container_id, self.ifname);
        self.clear_leftovers(&host_name).await?;
        let (uplink, wire) = self.uplink_and_wire(&bridge, datapath.as_ref()).await?;
        let (mut result, late) = match self.ipam {
            Some(ipam) => self.lease(ipam, wire.as_ref(), undo).await?,
            None => (CniResult::default(), Vec::new()),
        };
        fault::point("add:lease")?;
        self.plug_host_port(&host_name, &bridge, datapath.as_ref(), &uplink, &result, undo)
            .await?;
        let pod_link = self.configure_pod(&mut result).await?;
        fault::point("add:pod")?;
        self.finish_node_side(
            &bridge,
            datapath.as_ref(),
            wire.as_ref(),
            &late,
            &result,
            &pod_link,
        )
        .await?;
        fault::point("add:finish")?;
        self.assemble_result(result, &host_name, &pod_link).await
    }

    /// The pods' bridge (made when missing) and, with the fast path, the network's datapath
    /// (loaded when missing); without it, a check that plain pods may join this bridge.
    async fn bridge_and_datapath(&self) -> Result<(Link, Option<Datapath>), CniError> {
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
            Some(datapath_steps::prepare(self.request, self.node, &bridge).await?)
        } else {
            datapath_steps::check_plain_bridge_allowed(self.request, &bridge)?;
            None
        };
        fault::point("add:datapath")?;
        Ok((bridge, datapath))
    }

    /// The bridge's uplink and the wire to probe and announce addresses on (with the
    /// datapath, the uplink's programs go on first: they remember who claims addresses);
    /// refuses a requested MAC that is the bridge's or the uplink's.
    async fn uplink_and_wire<'d>(
        &self,
        bridge: &Link,
        datapath: Option<&'d Datapath>,
    ) -> Result<(node::Uplink, Option<Wire<'d>>), CniError> {
        // What the datapath already knows of the uplink saves listing the bridge's ports.
        let known = datapath
            .and_then(|datapath| datapath.node_config().ok())
            .map(|known| node::KnownUplink {
                bridge_ifindex: known.bridge_ifindex,
                uplink_ifindex: known.uplink_ifindex,
                no_uplink_seen_ns: known.no_uplink_seen_ns,
            });
        let configured = self.request.config.net.uplink.as_deref();
        let uplink = node::find_uplink(self.node, bridge, configured, known, is_pod_veth).await?;
        self.refuse_node_mac(bridge, uplink.link.as_ref())?;
        if let Some(datapath) = datapath {
            datapath_steps::ensure_uplink_programs(datapath, self.node, &uplink).await?;
        }
        let wire = uplink
            .link
            .as_ref()
            .map(|_| Wire::new(bridge.index, bridge.mac.unwrap_or_default(), datapath));
        Ok((uplink, wire))
    }

    /// The pod's veth pair, and its host side made a checked port of the bridge: programs
    /// and endpoint while it is still down (so that no frame of the pod ever passes
    /// unchecked), alias, bridge, up.
    async fn plug_host_port(
        &self,
        host_name: &str,
        bridge: &Link,
        datapath: Option<&Datapath>,
        uplink: &node::Uplink,
        result: &CniResult,
        undo: &mut Undo,
    ) -> Result<(), CniError> {
        let net = &self.request.config.net;
        // Without an explicit mtu, pods follow the bridge (which follows its uplink).
        let mtu = if net.mtu != 0 { net.mtu } else { bridge.mtu };
        self.node
            .create_veth(&VethSpec {
                host_name,
                peer_name: self.ifname,
                peer_netns: self.pod_netns.file(),
                mtu,
                peer_mac: self.mac,
            })
            .await?;
        undo.host_veth = Some(host_name.to_owned());
        fault::point("add:veth")?;
        let host = self.node.require_link(host_name).await?;
        // The veth is still down: the programs go on now, cheaply (see attach_pod).
        if let Some(datapath) = datapath {
            datapath.attach_pod(host_name)?;
            fault::point("add:programs")?;
            let pod_mac = self.pod.require_link(self.ifname).await?.mac.unwrap_or_default();
            let added = datapath_steps::add_endpoint(
                self.request,
                datapath,
                bridge,
                &host,
                uplink,
                pod_mac,
                result,
                &mut undo.fast_path,
            )?;
            datapath_steps::refuse_unchecked_pods(self.request, datapath, self.node, bridge, &host, added)
                .await?;
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
            datapath_steps::check_plain_bridge_allowed(self.request, bridge)?;
        }
        self.node.set_up(host.index).await?;
        fault::point("add:port")?;
        Ok(())
    }

    /// Once the pod is configured: the gateway address on the bridge (`isGateway`), the
    /// pod's addresses announced on the wire, and the datapath's gateway entries.
    async fn finish_node_side(
        &self,
        bridge: &Link,
        datapath: Option<&Datapath>,
        wire: Option<&Wire<'_>>,
        late: &[LateCheck],
        result: &CniResult,
        pod_link: &Link,
    ) -> Result<(), CniError> {
        let config = &self.request.config;
        let pod_mac = pod_link.mac.unwrap_or_default();
        // Before anything announces the addresses: one claimed on the wire while ADD ran
        // must not be announced over its holder.
        if let Some(wire) = wire
            && let Err((ip, mac)) = wire.finish(late, pod_mac, result.ips.iter().map(|ip| ip.address.ip()))
        {
            // As when a probe is answered: marked only where IPAM can hand out another (not
            // a requested address, not another plugin's), and a marker that cannot be
            // written leaves the conflict what it is.
            let marked = match self.ipam.filter(|ipam| ipam.can_reallocate()) {
                None => wire::Marked::NotReallocatable,
                Some(ipam) => match ipam.mark_conflict(self.request, ip, mac) {
                    Ok(()) => wire::Marked::Yes,
                    Err(error) => {
                        log::error!("marking {ip} as conflicting failed: {error}");
                        wire::Marked::Failed
                    }
                },
            };
            log::warn!(
                "address {ip} was claimed on the wire by {} while the pod was being added{}",
                Mac(mac),
                if marked == wire::Marked::Yes {
                    ": marked as conflicting in IPAM"
                } else {
                    ""
                }
            );
            return Err(wire::late_conflict(ip, mac, marked));
        }
        if config.is_gateway() {
            for ip in &result.ips {
                if let Some(gateway) = ip.gateway {
                    let address = IpNetwork::new(gateway, ip.address.prefix()).map_err(|error| {
                        CniError::new(code::INVALID_CONFIG, format!("gateway {gateway}: {error}"))
                    })?;
                    node::ensure_gateway(self.node, bridge, address, config.net.force_address).await?;
                }
            }
        }
        fault::point("add:gateway")?;
        // The node's own stack (kubelet's probes, host-network pods) may still hold the MAC
        // of a previous pod with one of these addresses: the announcements below leave by
        // the bridge and never reach it, and its entry would stay REACHABLE for seconds.
        for ip in &result.ips {
            if let Err(error) = self.node.forget_neighbour(bridge.index, ip.address.ip()).await {
                log::warn!("{error}");
            }
        }
        if let Some(wire) = wire {
            for ip in result.ipv4s() {
                if let Err(error) = wire.announce(pod_mac, ip) {
                    log::warn!("gratuitous ARP for {ip} failed: {error}");
                }
            }
            // With the pod's own duplicate address detection on (`enabledad`) its IPv6
            // addresses are tentative still: announcing one now would say it is in use
            // before the pod knows it may use it (RFC 4862 5.4).
            for ip in result.ipv6s().filter(|_| !config.net.enable_dad) {
                if let Err(error) = wire.announce_ipv6(pod_mac, ip) {
                    log::warn!("unsolicited neighbour advertisement for {ip} failed: {error}");
                }
            }
        }
        if let Some(datapath) = datapath {
            // The bridge as it is now: its MAC changes when its first port arrives unless
            // it was set explicitly (as flatbridge does for bridges it creates).
            let bridge = self.node.require_link(&config.net.bridge).await?;
            datapath_steps::finish_pod(datapath, self.node, &bridge, result).await?;
        }
        Ok(())
    }

    /// The result the runtime gets: the bridge, the host veth and the pod's interface as
    /// they are now, the addresses on the pod's interface, DNS.
    async fn assemble_result(
        &self,
        mut result: CniResult,
        host_name: &str,
        pod_link: &Link,
    ) -> Result<CniResult, CniError> {
        let net = &self.request.config.net;
        let host = self.node.require_link(host_name).await?;
        let bridge = self.node.require_link(&net.bridge).await?;
        result.interfaces = vec![
            interface(&bridge, None),
            interface(&host, None),
            interface(pod_link, Some(self.pod_netns.path().display().to_string())),
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
                        Mac(requested),
                        device.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Leases the pod's addresses. On a wire, each address is checked first (RFC 5227 and
    /// RFC 4862's duplicate address detection, see `wire`; the next ones are probed ahead);
    /// one that somebody claims is marked as
    /// conflicting in IPAM, logged, and replaced by another. Returns, with the result, the
    /// addresses to check again at the end of ADD.
    async fn lease(
        &self,
        ipam: &IpamPlugin,
        wire: Option<&Wire<'_>>,
        undo: &mut Undo,
    ) -> Result<(CniResult, Vec<LateCheck>), CniError> {
        const ATTEMPTS: usize = 5;
        let wait = self.request.config.arp_probe();
        let wire = wire.filter(|_| !wait.is_zero());
        let ahead = match wire {
            Some(Wire { memory: Some(_), .. }) => wire::PROBE_AHEAD,
            _ => 0,
        };
        for _ in 0..ATTEMPTS {
            // Before the call: a delegated plugin that allocated and then failed must get
            // its DEL too (DEL of nothing is success).
            undo.leased = true;
            let (result, upcoming) = ipam.add(self.request, self.owner, ahead)?;
            let Some(wire) = wire else {
                return Ok((result, Vec::new()));
            };
            // First, so that the wait for this lease's probe (if any) ages these too.
            wire.probe_ahead(&upcoming, wait);
            let (ip, mac) = match wire.check(result.ips.iter().map(|ip| ip.address.ip()), wait)? {
                Outcome::Free(late) => return Ok((result, late)),
                Outcome::InUse { ip, mac } => (ip, mac),
            };
            let holder = Mac(mac).to_string();
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
            datapath_steps::del_pod(self.request, self.node, Some(&stale)).await?;
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
        let dad = config.net.enable_dad;
        self.pod_netns.run(|| {
            for error in kernel::set_pod_interface_sysctls(self.ifname, dad) {
                log::warn!("{error}");
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
            let gateway = result.route_gateway(route);
            self.pod.add_route(route.dst, gateway, pod_link.index).await?;
        }
        Ok(self.pod.require_link(self.ifname).await?)
    }
}

fn interface(link: &Link, sandbox: Option<String>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.map(|mac| Mac(mac).to_string()).unwrap_or_default(),
        mtu: Some(link.mtu),
        sandbox,
    }
}
