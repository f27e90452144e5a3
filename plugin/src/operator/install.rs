//! `flatbridge install` and `flatbridge uninstall`, and the node map the agent installs
//! from.
//!
//! Install writes the binary into the host's CNI bin dir and the network's conflist into its
//! conf dir, each atomically (a temporary file in the same directory, fsync, rename, fsync of
//! the directory) and only when its content changed, so that a runtime never reads half a
//! file and a restart of the agent rewrites nothing. Uninstall removes what install wrote,
//! takes every program of every network off its devices and removes every pin: pods keep
//! working over the plain bridge.
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use flatbridge_common::{PIN_DIR, program_name};
use serde::Deserialize;
use serde_json::{Value, json};

use super::block_on;
use crate::{datapath::Datapath, netlink::Netlink};

/// The conflist's file name: early in the runtime's lexical order, as CNI plugins' are.
pub const CONFLIST: &str = "10-flatbridge.conflist";
/// The binary's name in the CNI bin dir (the `type` of the config).
pub const BINARY: &str = "flatbridge";

/// What an install changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    pub binary: bool,
    pub conflist: bool,
    /// The `loopback` plugin was copied in (there was none).
    pub loopback: bool,
}

impl std::fmt::Display for Installed {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = |changed: bool| if changed { "written" } else { "unchanged" };
        write!(
            out,
            "binary {}, conflist {}",
            said(self.binary),
            said(self.conflist)
        )?;
        if self.loopback {
            write!(out, ", loopback written")?;
        }
        Ok(())
    }
}

/// Writes `content` to `path` unless the file has it already: a temporary file beside it,
/// synced, given `mode`, renamed over it, and the directory synced. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<bool> {
    if let Ok(current) = fs::read(path)
        && current == content
        && fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o7777 == mode)
    {
        return Ok(false);
    }
    let dir = path.parent().context("a file path has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("a file path has a name")?
        .to_string_lossy();
    let temporary = dir.join(format!(".{name}.flatbridge-{}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)?;
        file.write_all(content)?;
        // The mode asked for, whatever the umask took away.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("failed to write {}", path.display()));
    }
    Ok(true)
}

/// The network config `config` (a `.conf` — one plugin — or a `.conflist`) as a conflist
/// whose flatbridge plugin is the one to install.
pub fn conflist_of(config: &Value) -> anyhow::Result<Value> {
    let object = config
        .as_object()
        .context("the network config is not a JSON object")?;
    let list = if object.contains_key("plugins") {
        config.clone()
    } else {
        let name = object.get("name").context("the network config has no \"name\"")?;
        let version = object
            .get("cniVersion")
            .context("the network config has no \"cniVersion\"")?;
        let mut plugin = object.clone();
        plugin.remove("name");
        json!({ "cniVersion": version, "name": name, "plugins": [plugin] })
    };
    let plugins = list["plugins"].as_array().context("\"plugins\" is not a list")?;
    if !plugins.iter().any(|plugin| plugin["type"] == BINARY) {
        bail!("the network config has no plugin of type \"{BINARY}\"");
    }
    if list["name"].as_str().is_none_or(str::is_empty) {
        bail!("the network config has no \"name\"");
    }
    Ok(list)
}

/// Installs `binary` as `<bin_dir>/flatbridge` and `config` as `<conf_dir>/10-flatbridge.conflist`.
pub fn install(bin_dir: &Path, conf_dir: &Path, config: &Value, binary: &Path) -> anyhow::Result<Installed> {
    let conflist = conflist_of(config)?;
    let mut text = serde_json::to_string_pretty(&conflist)?;
    text.push('\n');
    let content = fs::read(binary).with_context(|| format!("failed to read {}", binary.display()))?;
    Ok(Installed {
        binary: write_if_changed(&bin_dir.join(BINARY), &content, 0o755)?,
        conflist: write_if_changed(&conf_dir.join(CONFLIST), text.as_bytes(), 0o644)?,
        loopback: false,
    })
}

/// containerd's CRI runs the `loopback` plugin for every pod's `lo`: copies `from` into
/// `bin_dir` when the host has none there (a host's own loopback is never replaced).
pub fn install_loopback(bin_dir: &Path, from: &Path) -> anyhow::Result<bool> {
    let target = bin_dir.join("loopback");
    if fs::symlink_metadata(&target).is_ok() {
        return Ok(false);
    }
    let content = fs::read(from).with_context(|| format!("failed to read {}", from.display()))?;
    write_if_changed(&target, &content, 0o755)
}

/// Removes the conflist and the binary install wrote (a conflist only when it is flatbridge's),
/// detaches every program of every network under `bpf_root` and removes every pin.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path, bpf_root: &Path) -> anyhow::Result<String> {
    let mut done = Vec::new();
    let conflist = conf_dir.join(CONFLIST);
    if let Ok(text) = fs::read_to_string(&conflist) {
        let ours = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|list| conflist_of(&list).ok())
            .is_some();
        if !ours {
            bail!("{} is not a flatbridge conflist: left alone", conflist.display());
        }
        fs::remove_file(&conflist).with_context(|| format!("failed to remove {}", conflist.display()))?;
        done.push(format!("removed {}", conflist.display()));
    }
    let binary = bin_dir.join(BINARY);
    if binary.exists() {
        fs::remove_file(&binary).with_context(|| format!("failed to remove {}", binary.display()))?;
        done.push(format!("removed {}", binary.display()));
    }
    let mut failed = Vec::new();
    for network in Datapath::networks(bpf_root) {
        match remove_datapath(bpf_root, &network) {
            Ok(devices) => done.push(format!(
                "network {network}: programs taken off {} device(s), pins removed",
                devices
            )),
            Err(error) => failed.push(format!("network {network}: {error:#}")),
        }
    }
    let pins = bpf_root.join(PIN_DIR);
    if failed.is_empty() && pins.exists() {
        fs::remove_dir_all(&pins).with_context(|| format!("failed to remove {}", pins.display()))?;
    }
    if !failed.is_empty() {
        bail!("{}; failed: {}", done.join("; "), failed.join("; "));
    }
    if done.is_empty() {
        return Ok("nothing of flatbridge to remove".into());
    }
    Ok(done.join("; "))
}

