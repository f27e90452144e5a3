//! STATUS: can this node serve an ADD now? The bridge, if it exists, is a bridge; the IPAM
//! store takes writes; no range set is full.
use super::{block_on, ipam::Ipam};
use crate::{
    cni::{CniError, Request, code},
    netlink::{LinkKind, Netlink},
};

pub fn status(request: &Request) -> Result<(), CniError> {
    let bridge = &request.config.net.bridge;
    block_on(async {
        let node = Netlink::open()?;
        // A missing bridge is fine: the first ADD creates it.
        if let Some(link) = node.link_by_name(bridge).await?
            && link.kind != LinkKind::Bridge
        {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!("{bridge} exists but is not a bridge, so no pod can be added"),
            ));
        }
        Ok(())
    })?;
    if let Some(ipam) = Ipam::of(request)? {
        ipam.status(request)?;
    }
    Ok(())
}
