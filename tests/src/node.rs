//! A simulated Kubernetes node: a network namespace for its network, and a private view of
//! the paths the plugin uses by default (/var/lib/cni, /var/log, /sys/fs/bpf), so tests run
//! the plugin with unmodified configs — default data dir, log file and BPF root — without
//! touching the machine's own, and in parallel.
//!
//! Each plugin call runs in a fresh mount namespace (`unshare --mount`) in which the
//! node's state directories are bind-mounted over those paths, then enters the node's
//! network namespace with `nsenter --net` (never `ip netns exec`, which remounts /sys).
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Once, OnceLock},
};

use serde_json::Value;

use crate::{BpfFs, Netns, TempDir};

/// The plugin binary, built beside this test binary. `cargo test -p flatbridge-tests`
/// alone does not rebuild another package's binary, so the first call makes sure it is
/// current (a no-op under `cargo xtask test`, which builds the whole workspace).
pub fn plugin_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = built_artifact("flatbridge");
    BUILD.call_once(|| {
        let release = path.parent().is_some_and(|dir| dir.ends_with("release"));
        let mut cargo = Command::new(env!("CARGO"));
        // With the test-only fault points, as `cargo test --workspace` builds it too (the
        // tests' dev-dependency turns the feature on), so neither build undoes the other.
        cargo
            .args([
                "build",
                "--quiet",
                "-p",
                "flatbridge",
                "--features",
                "fault-injection",
            ])
            .current_dir(workspace_root());
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p flatbridge failed");
    });
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p flatbridge`",
        path.display()
    );
    path
}

/// The libcni driver `cargo xtask build` compiles (cnitool's role).
pub fn cnitool_binary() -> PathBuf {
    let path = workspace_root().join("target/cnitool");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build` (or `cargo xtask test`)",
        path.display()
    );
    path
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// target/<profile>/deps/<test binary> -> target/<profile>/<name>
fn built_artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    profile_dir.join(name)
}

/// What a plugin call printed and how it exited.
#[derive(Debug)]
pub struct Reply {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// stdout as JSON; `Value::Null` when stdout is empty.
    pub json: Value,
}

impl Reply {
    fn from_output(output: Output) -> Self {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|error| panic!("stdout is not one JSON value ({error}): {stdout}"))
        };
        Self {
            success: output.status.success(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            json,
        }
    }

    /// Panics unless the call succeeded; returns the JSON.
    pub fn ok(self, what: &str) -> Value {
        assert!(
            self.success,
            "{what} failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json
    }

    /// Panics unless the call failed with a CNI error of `code`; returns the error's msg.
    pub fn error(self, what: &str, code: u64) -> String {
        assert!(
            !self.success,
            "{what} should have failed but printed {}",
            self.stdout
        );
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "{what}: wrong error {}",
            self.stdout
        );
        let msg = self.json["msg"].as_str().unwrap_or_default().to_owned();
        assert!(!msg.is_empty(), "{what}: error without msg: {}", self.stdout);
        msg
    }
}

/// The CNI_* variables of one call (CNI_COMMAND comes separately).
#[derive(Clone, Debug, Default)]
pub struct CniEnv {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    /// FLATBRIDGE_FAULT: a fault point of the plugin to fail (or `<point>:kill`) at.
    pub fault: String,
}

static KERNEL_LACKS: OnceLock<String> = OnceLock::new();

/// Makes every plugin this test binary runs behave as on a kernel without `features`
/// (comma-separated, e.g. `tcx`; the plugin's `fault-injection` build reads them), to run
/// the paths of older kernels on this one. Once per test binary: every test in it sees it.
pub fn pretend_kernel_lacks(features: &str) {
    let set = KERNEL_LACKS.get_or_init(|| features.to_owned());
    assert_eq!(set, features, "one test binary pretends one kernel");
}

pub struct Node {
    pub netns: Netns,
    pub bpffs: BpfFs,
    state: TempDir,
    plugin: Option<PathBuf>,
}

