//! The CNI core on a simulated node: the seed config of the reference bridge recipe, with
//! only the type changed, in every cniVersion; real pods that ping; CHECK, DEL; libcni.
use flatbridge_tests::{Node, Pod, VERSIONS, dual_stack_config, require_root, seed_config, with_prev_result};
use serde_json::{Value, json};

#[test]
fn seed_config_in_every_version_two_pods_ping_check_and_delete() {
    require_root();
    for version in VERSIONS {
        let node = Node::with_gateway("core");
        let config = seed_config(version);
        let a = Pod::new("pa");
        let b = Pod::new("pb");
        let result_a = node.cni("ADD", &a.env("eth0"), &config).ok("ADD a");
        let result_b = node.cni("ADD", &b.env("eth0"), &config).ok("ADD b");

        // The result has the reference bridge plugin's shape for this version.
        assert_eq!(result_a["cniVersion"], version);
        let interfaces = result_a["interfaces"].as_array().expect("interfaces");
        assert_eq!(interfaces.len(), 3, "{result_a}");
        assert_eq!(interfaces[0]["name"], "cni0");
        assert_eq!(interfaces[2]["name"], "eth0");
        assert_eq!(interfaces[2]["sandbox"], a.netns.path().display().to_string());
        let ip = &result_a["ips"][0];
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip["gateway"], "10.10.1.0");
        assert_eq!(ip.get("version").is_some(), version < "1.0.0", "{version}: {ip}");
        assert_eq!(result_a["routes"], json!([{"dst": "0.0.0.0/0"}]));

        // What the result says is what the kernel has.
        let address_a = a.ipv4("eth0").expect("pod a has an IPv4 address");
        let address_b = b.ipv4("eth0").expect("pod b has an IPv4 address");
        assert_eq!(ip["address"], format!("{address_a}/16"));
        assert_ne!(address_a, address_b);
        let default = a.netns.ok(&["ip", "route", "show", "default"]);
        assert!(default.contains("via 10.10.1.0 dev eth0"), "{default}");
        assert!(a.ping(&address_b), "{version}: a cannot reach b");
        assert!(b.ping(&address_a), "{version}: b cannot reach a");
        assert!(a.ping("10.10.1.0"), "{version}: a cannot reach the gateway");
        let mut leased = vec![address_a.clone(), address_b.clone()];
        leased.sort();
        assert_eq!(node.leases("data"), leased);
        // Host veths are bridge ports: no IPv6 of their own (no DAD, RS or MLD per pod).
        for host in node.host_veths() {
            let addresses = node.netns.ok(&["ip", "-6", "-o", "addr", "show", "dev", &host]);
            assert!(addresses.trim().is_empty(), "{host}: {addresses}");
            let details = node.netns.ok(&["ip", "-d", "link", "show", &host]);
            assert!(details.contains("addrgenmode none"), "{details}");
        }

        if version >= "0.4.0" {
            let check_config = with_prev_result(&config, &result_a);
            assert!(
                node.cni("CHECK", &a.env("eth0"), &check_config)
                    .ok("CHECK")
                    .is_null()
            );
            // Break the pod's address: CHECK says exactly what is missing.
            a.netns
                .ok(&["ip", "addr", "del", &format!("{address_a}/16"), "dev", "eth0"]);
            let msg = node
                .cni("CHECK", &a.env("eth0"), &check_config)
                .error("CHECK after breaking", 104);
            assert!(msg.contains(&format!("lacks address {address_a}/16")), "{msg}");
        }

        // DEL twice each, the second time as runtimes do: netns already gone, CNI_NETNS empty.
        for (pod, result) in [(&a, &result_a), (&b, &result_b)] {
            let del_config = with_prev_result(&config, result);
            assert!(node.cni("DEL", &pod.env("eth0"), &del_config).ok("DEL").is_null());
            let mut gone = pod.env("eth0");
            gone.netns.clear();
            assert!(node.cni("DEL", &gone, &del_config).ok("second DEL").is_null());
            assert!(
                !pod.netns.ok(&["ip", "-o", "link"]).contains("eth0"),
                "eth0 left in the pod"
            );
        }
        assert!(
            node.leases("data").is_empty(),
            "leases left: {:?}",
            node.leases("data")
        );
        assert!(
            node.host_veths().is_empty(),
            "veths left: {:?}",
            node.host_veths()
        );
    }
}

