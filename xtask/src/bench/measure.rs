//! One measurement between two namespaces: sockperf TCP ping-pong RTT, iperf3 TCP
//! throughput and iperf3 UDP 64-byte packet rate, with both ends pinned to one CPU, and
//! the classic iperf3 run (ends on different CPUs) for readers used to it.
use std::{
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use flatbridge_tests::{Netns, traffic};
use serde_json::Value;

/// The CPU both ends of a same-CPU measurement run on (the other one keeps the machine).
const CPU: &str = "1";

/// A server that lives as long as the guard.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned_server(netns: &Netns, argv: &[&str]) -> anyhow::Result<Server> {
    let child = netns
        .command("taskset")
        .arg("-c")
        .arg(CPU)
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", argv.join(" ")))?;
    Ok(Server(child))
}

/// TCP ping-pong round-trip time, 50th percentile, in microseconds.
pub fn rtt_p50(client: &Netns, server: &Netns, server_ip: &str, seconds: u32) -> anyhow::Result<f64> {
    let _server = pinned_server(
        server,
        &["sockperf", "server", "--tcp", "-i", server_ip, "-p", "11111"],
    )?;
    if !traffic::wait_listening(server, 11111) {
        bail!("sockperf server does not listen");
    }
    let time = seconds.to_string();
    let output = client.run(&[
        "taskset",
        "-c",
        CPU,
        "sockperf",
        "ping-pong",
        "--tcp",
        "-i",
        server_ip,
        "-p",
        "11111",
        "-m",
        "64",
        "-t",
        &time,
        "--full-rtt",
    ]);
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    text.lines()
        .find(|line| line.contains("percentile 50.000"))
        .and_then(|line| line.split('=').nth(1))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no 50th percentile in sockperf's output:\n{text}"))
}

/// TCP throughput in Gbit/s; both ends on one CPU unless `split`.
pub fn tcp_gbits(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    seconds: u32,
    split: bool,
) -> anyhow::Result<f64> {
    let time = seconds.to_string();
    let mut args = vec!["-t", &time, "-O", "1"];
    // iperf3's own affinity flag pins client,server: same CPU, or one each.
    let affinity = if split { "0,1" } else { "1,1" };
    args.extend(["-A", affinity]);
    let report = traffic::iperf3(client, server, server_ip, &args).map_err(anyhow::Error::msg)?;
    traffic::received_gbits(&report).context("iperf3 report without a received total")
}

/// UDP packets of 64 bytes received per second (millions), both ends on one CPU.
pub fn udp_mpps(client: &Netns, server: &Netns, server_ip: &str, seconds: u32) -> anyhow::Result<f64> {
    let time = seconds.to_string();
    let report = traffic::iperf3(
        client,
        server,
        server_ip,
        &["-u", "-b", "0", "-l", "64", "-t", &time, "-A", "1,1"],
    )
    .map_err(anyhow::Error::msg)?;
    let sum: &Value = &report["end"]["sum"];
    let packets = sum["packets"].as_f64().context("no packet count")?;
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .context("no duration")?;
    Ok((packets - lost) / seconds / 1e6)
}

/// Turns TSO, GSO and GRO off (or on) on `device` in `netns`.
pub fn offloads(netns: &Netns, device: &str, on: bool) {
    let state = if on { "on" } else { "off" };
    let _ = netns.run(&["ethtool", "-K", device, "tso", state, "gso", state, "gro", state]);
}

/// A pause between measurements, so one run's tail does not overlap the next.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}
