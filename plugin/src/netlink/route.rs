//! Routes in the main table.
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
    },
};

use super::{Netlink, NetlinkError, has_errno, request_error};

/// A route as CHECK compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Made by the kernel for an address's prefix (it comes and goes with the address).
    pub from_kernel: bool,
    /// Learnt from a router advertisement (it expires, and comes back on the link the
    /// advertisements arrive on).
    pub from_ra: bool,
    /// What `ip route` shows as `metric`, `src`, `proto` and `scope`.
    pub metric: Option<u32>,
    pub source: Option<IpAddr>,
    pub protocol: u8,
    pub scope: u8,
}

/// A route as it was, to be made again out of another link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub metric: Option<u32>,
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// 0 for "not recorded": the route is made as a static one (boot).
    #[serde(default)]
    pub protocol: u8,
    #[serde(default)]
    pub scope: u8,
}

impl From<&RouteEntry> for RouteSpec {
    fn from(route: &RouteEntry) -> Self {
        Self {
            dst: route.dst,
            gateway: route.gateway,
            metric: route.metric,
            source: route.source,
            protocol: route.protocol,
            scope: route.scope,
        }
    }
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        Ok(())
    }
}

fn build_spec(route: &RouteSpec, oif: u32) -> RouteMessage {
    let mut message = build(route.dst, route.gateway, oif);
    if route.protocol != 0 {
        message.header.protocol = RouteProtocol::from(route.protocol);
    }
    if route.scope != 0 || route.gateway.is_none() {
        message.header.scope = RouteScope::from(route.scope);
    }
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    match route.source {
        Some(IpAddr::V4(source)) => message
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(source))),
        Some(IpAddr::V6(source)) => message
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet6(source))),
        None => {}
    }
    message
}

fn build(dst: IpNetwork, gateway: Option<IpAddr>, oif: u32) -> RouteMessage {
    match (dst, gateway) {
        (IpNetwork::V4(dst), gateway) => {
            let mut builder = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix())
                .output_interface(oif);
            if let Some(IpAddr::V4(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
        (IpNetwork::V6(dst), gateway) => {
            let mut builder = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix())
                .output_interface(oif);
            if let Some(IpAddr::V6(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
    }
}

fn address(value: &RouteAddress) -> Option<IpAddr> {
    match value {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Netlink {
    /// Adds a route via `gateway` (or on-link when `None`) out of link `oif`; a route that
    /// exists already is fine.
    pub async fn add_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> Result<(), NetlinkError> {
        match self
            .handle()
            .route()
            .add(build(dst, gateway, oif))
            .execute()
            .await
        {
            Err(error) if has_errno(&error, libc::EEXIST) => Ok(()),
            other => other.map_err(request_error(match gateway {
                Some(gateway) => format!("add route {dst} via {gateway}"),
                None => format!("add route {dst} on link #{oif}"),
            })),
        }
    }

    /// Adds the route, or replaces the one with the same destination (moving it to `oif`).
    pub async fn replace_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: u32,
    ) -> Result<(), NetlinkError> {
        self.handle()
            .route()
            .add(build(dst, gateway, oif))
            .replace()
            .execute()
            .await
            .map_err(request_error(format!(
                "replace route {dst} to go out of link #{oif}"
            )))
    }

    /// Makes `route` out of link `oif` with its metric, source, protocol and scope, in place
    /// of the one with the same destination and metric (moving it), or beside it.
    pub async fn replace_route_spec(&self, route: &RouteSpec, oif: u32) -> Result<(), NetlinkError> {
        self.handle()
            .route()
            .add(build_spec(route, oif))
            .replace()
            .execute()
            .await
            .map_err(request_error(format!(
                "replace route {route} to go out of link #{oif}"
            )))
    }

    /// The routes of the main table of one family.
    pub async fn routes(&self, ipv4: bool) -> Result<Vec<RouteEntry>, NetlinkError> {
        let mut query = if ipv4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        // The socket checks strictly (see `Netlink::open`): the kernel then filters by the
        // header's protocol and type, which the builder sets for adding a static route.
        query.header.protocol = RouteProtocol::Unspec;
        query.header.kind = RouteType::Unspec;
        let messages: Vec<RouteMessage> = self
            .handle()
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(request_error("list routes"))?;
        Ok(messages
            .into_iter()
            .filter(|message| message.header.table == RouteHeader::RT_TABLE_MAIN)
            .map(|message| {
                let unspecified: IpAddr = if ipv4 {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                let mut entry = RouteEntry {
                    dst: IpNetwork::new(unspecified, message.header.destination_prefix_length)
                        .unwrap_or_else(|_| IpNetwork::new(unspecified, 0).expect("/0 is a valid prefix")),
                    gateway: None,
                    oif: None,
                    from_kernel: message.header.protocol == RouteProtocol::Kernel,
                    from_ra: message.header.protocol == RouteProtocol::Ra,
                    metric: None,
                    source: None,
                    protocol: u8::from(message.header.protocol),
                    scope: u8::from(message.header.scope),
                };
                for attribute in &message.attributes {
                    match attribute {
                        RouteAttribute::Destination(dst) => {
                            if let Some(ip) = address(dst) {
                                entry.dst = IpNetwork::new(ip, message.header.destination_prefix_length)
                                    .unwrap_or(entry.dst);
                            }
                        }
                        RouteAttribute::Gateway(gateway) => entry.gateway = address(gateway),
                        RouteAttribute::Oif(oif) => entry.oif = Some(*oif),
                        RouteAttribute::Priority(metric) => entry.metric = Some(*metric),
                        RouteAttribute::PrefSource(source) => entry.source = address(source),
                        _ => {}
                    }
                }
                entry
            })
            .collect())
    }
}
