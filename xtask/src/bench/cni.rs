//! What a CNI call costs: ADD and DEL latency and the plugin's peak RSS, for flatbridge and
//! Debian's reference bridge + host-local side by side, off the wire and on a node whose
//! bridge has an uplink to a host (where flatbridge probes every address, RFC 5227), the
//! kernel's own veth deletion in the same run, and ADD latency as a node fills up (pod 1
//! vs pod 200).
//!
//! Calls are spawned directly from a thread inside the node's namespace (no nsenter in
//! between) and timed from fork to exit, as a runtime sees them.
use std::{
    fs::File,
    io::Write,
    os::{fd::AsFd, unix::process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use flatbridge_tests::{BpfFs, Netns, Pod, TempDir, seed_config};
use nix::sched::{CloneFlags, setns};
use serde_json::{Value, json};

/// One plugin run: wall time from spawn to exit, and the process's peak RSS.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub millis: f64,
    pub max_rss_kib: u64,
}

/// Runs `binary` with the CNI environment and `config` on stdin; `netns_file` is the node.
fn call(
    netns_file: &File,
    binary: &Path,
    verb: &str,
    container: &str,
    pod: &Path,
    config: &Value,
) -> anyhow::Result<Call> {
    setns(netns_file.as_fd(), CloneFlags::CLONE_NEWNET).context("enter the node")?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(config.to_string().as_bytes())?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; status and usage are valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if waited != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().context("stdout")?, &mut stdout)?;
    if !std::process::ExitStatus::from_raw(status).success() {
        bail!("{} {verb} failed: {stdout}", binary.display());
    }
    Ok(Call {
        millis,
        max_rss_kib: usage.ru_maxrss as u64,
    })
}

/// How long the agent's footprint is measured: three reconcile periods.
const AGENT_SECONDS: f64 = 15.0;

/// A node for CNI calls: its namespace and its own lease directory, BPF root and log.
struct CniNode {
    netns: Netns,
    /// The host at the other end of the node's uplink, when it has one.
    _wire: Option<Netns>,
    netns_file: File,
    bpffs: BpfFs,
    state: TempDir,
    config: Value,
    binary: PathBuf,
}

/// The log file of a benchmark node's plugin.
fn log_file(state: &TempDir) -> PathBuf {
    let name = state
        .path()
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    PathBuf::from(format!("/run/{name}-flatbridge.log"))
}

impl Drop for CniNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(log_file(&self.state));
    }
}

impl CniNode {
    /// `uplink`: the bridge gets a port to a host holding 10.10.0.1 (the seed recipe's
    /// node, with its NIC in the bridge), so that flatbridge probes each address it hands
    /// out; the reference plugins probe nothing.
    fn new(
        tag: &str,
        binary: PathBuf,
        flatbridge: bool,
        range_end: &str,
        uplink: bool,
    ) -> anyhow::Result<Self> {
        let netns = Netns::new(tag);
        netns.ok(&["ip", "link", "add", "cni0", "type", "bridge"]);
        netns.ok(&["ip", "link", "set", "cni0", "up"]);
        let wire = uplink.then(|| {
            let host = Netns::new(&format!("{tag}-wire"));
            netns.add_veth("uplink0", &host, "eth0");
            netns.ok(&["ip", "link", "set", "uplink0", "master", "cni0", "up"]);
            host.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
            host
        });
        let netns_file = File::open(netns.path())?;
        let bpffs = BpfFs::new(tag);
        let state = TempDir::new(tag);
        let mut config = seed_config("0.3.1");
        config["ipam"]["ranges"][0][0]["rangeEnd"] = json!(range_end);
        config["ipam"]["dataDir"] = json!(state.path().join("ipam"));
        if flatbridge {
            config["bpfRoot"] = json!(bpffs.path());
            // The plugin logs only under /var/log or /run; the file goes with the node.
            config["logFile"] = json!(log_file(&state));
        } else {
            config["type"] = json!("bridge");
        }
        Ok(Self {
            netns,
            _wire: wire,
            netns_file,
            bpffs,
            state,
            config,
            binary,
        })
    }

    fn add(&self, pod: &Pod) -> anyhow::Result<Call> {
        call(
            &self.netns_file,
            &self.binary,
            "ADD",
            &pod.container_id,
            &pod.netns.path(),
            &self.config,
        )
    }

