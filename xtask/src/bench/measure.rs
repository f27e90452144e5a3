//! One measurement between two namespaces: sockperf TCP ping-pong RTT (over IPv6, where
//! Debian's sockperf 3.7 cannot go, the bench's own TCP ping-pong), iperf3 TCP throughput
//! and iperf3 UDP 64-byte packet rate, with both ends pinned to one CPU, and the classic
//! iperf3 run (ends on different CPUs) for readers used to it.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
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

/// Pins the calling thread to [`CPU`].
fn pin_to_cpu() -> std::io::Result<()> {
    let cpu: usize = CPU.parse().unwrap_or(1);
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get a valid set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// TCP ping-pong round-trip time, 50th percentile, in microseconds, measured by the bench
/// itself: 64-byte messages one at a time over one connection (Nagle off), both ends on
/// [`CPU`]. For IPv6, which Debian's sockperf cannot reach; its figures are compared with
/// each other only.
pub fn rtt_p50_own(client: &Netns, server: &Netns, server_ip: &str, seconds: u32) -> anyhow::Result<f64> {
    let ip: IpAddr = server_ip.parse().context("server address")?;
    let address = SocketAddr::new(ip, 11112);
    let listener = server
        .within(move || TcpListener::bind(address))
        .context("bind the ping-pong server")?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin_to_cpu()?;
        // A client that never comes must not keep the bench waiting.
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => return Err(error),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        let mut message = [0u8; 64];
        // Until the client hangs up.
        while stream.read_exact(&mut message).is_ok() {
            stream.write_all(&message)?;
        }
        Ok(())
    });
    let rtts = client.within(move || -> std::io::Result<Vec<f64>> {
        pin_to_cpu()?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let (message, mut back) = ([0x5au8; 64], [0u8; 64]);
        let started = Instant::now();
        let warm_up = Duration::from_millis(200);
        let mut rtts = Vec::new();
        while started.elapsed() < warm_up + Duration::from_secs(u64::from(seconds)) {
            let sent = Instant::now();
            stream.write_all(&message)?;
            stream.read_exact(&mut back)?;
            if started.elapsed() > warm_up {
                rtts.push(sent.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(rtts)
    });
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("the ping-pong server panicked"))?;
    let rtts = rtts.context("TCP ping-pong")?;
    served.context("the ping-pong server")?;
    anyhow::ensure!(!rtts.is_empty(), "no round trip measured");
    Ok(super::report::median(&rtts))
}

/// TCP ping-pong round-trip time, 50th percentile, in microseconds.
pub fn rtt_p50(client: &Netns, server: &Netns, server_ip: &str, seconds: u32) -> anyhow::Result<f64> {
    if server_ip.contains(':') {
        return rtt_p50_own(client, server, server_ip, seconds);
    }
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
