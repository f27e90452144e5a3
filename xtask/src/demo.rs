//! `cargo xtask demo [--nodes N]`: the main job, shown to a person. A simulated flat L2
//! network — a switch, an external host (10.10.0.1, the router) and N nodes set up with
//! `flatbridge node setup` — and pods added with the seed config of the reference bridge
//! recipe (only the type changed; node i gets the range 10.10.i.1–101). Each claim is a
//! check with a line of its own: pods reachable within a node, across nodes and from
//! outside; the share of bytes the fast path carried and the share that went through the
//! bridge and netfilter; nothing left after DEL and after the namespaces are gone. Any failed
//! check makes the exit status non-zero. Everything happens inside namespaces the demo
//! creates, and Ctrl-C removes them too.
use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, bail};
use flatbridge_tests::{
    Netns, Node, Pod,
    fabric::{EXTERNAL_IP, Fabric},
    traffic,
};
use serde_json::Value;

use crate::{build, setup, util::interrupt};

fn section(title: &str) {
    println!("\n== {title}");
}

/// The verdicts whose frames bypassed the bridge, and those that went through it (and
/// netfilter).
const FAST_VERDICTS: [&str; 3] = ["pod_to_pod", "pod_to_uplink", "uplink_to_pod"];
const BRIDGE_VERDICTS: [&str; 2] = ["pod_to_bridge", "uplink_to_bridge"];

/// The fast path must have carried at least this share of an iperf3 run's bytes.
const FAST_SHARE_WANTED: f64 = 0.95;

/// What the demo claims, each with whether it held.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    fn record(&mut self, what: &str, held: bool, detail: &str) -> anyhow::Result<()> {
        println!("{} {what}: {detail}", if held { "PASS" } else { "FAIL" });
        if held {
            self.passed += 1;
        } else {
            self.failed.push(what.to_owned());
        }
        interrupt::check()
    }
}

struct DemoPod {
    name: String,
    pod: Pod,
    node: usize,
    address: String,
}

pub fn run(nodes: usize) -> anyhow::Result<()> {
    if nodes == 0 || nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    interrupt::catch()?;
    setup::run()?;
    let plugin = build::release_plugin()?;
    let mut checks = Checks::default();
    let leftovers = {
        let fabric = Fabric::new(nodes, Some(plugin));
        let mut leftovers = Leftovers::of(&fabric);
        let mut pods = Vec::new();
        let shown = show(&fabric, nodes, &mut pods, &mut checks);
        leftovers
            .namespaces
            .extend(pods.iter().map(|pod| pod.pod.netns.name().to_owned()));
        // The pods' namespaces go before the nodes'.
        let deleted = delete_pods(&fabric, &pods, &mut checks);
        drop(pods);
        shown?;
        deleted?;
        leftovers
    };
    // Every namespace and mount of the demo has been removed by now.
    let left = leftovers.still_there();
    checks.record(
        "nothing of the demo is left on this machine",
        left.is_empty(),
        &if left.is_empty() {
            "no namespace, mount or state directory of the demo remains".to_owned()
        } else {
            format!("left: {}", left.join(", "))
        },
    )?;
    println!();
    if !checks.failed.is_empty() {
        bail!(
            "{} of {} checks failed: {}",
            checks.failed.len(),
            checks.failed.len() + checks.passed,
            checks.failed.join("; ")
        );
    }
    println!("all {} checks passed. Next: `cargo xtask test`.", checks.passed);
    Ok(())
}

