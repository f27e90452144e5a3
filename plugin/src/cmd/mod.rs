//! The verbs: where the CNI protocol (`cni/`) meets the mechanisms (`netlink/`, `ipam/`,
//! `node`, `netns`, `datapath/`). Nothing below this module knows CNI; nothing above it
//! touches the kernel.
mod add;
mod check;
mod datapath_steps;
mod del;
pub(crate) mod fault;
mod gc;
mod ipam_plugin;
mod status;
pub(crate) mod wire;

pub(crate) use datapath_steps::sweep;

use std::{future::Future, path::PathBuf};

use flatbridge_common::{CniCall, CniCallKey, cni_verb};

use crate::{
    cni::{self, CniError, Request, code, error::chain},
    datapath::DatapathError,
    ipam::IpamError,
    netlink::NetlinkError,
    netns::NetnsError,
    node::NodeError,
};

/// flatbridge's implementation of the CNI verbs.
pub struct Flatbridge;

impl cni::Plugin for Flatbridge {
    fn add(&self, request: &Request) -> Result<cni::CniResult, CniError> {
        recorded(cni_verb::ADD, request, || add::add(request))
    }

    fn del(&self, request: &Request) -> Result<(), CniError> {
        recorded(cni_verb::DEL, request, || del::del(request))
    }

    fn check(&self, request: &Request) -> Result<(), CniError> {
        recorded(cni_verb::CHECK, request, || check::check(request))
    }

    fn status(&self, request: &Request) -> Result<(), CniError> {
        recorded(cni_verb::STATUS, request, || status::status(request))
    }

    fn gc(&self, request: &Request) -> Result<(), CniError> {
        recorded(cni_verb::GC, request, || gc::gc(request))
    }

    fn start(&self, config: Option<&cni::Config>, command: &str) {
        let (path, level) = match config {
            Some(config) => (
                config
                    .net
                    .log_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(cni::config::DEFAULT_LOG_FILE)),
                config
                    .net
                    .log_level
                    .as_deref()
                    .and_then(|level| level.parse().ok())
                    .unwrap_or(log::LevelFilter::Info),
            ),
            None => (
                PathBuf::from(cni::config::DEFAULT_LOG_FILE),
                log::LevelFilter::Info,
            ),
        };
        let container = std::env::var("CNI_CONTAINERID").unwrap_or_else(|_| "-".into());
        crate::logging::init(&path, level, format!("{command} {container}"));
    }
}

/// Runs a verb and records how it ended in the network's datapath (when it has one) for the
/// agent's metrics: the agent exports CNI calls without being in their path. A record that
/// cannot be written is not the call's failure.
fn recorded<T>(
    verb: u32,
    request: &Request,
    call: impl FnOnce() -> Result<T, CniError>,
) -> Result<T, CniError> {
    let started_ns = crate::kernel::monotonic_ns();
    let started = std::time::Instant::now();
    let outcome = call();
    let config = &request.config;
    if config.fast_path()
        && let Ok(datapath) = crate::datapath::Datapath::open(&config.bpf_root(), &config.net.name)
    {
        let key = CniCallKey {
            pid: std::process::id(),
            _pad: 0,
            started_ns,
        };
        let record = CniCall {
            verb,
            code: outcome.as_ref().err().map_or(0, |error| error.code),
            micros: u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX),
            _pad: 0,
        };
        if let Err(error) = datapath.record_call(key, record) {
            log::debug!("the call was not recorded for the metrics: {error}");
        }
    }
    outcome
}

/// Every verb runs its netlink conversations on [`crate::netlink::runtime`].
fn block_on<T>(future: impl Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    let runtime = crate::netlink::runtime().map_err(|error| {
        CniError::new(
            code::INTERNAL,
            format!("failed to start the async runtime: {error}"),
        )
    })?;
    runtime.block_on(future)
}

/// The host-side veth of an attachment: derived from the attachment, so DEL finds it
/// even when the pod's namespace is gone. 14 characters, within the kernel's 15.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [network, container_id, ifname].join("\0").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fb{:012x}", hash & 0xffff_ffff_ffff)
}