#[test]
fn del_after_the_netns_is_gone_releases_the_lease() {
    require_root();
    let node = Node::with_gateway("gone");
    let config = seed_config("1.0.0");
    let pod = Pod::new("gone");
    node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    let env = pod.env("eth0");
    drop(pod); // the runtime deletes the netns first; the kernel deletes the veth pair with it
    let mut gone = env.clone();
    gone.netns.clear();
    node.cni("DEL", &gone, &config).ok("DEL without netns");
    node.cni("DEL", &env, &config)
        .ok("DEL with a netns path that no longer exists");
    assert!(node.leases("data").is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
fn add_again_for_the_same_attachment_keeps_its_address() {
    require_root();
    let node = Node::with_gateway("again");
    let config = seed_config("1.0.0");
    let pod = Pod::new("again");
    let first = node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    let second = node.cni("ADD", &pod.env("eth0"), &config).ok("ADD again");
    assert_eq!(first["ips"], second["ips"]);
    assert_eq!(node.leases("data").len(), 1);
    assert_eq!(node.host_veths().len(), 1);
    assert!(pod.ping("10.10.1.0"));
    node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
}

#[test]
fn bridge_options_mtu_mac_hairpin_and_gateway() {
    require_root();
    let node = Node::new("opts");
    let mut config = seed_config("1.1.0");
    let options = json!({"isGateway": true, "mtu": 1400, "hairpinMode": true, "promiscMode": false,
                         "runtimeConfig": {"mac": "02:42:0a:0a:01:07"}});
    for (key, value) in options.as_object().expect("object") {
        config[key] = value.clone();
    }
    let pod = Pod::new("opts");
    let result = node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    assert_eq!(result["interfaces"][2]["mac"], "02:42:0a:0a:01:07");
    assert_eq!(result["interfaces"][2]["mtu"], 1400);
    let link = pod.netns.ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(
        link.contains("mtu 1400") && link.contains("02:42:0a:0a:01:07"),
        "{link}"
    );
    // isGateway: the plugin put the gateway on the bridge and turned forwarding on.
    let bridge = node.netns.ok(&["ip", "-o", "-4", "addr", "show", "dev", "cni0"]);
    assert!(bridge.contains("10.10.1.0/16"), "{bridge}");
    assert_eq!(
        node.netns.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    assert!(pod.ping("10.10.1.0"));
    let host = result["interfaces"][1]["name"].as_str().expect("host veth");
    let port = node.netns.ok(&["bridge", "-d", "link", "show", "dev", host]);
    assert!(port.contains("hairpin on"), "{port}");
    node.cni("DEL", &pod.env("eth0"), &config).ok("DEL");
}

#[test]
fn version_is_answered_whatever_stdin_holds() {
    require_root();
    let node = Node::new("version");
    for stdin in [&br#"{"cniVersion":"0.3.1"}"#[..], b"", b"garbage"] {
        let reply = node.cni_raw("VERSION", &Default::default(), stdin).ok("VERSION");
        assert_eq!(reply["cniVersion"], "1.1.0");
        assert_eq!(reply["supportedVersions"], json!(VERSIONS));
    }
}

/// Through libcni, as containerd, CRI-O and podman call plugins: a conflist, cached
/// results for CHECK and DEL, VERSION negotiation in validate.
#[test]
fn libcni_drives_a_conflist_through_add_check_del() {
    require_root();
    for version in ["0.4.0", "1.0.0"] {
        let node = Node::with_gateway("libcni");
        let mut plugin = seed_config(version);
        let plugin_map = plugin.as_object_mut().expect("object");
        plugin_map.remove("cniVersion");
        plugin_map.remove("name");
        let conflist = json!({"cniVersion": version, "name": "data", "plugins": [plugin]});
        let pod = Pod::new("libcni");

        let capabilities = node.cnitool("validate", &conflist, &pod.netns, &pod.container_id, "eth0");
        assert!(
            capabilities.success,
            "validate: {} {}",
            capabilities.stdout, capabilities.stderr
        );

        let result: Value = node
            .cnitool("add", &conflist, &pod.netns, &pod.container_id, "eth0")
            .ok("cnitool add");
        assert_eq!(result["cniVersion"], version);
        let address = pod.ipv4("eth0").expect("address");
        assert!(
            result["ips"][0]["address"]
                .as_str()
                .expect("address")
                .starts_with(&address)
        );
        assert!(pod.ping("10.10.1.0"));
        node.cnitool("check", &conflist, &pod.netns, &pod.container_id, "eth0")
            .ok("cnitool check");
        node.cnitool("del", &conflist, &pod.netns, &pod.container_id, "eth0")
            .ok("cnitool del");
        node.cnitool("del", &conflist, &pod.netns, &pod.container_id, "eth0")
            .ok("cnitool del again");
        assert!(node.leases("data").is_empty());
        assert!(node.host_veths().is_empty());
    }
}

/// The seed recipe, dual-stack: an IPv6 range set beside the IPv4 one, and its default
/// route (host-local's semantics: one address per range set).
/// The pod's global IPv6 addresses on `ifname`, with the flags `ip` prints after each.
fn ipv6_lines(pod: &Pod, ifname: &str) -> Vec<String> {
    pod.netns
        .ok(&["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "global"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn dual_stack_seed_config_in_every_version_gives_both_families_ready_at_once() {
    require_root();
    for version in VERSIONS {
        let node = Node::with_gateway("dual");
        let config = dual_stack_config(version);
        let a = Pod::new("da");
        let b = Pod::new("db");
        let result_a = node.cni("ADD", &a.env("eth0"), &config).ok("ADD a");
        let result_b = node.cni("ADD", &b.env("eth0"), &config).ok("ADD b");
        for result in [&result_a, &result_b] {
            let ips = result["ips"].as_array().expect("ips");
            assert_eq!(ips.len(), 2, "{version}: one address per range set: {result}");
            assert!(
                ips[0]["address"]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with("10.10.1.")),
                "{result}"
            );
            assert!(
                ips[1]["address"]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with("fd10:10::1:")),
                "{result}"
            );
            assert_eq!(ips[1]["gateway"], "fd10:10::1:0");
            if version < "1.0.0" {
                assert_eq!(ips[0]["version"], "4", "{version}: {result}");
                assert_eq!(ips[1]["version"], "6", "{version}: {result}");
            }
            assert!(
                result["routes"]
                    .as_array()
                    .is_some_and(|routes| routes.contains(&json!({"dst": "::/0"}))),
                "{result}"
            );
        }
        let v6 = |result: &Value| {
            result["ips"][1]["address"]
                .as_str()
                .and_then(|cidr| cidr.split('/').next())
                .expect("an IPv6 address")
                .to_owned()
        };
        let (a6, b6) = (v6(&result_a), v6(&result_b));
        assert_ne!(a6, b6);
        // On the pod as the result says, and usable at once: no duplicate address
        // detection holding it tentative.
        for (pod, address) in [(&a, &a6), (&b, &b6)] {
            let lines = ipv6_lines(pod, "eth0");
            assert_eq!(lines.len(), 1, "{version}: {lines:?}");
            assert!(lines[0].contains(&format!("{address}/64")), "{lines:?}");
            assert!(!lines[0].contains("tentative"), "{version}: {lines:?}");
            let default = pod.netns.ok(&["ip", "-6", "route", "show", "default"]);
            assert!(default.contains("via fd10:10::1:0 dev eth0"), "{default}");
        }
        assert!(a.ping(&b6), "{version}: a cannot reach b over IPv6");
        assert!(b.ping(&a6), "{version}: b cannot reach a over IPv6");
        let b4 = b.ipv4("eth0").expect("b's IPv4");
        assert!(a.ping(&b4), "{version}: a cannot reach b over IPv4");
        // `flatbridge status` shows each pod's IPv6 lease beside its IPv4 one.
        let report = node.status();
        let endpoints = report["networks"][0]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut shown: Vec<String> = endpoints
            .iter()
            .flat_map(|endpoint| endpoint["ipv6_addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip.as_str().map(str::to_owned))
            .collect();
        shown.sort();
        let mut expected = vec![a6.clone(), b6.clone()];
        expected.sort();
        assert_eq!(shown, expected, "{report}");
        assert!(node.status_text().contains(&b6), "{}", node.status_text());
        // Four leases, and none after DEL.
        assert_eq!(node.leases("data").len(), 4, "{:?}", node.leases("data"));
        for (pod, result) in [(&a, &result_a), (&b, &result_b)] {
            let del_config = with_prev_result(&config, result);
            assert!(node.cni("DEL", &pod.env("eth0"), &del_config).ok("DEL").is_null());
        }
        assert!(node.leases("data").is_empty(), "{:?}", node.leases("data"));
        assert!(node.host_veths().is_empty(), "{:?}", node.host_veths());
    }
}