/// Adds the pods and checks reachability and the fast path; the pods it added are in `pods`
/// even when it fails half-way, so the caller can delete them.
fn show(fabric: &Fabric, nodes: usize, pods: &mut Vec<DemoPod>, checks: &mut Checks) -> anyhow::Result<()> {
    section(&format!(
        "a flat L2 network: a switch, an external host ({EXTERNAL_IP}) and {nodes} node(s)"
    ));
    for node in &fabric.nodes {
        println!(
            "node{}: uplink eth0 with {}/16 -> `flatbridge node setup --uplink eth0 --gateway 10.10.{}.0/16`",
            node.index,
            node.address(),
            node.index
        );
    }
    println!(
        "node1's network config (the reference recipe, only \"type\" changed):\n{}",
        fabric.nodes[0].config("0.3.1")
    );

    section("ADD pods");
    let placement: Vec<usize> = std::iter::once(0).chain(0..nodes).collect();
    for (number, &node) in placement.iter().enumerate() {
        interrupt::check()?;
        let name = format!("pod-{}", char::from(b'a' + number as u8));
        let pod = Pod::new(&format!("demo{number}"));
        let started = Instant::now();
        let reply = fabric.nodes[node]
            .node
            .cni("ADD", &pod.env("eth0"), &fabric.nodes[node].config("0.3.1"));
        if !reply.success {
            pods.push(DemoPod {
                name: name.clone(),
                pod,
                node,
                address: String::new(),
            });
            bail!("ADD {name} failed: {}", reply.stdout);
        }
        let address = reply.json["ips"][0]["address"].as_str().unwrap_or("?").to_owned();
        println!(
            "ADD {name} on node{}: {address}, host side {} ({:.1} ms)",
            node + 1,
            reply.json["interfaces"][1]["name"].as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64() * 1000.0
        );
        let address = address.split('/').next().unwrap_or_default().to_owned();
        pods.push(DemoPod {
            name,
            pod,
            node,
            address,
        });
    }

    section("reachability (ICMP goes through the bridge and netfilter: only accepted flows are offloaded)");
    let a = &pods[0];
    let mut targets = vec![(
        "pods reach each other within a node".to_owned(),
        format!("{} -> {} on node1", a.name, pods[1].name),
        pods[1].address.clone(),
    )];
    if nodes > 1 {
        targets.push((
            "pods reach each other across nodes".into(),
            format!(
                "{} on node1 -> {} on node2, through the switch",
                a.name, pods[2].name
            ),
            pods[2].address.clone(),
        ));
    }
    targets.push((
        "pods reach the external router".into(),
        format!("{} -> {EXTERNAL_IP}", a.name),
        EXTERNAL_IP.into(),
    ));
    targets.push((
        "pods reach their gateway".into(),
        format!("{} -> 10.10.1.0 on node1", a.name),
        "10.10.1.0".into(),
    ));
    for (claim, path, target) in &targets {
        let (held, summary) = ping(&a.pod.netns, target);
        checks.record(claim, held, &format!("{path}: {summary}"))?;
    }
    let (held, summary) = ping(&fabric.external, &a.address);
    checks.record(
        "the external host reaches a pod directly (no NAT, straight over the L2)",
        held,
        &format!("{EXTERNAL_IP} -> {} {}: {summary}", a.name, a.address),
    )?;

    section("the fast path: TCP that netfilter accepted, offloaded");
    let mut runs = vec![(&pods[0], &pods[1])];
    if nodes > 1 {
        runs.push((&pods[0], &pods[2]));
    }
    for (client, server) in runs {
        interrupt::check()?;
        let involved: Vec<usize> = if client.node == server.node {
            vec![client.node]
        } else {
            vec![client.node, server.node]
        };
        let before: Vec<Vec<(String, u64)>> = involved
            .iter()
            .map(|&n| byte_counters(&fabric.nodes[n].node))
            .collect();
        let report = traffic::iperf3(
            &client.pod.netns,
            &server.pod.netns,
            &server.address,
            &["-t", "3"],
        )
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("iperf3 {} -> {}", client.name, server.name))?;
        let throughput =
            traffic::received_gbits(&report).context("iperf3 report without a received total")?;
        let (mut fast, mut bridged) = (0u64, 0u64);
        let mut moved = Vec::new();
        for (position, &n) in involved.iter().enumerate() {
            let after = byte_counters(&fabric.nodes[n].node);
            for ((verdict, was), (_, now)) in before[position].iter().zip(&after) {
                let delta = now.saturating_sub(*was);
                if FAST_VERDICTS.contains(&verdict.as_str()) {
                    fast += delta;
                } else if BRIDGE_VERDICTS.contains(&verdict.as_str()) {
                    bridged += delta;
                }
                if delta > 0 {
                    moved.push(format!("node{} {verdict} +{delta} B", n + 1));
                }
            }
        }
        let share = if fast + bridged == 0 {
            0.0
        } else {
            fast as f64 / (fast + bridged) as f64
        };
        let across = if client.node == server.node {
            "within node1".to_owned()
        } else {
            format!("node{} -> node{}", client.node + 1, server.node + 1)
        };
        println!(
            "iperf3 {} -> {} ({across}), 3 s: {throughput:.2} Gbit/s; counters: {}",
            client.name,
            server.name,
            moved.join(", ")
        );
        checks.record(
            &format!("the fast path carries the TCP flow {across}"),
            share >= FAST_SHARE_WANTED,
            &format!(
                "{fast} bytes ({:.3} %) bypassed the bridge, {bridged} ({:.3} %) went through the bridge and \
                 netfilter (wanted: at least {:.0} % bypassing)",
                share * 100.0,
                (1.0 - share) * 100.0,
                FAST_SHARE_WANTED * 100.0
            ),
        )?;
    }
    println!("\nnode1# flatbridge status");
    print!("{}", fabric.nodes[0].node.status_text());
    Ok(())
}

