//! The node's neighbour entries (ARP and NDP caches) on a link.
use std::net::IpAddr;

use rtnetlink::packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};

use super::{Netlink, NetlinkError, has_errno, request_error};

impl Netlink {
    /// Forgets what the node cached of `ip`'s link-layer address on link `index`, so that
    /// the next packet the node sends there asks again. No entry is fine.
    pub async fn forget_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.header.ifindex = index;
        message.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        match self.handle().neighbours().del(message).execute().await {
            Err(error) if has_errno(&error, libc::ENOENT) => Ok(()),
            other => other.map_err(request_error(format!(
                "forget the neighbour entry of {ip} on link #{index}"
            ))),
        }
    }
}
