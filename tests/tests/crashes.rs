//! A busy node that crashes: failures injected at every step of ADD and DEL, the plugin
//! killed (SIGKILL) at every step and at random moments, and many ADD/DEL/GC at once. After
//! the runtime's DEL (or GC) the node is exactly as before — links, leases, endpoints,
//! gateways, pins — and the same container ADDs again.
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use flatbridge_tests::{CniEnv, Node, Pod, fabric::Fabric, require_root, snapshot::state};
use serde_json::{Value, json};

const NET: &str = "data";

/// The fault points of the plugin (plugin/src/cmd/{add,del}.rs), in the order they run.
const ADD_POINTS: [&str; 10] = [
    "add:bridge",
    "add:datapath",
    "add:lease",
    "add:veth",
    "add:programs",
    "add:endpoint",
    "add:port",
    "add:pod",
    "add:gateway",
    "add:finish",
];
const DEL_POINTS: [&str; 3] = ["del:endpoint", "del:veth", "del:lease"];

/// One node on a switch with an external host, and one pod added, so the bridge, the
/// datapath and the uplink programs exist before anything fails.
fn busy_node() -> (Fabric, Pod, Value) {
    require_root();
    let fabric = Fabric::new(1, None);
    let config = fabric.nodes[0].config("1.0.0");
    let first = Pod::new("first");
    fabric.nodes[0]
        .node
        .cni("ADD", &first.env("eth0"), &config)
        .ok("first ADD");
    (fabric, first, config)
}

fn with_fault(env: &CniEnv, fault: &str) -> CniEnv {
    CniEnv {
        fault: fault.to_owned(),
        ..env.clone()
    }
}

#[test]
fn a_failure_at_any_add_step_leaves_the_node_as_it_was() {
    let (fabric, _first, config) = busy_node();
    let node = &fabric.nodes[0].node;
    let before = state(node);
    for point in ADD_POINTS {
        let pod = Pod::new("fault");
        let msg = node
            .cni("ADD", &with_fault(&pod.env("eth0"), point), &config)
            .error(point, 999);
        assert!(msg.contains(point), "{point}: {msg}");
        assert_eq!(state(node), before, "{point}: the node changed");
        assert!(
            !pod.netns.ok(&["ip", "-o", "link"]).contains("eth0"),
            "{point}: eth0 left in the pod"
        );
        // The runtime's DEL after a failed ADD is a success that changes nothing.
        node.cni("DEL", &pod.env("eth0"), &config).ok(point);
        assert_eq!(
            state(node),
            before,
            "{point}: DEL after the failure changed the node"
        );
    }
}

#[test]
fn a_kill_at_any_add_step_is_cleaned_by_the_runtimes_del_and_the_pod_adds_again() {
    let (fabric, _first, config) = busy_node();
    let node = &fabric.nodes[0].node;
    let before = state(node);
    for (i, point) in ADD_POINTS.into_iter().enumerate() {
        let pod = Pod::new("killed");
        let env = pod.env("eth0");
        let killed = node.cni("ADD", &with_fault(&env, &format!("{point}:kill")), &config);
        assert!(
            !killed.success && killed.json.is_null(),
            "{point}: the plugin was not killed: {}",
            killed.stdout
        );
        // Runtimes retry DEL, with the netns or (after a node reboot) without it.
        let without_netns = CniEnv {
            netns: String::new(),
            ..env.clone()
        };
        let del_env = if i % 2 == 1 { &without_netns } else { &env };
        node.cni("DEL", del_env, &config).ok(point);
        if del_env.netns.is_empty() {
            // Without the netns the pod's end of a half-made veth stays in the pod, which
            // the runtime deletes with the netns; the node itself must be clean.
            drop(pod);
        } else {
            assert!(
                !pod.netns.ok(&["ip", "-o", "link"]).contains("eth0"),
                "{point}: eth0 left in the pod"
            );
        }
        assert_eq!(state(node), before, "{point}: the node was not cleaned");
        let again = Pod::new("again");
        let again_env = CniEnv {
            container_id: env.container_id.clone(),
            ..again.env("eth0")
        };
        node.cni("ADD", &again_env, &config).ok(point);
        node.cni("DEL", &again_env, &config).ok(point);
        assert_eq!(state(node), before, "{point}: the second life left something");
    }
}

#[test]
fn a_kill_at_any_del_step_is_finished_by_the_retry() {
    let (fabric, _first, config) = busy_node();
    let node = &fabric.nodes[0].node;
    let before = state(node);
    for point in DEL_POINTS {
        let pod = Pod::new("delkill");
        let env = pod.env("eth0");
        node.cni("ADD", &env, &config).ok(point);
        let killed = node.cni("DEL", &with_fault(&env, &format!("{point}:kill")), &config);
        assert!(!killed.success && killed.json.is_null(), "{point}: not killed");
        node.cni("DEL", &env, &config).ok(point);
        node.cni("DEL", &env, &config).ok(point);
        assert_eq!(state(node), before, "{point}: the node was not cleaned");
        node.cni("ADD", &env, &config).ok(point);
        node.cni("DEL", &env, &config).ok(point);
        assert_eq!(state(node), before, "{point}: the second life left something");
    }
}

