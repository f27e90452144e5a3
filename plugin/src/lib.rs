//! flatbridge: a CNI plugin for bare-metal Kubernetes on a flat L2 network.
//!
//! `cni/` speaks the protocol and knows nothing of the kernel; `netns`, `netlink/`,
//! `ipam/`, `datapath/` and `node` are mechanisms that know nothing of CNI; `cmd/` joins
//! the two.
pub mod arp;
pub mod cmd;
pub mod cni;
pub mod datapath;
pub mod ipam;
mod logging;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod node;
