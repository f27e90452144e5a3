//! The network configuration on stdin: the reference `bridge` plugin's fields (so its
//! configs work unchanged), the runtime's additions, and flatbridge's own options.
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::mac::{Mac, NotAMac};

use super::{
    error::{CniError, code},
    result::Dns,
    validate_identifier,
    version::CniVersion,
};

pub const DEFAULT_BRIDGE: &str = "cni0";
pub const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf";
pub const DEFAULT_LOG_FILE: &str = "/var/log/flatbridge.log";

/// One (containerID, ifname) pair the runtime still uses, from `cni.dev/valid-attachments`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// The `mac` capability.
    #[serde(default)]
    pub mac: Option<String>,
}

/// `args.cni` in the config (the Kubernetes "CNI args" convention).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfigArgs {
    #[serde(default)]
    pub cni: Option<CniConfigArgs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CniConfigArgs {
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,

    // --- the reference bridge plugin's options ---
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: u32,
    #[serde(default)]
    pub vlan_trunk: Option<Value>,
    #[serde(default)]
    pub preserve_default_vlan: bool,
    #[serde(default, rename = "macspoofchk")]
    pub mac_spoof_check: bool,
    #[serde(default, rename = "enabledad")]
    pub enable_dad: bool,
    #[serde(default)]
    pub disable_container_interface: bool,
    #[serde(default)]
    pub port_isolation: bool,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Dns>,

    // --- what the runtime adds ---
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<ConfigArgs>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,

    // --- flatbridge's own ---
    /// Where the BPF filesystem is (its pins go to `<bpfRoot>/flatbridge/<name>/`).
    #[serde(default)]
    pub bpf_root: Option<PathBuf>,
    /// The eBPF fast path (default on); off gives the plain bridge.
    #[serde(default)]
    pub fast_path: Option<bool>,
    /// "confirmed" (default): offload only flows netfilter let through unchanged;
    /// "always": redirect every frame for a local pod's MAC (no Services, no policy).
    #[serde(default)]
    pub fast_path_mode: Option<String>,
    /// How often an offloaded flow goes back through netfilter, in milliseconds (1000).
    #[serde(default)]
    pub revalidate_ms: Option<u64>,
    /// Drop frames whose source MAC or IPv4 is not the sending pod's (default on).
    #[serde(default)]
    pub anti_spoof: Option<bool>,
    /// How long ADD waits for an answer to its RFC 5227 probe of a new address on the wire,
    /// in milliseconds (100; 0 turns probing off). Only done when the bridge has an uplink.
    #[serde(default)]
    pub arp_probe_ms: Option<u64>,
    /// The bridge port that leads to the wire; found by itself when the bridge has exactly
    /// one port that is not a pod.
    #[serde(default)]
    pub uplink: Option<String>,
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[serde(default)]
    pub log_level: Option<String>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_owned()
}

/// A config that decoded and passed validation, with its version parsed.
#[derive(Clone, Debug)]
pub struct Config {
    pub version: CniVersion,
    pub net: NetConf,
    /// The raw stdin, passed unchanged to a delegated IPAM plugin.
    pub raw: Vec<u8>,
}