/// Stored as the host veth's alias: which attachment it belongs to, for GC.
/// Network names, container IDs and interface names never contain ':'.
pub fn veth_alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}:{container_id}:{ifname}")
}

pub(crate) const ALIAS_PREFIX: &str = "flatbridge:";

/// A host veth flatbridge made for a pod (of any network), told by its alias.
fn is_pod_veth(link: &crate::netlink::Link) -> bool {
    link.alias
        .as_deref()
        .is_some_and(|alias| alias.starts_with(ALIAS_PREFIX))
}

/// The (container ID, ifname) of a veth alias written for `network`.
pub fn parse_veth_alias<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let rest = alias
        .strip_prefix(ALIAS_PREFIX)?
        .strip_prefix(network)?
        .strip_prefix(':')?;
    rest.split_once(':')
}

/// The outcome of a multi-step cleanup that went on past its failures: success, or the
/// first failure with every failure in its details.
pub(crate) fn all_done(errors: Vec<CniError>) -> Result<(), CniError> {
    let Some(first) = errors.first().cloned() else {
        return Ok(());
    };
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(first.with_details(all.join("; ")))
}

impl From<NetlinkError> for CniError {
    fn from(error: NetlinkError) -> Self {
        CniError::new(code::NETLINK, error.to_string()).with_details(chain(&error))
    }
}

impl From<NodeError> for CniError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Netlink(error) => error.into(),
            NodeError::NotABridge { .. } | NodeError::UplinkTaken { .. } | NodeError::NotSetUp(_) => {
                CniError::new(code::INVALID_CONFIG, error.to_string())
            }
            NodeError::Sysctl(_) | NodeError::State { .. } => {
                CniError::new(code::IO_FAILURE, error.to_string())
            }
        }
    }
}

impl From<IpamError> for CniError {
    fn from(error: IpamError) -> Self {
        let code = match &error {
            IpamError::InvalidConfig(_)
            | IpamError::RequestedOutOfRange { .. }
            | IpamError::RequestedIsGateway { .. } => code::INVALID_CONFIG,
            IpamError::Exhausted { .. } => code::RANGE_EXHAUSTED,
            IpamError::RequestedTaken { .. } | IpamError::HeldOther { .. } => code::ADDRESS_UNAVAILABLE,
            IpamError::Io { .. } => code::IO_FAILURE,
            IpamError::LockTimeout { .. } => code::TRY_AGAIN_LATER,
        };
        CniError::new(code, error.to_string()).with_details(chain(&error))
    }
}

impl From<NetnsError> for CniError {
    fn from(error: NetnsError) -> Self {
        let code = if error.is_missing() {
            code::UNKNOWN_CONTAINER
        } else {
            code::IO_FAILURE
        };
        CniError::new(code, error.to_string()).with_details(chain(&error))
    }
}

impl From<DatapathError> for CniError {
    fn from(error: DatapathError) -> Self {
        let code = match &error {
            DatapathError::Taken { .. } => code::ADDRESS_UNAVAILABLE,
            DatapathError::Netlink(error) => {
                return CniError::new(code::NETLINK, error.to_string()).with_details(chain(error));
            }
            _ => code::DATAPATH,
        };
        CniError::new(code, error.to_string()).with_details(chain(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let name = host_veth_name("data", "c0ffee", "eth0");
        assert_eq!(name, host_veth_name("data", "c0ffee", "eth0"));
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("fb"));
        assert_ne!(name, host_veth_name("data", "c0ffee", "eth1"));
        assert_ne!(name, host_veth_name("data2", "c0ffee", "eth0"));
        // Pinned, so a new version still finds veths an old one created.
        assert_eq!(host_veth_name("data", "abc", "eth0"), "fba30f93b83cfa");
    }

    #[test]
    fn aliases_round_trip_per_network() {
        let alias = veth_alias("data", "c0ffee", "eth0");
        assert_eq!(parse_veth_alias(&alias, "data"), Some(("c0ffee", "eth0")));
        assert_eq!(parse_veth_alias(&alias, "dat"), None);
        assert_eq!(parse_veth_alias("something else", "data"), None);
    }
}
