//! tc filters: which BPF programs a device's clsact hooks run (for `flatbridge status`).
use futures_util::TryStreamExt;
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};

use super::{Netlink, NetlinkError, request_error};

impl Netlink {
    /// The ids of the BPF programs in the clsact filters of link `index`, at ingress or
    /// egress. A device without clsact has none.
    pub async fn bpf_filter_programs(&self, index: u32, ingress: bool) -> Result<Vec<u32>, NetlinkError> {
        let request = self.handle().traffic_filter(index as i32).get();
        let request = if ingress {
            request.ingress()
        } else {
            request.egress()
        };
        let messages: Vec<TcMessage> = match request.execute().try_collect().await {
            Ok(messages) => messages,
            // No clsact qdisc: nothing attached.
            Err(error)
                if super::has_errno(&error, libc::EINVAL) || super::has_errno(&error, libc::ENOENT) =>
            {
                return Ok(Vec::new());
            }
            Err(error) => return Err(request_error(format!("list tc filters of link #{index}"))(error)),
        };
        Ok(messages
            .iter()
            .flat_map(|message| &message.attributes)
            .filter_map(|attribute| match attribute {
                TcAttribute::Options(options) => Some(options),
                _ => None,
            })
            .flatten()
            .filter_map(|option| match option {
                TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
                _ => None,
            })
            .collect())
    }
}