impl Config {
    /// Decodes and validates stdin.
    pub fn parse(raw: &[u8]) -> Result<Self, CniError> {
        let net: NetConf = serde_json::from_slice(raw).map_err(|error| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("failed to decode the network configuration: {error}"),
            )
        })?;
        let version = CniVersion::parse(&net.cni_version).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {:?} is not supported; supported versions: {}",
                    net.cni_version,
                    CniVersion::ALL.map(CniVersion::as_str).join(", ")
                ),
            )
        })?;
        let config = Self {
            version,
            net,
            raw: raw.to_vec(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), CniError> {
        let net = &self.net;
        validate_identifier(&net.name, "network name", code::INVALID_CONFIG)?;
        super::env::validate_ifname(&net.bridge).map_err(|why| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("bridge {:?} is not a valid interface name: {why}", net.bridge),
            )
        })?;
        if net.mtu != 0 && !(68..=65535).contains(&net.mtu) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "mtu {} is out of range: it must be between 68 and 65535 (or 0 for the default)",
                    net.mtu
                ),
            ));
        }
        if net.hairpin_mode && net.promisc_mode {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "hairpinMode and promiscMode cannot both be set (as with the reference bridge plugin)",
            ));
        }
        let unsupported = [
            (
                net.ip_masq,
                "ipMasq",
                "pods on a flat L2 are reachable by their own address; NAT them on the router",
            ),
            (
                net.vlan != 0,
                "vlan",
                "put the uplink on a VLAN interface instead",
            ),
            (
                net.vlan_trunk.is_some(),
                "vlanTrunk",
                "VLAN filtering on the bridge is not supported",
            ),
            (
                net.preserve_default_vlan,
                "preserveDefaultVlan",
                "VLAN filtering on the bridge is not supported",
            ),
            (
                net.mac_spoof_check && net.fast_path == Some(false),
                "macspoofchk",
                "source checks are done by the fast path, which this config turns off",
            ),
            (
                net.disable_container_interface,
                "disableContainerInterface",
                "not supported",
            ),
            (net.port_isolation, "portIsolation", "not supported yet"),
        ];
        if let Some((_, field, why)) = unsupported.iter().find(|(set, _, _)| *set) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("{field} is not supported by flatbridge: {why}"),
            ));
        }
        if let Some(mode) = &net.fast_path_mode
            && mode != "confirmed"
            && mode != "always"
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("fastPathMode {mode:?} is not \"confirmed\" or \"always\""),
            ));
        }
        if let Some(ms) = net.revalidate_ms
            && !(100..=60_000).contains(&ms)
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("revalidateMs {ms} is out of range: it must be between 100 and 60000"),
            ));
        }
        if let Some(ms) = net.arp_probe_ms
            && ms > 5000
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("arpProbeMs {ms} is too long for pod start-up: at most 5000"),
            ));
        }
        if let Some(uplink) = &net.uplink {
            super::env::validate_ifname(uplink).map_err(|why| {
                CniError::new(
                    code::INVALID_CONFIG,
                    format!("uplink {uplink:?} is not a valid interface name: {why}"),
                )
            })?;
        }
        if let Some(mac) = self.requested_mac_text() {
            parse_mac(mac)?;
        }
        if let Some(root) = &net.bpf_root {
            validate_path("bpfRoot", root, None)?;
        }
        if let Some(file) = &net.log_file {
            validate_path("logFile", file, Some(&LOG_DIRS))?;
        }
        if self.ipam_type()? == Some("host-local")
            && let Some(ipam) = &net.ipam
        {
            for field in ["dataDir", "resolvConf"] {
                match ipam.get(field) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(path)) => {
                        validate_path(&format!("ipam.{field}"), Path::new(path), None)?
                    }
                    Some(_) => {
                        return Err(CniError::new(
                            code::INVALID_CONFIG,
                            format!("ipam.{field} must be a path"),
                        ));
                    }
                }
            }
        }
        if let Some(level) = &net.log_level
            && level.parse::<log::LevelFilter>().is_err()
        {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("logLevel {level:?} is not one of off, error, warn, info, debug, trace"),
            ));
        }
        Ok(())
    }

    /// The `ipam.type`, when there is an `ipam` section.
    pub fn ipam_type(&self) -> Result<Option<&str>, CniError> {
        match &self.net.ipam {
            None => Ok(None),
            Some(ipam) => match ipam.get("type") {
                Some(Value::String(kind)) if !kind.is_empty() => Ok(Some(kind)),
                _ => Err(CniError::new(
                    code::INVALID_CONFIG,
                    "ipam.type must be a non-empty string",
                )),
            },
        }
    }

    /// isDefaultGateway implies isGateway, as in the reference plugin.
    pub fn is_gateway(&self) -> bool {
        self.net.is_gateway || self.net.is_default_gateway
    }

    pub fn fast_path(&self) -> bool {
        self.net.fast_path.unwrap_or(true)
    }

    /// True unless `fastPathMode` is "always".
    pub fn confirm_flows(&self) -> bool {
        self.net.fast_path_mode.as_deref() != Some("always")
    }

    pub fn arp_probe(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.net.arp_probe_ms.unwrap_or(100))
    }

    pub fn revalidate_ms(&self) -> u64 {
        self.net.revalidate_ms.unwrap_or(1000)
    }

    /// On by default; `macspoofchk` (the reference plugin's name) turns it on too.
    pub fn anti_spoof(&self) -> bool {
        self.net.anti_spoof.unwrap_or(true) || self.net.mac_spoof_check
    }

    pub fn bpf_root(&self) -> PathBuf {
        self.net
            .bpf_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BPF_ROOT))
    }

    /// The MAC requested for the container interface: runtimeConfig beats config args,
    /// which beat CNI_ARGS (the order of the reference plugin); CNI_ARGS is resolved by
    /// the caller and passed as `env_mac`.
    fn requested_mac_text(&self) -> Option<&str> {
        self.net
            .runtime_config
            .mac
            .as_deref()
            .or_else(|| self.net.args.as_ref()?.cni.as_ref()?.mac.as_deref())
            .filter(|mac| !mac.is_empty())
    }

    pub fn requested_mac(&self, env_mac: Option<&str>) -> Result<Option<[u8; 6]>, CniError> {
        self.requested_mac_text()
            .or(env_mac.filter(|mac| !mac.is_empty()))
            .map(parse_mac)
            .transpose()
    }
}