impl Node {
    /// A node that runs the plugin binary cargo built for these tests.
    pub fn new(tag: &str) -> Self {
        Self::build(tag, None)
    }

    /// A node whose bridge `cni0` exists, is up and carries the seed config's gateway
    /// 10.10.1.0/16, as a node set up for the reference recipe does.
    pub fn with_gateway(tag: &str) -> Self {
        let node = Self::new(tag);
        node.netns.ok(&["ip", "link", "add", "cni0", "type", "bridge"]);
        node.netns
            .ok(&["ip", "addr", "add", "10.10.1.0/16", "dev", "cni0"]);
        node.netns.ok(&["ip", "link", "set", "cni0", "up"]);
        node
    }

    /// A node that runs `plugin` (the demo and the benchmarks use a release build).
    pub fn with_plugin(tag: &str, plugin: PathBuf) -> Self {
        Self::build(tag, Some(plugin))
    }

    fn build(tag: &str, plugin: Option<PathBuf>) -> Self {
        let state = TempDir::new(&format!("{tag}-state"));
        for dir in ["cni", "log"] {
            fs::create_dir_all(state.path().join(dir)).expect("create state directory");
        }
        // The mount points must exist on the host; they stay empty there.
        fs::create_dir_all("/var/lib/cni").expect("create /var/lib/cni");
        Self {
            netns: Netns::new(tag),
            bpffs: BpfFs::new(tag),
            state,
            plugin,
        }
    }

    /// The node's private state (its /var/lib/cni and /var/log).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The plugin binary this node runs.
    pub fn plugin_path(&self) -> PathBuf {
        self.plugin.clone().unwrap_or_else(plugin_binary)
    }

