//! host-local's configuration, read from the whole network config as host-local reads it:
//! `ipam.ranges` (or the legacy single `ipam.subnet`), `ipam.routes`, `ipam.dataDir`,
//! `ipam.resolvConf`, plus requested addresses from `args.cni.ips`, `runtimeConfig.ips`
//! and ranges from `runtimeConfig.ipRanges`.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::{IpamError, Range, RangeSet};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A route to install in the pod; `gw` defaults to the gateway of the address family.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IpamRoute {
    pub dst: IpNetwork,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<IpamRoute>,
    /// `<dataDir>/<network>` holds the leases.
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses the runtime asked for, each to be taken from the set that contains it.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: IpNetwork,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(default)]
    subnet: Option<IpNetwork>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    routes: Vec<IpamRoute>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    #[serde(default)]
    ip_ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize, Default)]
struct RawArgs {
    #[serde(default)]
    cni: Option<RawCniArgs>,
}

#[derive(Deserialize, Default)]
struct RawCniArgs {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNet {
    ipam: RawIpam,
    #[serde(default)]
    runtime_config: RawRuntimeConfig,
    #[serde(default)]
    args: Option<RawArgs>,
}

/// host-local accepts `10.1.2.3` and `10.1.2.3/24` for a requested address.
fn parse_requested(text: &str) -> Result<IpAddr, IpamError> {
    let address = text.split_once('/').map_or(text, |(address, _)| address);
    address
        .parse()
        .map_err(|_| IpamError::InvalidConfig(format!("requested address {text:?} is not an IP address")))
}

fn build_set(raw: Vec<RawRange>) -> Result<RangeSet, IpamError> {
    let ranges = raw
        .into_iter()
        .map(|range| Range::new(range.subnet, range.range_start, range.range_end, range.gateway))
        .collect::<Result<Vec<_>, _>>()?;
    RangeSet::new(ranges)
}

impl IpamConfig {
    /// `config` is the whole network config; `env_ip` is CNI_ARGS' `IP`.
    pub fn from_net_config(config: &[u8], env_ip: Option<&str>) -> Result<Self, IpamError> {
        let net: RawNet = serde_json::from_slice(config)
            .map_err(|error| IpamError::InvalidConfig(format!("cannot decode the ipam section: {error}")))?;
        let ipam = net.ipam;
        let mut raw_sets = net.runtime_config.ip_ranges;
        if let Some(subnet) = ipam.subnet {
            raw_sets.push(vec![RawRange {
                subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            }]);
        }
        raw_sets.extend(ipam.ranges);
        if raw_sets.is_empty() {
            return Err(IpamError::InvalidConfig(
                "no IP ranges specified (ipam.ranges)".into(),
            ));
        }
        let range_sets = raw_sets
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                build_set(raw).map_err(|error| match error {
                    IpamError::InvalidConfig(why) => {
                        IpamError::InvalidConfig(format!("range set {index}: {why}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in range_sets.iter().enumerate() {
            if let Some(j) = range_sets[i + 1..].iter().position(|b| a.overlaps(b)) {
                return Err(IpamError::InvalidConfig(format!(
                    "range set {i} overlaps with range set {}",
                    i + 1 + j
                )));
            }
        }
        let mut requested = Vec::new();
        let from_args = net
            .args
            .and_then(|args| args.cni)
            .map(|cni| cni.ips)
            .unwrap_or_default();
        for text in env_ip
            .into_iter()
            .flat_map(|ips| ips.split(','))
            .map(str::to_owned)
            .chain(from_args)
            .chain(net.runtime_config.ips)
        {
            let ip = parse_requested(&text)?;
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        }
        Ok(Self {
            range_sets,
            routes: ipam.routes,
            data_dir: ipam.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            resolv_conf: ipam.resolv_conf,
            requested,
        })
    }

    /// The directory with this network's leases.
    /// Every requested address lies in a range set and is not its range's gateway: what
    /// allocation would refuse, known before anything on the node is touched.
    pub fn check_requested(&self) -> Result<(), IpamError> {
        for &ip in &self.requested {
            let range = self
                .range_sets
                .iter()
                .find_map(|set| set.range_for(ip))
                .ok_or(IpamError::RequestedOutOfRange { ip })?;
            if ip == range.gateway {
                return Err(IpamError::RequestedIsGateway { ip });
            }
        }
        Ok(())
    }

    pub fn network_dir(&self, network: &str) -> PathBuf {
        self.data_dir.join(network)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"cniVersion":"0.3.1","name":"data","type":"flatbridge","bridge":"cni0","promiscMode":true,
     "ipam":{"type":"host-local","ranges":[[{"subnet":"10.10.0.0/16","rangeStart":"10.10.1.1",
     "rangeEnd":"10.10.1.101","gateway":"10.10.1.0"}]],"routes":[{"dst":"0.0.0.0/0"}]}}"#;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn seed_config() {
        let config = IpamConfig::from_net_config(SEED.as_bytes(), None).expect("seed");
        assert_eq!(config.range_sets.len(), 1);
        let range = &config.range_sets[0].0[0];
        assert_eq!(
            (range.start, range.end, range.gateway),
            (ip("10.10.1.1"), ip("10.10.1.101"), ip("10.10.1.0"))
        );
        assert_eq!(
            config.routes,
            vec![IpamRoute {
                dst: "0.0.0.0/0".parse().expect("dst"),
                gw: None
            }]
        );
        assert_eq!(
            config.network_dir("data"),
            PathBuf::from("/var/lib/cni/networks/data")
        );
        assert!(config.requested.is_empty());
    }

    #[test]
    fn legacy_subnet_runtime_ranges_and_requested_ips() {
        let config = IpamConfig::from_net_config(
            br#"{"name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24","dataDir":"/tmp/x",
                "ranges":[[{"subnet":"fd00::/64"}]]},
                "runtimeConfig":{"ipRanges":[[{"subnet":"10.2.0.0/24"}]],"ips":["10.1.0.9/24"]},
                "args":{"cni":{"ips":["fd00::9"]}}}"#,
            Some("10.2.0.7"),
        )
        .expect("config");
        let subnets: Vec<String> = config
            .range_sets
            .iter()
            .map(|set| set.0[0].subnet.to_string())
            .collect();
        assert_eq!(subnets, ["10.2.0.0/24", "10.1.0.0/24", "fd00::/64"]);
        assert_eq!(config.requested, [ip("10.2.0.7"), ip("fd00::9"), ip("10.1.0.9")]);
        assert_eq!(config.data_dir(), Path::new("/tmp/x"));
    }

    #[test]
    fn invalid_configs_say_why() {
        for (input, why) in [
            (r#"{"ipam":{"type":"host-local"}}"#, "no IP ranges"),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}],[{"subnet":"10.1.0.0/16"}]]}}"#,
                "overlaps",
            ),
            (r#"{"ipam":{"ranges":[[{"subnet":"10.0.0.5/8"}]]}}"#, "host bits"),
            (r#"{"ipam":{"ranges":[[]]}}"#, "empty"),
            (r#"{"ipam":{"ranges":[[{"subnet":"bogus"}]]}}"#, "decode"),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}]]},"runtimeConfig":{"ips":["x"]}}"#,
                "not an IP",
            ),
        ] {
            let error = IpamConfig::from_net_config(input.as_bytes(), None)
                .expect_err(input)
                .to_string();
            assert!(error.contains(why), "{input}: {error}");
        }
    }
}
