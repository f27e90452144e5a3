//! The ADD result, independent of version, and its JSON in the shape of each cniVersion.
//! Parsing accepts every shape, so a prevResult or a delegated IPAM plugin's result of any
//! supported version can be read.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    error::{CniError, code},
    version::CniVersion,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length (host bits kept): `10.10.1.2/16`.
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// The IPv4 addresses of the result, in order.
    pub fn ipv4s(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ips.iter().filter_map(|ip| match ip.address.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The IPv6 addresses of the result, in order.
    pub fn ipv6s(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.ips.iter().filter_map(|ip| match ip.address.ip() {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    }

    /// The gateway `route` goes via: its own, or else that of the first address of its
    /// family (a route without `gw` uses the default gateway, as the spec says).
    pub fn route_gateway(&self, route: &Route) -> Option<IpAddr> {
        route.gw.or_else(|| {
            self.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == route.dst.is_ipv4())
                .and_then(|ip| ip.gateway)
        })
    }

    /// The result JSON in the shape of `version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|interface| {
                let mut object = Map::new();
                object.insert("name".into(), json!(interface.name));
                object.insert("mac".into(), json!(interface.mac));
                if let (Some(mtu), true) = (interface.mtu, version.interfaces_carry_mtu()) {
                    object.insert("mtu".into(), json!(mtu));
                }
                if let Some(sandbox) = &interface.sandbox {
                    object.insert("sandbox".into(), json!(sandbox));
                }
                Value::Object(object)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut object = Map::new();
                if version.ips_carry_family() {
                    object.insert(
                        "version".into(),
                        json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                    );
                }
                if let Some(interface) = ip.interface {
                    object.insert("interface".into(), json!(interface));
                }
                object.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gateway) = ip.gateway {
                    object.insert("gateway".into(), json!(gateway.to_string()));
                }
                Value::Object(object)
            })
            .collect();
        let mut result = Map::new();
        result.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            result.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            result.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            result.insert("routes".into(), json!(self.routes));
        }
        // The reference plugins always print "dns", empty or not; keep their shape.
        result.insert("dns".into(), json!(self.dns));
        Value::Object(result)
    }

    /// Reads a result of any supported version (a prevResult, or a delegated IPAM
    /// plugin's output).
    pub fn from_json(value: &Value) -> Result<Self, CniError> {
        #[derive(Deserialize)]
        struct RawInterface {
            name: String,
            #[serde(default)]
            mac: String,
            #[serde(default)]
            mtu: Option<u32>,
            #[serde(default)]
            sandbox: Option<String>,
        }
        #[derive(Deserialize)]
        struct RawIp {
            address: String,
            #[serde(default)]
            gateway: Option<IpAddr>,
            #[serde(default)]
            interface: Option<usize>,
        }
        #[derive(Deserialize)]
        struct RawResult {
            #[serde(default)]
            interfaces: Vec<RawInterface>,
            #[serde(default)]
            ips: Vec<RawIp>,
            #[serde(default)]
            routes: Vec<Route>,
            #[serde(default)]
            dns: Option<Dns>,
        }
        let raw: RawResult = serde_json::from_value(value.clone()).map_err(|error| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("failed to decode the result: {error}"),
            )
        })?;
        Ok(Self {
            interfaces: raw
                .interfaces
                .into_iter()
                .map(|interface| Interface {
                    name: interface.name,
                    mac: interface.mac,
                    mtu: interface.mtu,
                    sandbox: interface.sandbox.filter(|sandbox| !sandbox.is_empty()),
                })
                .collect(),
            ips: raw
                .ips
                .into_iter()
                .map(|ip| {
                    Ok(IpConfig {
                        address: parse_cidr(&ip.address)?,
                        gateway: ip.gateway,
                        interface: ip.interface,
                    })
                })
                .collect::<Result<_, CniError>>()?,
            routes: raw.routes,
            dns: raw.dns.unwrap_or_default(),
        })
    }
}

/// An address in CIDR notation; unlike `IpNetwork::from_str`, a bare address is an error.
fn parse_cidr(text: &str) -> Result<IpNetwork, CniError> {
    let invalid = || {
        CniError::new(
            code::DECODE_FAILURE,
            format!("{text:?} is not an address in CIDR notation"),
        )
    };
    if !text.contains('/') {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "fb0123456789ab".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:03".into(),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/pod".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.10.1.1/16".parse().expect("address"),
                gateway: Some("10.10.1.0".parse().expect("gateway")),
                interface: Some(2),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().expect("dst"),
                gw: None,
            }],
            dns: Dns::default(),
        }
    }

    /// Golden output per version: the shapes the reference plugins print.
    #[test]
    fn golden_json_per_version() {
        let v03 = r#"{"cniVersion":"VER","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"fb0123456789ab","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/pod"}],"ips":[{"version":"4","interface":2,"address":"10.10.1.1/16","gateway":"10.10.1.0"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let v10 = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"fb0123456789ab","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/pod"}],"ips":[{"interface":2,"address":"10.10.1.1/16","gateway":"10.10.1.0"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let v11 = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01","mtu":1500},{"name":"fb0123456789ab","mac":"02:00:00:00:00:02","mtu":1500},{"name":"eth0","mac":"02:00:00:00:00:03","mtu":1500,"sandbox":"/run/netns/pod"}],"ips":[{"interface":2,"address":"10.10.1.1/16","gateway":"10.10.1.0"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        for (version, golden) in [
            (CniVersion::V0_3_0, v03.replace("VER", "0.3.0")),
            (CniVersion::V0_3_1, v03.replace("VER", "0.3.1")),
            (CniVersion::V0_4_0, v03.replace("VER", "0.4.0")),
            (CniVersion::V1_0_0, v10.to_owned()),
            (CniVersion::V1_1_0, v11.to_owned()),
        ] {
            let expected: Value = serde_json::from_str(&golden).expect("golden parses");
            assert_eq!(sample().to_json(version), expected, "cniVersion {version}");
            // Key order matters to people reading it, not to parsers; compare text too.
            assert_eq!(
                serde_json::to_string(&sample().to_json(version)).expect("serialize"),
                golden
            );
        }
    }

    #[test]
    fn every_shape_parses_back() {
        for version in CniVersion::ALL {
            let mut expected = sample();
            if !version.interfaces_carry_mtu() {
                for interface in &mut expected.interfaces {
                    interface.mtu = None;
                }
            }
            assert_eq!(
                CniResult::from_json(&sample().to_json(version)).expect("parse"),
                expected
            );
        }
    }

    #[test]
    fn dns_is_printed_when_set() {
        let mut result = sample();
        result.dns.nameservers = vec!["10.10.0.1".into()];
        result.dns.search = vec!["cluster.local".into()];
        let json = result.to_json(CniVersion::V1_0_0);
        assert_eq!(
            json["dns"],
            json!({"nameservers": ["10.10.0.1"], "search": ["cluster.local"]})
        );
    }

    #[test]
    fn malformed_results_are_decode_failures() {
        for bad in [
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": "x"}),
            json!({"routes": [{}]}),
        ] {
            assert_eq!(
                CniResult::from_json(&bad).expect_err("bad").code,
                code::DECODE_FAILURE,
                "{bad}"
            );
        }
    }
}
