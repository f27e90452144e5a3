//! `cargo xtask demo`: the main job, shown to a person. One simulated node (a network
//! namespace with its own view of /var/lib/cni, /var/log and /sys/fs/bpf), two pods added
//! with the seed config of the reference bridge recipe — only the type changed — their
//! addresses, pings, an iperf3 run between them, then DEL and a check that nothing is left.
//! Everything happens inside namespaces the demo creates and removes.
use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};
use flatbridge_tests::{Node, Pod, seed_config};
use serde_json::Value;

use crate::{
    build, setup,
    util::{exec, root},
};

fn section(title: &str) {
    println!("\n== {title}");
}

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    build::ebpf(true)?;
    exec(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "flatbridge"])
            .current_dir(root()),
    )?;
    let plugin = root().join("target/release/flatbridge");

    section("a simulated node");
    let node = Node::with_plugin("demo-node", plugin);
    // The node's own address on the pod subnet is the pods' gateway, as on a real node of
    // this recipe where the bridge carries the node's IP.
    for argv in [
        ["ip", "link", "add", "cni0", "type", "bridge"].as_slice(),
        &["ip", "addr", "add", "10.10.1.0/16", "dev", "cni0"],
        &["ip", "link", "set", "cni0", "up"],
    ] {
        println!("node# {}", argv.join(" "));
        node.netns.ok(argv);
    }
    let config = seed_config("0.3.1");
    println!("network config (the reference recipe, only \"type\" changed):\n{config}");

    section("ADD two pods");
    let pods = [Pod::new("demo-a"), Pod::new("demo-b")];
    let mut addresses = Vec::new();
    for (name, pod) in ["pod-a", "pod-b"].iter().zip(&pods) {
        let started = Instant::now();
        let reply = node.cni("ADD", &pod.env("eth0"), &config);
        if !reply.success {
            bail!("ADD {name} failed: {}", reply.stdout);
        }
        let address = reply.json["ips"][0]["address"].as_str().unwrap_or("?").to_owned();
        println!(
            "ADD {name}: {address} on eth0, host side {} ({:.1} ms)",
            reply.json["interfaces"][1]["name"].as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64() * 1000.0
        );
        addresses.push(address.split('/').next().unwrap_or_default().to_owned());
    }
    for (name, pod) in ["pod-a", "pod-b"].iter().zip(&pods) {
        print!(
            "{name}# ip -br addr\n{}",
            pod.netns.ok(&["ip", "-br", "-4", "addr"])
        );
    }

    section("traffic");
    for (what, target) in [("pod-b", addresses[1].as_str()), ("the gateway", "10.10.1.0")] {
        let out = pods[0]
            .netns
            .ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", target]);
        let summary = out
            .lines()
            .filter(|line| line.contains("packets") || line.contains("rtt"))
            .collect::<Vec<_>>();
        println!("pod-a -> {what} ({target}): {}", summary.join("; "));
    }
    let throughput = iperf3(&pods, &addresses[1])?;
    println!("iperf3 pod-a -> pod-b, 3 s: {throughput:.2} Gbit/s (through the bridge)");

    section("DEL and clean up");
    for (name, pod) in ["pod-a", "pod-b"].iter().zip(&pods) {
        let reply = node.cni("DEL", &pod.env("eth0"), &config);
        if !reply.success {
            bail!("DEL {name} failed: {}", reply.stdout);
        }
        println!("DEL {name}: ok");
    }
    println!(
        "leases left: {}, host veths left: {}",
        node.leases("data").len(),
        node.host_veths().len()
    );
    println!("\nThe namespaces of this demo are removed now. Next: `cargo xtask test`.");
    Ok(())
}

/// Throughput from pod-a to the iperf3 server in pod-b, in Gbit/s.
fn iperf3(pods: &[Pod; 2], server: &str) -> anyhow::Result<f64> {
    let mut server_process = pods[1]
        .netns
        .command("iperf3")
        .args(["-s", "-1"])
        .stdout(Stdio::null())
        .spawn()
        .context("start the iperf3 server")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = pods[0].netns.run(&["iperf3", "-c", server, "-t", "3", "-J"]);
    let _ = server_process.kill();
    let _ = server_process.wait();
    if !client.status.success() {
        bail!("iperf3 failed: {}", String::from_utf8_lossy(&client.stdout));
    }
    let report: Value = serde_json::from_slice(&client.stdout).context("iperf3 -J output")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bits| bits / 1e9)
        .context("iperf3 report without end.sum_received")
}