    fn del(&self, pod: &Pod) -> anyhow::Result<Call> {
        call(
            &self.netns_file,
            &self.binary,
            "DEL",
            &pod.container_id,
            &pod.netns.path(),
            &self.config,
        )
    }
}

/// The kernel's own cost of deleting a pod's veth pair, timed like a plugin call: `ip link
/// del` spawned from the node. The pair is made like a pod's (a bridge port without IPv6
/// autoconfiguration, as flatbridge makes its host end, both ends up) and deleted as soon
/// as it is, as the plugins' DELs are after their ADDs: deleting a device that is still
/// settling (IPv6 DAD holds the RTNL lock) costs more.
fn kernel_veth_delete(node: &CniNode, pod: &Pod) -> anyhow::Result<f64> {
    node.netns.ok(&[
        "ip",
        "link",
        "add",
        "kveth",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.netns.name(),
    ]);
    node.netns
        .ok(&["ip", "link", "set", "kveth", "addrgenmode", "none"]);
    node.netns
        .ok(&["ip", "link", "set", "kveth", "master", "cni0", "up"]);
    pod.netns.ok(&["ip", "link", "set", "eth0", "up"]);
    setns(node.netns_file.as_fd(), CloneFlags::CLONE_NEWNET)?;
    let started = Instant::now();
    let status = Command::new("ip").args(["link", "del", "kveth"]).status()?;
    anyhow::ensure!(status.success(), "ip link del failed");
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub struct CniCost {
    pub flatbridge_add: Vec<Call>,
    pub flatbridge_del: Vec<Call>,
    pub reference_add: Vec<Call>,
    pub reference_del: Vec<Call>,
    /// The same on nodes whose bridge has an uplink (flatbridge probes, the reference
    /// does not).
    pub wire_flatbridge_add: Vec<Call>,
    pub wire_flatbridge_del: Vec<Call>,
    pub wire_reference_add: Vec<Call>,
    pub wire_reference_del: Vec<Call>,
    pub kernel_del_ms: Vec<f64>,
    /// ADD latency of each pod while a node fills up, in order.
    pub scaling_add_ms: Vec<f64>,
    /// The same for the reference plugins, filling a node of their own in step (empty
    /// without them): what the kernel's share of the growth is.
    pub reference_scaling_add_ms: Vec<f64>,
    /// `flatbridge agent` on the filling node, with one pod and with [`AGENT_PODS`].
    pub agent: Vec<AgentFootprint>,
}

/// The node size the agent's footprint is reported at (or the bench's fill, when smaller).
pub const AGENT_PODS: usize = 100;

/// What the agent costs on a node with `pods` pods, reconciling every `period_s`.
pub struct AgentFootprint {
    pub pods: usize,
    pub period_s: f64,
    pub rss_kib: u64,
    /// Of one CPU, over `seconds`.
    pub cpu_percent: f64,
    pub seconds: f64,
}

/// Runs the agent on `node` (default period) for `seconds` after a second of warm-up, and
/// reads its resident memory and CPU time from /proc.
fn agent_footprint(node: &CniNode, pods: usize, seconds: f64) -> anyhow::Result<AgentFootprint> {
    let mut agent = Command::new("nsenter")
        .arg(format!("--net={}", node.netns.path().display()))
        .arg("--")
        .arg(&node.binary)
        .args(["agent", "--metrics-addr", "127.0.0.1:0", "--bpf-root"])
        .arg(node.bpffs.path())
        .arg("--ipam-data-dir")
        .arg(node.state.path().join("ipam"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start flatbridge agent")?;
    let pid = agent.id();
    let cpu_ticks = || -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name in parentheses: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("stat")?
            .1
            .split_whitespace()
            .collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    };
    std::thread::sleep(Duration::from_secs(1));
    let (before, started) = (cpu_ticks()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let ticks = cpu_ticks()? - before;
    let elapsed = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    );
    let exit = agent.wait()?;
    anyhow::ensure!(exit.success(), "the agent exited with {exit} on SIGTERM");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(AgentFootprint {
        pods,
        period_s: 5.0,
        rss_kib,
        cpu_percent: ticks as f64 / hz / elapsed * 100.0,
        seconds: elapsed,
    })
}

/// Measures on a thread of its own, which enters the nodes' namespaces as it goes.
pub fn measure(
    plugin: PathBuf,
    calls: usize,
    scale_to: usize,
    with_reference: bool,
) -> anyhow::Result<CniCost> {
    std::thread::spawn(move || measure_here(&plugin, calls, scale_to, with_reference))
        .join()
        .map_err(|_| anyhow::anyhow!("the CNI cost thread panicked"))?
}

fn measure_here(
    plugin: &Path,
    calls: usize,
    scale_to: usize,
    with_reference: bool,
) -> anyhow::Result<CniCost> {
    let flatbridge = CniNode::new("cni-fb", plugin.to_path_buf(), true, "10.10.1.101", false)?;
    let reference = CniNode::new(
        "cni-ref",
        "/usr/lib/cni/bridge".into(),
        false,
        "10.10.1.101",
        false,
    )?;
    let wire_flatbridge = CniNode::new("cni-fbw", plugin.to_path_buf(), true, "10.10.1.101", true)?;
    let wire_reference = CniNode::new(
        "cni-refw",
        "/usr/lib/cni/bridge".into(),
        false,
        "10.10.1.101",
        true,
    )?;
    let mut cost = CniCost {
        flatbridge_add: Vec::new(),
        flatbridge_del: Vec::new(),
        reference_add: Vec::new(),
        reference_del: Vec::new(),
        wire_flatbridge_add: Vec::new(),
        wire_flatbridge_del: Vec::new(),
        wire_reference_add: Vec::new(),
        wire_reference_del: Vec::new(),
        kernel_del_ms: Vec::new(),
        scaling_add_ms: Vec::new(),
        reference_scaling_add_ms: Vec::new(),
        agent: Vec::new(),
    };
    // The first flatbridge ADD of a node loads the datapath (and, on the wire, probes its
    // address and waits, as nothing is probed ahead yet): once before timing.
    let warm = Pod::new("warm");
    for node in [&flatbridge, &wire_flatbridge] {
        node.add(&warm)?;
        node.del(&warm)?;
    }
    const TURNS: usize = 5;
    for round in 0..calls {
        crate::util::interrupt::check()?;
        let pod = Pod::new("cost");
        // They take turns at going first: a DEL's cost depends on what the kernel is still
        // busy with (RCU grace periods, the previous pod's IPv6 work).
        for turn in 0..TURNS {
            let (node, add, del) = match (round + turn) % TURNS {
                0 => (&flatbridge, &mut cost.flatbridge_add, &mut cost.flatbridge_del),
                1 => (
                    &wire_flatbridge,
                    &mut cost.wire_flatbridge_add,
                    &mut cost.wire_flatbridge_del,
                ),
                2 if with_reference => (&reference, &mut cost.reference_add, &mut cost.reference_del),
                3 if with_reference => (
                    &wire_reference,
                    &mut cost.wire_reference_add,
                    &mut cost.wire_reference_del,
                ),
                4 => {
                    cost.kernel_del_ms.push(kernel_veth_delete(&flatbridge, &pod)?);
                    continue;
                }
                _ => continue,
            };
            add.push(node.add(&pod)?);
            del.push(node.del(&pod)?);
        }
        if round % 10 == 9 {
            eprintln!("bench: CNI calls {}/{calls}", round + 1);
        }
    }
    // Two nodes fill up in step, one pod each in turn, so that both see the same machine.
    let filling = CniNode::new("cni-scale", plugin.to_path_buf(), true, "10.10.4.254", false)?;
    let reference_filling = CniNode::new(
        "cni-rscale",
        "/usr/lib/cni/bridge".into(),
        false,
        "10.10.4.254",
        false,
    )?;
    let mut pods = Vec::new();
    let mut reference_pods = Vec::new();
    for index in 0..scale_to {
        crate::util::interrupt::check()?;
        let pod = Pod::new("scale");
        cost.scaling_add_ms.push(filling.add(&pod)?.millis);
        pods.push(pod);
        if with_reference {
            let pod = Pod::new("rscale");
            cost.reference_scaling_add_ms
                .push(reference_filling.add(&pod)?.millis);
            reference_pods.push(pod);
        }
        if index % 50 == 49 {
            eprintln!("bench: nodes filled with {} pods", index + 1);
        }
        let pods_now = index + 1;
        if pods_now == 1 || pods_now == AGENT_PODS.min(scale_to) {
            eprintln!("bench: flatbridge agent with {pods_now} pods");
            cost.agent
                .push(agent_footprint(&filling, pods_now, AGENT_SECONDS)?);
        }
    }
    for pod in &pods {
        filling.del(pod)?;
    }
    for pod in &reference_pods {
        reference_filling.del(pod)?;
    }
    Ok(cost)
}