    /// `program` as it would run on this node.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = self.command_as_is(program);
        if let Some(lacks) = KERNEL_LACKS.get() {
            command.env("FLATBRIDGE_KERNEL_LACKS", lacks);
        }
        command
    }

    fn command_as_is(&self, program: &Path) -> Command {
        let script = format!(
            "mount --bind {cni} /var/lib/cni && mount --bind {log} /var/log && mount --bind {bpf} /sys/fs/bpf \
             && exec nsenter --net={netns} -- \"$0\" \"$@\"",
            cni = self.state.path().join("cni").display(),
            log = self.state.path().join("log").display(),
            bpf = self.bpffs.path().display(),
            netns = self.netns.path().display(),
        );
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .arg(program);
        command
    }

    /// Where the node keeps the leases of `network` (its /var/lib/cni/networks/<network>).
    pub fn ipam_dir(&self, network: &str) -> PathBuf {
        self.state.path().join("cni/networks").join(network)
    }

    /// The addresses leased in `network`, from the lease files.
    pub fn leases(&self, network: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.ipam_dir(network)) else {
            return Vec::new();
        };
        let mut leases: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect();
        leases.sort();
        leases
    }

    /// The host-side veths flatbridge created on this node (named `fb...`).
    pub fn host_veths(&self) -> Vec<String> {
        self.netns
            .ok(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
            .filter(|name| name.starts_with("fb"))
            .collect()
    }

    /// Enslaves a new veth `local` to the node's cni0 bridge; its peer `remote` goes into
    /// `peer` (an uplink to a switch or an external host).
    pub fn add_veth_to_bridge(&self, local: &str, peer: &Netns, remote: &str) {
        self.netns.add_veth(local, peer, remote);
        self.netns.ok(&["ip", "link", "set", local, "master", "cni0"]);
    }

    /// `flatbridge status --json` on this node.
    pub fn status(&self) -> Value {
        let output = self
            .command(&self.plugin_path())
            .args(["status", "--json"])
            .output()
            .expect("run flatbridge status");
        assert!(
            output.status.success(),
            "flatbridge status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
    }

    /// Runs an operator subcommand of the plugin on this node; returns its stdout.
    pub fn flatbridge(&self, args: &[&str]) -> String {
        let output = self
            .command(&self.plugin_path())
            .args(args)
            .output()
            .expect("run flatbridge");
        assert!(
            output.status.success(),
            "flatbridge {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `flatbridge status` as a person reads it.
    pub fn status_text(&self) -> String {
        let output = self
            .command(&self.plugin_path())
            .arg("status")
            .output()
            .expect("run flatbridge status");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The packets a datapath counter of `network` holds now. Panics when the node has no
    /// datapath for `network` or it reports no such counter: "never loaded" must not read
    /// as "counted nothing".
    pub fn counter(&self, network: &str, verdict: &str) -> u64 {
        let status = self.status();
        let report = status["networks"]
            .as_array()
            .and_then(|networks| networks.iter().find(|report| report["network"] == network))
            .unwrap_or_else(|| {
                panic!(
                    "counter {verdict}: network {network} has no datapath on this node \
                     (not in `flatbridge status --json`): {status}"
                )
            });
        report["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|counter| counter["verdict"] == verdict)
            .and_then(|counter| counter["packets"].as_u64())
            .unwrap_or_else(|| panic!("network {network} reports no counter {verdict}: {report}"))
    }

    /// The plugin's log on this node.
    pub fn log(&self) -> String {
        fs::read_to_string(self.state.path().join("log/flatbridge.log")).unwrap_or_default()
    }

    /// Runs the plugin as a runtime would: `verb` in CNI_COMMAND, `env`, `config` on stdin.
    pub fn cni(&self, verb: &str, env: &CniEnv, config: &Value) -> Reply {
        self.cni_raw(verb, env, config.to_string().as_bytes())
    }

    pub fn cni_raw(&self, verb: &str, env: &CniEnv, stdin: &[u8]) -> Reply {
        Reply::from_output(run_with_stdin(self.cni_command(verb, env), stdin))
    }

    /// Starts the plugin as [`Node::cni`] does, without waiting for it (to kill it midway).
    pub fn cni_start(&self, verb: &str, env: &CniEnv, config: &Value) -> std::process::Child {
        let mut child = self
            .cni_command(verb, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.to_string().as_bytes())
            .expect("write stdin");
        child
    }

    fn cni_command(&self, verb: &str, env: &CniEnv) -> Command {
        let mut command = self.command(&self.plugin_path());
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb);
        for (name, value) in [
            ("CNI_CONTAINERID", &env.container_id),
            ("CNI_NETNS", &env.netns),
            ("CNI_IFNAME", &env.ifname),
            ("CNI_ARGS", &env.args),
            ("CNI_PATH", &env.path),
            ("FLATBRIDGE_FAULT", &env.fault),
            (
                "FLATBRIDGE_KERNEL_LACKS",
                KERNEL_LACKS.get().unwrap_or(&String::new()),
            ),
        ] {
            if !value.is_empty() {
                command.env(name, value);
            }
        }
        command
    }

    /// Runs the libcni driver on this node: `verb` on the conflist for one attachment.
    pub fn cnitool(
        &self,
        verb: &str,
        conflist: &Value,
        pod: &Netns,
        container_id: &str,
        ifname: &str,
    ) -> Reply {
        let conf_path = self.state.path().join(format!("{container_id}.conflist"));
        fs::write(&conf_path, conflist.to_string()).expect("write conflist");
        let cni_bin = self.state.path().join("cni-bin");
        if !cni_bin.exists() {
            fs::create_dir_all(&cni_bin).expect("create cni bin dir");
            std::os::unix::fs::symlink(self.plugin_path(), cni_bin.join("flatbridge")).expect("link plugin");
            std::os::unix::fs::symlink("/usr/lib/cni/loopback", cni_bin.join("loopback"))
                .expect("link loopback");
        }
        let mut command = self.command(&cnitool_binary());
        command
            .args([
                verb,
                &conf_path.display().to_string(),
                &pod.path().display().to_string(),
                container_id,
                ifname,
            ])
            .env("CNI_PATH", &cni_bin)
            .env("CNI_CACHE_DIR", self.state.path().join("cni-cache"));
        Reply::from_output(run_with_stdin(command, b""))
    }
}

fn run_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for the plugin")
}
