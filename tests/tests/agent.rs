//! `flatbridge agent` on a simulated node: metrics that a Prometheus parser accepts and that
//! move with traffic, programs another tool removed back within a reconcile period, a
//! leaked lease freed after the grace period, conntrack's setting followed, health
//! endpoints, and a clean exit on SIGTERM.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flatbridge_tests::{Node, Pod, require_root, seed_config};
use serde_json::Value;

const NET: &str = "data";
const METRICS: &str = "127.0.0.1:9750";

struct Agent<'a> {
    node: &'a Node,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl<'a> Agent<'a> {
    /// The agent on `node`, reconciling every `period_ms`, freeing leases after `grace_s`;
    /// returns once it is ready.
    fn start(node: &'a Node, period_ms: u64, grace_s: u64) -> Self {
        Self::start_with(node, period_ms, grace_s, &[])
    }

    fn start_with(node: &'a Node, period_ms: u64, grace_s: u64, more: &[&str]) -> Self {
        let log = node.state_dir().join("agent.log");
        let child = node
            .command(&node.plugin_path())
            .args(["agent", "--metrics-addr", METRICS])
            .args(["--reconcile-ms", &period_ms.to_string()])
            .args(["--lease-grace-s", &grace_s.to_string()])
            .args(more)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("start the agent");
        let agent = Self {
            node,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "the agent never got ready:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` from the agent, inside the node's namespace: (status, body); status 0
    /// when nothing answered.
    fn get(&self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        self.node.netns.within(move || {
            let Ok(mut stream) = TcpStream::connect(METRICS) else {
                return (0, String::new());
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if stream.write_all(request.as_bytes()).is_err() {
                return (0, String::new());
            }
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            let status = response
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default();
            (status, body)
        })
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}\n{}", self.log());
        body
    }

    /// SIGTERM, then the exit status and how long the agent took to exit.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("a running agent");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let sent = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, sent.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the agent ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the sample `name{labels}` in a scrape; panics when there is none, so that
/// "not exported" never reads as zero.
fn sample(metrics: &str, name: &str, labels: &str) -> f64 {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{metrics}"))
}

fn node_with_pods(tag: &str, pods: &[&Pod]) -> Node {
    require_root();
    let node = Node::with_gateway(tag);
    for pod in pods {
        node.cni("ADD", &pod.env("eth0"), &seed_config("1.0.0")).ok("ADD");
    }
    node
}

fn endpoint_attached(node: &Node, pod: &Pod) -> bool {
    let veth = flatbridge::cmd::host_veth_name(NET, &pod.container_id, "eth0");
    node.status()["networks"][0]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|endpoint| endpoint["host_veth"] == veth.as_str())
        .is_some_and(|endpoint| endpoint["attached"] == Value::Bool(true))
}

#[test]
fn the_metrics_are_valid_exposition_format_and_move_with_traffic() {
    let (a, b) = (Pod::new("ma"), Pod::new("mb"));
    let node = node_with_pods("metrics", &[&a, &b]);
    let agent = Agent::start(&node, 500, 300);
    let before = agent.metrics();
    // promtool, from Debian's prometheus package, is the parser Prometheus itself uses.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (cargo xtask setup installs prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(before.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool rejects the scrape: {}{}\n{before}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(sample(&before, "flatbridge_endpoints", "network=\"data\""), 2.0);
    let veth = flatbridge::cmd::host_veth_name(NET, &a.container_id, "eth0");
    assert_eq!(
        sample(
            &before,
            "flatbridge_program_attached",
            &format!("network=\"data\",program=\"from_pod\",device=\"{veth}\",attach=\"tc-filter\"")
        ),
        1.0
    );
    let forwarded = |metrics: &str| {
        sample(
            metrics,
            "flatbridge_forward_packets_total",
            "network=\"data\",verdict=\"pod_to_bridge\"",
        )
    };
    let target = b.ipv4("eth0").expect("address");
    assert!(a.ping(&target));
    let after = agent.metrics();
    assert!(
        forwarded(&after) >= forwarded(&before) + 2.0,
        "pod_to_bridge went from {} to {} over a ping",
        forwarded(&before),
        forwarded(&after)
    );
    assert!(sample(&after, "flatbridge_reconcile_passes_total", "") >= 1.0);
    assert_eq!(agent.get("/healthz").0, 200);

    // The plugin's own calls, recorded by the plugin and exported by the agent: the two ADDs
    // before it started, a CHECK that fails (no prevResult) and a DEL.
    let check = node.cni("CHECK", &a.env("eth0"), &seed_config("1.0.0"));
    assert!(
        !check.success,
        "CHECK without prevResult passed: {}",
        check.stdout
    );
    let code = check.json["code"].as_u64().expect("an error code");
    node.cni("DEL", &b.env("eth0"), &seed_config("1.0.0")).ok("DEL");
    std::thread::sleep(Duration::from_millis(800));
    let calls = agent.metrics();
    let counted = |verb: &str, code: u64| {
        sample(
            &calls,
            "flatbridge_cni_calls_total",
            &format!("network=\"data\",verb=\"{verb}\",code=\"{code}\""),
        )
    };
    assert_eq!(counted("ADD", 0), 2.0);
    assert_eq!(counted("CHECK", code), 1.0);
    assert_eq!(counted("DEL", 0), 1.0);
    assert_eq!(
        sample(
            &calls,
            "flatbridge_cni_call_duration_seconds_count",
            "network=\"data\",verb=\"ADD\""
        ),
        2.0
    );
    assert_eq!(
        sample(
            &calls,
            "flatbridge_cni_call_duration_seconds_bucket",
            "le=\"+Inf\",network=\"data\",verb=\"ADD\""
        ),
        2.0
    );
    assert_eq!(agent.get("/nothing").0, 404);
}

#[test]
fn programs_another_tool_removed_are_back_within_a_reconcile_period() {
    let pod = Pod::new("gone");
    let node = node_with_pods("reattach", &[&pod]);
    let period = Duration::from_millis(500);
    let agent = Agent::start(&node, period.as_millis() as u64, 300);
    assert!(endpoint_attached(&node, &pod));
    let veth = flatbridge::cmd::host_veth_name(NET, &pod.container_id, "eth0");
    node.netns.ok(&["tc", "qdisc", "del", "dev", &veth, "clsact"]);
    let removed = Instant::now();
    while !endpoint_attached(&node, &pod) {
        assert!(
            removed.elapsed() < period * 3,
            "not attached again within {:?}:\n{}",
            period * 3,
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "re-attached {:?} after the removal (period {period:?})",
        removed.elapsed()
    );
    let metrics = agent.metrics();
    assert!(
        sample(
            &metrics,
            "flatbridge_reconcile_actions_total",
            "action=\"reattach_pod\""
        ) >= 1.0
    );
    assert!(agent.log().contains("attached again"), "{}", agent.log());
    // STATUS agrees that nothing is degraded any more.
    node.cni("STATUS", &Default::default(), &seed_config("1.1.0"))
        .ok("STATUS");
}

#[test]
fn conntrack_liberal_tcp_is_followed_into_the_settings() {
    let pod = Pod::new("ct");
    let node = node_with_pods("liberal", &[&pod]);
    let offload = |node: &Node| node.status()["networks"][0]["node"]["tcp_offload"].clone();
    node.netns
        .ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"]);
    node.cni("ADD", &Pod::new("ct2").env("eth0"), &seed_config("1.0.0"))
        .ok("ADD");
    assert_eq!(offload(&node), Value::Bool(true));
    let _agent = Agent::start(&node, 300, 300);
    node.netns
        .ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while offload(&node) != Value::Bool(false) {
        assert!(
            Instant::now() < deadline,
            "TCP still offloaded with conntrack strict"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.netns
        .ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while offload(&node) != Value::Bool(true) {
        assert!(
            Instant::now() < deadline,
            "TCP offload not restored with conntrack liberal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_leaked_lease_is_freed_after_the_grace_period_and_a_pods_is_kept() {
    let pod = Pod::new("keep");
    let node = node_with_pods("leases", &[&pod]);
    // What an ADD killed after leasing leaves: a lease whose veth never came.
    let leaked = node.ipam_dir(NET).join("10.10.1.77");
    std::fs::write(&leaked, "ctrleaked\r\neth0").expect("write a lease");
    let kept_before = node.leases(NET);
    let mut agent = Agent::start(&node, 300, 1);
    // Within the grace period it stays.
    assert!(leaked.exists(), "freed before the grace period");
    let deadline = Instant::now() + Duration::from_secs(5);
    while leaked.exists() {
        assert!(
            Instant::now() < deadline,
            "the leaked lease was never freed:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept: Vec<String> = node.leases(NET);
    assert_eq!(kept.len() + 1, kept_before.len(), "{kept:?} vs {kept_before:?}");
    assert!(
        pod.ipv4("eth0")
            .is_some_and(|ip| kept.iter().any(|lease| lease.contains(&ip)))
    );
    let metrics = agent.metrics();
    assert_eq!(
        sample(
            &metrics,
            "flatbridge_reconcile_actions_total",
            "action=\"free_lease\""
        ),
        1.0
    );
    let (status, took) = agent.terminate();
    assert!(
        status.success(),
        "the agent exited with {status} on SIGTERM:\n{}",
        agent.log()
    );
    assert!(took < Duration::from_secs(2), "the agent took {took:?} to stop");
    assert!(agent.log().contains("agent: stopping"), "{}", agent.log());
}

/// A host's CNI directories, private to the test.
struct HostDirs {
    bin: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl HostDirs {
    fn new(node: &Node) -> Self {
        let root = node.state_dir().join("host");
        Self {
            bin: root.join("opt/cni/bin"),
            conf: root.join("etc/cni/net.d"),
        }
    }

    fn conflist(&self) -> std::path::PathBuf {
        self.conf.join("10-flatbridge.conflist")
    }

    /// `first`, then the options that point a command at these directories.
    fn args(&self, first: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = first.iter().map(|arg| (*arg).to_owned()).collect();
        for (option, dir) in [("--cni-bin-dir", &self.bin), ("--cni-conf-dir", &self.conf)] {
            args.extend([option.to_owned(), dir.display().to_string()]);
        }
        args
    }
}

fn node_map(node: &Node, range_end: &str) -> std::path::PathBuf {
    let path = node.state_dir().join("nodes.json");
    let map = serde_json::json!({
        "network": {"cniVersion": "0.3.1", "name": "data", "type": "flatbridge", "bridge": "cni0", "promiscMode": true,
                    "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]}},
        "nodes": {
            "node-a": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.1", "rangeEnd": range_end, "gateway": "10.10.1.0"},
            "node-b": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.2.1", "rangeEnd": "10.10.2.101", "gateway": "10.10.2.0"}
        }
    });
    // Replaced whole, as the kubelet updates a mounted ConfigMap.
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, map.to_string()).expect("write the node map");
    std::fs::rename(&temporary, &path).expect("replace the node map");
    path
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("metadata"))
}

fn wait_for(what: &str, agent: &Agent, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_agent_installs_its_nodes_config_atomically_and_only_when_it_changed() {
    require_root();
    let node = Node::new("install");
    let host = HostDirs::new(&node);
    let map = node_map(&node, "10.10.1.101");
    let mut args = host.args(&["--nodes", &map.display().to_string(), "--node-name", "node-a"]);
    args.extend(["--loopback".to_owned(), "/usr/lib/cni/loopback".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&node, 200, 300, &args);
    wait_for("the install", &agent, || host.conflist().exists());
    assert_eq!(
        std::fs::read(host.bin.join("loopback")).expect("installed loopback"),
        std::fs::read("/usr/lib/cni/loopback").expect("Debian's loopback")
    );
    let binary = host.bin.join("flatbridge");
    assert_eq!(
        std::fs::read(&binary).expect("installed binary"),
        std::fs::read(node.plugin_path()).expect("built binary")
    );
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(mode(&host.conflist()), 0o644);
    let conflist: Value =
        serde_json::from_str(&std::fs::read_to_string(host.conflist()).expect("read")).expect("JSON");
    assert_eq!(conflist["name"], "data");
    let range = &conflist["plugins"][0]["ipam"]["ranges"][0][0];
    assert_eq!(range["rangeStart"], "10.10.1.1", "{conflist}");
    assert_eq!(range["gateway"], "10.10.1.0", "{conflist}");
    for dir in [&host.bin, &host.conf] {
        let names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let expected = if dir == &host.bin { 2 } else { 1 };
        assert_eq!(names.len(), expected, "left in {}: {names:?}", dir.display());
    }
    // Unchanged: not written again, pass after pass.
    let (binary_inode, conflist_inode) = (inode(&binary), inode(&host.conflist()));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        (inode(&binary), inode(&host.conflist())),
        (binary_inode, conflist_inode)
    );
    let metrics = agent.metrics();
    assert_eq!(
        sample(
            &metrics,
            "flatbridge_reconcile_actions_total",
            "action=\"install_conflist\""
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "flatbridge_node_in_node_map", ""), 1.0);
    // The map changes: the conflist follows, the binary stays.
    node_map(&node, "10.10.1.50");
    wait_for("the new range", &agent, || {
        std::fs::read_to_string(host.conflist()).is_ok_and(|text| text.contains("10.10.1.50"))
    });
    assert_eq!(inode(&binary), binary_inode);
}

#[test]
fn a_node_missing_from_the_map_gets_nothing() {
    require_root();
    let node = Node::new("unmapped");
    let host = HostDirs::new(&node);
    let map = node_map(&node, "10.10.1.101");
    let args = host.args(&["--nodes", &map.display().to_string(), "--node-name", "node-z"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&node, 200, 300, &args);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!host.conflist().exists() && !host.bin.join("flatbridge").exists());
    assert_eq!(sample(&agent.metrics(), "flatbridge_node_in_node_map", ""), 0.0);
    assert_eq!(
        agent.log().matches("is not in the node map").count(),
        1,
        "{}",
        agent.log()
    );
}

#[test]
fn uninstall_leaves_nothing_of_flatbridge_while_pods_still_ping() {
    let (a, b) = (Pod::new("ua"), Pod::new("ub"));
    let node = node_with_pods("uninstall", &[&a, &b]);
    let host = HostDirs::new(&node);
    let config = node.state_dir().join("data.conf");
    std::fs::write(&config, seed_config("0.3.1").to_string()).expect("write the config");
    let args = host.args(&["install", "--config", &config.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A host's own loopback is never replaced.
    std::fs::create_dir_all(&host.bin).expect("bin dir");
    std::fs::write(host.bin.join("loopback"), "the host's").expect("a host loopback");
    let said = node.flatbridge(&args);
    assert!(said.contains("binary written, conflist written"), "{said}");
    let mut with_loopback = args.clone();
    with_loopback.extend(["--loopback", "/usr/lib/cni/loopback"]);
    assert!(!node.flatbridge(&with_loopback).contains("loopback written"));
    assert_eq!(
        std::fs::read_to_string(host.bin.join("loopback")).expect("loopback"),
        "the host's"
    );
    assert!(
        node.flatbridge(&args)
            .contains("binary unchanged, conflist unchanged")
    );
    let args = host.args(&["uninstall"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = node.flatbridge(&args);
    assert!(said.contains("pins removed"), "{said}");
    assert!(!host.conflist().exists() && !host.bin.join("flatbridge").exists());
    // The kernel's own iterators (maps.debug, progs.debug) are on every bpffs.
    let pins: Vec<String> = std::fs::read_dir(node.bpffs.path())
        .expect("bpffs")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".debug"))
        .collect();
    assert!(pins.is_empty(), "left in bpffs: {pins:?}");
    for pod in [&a, &b] {
        let veth = flatbridge::cmd::host_veth_name(NET, &pod.container_id, "eth0");
        for hook in ["ingress", "egress"] {
            let filters = node.netns.ok(&["tc", "filter", "show", "dev", &veth, hook]);
            assert!(!filters.contains("bpf"), "{veth} {hook}: {filters}");
        }
    }
    assert!(
        a.ping(&b.ipv4("eth0").expect("address")),
        "pods do not reach each other after uninstall"
    );
    assert!(
        node.flatbridge(&["uninstall"])
            .contains("nothing of flatbridge to remove")
    );
}

#[test]
fn monitor_shows_the_rate_of_what_moves() {
    let (a, b) = (Pod::new("mona"), Pod::new("monb"));
    let node = node_with_pods("monitor", &[&a, &b]);
    let target = b.ipv4("eth0").expect("address");
    let mut ping = a
        .netns
        .command("ping")
        .args(["-i", "0.02", "-c", "150", &target])
        .stdout(Stdio::null())
        .spawn()
        .expect("ping");
    let frames = node.flatbridge(&["monitor", "--count", "2", "--interval-ms", "400"]);
    let _ = ping.kill();
    let _ = ping.wait();
    assert_eq!(frames.matches("flatbridge monitor").count(), 2, "{frames}");
    assert!(frames.contains("network data: 2 pods"), "{frames}");
    let rate = frames
        .lines()
        .filter(|line| line.trim_start().starts_with("pod_to_bridge"))
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter_map(|rate| rate.parse::<f64>().ok())
        .fold(0.0, f64::max);
    // 50 pings a second each way, of which pod a sends the requests and b the replies.
    assert!(
        rate >= 40.0,
        "pod_to_bridge at {rate}/s while pinging 50 times a second:\n{frames}"
    );
}

#[test]
fn gc_by_hand_frees_old_leases_without_a_veth_and_keeps_the_rest() {
    let pod = Pod::new("gckeep");
    let node = node_with_pods("gc", &[&pod]);
    let dir = node.ipam_dir(NET);
    let (old, fresh) = (dir.join("10.10.1.80"), dir.join("10.10.1.81"));
    std::fs::write(&old, "ctrold\r\neth0").expect("write a lease");
    std::fs::write(&fresh, "ctrfresh\r\neth0").expect("write a lease");
    node.netns
        .ok(&["touch", "-d", "2 minutes ago", &old.display().to_string()]);
    let said = node.flatbridge(&["gc", "--network", NET]);
    assert!(said.contains("freed 1 lease(s): 10.10.1.80"), "{said}");
    assert!(!old.exists());
    assert!(
        fresh.exists(),
        "a lease younger than --min-age-s was freed (an ADD may be making its veth)"
    );
    let own = pod.ipv4("eth0").expect("address");
    assert!(dir.join(&own).exists(), "the pod's own lease was freed");
    assert!(
        node.flatbridge(&["gc", "--network", NET, "--min-age-s", "0"])
            .contains("10.10.1.81")
    );
}

#[test]
fn a_new_agent_upgrades_the_programs_in_place_while_pods_keep_talking() {
    let (a, b) = (Pod::new("upa"), Pod::new("upb"));
    let node = node_with_pods("upgrade", &[&a, &b]);
    let ids = |node: &Node| -> Vec<Value> {
        node.status()["networks"][0]["programs"]
            .as_array()
            .expect("programs")
            .iter()
            .map(|program| program["id"].clone())
            .collect()
    };
    let before = ids(&node);
    // What a DaemonSet update looks like to the new agent: the pins say another build runs.
    let pins = node.bpffs.path().join("flatbridge").join(NET);
    let current: Vec<std::path::PathBuf> = std::fs::read_dir(&pins)
        .expect("pins")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("build-"))
        })
        .collect();
    let [marker] = current.as_slice() else {
        panic!("one build marker expected: {current:?}");
    };
    std::fs::remove_dir(marker).expect("remove the build marker");
    std::fs::create_dir(pins.join("build-0ld")).expect("mark an older build");
    let target = b.ipv4("eth0").expect("address");
    let ping = a
        .netns
        .command("ping")
        .args(["-i", "0.02", "-c", "150", "-W", "1", &target])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start(&node, 300, 300);
    wait_for("the upgrade", &agent, || marker.exists());
    let pinged = ping.wait_with_output().expect("ping");
    let summary = String::from_utf8_lossy(&pinged.stdout).into_owned();
    assert!(
        summary.contains(" 0% packet loss"),
        "traffic dropped during the upgrade:\n{summary}"
    );
    assert!(!pins.join("build-0ld").exists());
    let after = ids(&node);
    assert!(
        after.iter().zip(&before).all(|(new, old)| new != old),
        "{before:?} -> {after:?}"
    );
    assert!(endpoint_attached(&node, &a) && endpoint_attached(&node, &b));
    assert_eq!(
        sample(
            &agent.metrics(),
            "flatbridge_reconcile_actions_total",
            "action=\"upgrade_programs\""
        ),
        1.0
    );
}

#[test]
fn with_setup_in_its_entry_the_agent_puts_the_uplink_under_the_bridge_before_installing() {
    require_root();
    let external = flatbridge_tests::Netns::new("upext");
    let node = Node::new("setup");
    node.netns.add_veth("eth0", &external, "eth0");
    node.netns
        .ok(&["ip", "addr", "add", "10.10.0.11/16", "dev", "eth0"]);
    external.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
    let host = HostDirs::new(&node);
    let path = node.state_dir().join("nodes.json");
    let map = serde_json::json!({
        "network": {"cniVersion": "0.3.1", "name": "data", "type": "flatbridge", "bridge": "cni0",
                    "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}]}},
        "nodes": {"node-a": {"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.1", "rangeEnd": "10.10.1.101",
                             "gateway": "10.10.1.0", "uplink": "eth0", "setup": true}}
    });
    std::fs::write(&path, map.to_string()).expect("write the node map");
    let args = host.args(&["--nodes", &path.display().to_string(), "--node-name", "node-a"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&node, 300, 300, &args);
    wait_for("the install", &agent, || host.conflist().exists());
    let uplink = node.netns.ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(uplink.contains("master cni0"), "{uplink}");
    let addresses = node.netns.ok(&["ip", "-o", "-4", "addr", "show", "dev", "cni0"]);
    assert!(
        addresses.contains("10.10.0.11/16") && addresses.contains("10.10.1.0/16"),
        "{addresses}"
    );
    assert!(
        node.netns
            .run(&["ping", "-c", "1", "-W", "2", "10.10.0.1"])
            .status
            .success(),
        "the node lost the wire"
    );
    // Passes after the first find it set up and change nothing.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        sample(&agent.metrics(), "flatbridge_reconcile_errors_total", ""),
        0.0,
        "{}",
        agent.log()
    );
    node.flatbridge(&["node", "teardown"]);
}

/// How many captured frames are the ARP announcement "`ip` is at `mac`".
fn announcements(frames: &[Vec<u8>], mac: [u8; 6], ip: [u8; 4]) -> usize {
    let announcement = flatbridge_tests::frames::arp(1, mac, ip, [0; 6], ip);
    // The ARP part: the Ethernet source is the sending socket's.
    let body = &announcement[12..];
    frames
        .iter()
        .filter(|frame| frame.len() >= announcement.len() && frame[12..announcement.len()] == *body)
        .count()
}

#[test]
fn a_pods_address_claimed_on_the_wire_is_reported_logged_once_and_defended() {
    use flatbridge_tests::{
        fabric::Fabric,
        frames::{arp, format_mac, parse_mac},
        raw::{Capture, Sender, send_frame},
    };
    require_root();
    let fabric = Fabric::new(1, None);
    let one = &fabric.nodes[0];
    let pod = Pod::new("claimed");
    one.node
        .cni("ADD", &pod.env("eth0"), &one.config("1.0.0"))
        .ok("ADD");
    let address = pod.ipv4("eth0").expect("address");
    let ip: std::net::Ipv4Addr = address.parse().expect("ipv4");
    let pod_mac = parse_mac(&pod.netns.mac("eth0"));
    let intruder = [0x02, 0x66, 0x00, 0x00, 0x00, 0x01];
    let report = one.node.status();
    assert_eq!(
        report["networks"][0]["wire_conflicts"],
        serde_json::json!([]),
        "{report}"
    );
    let before = one.node.counter(NET, "uplink_arp_conflict");

    let agent = Agent::start(&one.node, 200, 300);
    let capture = Capture::start(&fabric.external, "eth0");
    // A host on the wire answers for the pod's address with its own MAC.
    let claim = arp(2, intruder, ip.octets(), [0xff; 6], ip.octets());
    send_frame(&fabric.external, "eth0", &claim, Sender::Plain).expect("send the claim");
    wait_for("the agent's defence", &agent, || {
        announcements(&capture.frames(), pod_mac, ip.octets()) > 0
    });
    assert!(one.node.counter(NET, "uplink_arp_conflict") > before);
    let report = one.node.status();
    let conflicts = report["networks"][0]["wire_conflicts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(conflicts.len(), 1, "{report}");
    assert_eq!(conflicts[0]["address"], address.as_str());
    assert_eq!(conflicts[0]["claimed_by"], format_mac(intruder));
    assert_eq!(conflicts[0]["pod_mac"], format_mac(pod_mac));
    assert!(one.node.status_text().contains("WIRE CONFLICT"));
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "flatbridge_wire_conflicts", "network=\"data\""),
        1.0
    );
    assert!(
        sample(
            &metrics,
            "flatbridge_wire_conflict_frames_total",
            "network=\"data\",verdict=\"uplink_arp_conflict\""
        ) >= 1.0
    );
    // The same claim again at once: within RFC 5227's DEFEND_INTERVAL the pod is not
    // defended again, and the conflict, still the same, is not logged again.
    std::thread::sleep(Duration::from_millis(300));
    send_frame(&fabric.external, "eth0", &claim, Sender::Plain).expect("send the claim again");
    std::thread::sleep(Duration::from_millis(1500));
    let frames = capture.stop();
    // One announcement is two frames.
    assert_eq!(announcements(&frames, pod_mac, ip.octets()), 2, "{}", agent.log());
    let log = agent.log();
    assert_eq!(
        log.matches("is claimed on the wire by").count(),
        1,
        "the conflict was not logged exactly once:\n{log}"
    );
    assert!(log.contains(&format_mac(intruder)), "{log}");
}

/// The unsolicited advertisements (Override only: not the answers to solicitations) among
/// `frames` that `ip` is at `mac`, sent by `mac`.
fn advertisements(frames: &[Vec<u8>], mac: [u8; 6], ip: [u8; 16]) -> usize {
    frames
        .iter()
        .filter(|frame| {
            frame.len() >= 78
                && frame[6..12] == mac
                && frame[12..14] == [0x86, 0xdd]
                && frame[54] == 136
                && frame[58] == 0x20
                && frame[62..78] == ip
        })
        .count()
}

#[test]
fn a_pods_ipv6_address_claimed_on_the_wire_is_reported_logged_and_defended() {
    use flatbridge_tests::{
        fabric::{EXTERNAL_IPV6, Fabric},
        frames::{format_mac, parse_mac, unsolicited_advertisement},
        raw::{Capture, Sender, send_frame},
    };
    require_root();
    let fabric = Fabric::dual_stack(1, None);
    let one = &fabric.nodes[0];
    let pod = Pod::new("claimed6");
    one.node
        .cni("ADD", &pod.env("eth0"), &one.dual_stack_config("1.0.0"))
        .ok("ADD");
    let address = pod.ipv6("eth0").expect("IPv6 address");
    let ip: std::net::Ipv6Addr = address.parse().expect("ipv6");
    let pod_mac = parse_mac(&pod.netns.mac("eth0"));
    let intruder = [0x02, 0x66, 0x00, 0x00, 0x00, 0x06];
    // The external host reaches the pod: the uplink program answers its solicitation.
    let reply = fabric.external.ok(&["ping", "-c", "1", "-W", "2", &address]);
    assert!(reply.contains("1 received"), "{reply}");
    assert!(pod.ping(EXTERNAL_IPV6));
    let before = one.node.counter(NET, "uplink_nd_conflict");

    let agent = Agent::start(&one.node, 200, 300);
    let capture = Capture::start(&fabric.external, "eth0");
    // A host on the wire advertises the pod's address with its own MAC.
    let claim = unsolicited_advertisement(intruder, ip.octets());
    send_frame(&fabric.external, "eth0", &claim, Sender::Plain).expect("send the claim");
    wait_for("the agent's defence", &agent, || {
        advertisements(&capture.frames(), pod_mac, ip.octets()) > 0
    });
    let frames = capture.stop();
    assert_eq!(one.node.counter(NET, "uplink_nd_conflict"), before + 1);
    let report = one.node.status();
    let conflicts = report["networks"][0]["wire_conflicts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(conflicts.len(), 1, "{report}");
    assert_eq!(conflicts[0]["address"], address.as_str());
    assert_eq!(conflicts[0]["claimed_by"], format_mac(intruder));
    assert_eq!(conflicts[0]["pod_mac"], format_mac(pod_mac));
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "flatbridge_wire_conflicts", "network=\"data\""),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "flatbridge_wire_conflict_frames_total",
            "network=\"data\",verdict=\"uplink_nd_conflict\""
        ),
        1.0
    );
    assert!(
        sample(
            &metrics,
            "flatbridge_nd_answered_total",
            "network=\"data\",verdict=\"uplink_nd_answered\""
        ) >= 1.0,
        "{metrics}"
    );
    // One defence is two frames, each the plugin's unsolicited advertisement byte for byte
    // (to all nodes, hop limit 255, the pod's MAC in its option, a right checksum).
    let expected = flatbridge::ndp::unsolicited_advertisement(pod_mac, ip);
    let defences: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|frame| advertisements(std::slice::from_ref(frame), pod_mac, ip.octets()) == 1)
        .collect();
    assert!(
        defences.iter().all(|frame| frame[..] == expected[..]),
        "{defences:02x?}"
    );
    assert_eq!(
        advertisements(&frames, pod_mac, ip.octets()),
        2,
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert_eq!(log.matches("is claimed on the wire by").count(), 1, "{log}");
}
