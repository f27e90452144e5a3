//! The Kubernetes manifests in deploy/ (CI also validates them against the API's schemas
//! with kubernetes-validate): they hang together, and the agent runs with exactly the
//! DaemonSet's arguments and the ConfigMap's node map, on a simulated node, and installs
//! that node's config.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use flatbridge_tests::{Node, require_root};
use serde_json::Value;

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn daemonset() -> Value {
    manifest("daemonset.yaml")
}

fn agent_container(daemonset: &Value) -> &Value {
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    containers
        .iter()
        .find(|container| container["name"] == "agent")
        .expect("the agent container")
}

#[test]
fn the_manifests_hang_together() {
    let namespace = manifest("namespace.yaml");
    let account = manifest("serviceaccount.yaml");
    let nodes = manifest("configmap.yaml");
    let daemonset = daemonset();
    let name = &namespace["metadata"]["name"];
    for object in [&account, &nodes, &daemonset] {
        assert_eq!(&object["metadata"]["namespace"], name, "{object}");
    }
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"]
            .as_array()
            .is_some_and(|tolerations| tolerations
                .iter()
                .any(|toleration| toleration["operator"] == "Exists" && toleration.get("key").is_none())),
        "the agent must tolerate every taint"
    );
    assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        daemonset["spec"]["selector"]["matchLabels"],
        daemonset["spec"]["template"]["metadata"]["labels"]
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|volume| volume["hostPath"]["path"].as_str())
        .collect();
    for path in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/sys/fs/bpf",
        "/var/lib/cni",
        "/run/netns",
    ] {
        assert!(host_paths.contains(&path), "no hostPath {path}: {host_paths:?}");
    }
    let config_map = volumes
        .iter()
        .find_map(|volume| volume["configMap"]["name"].as_str())
        .expect("the node map volume");
    assert_eq!(config_map, nodes["metadata"]["name"]);
    let container = agent_container(&daemonset);
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for volume in volumes {
        assert!(
            mounts.iter().any(|mount| mount["name"] == volume["name"]),
            "volume {} is not mounted",
            volume["name"]
        );
    }
    assert_eq!(container["securityContext"]["privileged"], false);
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("the metrics port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(container[probe]["httpGet"]["port"].as_u64(), Some(port));
    }
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&format!("--metrics-addr=$(NODE_IP):{port}").as_str()),
        "{args:?}"
    );
    let annotations = &daemonset["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
}

/// The DaemonSet's arguments, as the kubelet would expand them on `node_ip`, with the host
/// paths its mounts stand for under `host` and the ConfigMap's file at `nodes`.
fn agent_args(node_ip: &str, host: &Path, nodes: &Path) -> Vec<String> {
    let daemonset = daemonset();
    let container = agent_container(&daemonset);
    let args = container["args"].as_array().expect("args");
    args.iter()
        .filter_map(Value::as_str)
        .map(|arg| {
            arg.replace("$(NODE_IP)", node_ip)
                .replace("/etc/flatbridge/nodes.json", &nodes.display().to_string())
                .replace("/host/", &format!("{}/", host.display()))
        })
        .collect()
}

#[test]
fn the_agent_runs_with_the_daemonsets_arguments_and_installs_from_the_configmap() {
    require_root();
    let node = Node::new("deploy");
    let host: PathBuf = node.state_dir().join("host");
    let nodes = node.state_dir().join("nodes.json");
    let map = &manifest("configmap.yaml")["data"]["nodes.json"];
    std::fs::write(&nodes, map.as_str().expect("nodes.json")).expect("write the node map");
    let args = agent_args("127.0.0.1", &host, &nodes);
    let mut agent = node
        .command(&node.plugin_path())
        .args(&args)
        .env("NODE_NAME", "node-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let conflist = host.join("etc/cni/net.d/10-flatbridge.conflist");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let answer = node.netns.within(|| {
            let mut stream = TcpStream::connect("127.0.0.1:9750").ok()?;
            stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            Some(response)
        });
        if answer.is_some_and(|response| {
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
        }) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let installed = std::fs::read_to_string(&conflist).unwrap_or_default();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        ready,
        "the agent with the DaemonSet's arguments never got ready: {args:?}"
    );
    let installed: Value = serde_json::from_str(&installed).expect("the installed conflist");
    assert_eq!(installed["plugins"][0]["type"], "flatbridge");
    assert_eq!(
        installed["plugins"][0]["ipam"]["ranges"][0][0]["rangeStart"],
        "10.10.1.1"
    );
    assert_eq!(installed["plugins"][0]["uplink"], "eno1");
    assert!(host.join("opt/cni/bin/flatbridge").exists());
}
