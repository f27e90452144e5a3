//! IPAM on a simulated node: leases shared with the reference host-local plugin, many
//! ADDs at once, delegation to another IPAM plugin, STATUS and GC.
use std::{path::Path, process::Stdio};

use flatbridge_tests::{CniEnv, Node, Pod, Reply, require_root, seed_config};
use serde_json::{Value, json};

/// Runs Debian's reference host-local plugin on `node` (same /var/lib/cni view).
fn host_local(node: &Node, verb: &str, env: &CniEnv, config: &Value) -> Reply {
    let mut command = node.command(Path::new("/usr/lib/cni/host-local"));
    command
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped());
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run host-local");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        config.to_string().as_bytes(),
    )
    .expect("write config");
    let output = child.wait_with_output().expect("wait for host-local");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Reply {
        success: output.status.success(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn leases_are_shared_with_the_reference_host_local() {
    require_root();
    let node = Node::new("interop");
    let config = seed_config("1.0.0");
    let reference = Pod::new("ref");
    let ours = Pod::new("ours");

    // The reference plugin leases first; flatbridge continues its round robin after it.
    let by_reference = host_local(&node, "ADD", &reference.env("eth0"), &config).ok("host-local ADD");
    assert_eq!(by_reference["ips"][0]["address"], "10.10.1.1/16");
    let by_us = node.cni("ADD", &ours.env("eth0"), &config).ok("flatbridge ADD");
    assert_eq!(by_us["ips"][0]["address"], "10.10.1.2/16");

    // Each plugin recognises the other's lease files.
    host_local(&node, "CHECK", &ours.env("eth0"), &config).ok("host-local CHECK of a flatbridge lease");
    node.cni("DEL", &reference.env("eth0"), &config)
        .ok("flatbridge DEL of a host-local lease");
    assert_eq!(node.leases("data"), ["10.10.1.2"]);
    host_local(&node, "DEL", &ours.env("eth0"), &config).ok("host-local DEL of a flatbridge lease");
    assert!(node.leases("data").is_empty());
    // The veth is still ours to remove.
    node.cni("DEL", &ours.env("eth0"), &config).ok("flatbridge DEL");
    assert!(node.host_veths().is_empty());
}

#[test]
fn concurrent_adds_get_distinct_addresses_and_concurrent_dels_leave_nothing() {
    require_root();
    let node = Node::new("parallel");
    let config = seed_config("1.0.0");
    let pods: Vec<Pod> = (0..8).map(|_| Pod::new("par")).collect();
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| scope.spawn(|| node.cni("ADD", &pod.env("eth0"), &config).ok("parallel ADD")))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().expect("ADD thread")["ips"][0]["address"]
                    .as_str()
                    .expect("address")
                    .to_owned()
            })
            .collect()
    });
    let mut distinct = addresses.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), pods.len(), "duplicate addresses: {addresses:?}");
    assert_eq!(node.leases("data").len(), pods.len());
    assert_eq!(node.host_veths().len(), pods.len());
    let last = pods.last().expect("pods").ipv4("eth0").expect("address");
    assert!(
        pods[0].ping(&last),
        "pods added in parallel cannot reach each other"
    );
    std::thread::scope(|scope| {
        for pod in &pods {
            scope.spawn(|| node.cni("DEL", &pod.env("eth0"), &config).ok("parallel DEL"));
        }
    });
    assert!(node.leases("data").is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
fn other_ipam_types_are_delegated_to_their_plugin() {
    require_root();
    let node = Node::new("delegate");
    let mut config = seed_config("1.0.0");
    config["ipam"] = json!({"type": "static", "addresses": [{"address": "10.10.1.77/16", "gateway": "10.10.1.0"}],
                            "routes": [{"dst": "0.0.0.0/0"}]});
    let pod = Pod::new("delegate");
    let env = CniEnv {
        path: "/usr/lib/cni".into(),
        ..pod.env("eth0")
    };
    let result = node.cni("ADD", &env, &config).ok("ADD with static IPAM");
    assert_eq!(result["ips"][0]["address"], "10.10.1.77/16");
    assert_eq!(pod.ipv4("eth0").as_deref(), Some("10.10.1.77"));
    node.cni("DEL", &env, &config).ok("DEL with static IPAM");
    assert!(node.host_veths().is_empty());
    // Without CNI_PATH the plugin cannot be found, and says where it looked.
    let msg = node
        .cni("ADD", &pod.env("eth0"), &config)
        .error("ADD without CNI_PATH", 7);
    assert!(msg.contains("static"), "{msg}");
}

#[test]
fn status_reports_readiness() {
    require_root();
    let node = Node::new("status");
    let mut config = seed_config("1.1.0");
    config["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.10.1.2");
    let env = CniEnv::default();
    assert!(
        node.cni("STATUS", &env, &config)
            .ok("STATUS on a fresh node")
            .is_null()
    );
    let pods = [Pod::new("st1"), Pod::new("st2")];
    node.cni("ADD", &pods[0].env("eth0"), &config).ok("ADD");
    assert!(
        node.cni("STATUS", &env, &config)
            .ok("STATUS with room left")
            .is_null()
    );
    node.cni("ADD", &pods[1].env("eth0"), &config).ok("ADD");
    let msg = node
        .cni("STATUS", &env, &config)
        .error("STATUS with a full range", 50);
    assert!(msg.contains("exhausted") && msg.contains("2 of 2"), "{msg}");
    for pod in &pods {
        node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
    }
    let other = Node::new("status-bridge");
    other.netns.ok(&[
        "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0peer",
    ]);
    let msg = other
        .cni("STATUS", &env, &config)
        .error("STATUS with cni0 not a bridge", 50);
    assert!(msg.contains("not a bridge"), "{msg}");
}

#[test]
fn gc_removes_what_the_runtime_no_longer_knows() {
    require_root();
    let node = Node::new("gc");
    let config = seed_config("1.1.0");
    let keep = Pod::new("keep");
    let lose = Pod::new("lose");
    node.cni("ADD", &keep.env("eth0"), &config).ok("ADD keep");
    node.cni("ADD", &lose.env("eth0"), &config).ok("ADD lose");
    let kept_address = keep.ipv4("eth0").expect("address");
    let mut gc_config = config.clone();
    gc_config["cni.dev/valid-attachments"] = json!([{"containerID": keep.container_id, "ifname": "eth0"}]);
    node.cni("GC", &CniEnv::default(), &gc_config).ok("GC");
    assert_eq!(node.leases("data"), std::slice::from_ref(&kept_address));
    assert_eq!(node.host_veths().len(), 1);
    assert!(
        !lose.netns.ok(&["ip", "-o", "link"]).contains("eth0"),
        "the lost pod's veth survived GC"
    );
    assert_eq!(
        keep.ipv4("eth0"),
        Some(kept_address),
        "GC touched the pod it had to keep"
    );
    node.cni("DEL", &keep.env("eth0"), &config).ok("DEL");
}
