//! CHECK: the pod's networking still matches prevResult. Each difference is reported
//! precisely: which interface, which address or route, what was expected and what is there.
use std::net::IpAddr;

use super::{block_on, host_veth_name, ipam_plugin::IpamPlugin};
use crate::{
    cni::{CniError, Request, code, result::CniResult},
    ipam::Owner,
    mac::Mac,
    netlink::{LinkKind, Netlink},
    netns::Netns,
};

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

pub fn check(request: &Request) -> Result<(), CniError> {
    let container_id = request.env.require_container_id()?;
    let ifname = request.env.require_ifname()?;
    let netns_path = request.env.require_netns()?;
    let prev = request
        .config
        .net
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult in the config"))?;
    let prev = CniResult::from_json(prev)?;
    let pod_netns = Netns::open(netns_path)?;
    let owner = Owner::new(container_id, ifname);
    let net = &request.config.net;

    block_on(async {
        let node = Netlink::open()?;
        let pod = pod_netns.run(Netlink::open)??;

        let bridge = node
            .link_by_name(&net.bridge)
            .await?
            .ok_or_else(|| mismatch(format!("bridge {} does not exist", net.bridge)))?;
        if bridge.kind != LinkKind::Bridge {
            return Err(mismatch(format!("{} is not a bridge", net.bridge)));
        }
        let host_name = host_veth_name(&net.name, container_id, ifname);
        let host = node
            .link_by_name(&host_name)
            .await?
            .ok_or_else(|| mismatch(format!("host veth {host_name} of {owner} does not exist")))?;
        if host.master != Some(bridge.index) {
            return Err(mismatch(format!(
                "host veth {host_name} is not a port of bridge {}",
                net.bridge
            )));
        }

        let link = pod.link_by_name(ifname).await?.ok_or_else(|| {
            mismatch(format!(
                "interface {ifname} does not exist in {}",
                netns_path.display()
            ))
        })?;
        if link.kind != LinkKind::Veth {
            return Err(mismatch(format!("interface {ifname} is not a veth")));
        }
        if !link.up {
            return Err(mismatch(format!("interface {ifname} is down")));
        }
        let expected = prev
            .interfaces
            .iter()
            .find(|interface| interface.name == ifname && interface.sandbox.is_some());
        if let Some(expected) = expected {
            let actual = link.mac.map(|mac| Mac(mac).to_string()).unwrap_or_default();
            if !expected.mac.is_empty() && !expected.mac.eq_ignore_ascii_case(&actual) {
                return Err(mismatch(format!(
                    "interface {ifname} has MAC {actual}, prevResult says {}",
                    expected.mac
                )));
            }
        }

        let present = pod.addrs(link.index).await?;
        for ip in &prev.ips {
            if !present.contains(&ip.address) {
                let have: Vec<String> = present.iter().map(ToString::to_string).collect();
                return Err(mismatch(format!(
                    "interface {ifname} lacks address {} (has: {})",
                    ip.address,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )));
            }
        }

        for route in &prev.routes {
            let gateway = prev.route_gateway(route);
            let routes = pod.routes(route.dst.is_ipv4()).await?;
            let found = routes.iter().any(|entry| {
                entry.dst == route.dst
                    && entry.oif == Some(link.index)
                    && (gateway.is_none() || entry.gateway == gateway)
            });
            if !found {
                return Err(mismatch(format!(
                    "route to {}{} via {ifname} is missing",
                    route.dst,
                    gateway.map(|gw| format!(" via {gw}")).unwrap_or_default()
                )));
            }
        }
        Ok(())
    })?;

    if let Some(ipam) = IpamPlugin::of(request)? {
        let ips: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.ip()).collect();
        ipam.check(request, &owner, &ips)?;
    }
    Ok(())
}
