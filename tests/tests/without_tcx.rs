//! The seed recipe on a kernel without TCX (Debian 12's 6.1, Ubuntu 22.04's 5.15, RHEL 9's
//! 5.14): the plugin asks the kernel, finds no TCX, and attaches the uplink programs as
//! clsact filters of the network's own, which outlive the plugin, are replaced in place
//! and never stack. Run here by pretending the kernel lacks TCX (the plugin's test build
//! reads `FLATBRIDGE_KERNEL_LACKS`); `cargo xtask test-kernel` runs the recipe on those
//! kernels themselves.
use flatbridge_tests::{
    Pod,
    fabric::{EXTERNAL_IP, Fabric, FabricNode},
    node::pretend_kernel_lacks,
    require_root, traffic,
};
use serde_json::Value;

const NET: &str = "data";

fn lacking_tcx() -> Fabric {
    require_root();
    pretend_kernel_lacks("tcx");
    Fabric::new(2, None)
}

/// The BPF filters on a hook of `dev`, one line each, as `tc` lists them.
fn bpf_filters(node: &FabricNode, dev: &str, hook: &str) -> Vec<String> {
    node.node
        .netns
        .ok(&["tc", "filter", "show", "dev", dev, hook])
        .lines()
        .filter(|line| line.contains(" bpf ") && line.contains(" handle "))
        .map(str::to_owned)
        .collect()
}

fn uplink_programs(status: &Value) -> Vec<(String, String, bool)> {
    status["networks"][0]["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|program| {
            program["name"]
                .as_str()
                .is_some_and(|name| name.ends_with("_uplink"))
        })
        .flat_map(|program| {
            program["devices"].as_array().into_iter().flatten().map(|device| {
                (
                    device["device"].as_str().unwrap_or_default().to_owned(),
                    device["attach"].as_str().unwrap_or_default().to_owned(),
                    device["attached"] == true,
                )
            })
        })
        .collect()
}

#[test]
fn the_seed_recipe_runs_on_the_fast_path_without_tcx() {
    let fabric = lacking_tcx();
    let (one, two) = (&fabric.nodes[0], &fabric.nodes[1]);
    let (a, b) = (Pod::new("a"), Pod::new("b"));
    one.node
        .cni("ADD", &a.env("eth0"), &one.config("1.0.0"))
        .ok("ADD on node 1");
    two.node
        .cni("ADD", &b.env("eth0"), &two.config("1.0.0"))
        .ok("ADD on node 2");
    let status = one.node.status();
    assert_eq!(status["kernel"]["tcx"], false, "{status}");
    let programs = uplink_programs(&status);
    assert_eq!(programs.len(), 2, "{status}");
    for (device, how, attached) in &programs {
        assert_eq!(
            (device.as_str(), how.as_str(), *attached),
            ("eth0", "tc-filter", true),
            "{status}"
        );
    }
    let ingress = bpf_filters(one, "eth0", "ingress");
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(bpf_filters(one, "eth0", "egress").len(), 1);

    let (address_a, address_b) = (a.ipv4("eth0").expect("a"), b.ipv4("eth0").expect("b"));
    assert!(a.ping(&address_b), "node 1's pod cannot reach node 2's pod");
    assert!(a.ping(EXTERNAL_IP), "a pod cannot reach the external host");
    let out = fabric.external.ok(&["ping", "-c", "2", "-W", "2", &address_a]);
    assert!(
        out.contains("2 received"),
        "the external host cannot reach a pod: {out}"
    );
    let before = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    traffic::iperf3(&a.netns, &b.netns, &address_b, &["-t", "2"]).expect("iperf3 across nodes");
    let after = (
        one.node.counter(NET, "pod_to_uplink"),
        two.node.counter(NET, "uplink_to_pod"),
    );
    assert!(
        after.0 > before.0 + 1000,
        "node 1's uplink program sent nothing: {before:?} -> {after:?}"
    );
    assert!(
        after.1 > before.1 + 1000,
        "node 2's uplink program took nothing: {before:?} -> {after:?}"
    );

    // More ADDs and a second setup attach nothing twice.
    let c = Pod::new("c");
    one.node
        .cni("ADD", &c.env("eth0"), &one.config("1.0.0"))
        .ok("second ADD");
    one.node
        .flatbridge(&["node", "setup", "--uplink", "eth0", "--gateway", "10.10.1.0/16"]);
    assert_eq!(bpf_filters(one, "eth0", "ingress").len(), 1);
    assert_eq!(bpf_filters(one, "eth0", "egress").len(), 1);

    // Another tool takes the filters away: STATUS says so, the next ADD puts them back.
    one.node
        .netns
        .ok(&["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
    let msg = one
        .node
        .cni("STATUS", &Default::default(), &one.config("1.1.0"))
        .error("STATUS", 51);
    assert!(msg.contains("eth0"), "{msg}");
    let d = Pod::new("d");
    one.node
        .cni("ADD", &d.env("eth0"), &one.config("1.0.0"))
        .ok("ADD after the filters were removed");
    assert_eq!(bpf_filters(one, "eth0", "ingress").len(), 1);
    assert!(
        uplink_programs(&one.node.status())
            .iter()
            .all(|(_, _, attached)| *attached)
    );

    // Teardown takes them off the uplink.
    for pod in [&a, &c, &d] {
        one.node
            .cni("DEL", &pod.env("eth0"), &one.config("1.0.0"))
            .ok("DEL");
    }
    one.node.flatbridge(&["node", "teardown"]);
    assert!(bpf_filters(one, "eth0", "ingress").is_empty());
    assert!(bpf_filters(one, "eth0", "egress").is_empty());
}
