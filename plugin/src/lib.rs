//! flatbridge: a CNI plugin for bare-metal Kubernetes on a flat L2 network.
//!
//! `cni/` speaks the protocol and knows nothing of the kernel; `netns`, `datapath/` are
//! mechanisms that know nothing of CNI; `cmd/` joins the two.
pub mod datapath;
pub mod netns;