#[test]
fn kills_at_random_moments_are_cleaned_by_del() {
    let (fabric, _first, config) = busy_node();
    let node = &fabric.nodes[0].node;
    let before = state(node);
    // Spread over the whole ADD (about 5-20 ms here, more with the probe on a wire).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for round in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 150_000);
        let pod = Pod::new("random");
        let env = pod.env("eth0");
        let mut child = node.cni_start("ADD", &env, &config);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        node.cni("DEL", &env, &config)
            .ok(&format!("DEL after a kill at {delay:?}"));
        assert_eq!(
            state(node),
            before,
            "round {round}: kill after {delay:?} left something"
        );
    }
}

#[test]
fn many_adds_dels_and_gcs_at_once_lose_nothing() {
    require_root();
    // A fresh node: the first round's ADDs race to create the bridge and load the datapath.
    let node = Node::new("churn");
    let config = flatbridge_tests::seed_config("1.1.0");
    const PODS: usize = 64;
    let duplicates = AtomicUsize::new(0);
    for round in 0..4 {
        let pods: Vec<Pod> = (0..PODS).map(|_| Pod::new("churn")).collect();
        // Every attachment of the round is valid for GC: GC must take none of them.
        let valid: Vec<Value> = pods
            .iter()
            .map(|pod| json!({"containerID": pod.container_id, "ifname": "eth0"}))
            .collect();
        let mut gc_config = config.clone();
        gc_config["cni.dev/valid-attachments"] = json!(valid);
        std::thread::scope(|scope| {
            for (i, pod) in pods.iter().enumerate() {
                let (node, config) = (&node, &config);
                scope.spawn(move || {
                    node.cni("ADD", &pod.env("eth0"), config)
                        .ok(&format!("round {round}: ADD {i}"));
                });
            }
            for _ in 0..4 {
                let (node, gc_config) = (&node, &gc_config);
                scope.spawn(move || {
                    node.cni("GC", &CniEnv::default(), gc_config).ok("GC");
                });
            }
            // DELs without a netns sweep the endpoints of vanished veths while ADDs run.
            for _ in 0..4 {
                let (node, config) = (&node, &config);
                scope.spawn(move || {
                    let gone = Pod::new("gone");
                    let env = CniEnv {
                        netns: String::new(),
                        ..gone.env("eth0")
                    };
                    node.cni("DEL", &env, config).ok("DEL of a pod without netns");
                });
            }
        });
        let leases = node.leases(NET);
        assert_eq!(leases.len(), PODS, "round {round}: leases {leases:?}");
        let status = node.status();
        let endpoints = status["networks"][0]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let veths = node.host_veths();
        assert_eq!(veths.len(), PODS, "round {round}: veths");
        for veth in &veths {
            assert!(
                endpoints
                    .iter()
                    .any(|endpoint| endpoint["host_veth"] == veth.as_str()),
                "round {round}: pod behind {veth} lost its endpoint (swept while alive)"
            );
        }
        let mut addresses: Vec<String> = endpoints
            .iter()
            .flat_map(|endpoint| endpoint["addresses"].as_array().cloned().unwrap_or_default())
            .map(|address| address.to_string())
            .collect();
        addresses.sort();
        let before = addresses.len();
        addresses.dedup();
        duplicates.fetch_add(before - addresses.len(), Ordering::Relaxed);
        assert_eq!(endpoints.len(), PODS, "round {round}: endpoints");
        // Half the pods go with DEL (twice, as runtimes do), the rest with their netns
        // first and then a DEL without it.
        std::thread::scope(|scope| {
            for (i, pod) in pods.into_iter().enumerate() {
                let (node, config) = (&node, &config);
                scope.spawn(move || {
                    let env = pod.env("eth0");
                    if i % 2 == 0 {
                        node.cni("DEL", &env, config).ok("DEL");
                        node.cni("DEL", &env, config).ok("DEL again");
                    } else {
                        let id = pod.container_id.clone();
                        drop(pod);
                        let env = CniEnv {
                            container_id: id,
                            netns: String::new(),
                            ..env
                        };
                        node.cni("DEL", &env, config).ok("DEL after the netns went");
                    }
                });
            }
        });
        assert_eq!(
            node.leases(NET),
            Vec::<String>::new(),
            "round {round}: leases left"
        );
        assert_eq!(
            node.host_veths(),
            Vec::<String>::new(),
            "round {round}: veths left"
        );
        let status = node.status();
        assert_eq!(
            status["networks"][0]["endpoints"],
            json!([]),
            "round {round}: endpoints left"
        );
        assert_eq!(
            status["networks"][0]["gateways"],
            json!([]),
            "round {round}: gateways left"
        );
    }
    assert_eq!(
        duplicates.load(Ordering::Relaxed),
        0,
        "an address was handed out twice"
    );
}
