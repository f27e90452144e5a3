//! A pod: a network namespace and a container ID, as a runtime would create them.
use serde_json::{Value, json};

use crate::{CniEnv, Netns, unique_name};

pub struct Pod {
    pub netns: Netns,
    pub container_id: String,
}

impl Pod {
    pub fn new(tag: &str) -> Self {
        Self {
            netns: Netns::new(tag),
            // Runtimes use 64 hex digits; the test name keeps log lines readable.
            container_id: unique_name(tag).replace("fbt-", "ctr"),
        }
    }

    /// The CNI_* environment for this pod's `ifname`.
    pub fn env(&self, ifname: &str) -> CniEnv {
        CniEnv {
            container_id: self.container_id.clone(),
            netns: self.netns.path().display().to_string(),
            ifname: ifname.to_owned(),
            ..CniEnv::default()
        }
    }

    /// The pod's IPv4 address on `ifname`, read from the kernel.
    pub fn ipv4(&self, ifname: &str) -> Option<String> {
        let out = self.netns.ok(&["ip", "-4", "-o", "addr", "show", "dev", ifname]);
        out.split_whitespace()
            .skip_while(|word| *word != "inet")
            .nth(1)
            .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned())
    }

    /// The first global IPv6 address on `ifname`.
    pub fn ipv6(&self, ifname: &str) -> Option<String> {
        let out = self
            .netns
            .ok(&["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "global"]);
        out.split_whitespace()
            .skip_while(|word| *word != "inet6")
            .nth(1)
            .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned())
    }

    pub fn ping(&self, ip: &str) -> bool {
        self.netns
            .run(&["ping", "-c", "1", "-W", "2", ip])
            .status
            .success()
    }
}

/// The seed config of the issue — the reference bridge recipe with only the type changed —
/// in `version`.
pub fn seed_config(version: &str) -> Value {
    json!({
        "cniVersion": version, "name": "data", "type": "flatbridge", "bridge": "cni0", "promiscMode": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.1",
                 "rangeEnd": "10.10.1.101", "gateway": "10.10.1.0"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

/// The seed config with a second range set, IPv6 (`fd10:10::/64`, gateway `fd10:10::1:0`),
/// and an IPv6 default route: host-local gives one address of each.
pub fn dual_stack_config(version: &str) -> Value {
    let mut config = seed_config(version);
    config["ipam"]["ranges"]
        .as_array_mut()
        .expect("ranges")
        .push(json!([{"subnet": "fd10:10::/64", "rangeStart": "fd10:10::1:1",
                      "rangeEnd": "fd10:10::1:65", "gateway": "fd10:10::1:0"}]));
    config["ipam"]["routes"]
        .as_array_mut()
        .expect("routes")
        .push(json!({"dst": "::/0"}));
    config
}

/// Every cniVersion flatbridge supports.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// `config` with `prevResult` set, as a runtime sends it for CHECK and DEL.
pub fn with_prev_result(config: &Value, result: &Value) -> Value {
    let mut config = config.clone();
    config["prevResult"] = result.clone();
    config
}