/// Every program of `network` off its devices, then its pins; returns how many devices.
fn remove_datapath(bpf_root: &Path, network: &str) -> anyhow::Result<usize> {
    let datapath = Datapath::open(bpf_root, network)?;
    let lock = datapath.lock()?;
    let mut devices = 0;
    let veths: Vec<String> = block_on(async {
        let netlink = Netlink::open()?;
        let mut names = Vec::new();
        for (endpoint, _) in datapath.endpoints()? {
            if let Some(link) = netlink.link_by_index(endpoint.ifindex).await? {
                names.push(link.name);
            }
        }
        Ok(names)
    })?;
    for veth in veths {
        datapath.detach_pod(&veth)?;
        devices += 1;
    }
    for program in program_name::UPLINK {
        for device in datapath.pinned_devices(program) {
            datapath.detach(program, &device)?;
            devices += 1;
        }
    }
    drop(lock);
    datapath.remove()?;
    Ok(devices)
}

/// The node map the agent installs from (a ConfigMap's file): the network config shared by
/// every node, and each node's own part, by node name.
///
/// ```json
/// {"network": {"cniVersion": "0.3.1", "name": "data", "type": "flatbridge", "bridge": "cni0",
///              "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]}},
///  "nodes": {"node-a": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.1",
///                       "rangeEnd": "10.10.1.101", "gateway": "10.10.1.0", "uplink": "eno1"}}}
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMap {
    pub network: Value,
    pub nodes: BTreeMap<String, NodeEntry>,
}

/// One node's range (host-local's range fields) and, optionally, its uplink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeEntry {
    pub subnet: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    /// The bridge's uplink, set as the config's `uplink`.
    pub uplink: Option<String>,
    /// Whether the agent runs `flatbridge node setup` for the uplink (and the gateway, with
    /// the subnet's prefix) before it installs the config. Idempotent.
    #[serde(default)]
    pub setup: bool,
}

impl NodeEntry {
    /// What `flatbridge node setup` takes for this node: the uplink and the gateway with
    /// the subnet's prefix; `None` unless `setup` is asked for.
    pub fn setup_args(&self) -> anyhow::Result<Option<(String, ipnetwork::IpNetwork)>> {
        if !self.setup {
            return Ok(None);
        }
        let uplink = self
            .uplink
            .clone()
            .context("\"setup\" needs the node's \"uplink\"")?;
        let gateway: std::net::IpAddr = self
            .gateway
            .as_deref()
            .context("\"setup\" needs the node's \"gateway\"")?
            .parse()
            .context("the node's gateway is not an address")?;
        let subnet: ipnetwork::IpNetwork =
            self.subnet.parse().context("the node's subnet is not a prefix")?;
        let gateway = ipnetwork::IpNetwork::new(gateway, subnet.prefix())
            .context("the gateway with the subnet's prefix")?;
        Ok(Some((uplink, gateway)))
    }
}

impl NodeMap {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("failed to read the node map {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("the node map {} is not valid", path.display()))
    }

    /// The network config of `node`; `None` when the map has no entry for it (it must never
    /// get another node's range).
    pub fn config_for(&self, node: &str) -> anyhow::Result<Option<Value>> {
        let Some(entry) = self.nodes.get(node) else {
            return Ok(None);
        };
        let mut config = self.network.clone();
        let object = config
            .as_object_mut()
            .context("the node map's \"network\" is not an object")?;
        let ipam = object
            .entry("ipam")
            .or_insert_with(|| json!({"type": "host-local"}))
            .as_object_mut()
            .context("the node map's \"network.ipam\" is not an object")?;
        let mut range = json!({ "subnet": entry.subnet });
        for (key, value) in [
            ("rangeStart", &entry.range_start),
            ("rangeEnd", &entry.range_end),
            ("gateway", &entry.gateway),
        ] {
            if let Some(value) = value {
                range[key] = json!(value);
            }
        }
        ipam.insert("ranges".into(), json!([[range]]));
        if let Some(uplink) = &entry.uplink {
            object.insert("uplink".into(), json!(uplink));
        }
        Ok(Some(config))
    }
}

