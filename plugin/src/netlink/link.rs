//! Links: look up, create bridges and veth pairs, change their state, delete them.
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use rtnetlink::{
    LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::{
        AddressFamily,
        link::{
            AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
            LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, State,
        },
    },
};

use super::{Netlink, NetlinkError, has_errno, request_error};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    /// A device without link info (a physical NIC) or of another kind.
    Other(String),
}

/// What we need to know of a network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// The bridge (or bond) this device is a port of.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    pub oper_up: bool,
    pub promisc: bool,
    pub alias: Option<String>,
}

impl Link {
    fn from_message(message: LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: LinkKind::Other(String::new()),
            mac: None,
            mtu: 0,
            master: None,
            up: message.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            promisc: message.header.flags.contains(LinkFlags::Promisc),
            alias: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(bytes) => link.mac = bytes.try_into().ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Controller(master) => link.master = Some(master),
                LinkAttribute::OperState(state) => link.oper_up = state == State::Up,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = match kind {
                                InfoKind::Bridge => LinkKind::Bridge,
                                InfoKind::Veth => LinkKind::Veth,
                                other => LinkKind::Other(other.to_string()),
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A veth pair whose peer is created directly inside another namespace.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    /// The namespace the peer is created in.
    pub peer_netns: &'a std::fs::File,
    /// 0 keeps the kernel's default.
    pub mtu: u32,
    pub peer_mac: Option<[u8; 6]>,
}

impl Netlink {
    /// The device `name`, or `None` when there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut links = self.handle().link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(message) => Ok(message.map(Link::from_message)),
            Err(error) if has_errno(&error, libc::ENODEV) => Ok(None),
            Err(error) => Err(request_error(format!("look up link {name}"))(error)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut links = self.handle().link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(message) => Ok(message.map(Link::from_message)),
            Err(error) if has_errno(&error, libc::ENODEV) => Ok(None),
            Err(error) => Err(request_error(format!("look up link #{index}"))(error)),
        }
    }

    /// The device `name`; its absence is an error.
    pub async fn require_link(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_owned()))
    }

    /// Every device of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let messages: Vec<LinkMessage> = self
            .handle()
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(request_error("list links"))?;
        Ok(messages.into_iter().map(Link::from_message).collect())
    }

    /// The ports of bridge (or bond) `master`, listed by the kernel without statistics.
    pub async fn ports_of(&self, master: u32) -> Result<Vec<Link>, NetlinkError> {
        let mut request = self
            .handle()
            .link()
            .get()
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats]);
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Controller(master));
        let messages: Vec<LinkMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(request_error(format!("list the ports of link #{master}")))?;
        // Kernels that ignore the filter list every link: filter here too.
        Ok(messages
            .into_iter()
            .map(Link::from_message)
            .filter(|link| link.master == Some(master))
            .collect())
    }

    pub async fn create_bridge(&self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut bridge = LinkBridge::new(name).address(mac.to_vec());
        if mtu != 0 {
            bridge = bridge.mtu(mtu);
        }
        self.handle()
            .link()
            .add(bridge.build())
            .execute()
            .await
            .map_err(request_error(format!("create bridge {name}")))
    }

    /// Creates the pair with the peer already inside its namespace, named as the pod
    /// expects: no window in which a half-made interface sits in the host namespace.
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name.to_owned())
            .setns_by_fd(spec.peer_netns.as_raw_fd());
        if spec.mtu != 0 {
            peer = peer.mtu(spec.mtu);
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut host = LinkVeth::new(spec.host_name, spec.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if spec.mtu != 0 {
            host = host.mtu(spec.mtu);
        }
        self.handle()
            .link()
            .add(host.build())
            .execute()
            .await
            .map_err(request_error(format!(
                "create veth {} (peer {})",
                spec.host_name, spec.peer_name
            )))
    }

    async fn set(&self, message: LinkMessage, action: String) -> Result<(), NetlinkError> {
        self.handle()
            .link()
            .set(message)
            .execute()
            .await
            .map_err(request_error(action))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.set(
            LinkUnspec::new_with_index(index).up().build(),
            format!("set link #{index} up"),
        )
        .await
    }

    /// No IPv6 link-local address (addrgenmode none), hence no DAD, router solicitation or
    /// MLD from the device itself: for a bridge port, whose own IPv6 stack never sees a
    /// frame. Set while the device is down. A kernel without IPv6 has nothing to stop.
    pub async fn stop_ipv6_autoconf(&self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkUnspec::new_with_index(index).build();
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
                AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
            ])]));
        match self.handle().link().set(message).execute().await {
            Err(error) if has_errno(&error, libc::EAFNOSUPPORT) => Ok(()),
            other => other.map_err(request_error(format!(
                "stop IPv6 autoconfiguration on link #{index}"
            ))),
        }
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.set(message, format!("set promiscuous mode {on} on link #{index}"))
            .await
    }

    /// The interface alias (`ip link show` prints it). The kernel ignores it when a link is
    /// created, so it is set afterwards.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).alias(alias).build();
        self.set(message, format!("set alias {alias:?} on link #{index}"))
            .await
    }

    /// Sets the MAC address. On a bridge this also stops the kernel from changing the MAC
    /// as ports come and go.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).address(mac.to_vec()).build();
        self.set(message, format!("set the MAC of link #{index}")).await
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).controller(master).build();
        self.set(message, format!("attach link #{index} to #{master}"))
            .await
    }

    /// Takes the link out of its bridge or bond.
    pub async fn set_nomaster(&self, index: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).nocontroller().build();
        self.set(message, format!("release link #{index} from its master"))
            .await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.set(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            format!("set mtu {mtu} on link #{index}"),
        )
        .await
    }

    /// Hairpin mode of a bridge port: frames may leave by the port they came in on.
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let message = LinkBridgePort::new(index).hairpin(on).build();
        self.handle()
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(request_error(format!(
                "set hairpin mode {on} on bridge port #{index}"
            )))
    }

    /// Deletes a link; one that is already gone is success.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle().link().del(index).execute().await {
            Err(error) if has_errno(&error, libc::ENODEV) => Ok(()),
            other => other.map_err(request_error(format!("delete link #{index}"))),
        }
    }
}
