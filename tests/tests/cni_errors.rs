//! Bad input gets a clear error and loses nothing: every failure is one CNI error JSON on
//! stdout with the spec's code and a useful msg, a non-zero exit, and no lease, veth or
//! interface left behind.
use flatbridge_tests::{CniEnv, Node, Pod, require_root, seed_config, snapshot::state};
use serde_json::json;

/// Nothing of any attachment on the node or in the pod.
fn assert_clean(node: &Node, pod: &Pod, what: &str) {
    assert!(
        node.leases("data").is_empty(),
        "{what}: leases left: {:?}",
        node.leases("data")
    );
    assert!(
        node.host_veths().is_empty(),
        "{what}: veths left: {:?}",
        node.host_veths()
    );
    assert!(
        !pod.netns.ok(&["ip", "-o", "link"]).contains("eth0"),
        "{what}: eth0 left in the pod"
    );
}

#[test]
fn malformed_input_is_a_cni_error_with_the_spec_code() {
    require_root();
    let node = Node::new("badinput");
    let pod = Pod::new("badinput");
    let seed = seed_config("1.0.0");
    let with = |key: &str, value: serde_json::Value| {
        let mut config = seed.clone();
        config[key] = value;
        config.to_string()
    };
    let env = pod.env("eth0");
    let no_ifname = CniEnv {
        ifname: String::new(),
        ..env.clone()
    };
    let cases: Vec<(&str, &str, CniEnv, String, u64)> = vec![
        ("not JSON", "ADD", env.clone(), "{".into(), 6),
        ("empty stdin", "ADD", env.clone(), String::new(), 6),
        (
            "no name",
            "ADD",
            env.clone(),
            r#"{"cniVersion":"1.0.0","type":"flatbridge"}"#.into(),
            6,
        ),
        (
            "mtu of the wrong type",
            "ADD",
            env.clone(),
            with("mtu", json!("1500")),
            6,
        ),
        (
            "unknown cniVersion",
            "ADD",
            env.clone(),
            with("cniVersion", json!("0.2.0")),
            1,
        ),
        (
            "unsafe network name",
            "ADD",
            env.clone(),
            with("name", json!("../../etc")),
            7,
        ),
        (
            "bridge name too long",
            "ADD",
            env.clone(),
            with("bridge", json!("a-very-long-bridge")),
            7,
        ),
        ("mtu too small", "ADD", env.clone(), with("mtu", json!(10)), 7),
        ("ipMasq", "ADD", env.clone(), with("ipMasq", json!(true)), 2),
        ("vlan", "ADD", env.clone(), with("vlan", json!(7)), 2),
        (
            "bad MAC",
            "ADD",
            env.clone(),
            with("runtimeConfig", json!({"mac": "nope"})),
            7,
        ),
        (
            "no ranges",
            "ADD",
            env.clone(),
            with("ipam", json!({"type": "host-local"})),
            7,
        ),
        (
            "overlapping ranges",
            "ADD",
            env.clone(),
            with(
                "ipam",
                json!({"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/16"}], [{"subnet": "10.10.1.0/24"}]]}),
            ),
            7,
        ),
        (
            "unknown IPAM plugin",
            "ADD",
            env.clone(),
            with("ipam", json!({"type": "no-such-ipam"})),
            7,
        ),
        ("missing CNI_IFNAME", "ADD", no_ifname, seed.to_string(), 4),
        (
            "bad CNI_IFNAME",
            "ADD",
            CniEnv {
                ifname: "eth/0".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "bad CNI_CONTAINERID",
            "ADD",
            CniEnv {
                container_id: "-x".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "bad CNI_ARGS",
            "ADD",
            CniEnv {
                args: "IP".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "netns that does not exist",
            "ADD",
            CniEnv {
                netns: "/run/netns/fbt-no-such-netns".into(),
                ..env.clone()
            },
            seed.to_string(),
            3,
        ),
        (
            "requested IP outside the ranges",
            "ADD",
            CniEnv {
                args: "IgnoreUnknown=1;IP=192.168.7.7".into(),
                ..env.clone()
            },
            seed.to_string(),
            7,
        ),
        ("unknown verb", "FROB", env.clone(), seed.to_string(), 4),
        (
            "CHECK in 0.3.1",
            "CHECK",
            env.clone(),
            with("cniVersion", json!("0.3.1")),
            1,
        ),
        (
            "CHECK without prevResult",
            "CHECK",
            env.clone(),
            seed.to_string(),
            7,
        ),
        ("STATUS in 1.0.0", "STATUS", env.clone(), seed.to_string(), 1),
        ("GC in 1.0.0", "GC", env.clone(), seed.to_string(), 1),
        (
            "GC without valid-attachments",
            "GC",
            env.clone(),
            with("cniVersion", json!("1.1.0")),
            7,
        ),
        ("config is a JSON array", "ADD", env.clone(), "[1,2]".into(), 6),
        (
            "name of the wrong type",
            "ADD",
            env.clone(),
            with("name", json!(7)),
            6,
        ),
        (
            "unsupported vlanTrunk",
            "ADD",
            env.clone(),
            with("vlanTrunk", json!([{"id": 5}])),
            2,
        ),
        (
            "unsupported portIsolation",
            "ADD",
            env.clone(),
            with("portIsolation", json!(true)),
            2,
        ),
        (
            "relative bpfRoot",
            "ADD",
            env.clone(),
            with("bpfRoot", json!("sys/fs/bpf")),
            7,
        ),
        (
            "bpfRoot with ..",
            "ADD",
            env.clone(),
            with("bpfRoot", json!("/sys/fs/bpf/../../etc")),
            7,
        ),
        (
            "logFile outside /var/log and /run",
            "ADD",
            env.clone(),
            with("logFile", json!("/etc/passwd")),
            7,
        ),
        (
            "revalidateMs too long",
            "ADD",
            env.clone(),
            with("revalidateMs", json!(120_000)),
            7,
        ),
        (
            "arpProbeMs too long",
            "ADD",
            env.clone(),
            with("arpProbeMs", json!(60_000)),
            7,
        ),
        (
            "uplink not an interface name",
            "ADD",
            env.clone(),
            with("uplink", json!("../eth0")),
            7,
        ),
        (
            "fastPathMode unknown",
            "ADD",
            env.clone(),
            with("fastPathMode", json!("turbo")),
            7,
        ),
        ("mtu too large", "ADD", env.clone(), with("mtu", json!(70_000)), 7),
        (
            "multicast MAC capability",
            "ADD",
            env.clone(),
            with("runtimeConfig", json!({"mac": "01:00:5e:00:00:01"})),
            7,
        ),
        (
            "all-zero MAC in args",
            "ADD",
            env.clone(),
            with("args", json!({"cni": {"mac": "00:00:00:00:00:00"}})),
            7,
        ),
        (
            "MAC in CNI_ARGS not a MAC",
            "ADD",
            CniEnv {
                args: "MAC=02:00:00:00:00".into(),
                ..env.clone()
            },
            seed.to_string(),
            7,
        ),
        (
            "IP in CNI_ARGS not an address",
            "ADD",
            CniEnv {
                args: "IP=10.10.1.300".into(),
                ..env.clone()
            },
            seed.to_string(),
            7,
        ),
        (
            "CNI_ARGS with an empty key",
            "ADD",
            CniEnv {
                args: "=value".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "CNI_IFNAME too long",
            "ADD",
            CniEnv {
                ifname: "a-very-long-ifname".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "CNI_IFNAME is ..",
            "ADD",
            CniEnv {
                ifname: "..".into(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "missing CNI_CONTAINERID",
            "ADD",
            CniEnv {
                container_id: String::new(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "missing CNI_NETNS",
            "ADD",
            CniEnv {
                netns: String::new(),
                ..env.clone()
            },
            seed.to_string(),
            4,
        ),
        (
            "requested IP is the gateway",
            "ADD",
            CniEnv {
                args: "IP=10.10.1.0".into(),
                ..env.clone()
            },
            seed.to_string(),
            7,
        ),
        (
            "ips capability not an address",
            "ADD",
            env.clone(),
            with("runtimeConfig", json!({"ips": ["ten.ten.one.five"]})),
            7,
        ),
        (
            "range with start after end",
            "ADD",
            env.clone(),
            with(
                "ipam",
                json!({"type": "host-local", "ranges": [[{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.9", "rangeEnd": "10.10.1.1"}]]}),
            ),
            7,
        ),
        (
            "relative ipam.dataDir",
            "ADD",
            env.clone(),
            with(
                "ipam",
                json!({"type": "host-local", "dataDir": "lib/cni", "ranges": [[{"subnet": "10.10.0.0/16"}]]}),
            ),
            7,
        ),
        (
            "prevResult not a result",
            "CHECK",
            env.clone(),
            with("prevResult", json!({"ips": "10.10.1.5/16"})),
            6,
        ),
        (
            "prevResult address not a CIDR",
            "CHECK",
            env.clone(),
            with(
                "prevResult",
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.10.1.5"}], "interfaces": []}),
            ),
            6,
        ),
    ];
    assert!(cases.len() >= 40, "only {} malformed inputs", cases.len());
    // Every case fails before anything exists: the node is as fresh after each as before.
    let before = state(&node);
    for (what, verb, env, stdin, code) in cases {
        let reply = node.cni_raw(verb, &env, stdin.as_bytes());
        let msg = reply.error(what, code);
        assert!(msg.len() > 10, "{what}: msg too short to help: {msg}");
        assert_clean(&node, &pod, what);
        assert_eq!(state(&node), before, "{what}: the node changed");
    }
}

#[test]
fn an_exhausted_range_fails_the_add_and_leaks_nothing() {
    require_root();
    let node = Node::new("exhaust");
    let mut config = seed_config("1.0.0");
    config["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.10.1.1");
    let first = Pod::new("exhaust1");
    let second = Pod::new("exhaust2");
    node.cni("ADD", &first.env("eth0"), &config).ok("first ADD");
    let msg = node
        .cni("ADD", &second.env("eth0"), &config)
        .error("ADD into a full range", 101);
    assert!(msg.contains("10.10.1.1-10.10.1.1"), "{msg}");
    assert_eq!(node.leases("data"), ["10.10.1.1"]);
    assert_eq!(node.host_veths().len(), 1);
    assert!(!second.netns.ok(&["ip", "-o", "link"]).contains("eth0"));
    node.cni("DEL", &first.env("eth0"), &config).ok("DEL");
    assert_clean(&node, &first, "after DEL");
}

#[test]
fn a_failure_after_the_veth_exists_rolls_everything_back() {
    require_root();
    let node = Node::new("rollback");
    let mut config = seed_config("1.0.0");
    // The gateway of this route is on no connected network, so the kernel refuses the route:
    // the failure comes after the lease and the veth pair were made.
    config["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "192.168.50.0/24", "gw": "172.31.0.1"}]);
    let pod = Pod::new("rollback");
    let msg = node
        .cni("ADD", &pod.env("eth0"), &config)
        .error("ADD with an unreachable route", 100);
    assert!(msg.contains("192.168.50.0/24"), "{msg}");
    assert_clean(&node, &pod, "after a failed ADD");
    assert!(
        node.log().contains("rolling back"),
        "the log does not mention the rollback:\n{}",
        node.log()
    );
}

#[test]
fn an_interface_name_taken_in_the_pod_is_refused_and_not_deleted() {
    require_root();
    let node = Node::new("taken");
    let pod = Pod::new("taken");
    // This kernel has no dummy driver: a veth pair stands in for the pod's own interface.
    pod.netns.ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    let msg = node
        .cni("ADD", &pod.env("eth0"), &seed_config("1.0.0"))
        .error("ADD over an existing eth0", 4);
    assert!(msg.contains("already exists"), "{msg}");
    assert!(node.leases("data").is_empty());
    assert!(node.host_veths().is_empty());
    // The pod's own interface is still there.
    assert!(
        pod.netns.run(&["ip", "link", "show", "eth0"]).status.success(),
        "the pod's eth0 was deleted"
    );
}

#[test]
fn a_non_bridge_device_named_like_the_bridge_is_an_error() {
    require_root();
    let node = Node::new("notbridge");
    node.netns.ok(&[
        "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0peer",
    ]);
    let pod = Pod::new("notbridge");
    let msg = node
        .cni("ADD", &pod.env("eth0"), &seed_config("1.0.0"))
        .error("ADD", 7);
    assert!(msg.contains("not a bridge"), "{msg}");
    assert_clean(&node, &pod, "after refusing");
}
