//! IPAM for the verbs: `host-local` is served in-process with its exact semantics and
//! files; any other `ipam.type` is delegated to that plugin in CNI_PATH.
use std::{collections::HashSet, net::IpAddr, path::PathBuf, time::SystemTime};

use ipnetwork::IpNetwork;

use crate::{
    cni::{
        CniError, Command, Request, code, delegate,
        error::chain,
        result::{CniResult, Dns, IpConfig, Route},
    },
    ipam::{self, DiskStore, IpamConfig, Owner, Released, Store},
};

/// The IPAM a request names: the built-in host-local, or another plugin to delegate to.
pub enum IpamPlugin {
    HostLocal(IpamConfig),
    Delegate(PathBuf),
}

impl IpamPlugin {
    /// The IPAM of this request; `None` when the config has no `ipam` section (L2 only).
    pub fn of(request: &Request) -> Result<Option<Self>, CniError> {
        match request.config.ipam_type()? {
            None => Ok(None),
            Some("host-local") => Ok(Some(IpamPlugin::HostLocal(IpamConfig::from_net_config(
                &request.config.raw,
                request.env.arg("IP"),
            )?))),
            Some(other) => Ok(Some(IpamPlugin::Delegate(delegate::find(
                other,
                &request.env.path,
            )?))),
        }
    }

    fn store(config: &IpamConfig, request: &Request) -> Result<DiskStore, CniError> {
        Ok(DiskStore::open(&config.network_dir(&request.config.net.name))?)
    }

