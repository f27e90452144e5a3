//! flatbridge: a CNI plugin for bare-metal Kubernetes on a flat L2 network.
//!
//! `cni/` speaks the protocol and knows nothing of the kernel; `netns`, `netlink/`,
//! `ipam/`, `datapath/`, `node` and `kernel` are mechanisms that know nothing of CNI; `cmd/`
//! joins the two for the runtime's verbs. `report` reads the node's state into one typed
//! value; `operator/` holds the commands a person runs (status, node setup, conflicts).
pub mod agent;
pub mod arp;
pub mod cmd;
pub mod cni;
pub mod datapath;
pub mod ipam;
pub mod kernel;
mod logging;
pub mod mac;
pub mod ndp;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod operator;
pub mod report;