/// Where `logFile` may be: the plugin runs as root, and a config (with Multus, perhaps a
/// tenant's) must not make it append to any file it likes.
const LOG_DIRS: [&str; 2] = ["/var/log", "/run"];

/// A path from a config: absolute, without `..` or NUL, and under one of `within` when
/// given.
fn validate_path(field: &str, path: &Path, within: Option<&[&str]>) -> Result<(), CniError> {
    let invalid = |why: String| CniError::new(code::INVALID_CONFIG, format!("{field} {path:?} {why}"));
    if !path.is_absolute() {
        return Err(invalid("is not an absolute path".into()));
    }
    if path
        .components()
        .any(|part| matches!(part, std::path::Component::ParentDir))
    {
        return Err(invalid("contains \"..\"".into()));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(invalid("contains a NUL byte".into()));
    }
    if let Some(dirs) = within
        && !dirs
            .iter()
            .any(|dir| path.starts_with(dir) && path != Path::new(dir))
    {
        return Err(invalid(format!("is not under {}", dirs.join(" or "))));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`; a unicast address.
pub fn parse_mac(text: &str) -> Result<[u8; 6], CniError> {
    let mac: Mac = text
        .parse()
        .map_err(|error: NotAMac| CniError::new(code::INVALID_CONFIG, error.to_string()))?;
    if mac.is_multicast() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("{text} is a multicast MAC address"),
        ));
    }
    if mac.is_zero() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("{text} is the all-zero MAC address"),
        ));
    }
    Ok(mac.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"cniVersion":"0.3.1","name":"data","type":"flatbridge","bridge":"cni0","promiscMode":true,
     "ipam":{"type":"host-local","ranges":[[{"subnet":"10.10.0.0/16","rangeStart":"10.10.1.1",
     "rangeEnd":"10.10.1.101","gateway":"10.10.1.0"}]],"routes":[{"dst":"0.0.0.0/0"}]}}"#;

    fn with(field: &str, value: &str) -> String {
        let mut config: Value = serde_json::from_str(SEED).expect("seed parses");
        config[field] = serde_json::from_str(value).expect("value parses");
        config.to_string()
    }

    #[test]
    fn seed_config_parses() {
        let config = Config::parse(SEED.as_bytes()).expect("seed config");
        assert_eq!(config.version, CniVersion::V0_3_1);
        assert_eq!(config.net.name, "data");
        assert_eq!(config.net.bridge, "cni0");
        assert!(config.net.promisc_mode);
        assert!(!config.is_gateway());
        assert_eq!(config.ipam_type().expect("ipam"), Some("host-local"));
        assert_eq!(config.bpf_root(), PathBuf::from("/sys/fs/bpf"));
        assert!(config.fast_path());
        assert!(config.anti_spoof());
        assert!(config.confirm_flows());
        assert_eq!(config.revalidate_ms(), 1000);
    }

    fn with_ipam(field: &str, value: &str) -> String {
        let mut config: Value = serde_json::from_str(SEED).expect("seed parses");
        config["ipam"][field] = serde_json::from_str(value).expect("value parses");
        config.to_string()
    }

    #[test]
    fn bridge_defaults_to_cni0() {
        let config =
            Config::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"flatbridge"}"#).expect("minimal");
        assert_eq!(config.net.bridge, "cni0");
        assert_eq!(config.ipam_type().expect("no ipam"), None);
    }

    #[test]
    fn errors_carry_the_right_code() {
        let cases: Vec<(String, u32)> = vec![
            ("not json".into(), code::DECODE_FAILURE),
            (r#"{"cniVersion":"0.3.1"}"#.into(), code::DECODE_FAILURE),
            (with("mtu", r#""big""#), code::DECODE_FAILURE),
            (with("cniVersion", r#""0.2.0""#), code::INCOMPATIBLE_VERSION),
            (with("cniVersion", r#""2.0.0""#), code::INCOMPATIBLE_VERSION),
            (with("name", r#""../etc""#), code::INVALID_CONFIG),
            (with("bpfRoot", r#""sys/fs/bpf""#), code::INVALID_CONFIG),
            (
                with("bpfRoot", r#""/sys/fs/bpf/../../etc""#),
                code::INVALID_CONFIG,
            ),
            (with("logFile", r#""/etc/passwd""#), code::INVALID_CONFIG),
            (
                with("logFile", r#""/var/log/../../etc/passwd""#),
                code::INVALID_CONFIG,
            ),
            (with("logFile", r#""/var/log""#), code::INVALID_CONFIG),
            (with("name", r#""""#), code::INVALID_CONFIG),
            (with("bridge", r#""a/b""#), code::INVALID_CONFIG),
            (with("bridge", r#""waytoolongbridgename""#), code::INVALID_CONFIG),
            (with("mtu", "20"), code::INVALID_CONFIG),
            (with("hairpinMode", "true"), code::INVALID_CONFIG),
            (with("logLevel", r#""loud""#), code::INVALID_CONFIG),
            (with("ipMasq", "true"), code::UNSUPPORTED_FIELD),
            (with("vlan", "100"), code::UNSUPPORTED_FIELD),
            (with("uplink", r#""a b""#), code::INVALID_CONFIG),
            (with("fastPath", r#""yes""#), code::DECODE_FAILURE),
            (with("fastPathMode", r#""fast""#), code::INVALID_CONFIG),
            (with("revalidateMs", "5"), code::INVALID_CONFIG),
            (
                with("runtimeConfig", r#"{"mac":"zz:00:00:00:00:01"}"#),
                code::INVALID_CONFIG,
            ),
            (
                with("runtimeConfig", r#"{"mac":"01:00:00:00:00:01"}"#),
                code::INVALID_CONFIG,
            ),
            (
                with("runtimeConfig", r#"{"mac":"00:00:00:00:00:00"}"#),
                code::INVALID_CONFIG,
            ),
            (with_ipam("dataDir", r#""var/lib/cni""#), code::INVALID_CONFIG),
            (
                with_ipam("dataDir", r#""/var/lib/../../etc""#),
                code::INVALID_CONFIG,
            ),
            (with_ipam("resolvConf", r#""resolv.conf""#), code::INVALID_CONFIG),
            (with_ipam("resolvConf", "7"), code::INVALID_CONFIG),
        ];
        for (input, expected) in cases {
            let error = Config::parse(input.as_bytes()).expect_err(&input);
            assert_eq!(error.code, expected, "{input}: {error}");
            assert!(!error.msg.is_empty());
        }
    }

    #[test]
    fn mac_precedence_is_runtime_config_then_args_then_env() {
        let both = with("runtimeConfig", r#"{"mac":"02:00:00:00:00:01"}"#);
        let mut value: Value = serde_json::from_str(&both).expect("json");
        value["args"] = serde_json::json!({"cni": {"mac": "02:00:00:00:00:02"}});
        let config = Config::parse(value.to_string().as_bytes()).expect("config");
        assert_eq!(
            config.requested_mac(Some("02:00:00:00:00:03")).expect("mac"),
            Some([2, 0, 0, 0, 0, 1])
        );
        let config = Config::parse(SEED.as_bytes()).expect("config");
        assert_eq!(
            config.requested_mac(Some("02:00:00:00:00:03")).expect("mac"),
            Some([2, 0, 0, 0, 0, 3])
        );
        assert_eq!(config.requested_mac(None).expect("mac"), None);
    }

    #[test]
    fn valid_attachments_decode() {
        let config = Config::parse(
            with(
                "cni.dev/valid-attachments",
                r#"[{"containerID":"c1","ifname":"eth0"}]"#,
            )
            .as_bytes(),
        )
        .expect("config");
        assert_eq!(
            config.net.valid_attachments,
            Some(vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
    }
}
