//! Traffic between namespaces: iperf3 runs with a server that is really listening first.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Netns;

/// Waits until something in `netns` listens on TCP `port`.
pub fn wait_listening(netns: &Netns, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let listening = netns.run(&["ss", "-Hltn", &format!("sport = :{port}")]);
        if !String::from_utf8_lossy(&listening.stdout).trim().is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// One iperf3 run from `client` to a one-shot server in `server` at `server_ip`; returns
/// iperf3's JSON report. `client_args` are added to the client's command line.
pub fn iperf3(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    client_args: &[&str],
) -> Result<Value, String> {
    let mut daemon = server
        .command("iperf3")
        .args(["-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start the iperf3 server: {error}"))?;
    let result = (|| {
        if !wait_listening(server, 5201) {
            return Err("the iperf3 server does not listen".to_owned());
        }
        let mut argv = vec!["iperf3", "-c", server_ip, "-J"];
        argv.extend_from_slice(client_args);
        let output = client.run(&argv);
        let report: Value = serde_json::from_slice(&output.stdout).map_err(|error| {
            format!(
                "iperf3 printed no JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        if let Some(error) = report.get("error") {
            return Err(format!("iperf3: {error}"));
        }
        Ok(report)
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    result
}

/// Received throughput of an iperf3 TCP report, in Gbit/s.
pub fn received_gbits(report: &Value) -> Option<f64> {
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bits| bits / 1e9)
}
