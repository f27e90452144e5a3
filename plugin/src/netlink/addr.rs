//! Addresses on a link.

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};

use super::{Netlink, NetlinkError, has_errno, request_error};

/// The address of an address message, with its prefix.
fn network_of(message: &AddressMessage) -> Option<IpNetwork> {
    let ip = message.attributes.iter().find_map(|attribute| match attribute {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    IpNetwork::new(ip, message.header.prefix_len).ok()
}

impl Netlink {
    /// Adds `address` (with its prefix) to link `index`; an address already there is fine.
    pub async fn add_addr(&self, index: u32, address: IpNetwork) -> Result<(), NetlinkError> {
        match self
            .handle()
            .address()
            .add(index, address.ip(), address.prefix())
            .execute()
            .await
        {
            Err(error) if has_errno(&error, libc::EEXIST) => Ok(()),
            other => other.map_err(request_error(format!("add address {address} to link #{index}"))),
        }
    }

    /// Adds `address` to link `index` as one that moves from another link of the node: no
    /// duplicate address detection (the address was the node's already, and a probe now
    /// could find it on the link it is leaving). An address already there is fine.
    pub async fn add_moved_addr(&self, index: u32, address: IpNetwork) -> Result<(), NetlinkError> {
        let mut request = self.handle().address().add(index, address.ip(), address.prefix());
        if address.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(error) if has_errno(&error, libc::EEXIST) => Ok(()),
            other => other.map_err(request_error(format!("add address {address} to link #{index}"))),
        }
    }

    /// The addresses of link `index` that are the node's own to move with the link: every
    /// IPv4 one, and the IPv6 ones of global scope that were configured (not made by
    /// autoconfiguration from router advertisements, which the link's new owner makes
    /// again from the same MAC, and not link-local).
    pub async fn own_addrs(&self, index: u32) -> Result<Vec<IpNetwork>, NetlinkError> {
        let messages = self.messages_of(index).await?;
        Ok(messages
            .iter()
            .filter(|message| {
                if message.header.family != AddressFamily::Inet6 {
                    return true;
                }
                let flags = message
                    .attributes
                    .iter()
                    .find_map(|attribute| match attribute {
                        AddressAttribute::Flags(flags) => Some(*flags),
                        _ => None,
                    })
                    .unwrap_or_else(|| {
                        AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()))
                    });
                message.header.scope == AddressScope::Universe && flags.contains(AddressFlags::Permanent)
            })
            .filter_map(network_of)
            .collect())
    }

    /// The address messages of link `index` (the kernel filters them, see `Netlink::open`).
    async fn messages_of(&self, index: u32) -> Result<Vec<AddressMessage>, NetlinkError> {
        let mut request = self.handle().address().get().set_link_index_filter(index);
        request.message_mut().header.index = index;
        request
            .execute()
            .try_collect()
            .await
            .map_err(request_error(format!("list addresses of link #{index}")))
    }

    /// The addresses of link `index`, with their prefixes.
    pub async fn addrs(&self, index: u32) -> Result<Vec<IpNetwork>, NetlinkError> {
        let messages = self.messages_of(index).await?;
        Ok(messages.iter().filter_map(network_of).collect())
    }

    /// Removes one address from link `index`; an address that is not there is fine.
    pub async fn del_addr(&self, index: u32, address: IpNetwork) -> Result<(), NetlinkError> {
        let messages = self.messages_of(index).await?;
        for message in messages {
            let matches = message.header.prefix_len == address.prefix()
                && message.attributes.iter().any(
                    |attribute| matches!(attribute, AddressAttribute::Address(ip) if *ip == address.ip()),
                );
            if matches {
                self.handle()
                    .address()
                    .del(message)
                    .execute()
                    .await
                    .map_err(request_error(format!(
                        "remove address {address} from link #{index}"
                    )))?;
            }
        }
        Ok(())
    }
}