    /// Allocates the pod's addresses; the result has IPs, routes and DNS. With it, the next
    /// `ahead` IPv4 addresses each range set would hand out after these (host-local only:
    /// a delegated plugin's choice is not known before it is made).
    pub fn add(
        &self,
        request: &Request,
        owner: &Owner,
        ahead: usize,
    ) -> Result<(CniResult, Vec<IpAddr>), CniError> {
        match self {
            IpamPlugin::HostLocal(config) => {
                // Read before anything is leased, so that failing to read it strands nothing.
                let dns = match &config.resolv_conf {
                    Some(path) => parse_resolv_conf(path)?,
                    None => Dns::default(),
                };
                let mut store = Self::store(config, request)?;
                let now = SystemTime::now();
                let allocations = ipam::allocate(&mut store, config, owner, now)?;
                // Under the same lock, so that they follow these allocations; failing to read
                // them only costs the next pods a wait.
                let upcoming = match ipam::upcoming(&store, config, ahead, now) {
                    Ok(upcoming) => upcoming,
                    Err(error) => {
                        log::warn!("failed to list the next addresses to probe: {error}");
                        Vec::new()
                    }
                };
                drop(store);
                log::info!(
                    "leased {} to {owner}",
                    allocations
                        .iter()
                        .map(|a| a.ip.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let result = CniResult {
                    interfaces: Vec::new(),
                    ips: allocations
                        .iter()
                        .map(|allocation| IpConfig {
                            address: IpNetwork::new(allocation.ip, allocation.prefix)
                                .expect("the prefix comes from a valid subnet"),
                            gateway: Some(allocation.gateway),
                            interface: None,
                        })
                        .collect(),
                    routes: config
                        .routes
                        .iter()
                        .map(|route| Route {
                            dst: route.dst,
                            gw: route.gw,
                        })
                        .collect(),
                    dns,
                };
                Ok((result, upcoming))
            }
            IpamPlugin::Delegate(binary) => {
                Ok((delegate::ipam_add(binary, &request.config.raw)?, Vec::new()))
            }
        }
    }

    /// Releases the pod's addresses; releasing nothing is success.
    pub fn del(&self, request: &Request, owner: &Owner) -> Result<(), CniError> {
        match self {
            IpamPlugin::HostLocal(config) => {
                let mut store = Self::store(config, request)?;
                let outcome = ipam::release(&mut store, owner)?;
                if !outcome.released.is_empty() {
                    log::info!(
                        "released {} of {owner}",
                        outcome
                            .released
                            .iter()
                            .map(|(ip, _)| ip.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                failures(&format!("failed to release the leases of {owner}"), &outcome)
            }
            IpamPlugin::Delegate(binary) => {
                delegate::exec(binary, Command::Del, &request.config.raw).map(drop)
            }
        }
    }

    /// True when addresses come from host-local ranges, so a conflicting one can be marked
    /// and replaced by another; false for requested addresses and delegated IPAM.
    pub fn can_reallocate(&self) -> bool {
        matches!(self, IpamPlugin::HostLocal(config) if config.requested.is_empty())
    }

    /// Marks `ip` as used by the host with `mac` on the wire (host-local only).
    pub fn mark_conflict(&self, request: &Request, ip: IpAddr, mac: [u8; 6]) -> Result<(), CniError> {
        if let IpamPlugin::HostLocal(config) = self {
            let mut store = Self::store(config, request)?;
            ipam::mark_conflict(&mut store, ip, mac, SystemTime::now())?;
        }
        Ok(())
    }

    /// Checks that `owner` still holds every address in `ips`.
    pub fn check(&self, request: &Request, owner: &Owner, ips: &[IpAddr]) -> Result<(), CniError> {
        match self {
            IpamPlugin::HostLocal(config) => {
                let leases = Self::store(config, request)?.leases()?;
                for ip in ips {
                    match leases.get(ip) {
                        Some(holder) if holder.matches(owner) => {}
                        Some(holder) => {
                            return Err(CniError::new(
                                code::CHECK_FAILED,
                                format!("address {ip} is leased to {holder}, not to {owner}"),
                            ));
                        }
                        None => {
                            return Err(CniError::new(
                                code::CHECK_FAILED,
                                format!("address {ip} of {owner} has no lease in IPAM"),
                            ));
                        }
                    }
                }
                Ok(())
            }
            IpamPlugin::Delegate(binary) => {
                delegate::exec(binary, Command::Check, &request.config.raw).map(drop)
            }
        }
    }

    /// Readiness: the lease directory takes writes and no range set is full.
    pub fn status(&self, request: &Request) -> Result<(), CniError> {
        match self {
            IpamPlugin::HostLocal(config) => {
                let not_available = |why: String| CniError::new(code::NOT_AVAILABLE, why);
                // Read only: a poll takes no lock and creates nothing, not even the directory.
                let dir = config.network_dir(&request.config.net.name);
                ipam::check_writable(&dir)
                    .map_err(|error| not_available(format!("the IPAM store is not writable: {error}")))?;
                let Some(store) = DiskStore::peek(&dir).map_err(|error| not_available(error.to_string()))?
                else {
                    return Ok(());
                };
                for usage in ipam::usage(&store, config, SystemTime::now())? {
                    if usage.leased >= usage.size {
                        return Err(not_available(format!(
                            "range set {} ({}) is exhausted: {} of {} addresses leased",
                            usage.range_set, usage.ranges, usage.leased, usage.size
                        )));
                    }
                }
                Ok(())
            }
            IpamPlugin::Delegate(binary) => {
                delegate::exec(binary, Command::Status, &request.config.raw).map(drop)
            }
        }
    }

    /// Releases every lease whose attachment is not in `valid`, every lease of nobody and
    /// every expired conflict marker; goes on past a lease it cannot remove.
    pub fn gc(&self, request: &Request, valid: &HashSet<Owner>) -> Result<(), CniError> {
        match self {
            IpamPlugin::HostLocal(config) => {
                let mut store = Self::store(config, request)?;
                gc_leases(&mut store, valid, SystemTime::now())
            }
            IpamPlugin::Delegate(binary) => {
                delegate::exec(binary, Command::Gc, &request.config.raw).map(drop)
            }
        }
    }
}

/// GC of one lease store at `now`: an ID-only lease is valid while any interface of its
/// container is; a live conflict marker is no container's and stays.
fn gc_leases(store: &mut impl Store, valid: &HashSet<Owner>, now: SystemTime) -> Result<(), CniError> {
    let outcome = ipam::release_unused(
        store,
        |holder| valid.iter().any(|owner| holder.matches(owner)),
        now,
    )?;
    for (ip, holder) in &outcome.released {
        log::info!("GC released {ip} of {holder}");
    }
    failures("GC", &outcome)
}

/// The leases a release could not remove, as one error: `what` and how many in the message,
/// each address with its error in the details.
fn failures(what: &str, outcome: &Released) -> Result<(), CniError> {
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let total = outcome.failed.len() + outcome.released.len();
    let details: Vec<String> = outcome
        .failed
        .iter()
        .map(|(ip, error)| format!("{ip}: {}", chain(error)))
        .collect();
    Err(CniError::new(
        code::IO_FAILURE,
        format!(
            "{what}: {} of {total} leases could not be released",
            outcome.failed.len()
        ),
    )
    .with_details(details.join("; ")))
}

/// host-local's `resolvConf`: nameserver, domain, search and options lines.
fn parse_resolv_conf(path: &std::path::Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        CniError::new(
            code::IO_FAILURE,
            format!("failed to read resolvConf {}: {error}", path.display()),
        )
    })?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search.extend(words.map(str::to_owned)),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ipam::{CONFLICT_RETRY, MemoryStore};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn gc_goes_on_past_failing_removals_and_reports_each() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let mut store = MemoryStore::default();
        for (n, address) in ["10.10.1.1", "10.10.1.2", "10.10.1.3", "10.10.1.4"]
            .into_iter()
            .enumerate()
        {
            store
                .leases
                .insert(ip(address), Owner::new(&format!("gone{n}"), "eth0"));
        }
        store.leases.insert(ip("10.10.1.5"), Owner::new("kept", "eth0"));
        ipam::mark_conflict(&mut store, ip("10.10.1.6"), [2, 0, 0, 0, 0, 1], now).expect("mark");
        store.fail_remove.extend([ip("10.10.1.1"), ip("10.10.1.3")]);
        let valid = HashSet::from([Owner::new("kept", "eth0")]);
        let error = gc_leases(&mut store, &valid, now).expect_err("two removals fail");
        assert_eq!(error.code, code::IO_FAILURE);
        assert!(error.msg.contains("2 of 4 leases"), "{}", error.msg);
        assert!(
            error.details.contains("10.10.1.1: ") && error.details.contains("10.10.1.3: "),
            "{}",
            error.details
        );
        assert!(error.details.contains("injected failure"), "{}", error.details);
        assert_eq!(
            store.leases.keys().copied().collect::<Vec<_>>(),
            [ip("10.10.1.1"), ip("10.10.1.3"), ip("10.10.1.5"), ip("10.10.1.6")]
        );
        // Nothing fails any more: what is left goes, the expired marker with it.
        store.fail_remove.clear();
        gc_leases(&mut store, &valid, now + CONFLICT_RETRY).expect("gc");
        assert_eq!(
            store.leases.keys().copied().collect::<Vec<_>>(),
            [ip("10.10.1.5")]
        );
    }
}
