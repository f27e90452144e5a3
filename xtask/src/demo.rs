//! `cargo xtask demo [--nodes N]`: the main job, shown to a person. A simulated flat L2
//! network — a switch, an external host (10.10.0.1, the router) and N nodes set up with
//! `flatbridge node setup` — and pods added with the seed config of the reference bridge
//! recipe (only the type changed; node i gets the range 10.10.i.1–101). It shows their
//! addresses, pings within a node, across nodes and from the external host, iperf3 runs
//! with the fast path's counters, `flatbridge status`, then DEL and a check that nothing is
//! left. Everything happens inside namespaces the demo creates and removes.
use std::time::Instant;

use anyhow::{Context, bail};
use flatbridge_tests::{
    Node, Pod,
    fabric::{EXTERNAL_IP, Fabric},
    traffic,
};
use serde_json::Value;

use crate::{build, setup};

fn section(title: &str) {
    println!("\n== {title}");
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
    setup::run()?;
    let plugin = build::release_plugin()?;

    section(&format!(
        "a flat L2 network: a switch, an external host ({EXTERNAL_IP}) and {nodes} node(s)"
    ));
    let fabric = Fabric::new(nodes, Some(plugin));
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
    let mut pods = Vec::new();
    let placement: Vec<usize> = std::iter::once(0).chain(0..nodes).collect();
    for (number, &node) in placement.iter().enumerate() {
        let name = format!("pod-{}", char::from(b'a' + number as u8));
        let pod = Pod::new(&format!("demo{number}"));
        let started = Instant::now();
        let reply = fabric.nodes[node]
            .node
            .cni("ADD", &pod.env("eth0"), &fabric.nodes[node].config("0.3.1"));
        if !reply.success {
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

    section("traffic");
    let a = &pods[0];
    let mut targets: Vec<(String, String)> = pods[1..]
        .iter()
        .map(|pod| {
            (
                format!("{} (node{})", pod.name, pod.node + 1),
                pod.address.clone(),
            )
        })
        .collect();
    targets.push(("the external router".into(), EXTERNAL_IP.into()));
    targets.push(("its gateway on node1".into(), "10.10.1.0".into()));
    for (what, target) in &targets {
        println!(
            "{} -> {what} {target}: {}",
            a.name,
            ping_summary(
                &a.pod
                    .netns
                    .ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", target])
            )
        );
    }
    let external = fabric
        .external
        .ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &a.address]);
    println!(
        "external host -> {} {} (no NAT, straight over the L2): {}",
        a.name,
        a.address,
        ping_summary(&external)
    );

    section("the fast path (offloads flows that netfilter accepted; ICMP above took the bridge)");
    let mut runs = vec![(&pods[0], &pods[1])];
    if nodes > 1 {
        runs.push((&pods[0], &pods[2]));
    }
    for (client, server) in runs {
        let nodes_involved: Vec<usize> = if client.node == server.node {
            vec![client.node]
        } else {
            vec![client.node, server.node]
        };
        let before: Vec<Vec<(String, u64)>> = nodes_involved
            .iter()
            .map(|&n| counters(&fabric.nodes[n].node))
            .collect();
        let report = traffic::iperf3(
            &client.pod.netns,
            &server.pod.netns,
            &server.address,
            &["-t", "3"],
        )
        .map_err(anyhow::Error::msg)?;
        let throughput =
            traffic::received_gbits(&report).context("iperf3 report without a received total")?;
        println!(
            "iperf3 {} -> {} (node{} -> node{}), 3 s: {throughput:.2} Gbit/s",
            client.name,
            server.name,
            client.node + 1,
            server.node + 1
        );
        for (position, &n) in nodes_involved.iter().enumerate() {
            let after = counters(&fabric.nodes[n].node);
            let moved: Vec<String> = before[position]
                .iter()
                .zip(&after)
                .filter(|((_, was), (_, now))| now > was)
                .map(|((verdict, was), (_, now))| format!("{verdict} +{}", now - was))
                .collect();
            println!("  node{} datapath counters: {}", n + 1, moved.join(", "));
        }
    }
    println!("\nnode1# flatbridge status");
    print!("{}", fabric.nodes[0].node.status_text());

    section("DEL and clean up");
    for pod in &pods {
        let node = &fabric.nodes[pod.node];
        let reply = node.node.cni("DEL", &pod.pod.env("eth0"), &node.config("0.3.1"));
        if !reply.success {
            bail!("DEL {} failed: {}", pod.name, reply.stdout);
        }
    }
    for node in &fabric.nodes {
        println!(
            "node{}: leases left {}, host veths left {}",
            node.index,
            node.node.leases("data").len(),
            node.node.host_veths().len()
        );
    }
    println!("\nThe namespaces of this demo are removed now. Next: `cargo xtask test`.");
    Ok(())
}

fn ping_summary(output: &str) -> String {
    output
        .lines()
        .filter(|line| line.contains("packets") || line.contains("rtt"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The datapath's packet counters, by verdict.
fn counters(node: &Node) -> Vec<(String, u64)> {
    let status: Value = node.status();
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
