//! `cargo xtask demo`: the main job, shown to a person. One simulated node (a network
//! namespace with its own view of /var/lib/cni, /var/log and /sys/fs/bpf), two pods added
//! with the seed config of the reference bridge recipe — only the type changed — their
//! addresses, pings, an iperf3 run between them with the fast path's counters, then DEL
//! and a check that nothing is left.
//! Everything happens inside namespaces the demo creates and removes.
use std::{process::Command, time::Instant};

use anyhow::{Context, bail};
use flatbridge_tests::{Node, Pod, seed_config, traffic};

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
    // Conntrack must accept TCP packets that return to netfilter after an offloaded
    // stretch; kube-proxy's --conntrack-tcp-be-liberal does the same.
    for argv in [
        ["ip", "link", "add", "cni0", "type", "bridge"].as_slice(),
        &["ip", "addr", "add", "10.10.1.0/16", "dev", "cni0"],
        &["ip", "link", "set", "cni0", "up"],
        &["sysctl", "-w", "net.netfilter.nf_conntrack_tcp_be_liberal=1"],
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
    section("the fast path");
    let before = fast_path_counters(&node);
    let report = traffic::iperf3(&pods[0].netns, &pods[1].netns, &addresses[1], &["-t", "3"])
        .map_err(anyhow::Error::msg)?;
    let throughput = traffic::received_gbits(&report).context("iperf3 report without a received total")?;
    let after = fast_path_counters(&node);
    println!("iperf3 pod-a -> pod-b, 3 s: {throughput:.2} Gbit/s");
    println!("datapath counters during the run (packets):");
    for ((verdict, was), (_, now)) in before.iter().zip(&after) {
        if now > was {
            println!("  {verdict:<22} +{}", now - was);
        }
    }
    println!("\nnode# flatbridge status");
    print!("{}", node.status_text());

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

/// The datapath's packet counters, by verdict.
fn fast_path_counters(node: &Node) -> Vec<(String, u64)> {
    let status = node.status();
    status["networks"][0]["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|counter| {
            (
                counter["verdict"].as_str().unwrap_or_default().to_owned(),
                counter["packets"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}