/// Where the agent installs: the host's CNI directories (mounted into its container).
#[derive(Clone, Debug)]
pub struct InstallTarget {
    pub nodes: PathBuf,
    pub node_name: String,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// A `loopback` plugin to put beside flatbridge where the host has none.
    pub loopback: Option<PathBuf>,
}

/// What the agent's install found: whether this node is in the map, and what changed.
/// With `setup` in the node's entry, `flatbridge node setup` runs first (idempotent), so
/// that the first pod finds the uplink under the bridge.
pub fn install_from_node_map(target: &InstallTarget, bpf_root: &Path) -> anyhow::Result<Option<Installed>> {
    let map = NodeMap::read(&target.nodes)?;
    let Some(config) = map.config_for(&target.node_name)? else {
        return Ok(None);
    };
    if let Some((uplink, gateway)) = map.nodes[&target.node_name].setup_args()? {
        let bridge = config["bridge"].as_str().unwrap_or("cni0");
        let said = super::node::setup(
            bridge,
            &uplink,
            &[gateway],
            bpf_root,
            Path::new(crate::node::STATE_DIR),
        )?;
        if !said.contains("already was a port") {
            log::info!("node setup: {said}");
        }
    }
    let binary = std::env::current_exe().context("cannot find this binary")?;
    let mut installed = install(&target.bin_dir, &target.conf_dir, &config, &binary)?;
    if let Some(loopback) = &target.loopback {
        installed.loopback = install_loopback(&target.bin_dir, loopback)?;
    }
    Ok(Some(installed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_plugin_config_becomes_a_conflist_and_others_are_refused() {
        let conf = json!({"cniVersion": "0.3.1", "name": "data", "type": "flatbridge", "bridge": "cni0"});
        let list = conflist_of(&conf).expect("conflist");
        assert_eq!(
            list,
            json!({"cniVersion": "0.3.1", "name": "data", "plugins": [{"cniVersion": "0.3.1", "type": "flatbridge", "bridge": "cni0"}]})
        );
        assert_eq!(conflist_of(&list).expect("already a conflist"), list);
        assert!(conflist_of(&json!({"cniVersion": "0.3.1", "name": "x", "type": "bridge"})).is_err());
        assert!(conflist_of(&json!({"cniVersion": "0.3.1", "type": "flatbridge"})).is_err());
        assert!(conflist_of(&json!([1])).is_err());
    }

    #[test]
    fn files_are_written_only_when_they_change_with_their_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/file");
        assert!(write_if_changed(&path, b"one", 0o755).expect("write"));
        assert_eq!(
            fs::metadata(&path).expect("metadata").permissions().mode() & 0o7777,
            0o755
        );
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata"));
        assert!(!write_if_changed(&path, b"one", 0o755).expect("same"));
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata")),
            inode
        );
        assert!(write_if_changed(&path, b"one", 0o644).expect("mode"));
        assert!(write_if_changed(&path, b"two", 0o644).expect("content"));
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let left: Vec<_> = fs::read_dir(dir.path().join("sub")).expect("list").collect();
        assert_eq!(left.len(), 1, "a temporary file was left");
    }

    #[test]
    fn a_node_gets_its_own_range_and_a_node_absent_from_the_map_gets_nothing() {
        let map: NodeMap = serde_json::from_value(json!({
            "network": {"cniVersion": "0.3.1", "name": "data", "type": "flatbridge", "bridge": "cni0",
                        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]}},
            "nodes": {
                "a": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.1", "rangeEnd": "10.10.1.101", "gateway": "10.10.1.0", "uplink": "eno1"},
                "b": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.2.1", "rangeEnd": "10.10.2.101", "gateway": "10.10.2.0"}
            }
        }))
        .expect("a node map");
        let a = map.config_for("a").expect("config").expect("a is in the map");
        assert_eq!(a["ipam"]["ranges"][0][0]["rangeStart"], "10.10.1.1");
        assert_eq!(a["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(a["uplink"], "eno1");
        let b = map.config_for("b").expect("config").expect("b is in the map");
        assert_eq!(b["ipam"]["ranges"][0][0]["gateway"], "10.10.2.0");
        assert!(b.get("uplink").is_none());
        assert!(map.config_for("c").expect("no error").is_none());
        assert!(
            serde_json::from_value::<NodeMap>(
                json!({"network": {}, "nodes": {"a": {"subnet": "x", "rnage": 1}}})
            )
            .is_err()
        );
    }
}
