//! The CNI_* environment of one invocation, validated as the spec describes.
use std::path::PathBuf;

use super::{
    error::{CniError, code},
    validate_identifier,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// What the runtime told us through the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// CNI_ARGS as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads and validates the variables; absent ones stay `None` (each verb says which
    /// it requires).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let non_empty = |name| lookup(name).filter(|value: &String| !value.is_empty());
        let container_id = non_empty("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            validate_identifier(id, "CNI_CONTAINERID", code::INVALID_ENV)?;
        }
        let ifname = non_empty("CNI_IFNAME");
        if let Some(ifname) = &ifname {
            validate_ifname(ifname).map_err(|why| {
                CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_IFNAME {ifname:?} is not a valid interface name: {why}"),
                )
            })?;
        }
        Ok(Self {
            container_id,
            netns: non_empty("CNI_NETNS").map(PathBuf::from),
            ifname,
            args: parse_args(&lookup("CNI_ARGS").unwrap_or_default())?,
            path: lookup("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }

    pub fn require_container_id(&self) -> Result<&str, CniError> {
        self.container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))
    }

    pub fn require_netns(&self) -> Result<&PathBuf, CniError> {
        self.netns.as_ref().ok_or_else(|| missing("CNI_NETNS"))
    }

    pub fn require_ifname(&self) -> Result<&str, CniError> {
        self.ifname.as_deref().ok_or_else(|| missing("CNI_IFNAME"))
    }

    /// The value of a CNI_ARGS key (keys compare case-insensitively, as libcni's do not,
    /// but runtimes send `IP=` and `MAC=` in either case).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }
}

fn missing(name: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("required environment variable {name} is not set"),
    )
}

/// `K1=V1;K2=V2`. Unknown keys are kept (and ignored by the verbs), as runtimes pass
/// Kubernetes metadata (K8S_POD_NAME, ...) to every plugin.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {pair:?} is not a KEY=VALUE pair"),
            )),
        })
        .collect()
}

/// The kernel's and the spec's rules for interface names.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > 15 {
        Err("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Err("it is . or ..")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Err("it contains '/', ':' or whitespace")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_every_variable() {
        let env = env(&[
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.10.1.7"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ])
        .expect("valid env");
        assert_eq!(env.require_container_id().expect("id"), "abc123");
        assert_eq!(
            env.require_netns().expect("netns"),
            &PathBuf::from("/run/netns/x")
        );
        assert_eq!(env.arg("ip"), Some("10.10.1.7"));
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web"));
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn empty_variables_count_as_missing() {
        let env = env(&[("CNI_NETNS", ""), ("CNI_CONTAINERID", "a")]).expect("valid env");
        assert_eq!(env.require_netns().expect_err("empty").code, code::INVALID_ENV);
        assert_eq!(env.require_ifname().expect_err("absent").code, code::INVALID_ENV);
    }

    #[test]
    fn rejects_malformed_values() {
        for vars in [
            vec![("CNI_CONTAINERID", "-leading-dash")],
            vec![("CNI_CONTAINERID", "has space")],
            vec![("CNI_IFNAME", "a-very-long-interface")],
            vec![("CNI_IFNAME", "eth/0")],
            vec![("CNI_IFNAME", "..")],
            vec![("CNI_ARGS", "IP")],
            vec![("CNI_ARGS", "=1")],
        ] {
            let error = env(&vars).expect_err("invalid env");
            assert_eq!(error.code, code::INVALID_ENV, "{vars:?}: {error}");
        }
    }
}