/// How many echo requests each reachability check sends; every one must come back.
const PINGS: u32 = 3;

/// Pings from `netns` to `target`: whether every echo came back (ping's own exit status says
/// only that one did), and ping's summary (or why it did not run).
fn ping(netns: &Netns, target: &str) -> (bool, String) {
    let count = PINGS.to_string();
    let output = netns.run(&["ping", "-c", &count, "-i", "0.2", "-W", "2", target]);
    let text = String::from_utf8_lossy(&output.stdout);
    let every_reply = text
        .lines()
        .any(|line| line.contains(&format!(" {PINGS} received")));
    let summary: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("packets") || line.contains("rtt"))
        .collect();
    let summary = if summary.is_empty() {
        format!(
            "ping printed no summary: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    } else {
        summary.join("; ")
    };
    (output.status.success() && every_reply, summary)
}

/// DEL of every pod, then checks that the nodes have no lease, no host veth and no endpoint
/// left. Goes on past failed DELs.
fn delete_pods(fabric: &Fabric, pods: &[DemoPod], checks: &mut Checks) -> anyhow::Result<()> {
    section("DEL and clean up");
    let mut failed = Vec::new();
    for pod in pods {
        let node = &fabric.nodes[pod.node];
        let reply = node.node.cni("DEL", &pod.pod.env("eth0"), &node.config("0.3.1"));
        if !reply.success {
            failed.push(format!("DEL {}: {}", pod.name, reply.stdout));
        }
    }
    checks.record(
        "DEL succeeds for every pod",
        failed.is_empty(),
        &if failed.is_empty() {
            format!("{} pods deleted", pods.len())
        } else {
            failed.join("; ")
        },
    )?;
    for node in &fabric.nodes {
        let leases = node.node.leases("data").len();
        let veths = node.node.host_veths().len();
        let endpoints = node.node.status()["networks"][0]["endpoints"]
            .as_array()
            .map_or(0, Vec::len);
        checks.record(
            &format!("node{} has nothing of the pods left", node.index),
            leases == 0 && veths == 0 && endpoints == 0,
            &format!("{leases} leases, {veths} host veths, {endpoints} datapath endpoints"),
        )?;
    }
    Ok(())
}

/// The datapath's byte counters, by verdict.
fn byte_counters(node: &Node) -> Vec<(String, u64)> {
    let status: Value = node.status();
    status["networks"][0]["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|counter| {
            (
                counter["verdict"].as_str().unwrap_or_default().to_owned(),
                counter["bytes"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// What the demo made on the machine, to check that it is all gone at the end.
struct Leftovers {
    namespaces: Vec<String>,
    paths: Vec<PathBuf>,
}

impl Leftovers {
    fn of(fabric: &Fabric) -> Self {
        let mut namespaces = vec![fabric.switch.name().to_owned(), fabric.external.name().to_owned()];
        let mut paths = Vec::new();
        for node in &fabric.nodes {
            namespaces.push(node.node.netns.name().to_owned());
            paths.push(node.node.bpffs.path().to_path_buf());
            paths.push(node.node.state_dir().to_path_buf());
        }
        Self { namespaces, paths }
    }

    fn still_there(&self) -> Vec<String> {
        let listed = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut left: Vec<String> = self
            .namespaces
            .iter()
            .filter(|name| listed.split_whitespace().any(|word| word == name.as_str()))
            .map(|name| format!("namespace {name}"))
            .collect();
        for path in &self.paths {
            let text = path.display().to_string();
            if mounts.split_whitespace().any(|word| word == text) {
                left.push(format!("mount {text}"));
            } else if path.exists() {
                left.push(format!("directory {text}"));
            }
        }
        left
    }
}
