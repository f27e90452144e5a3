//! The fast path on a kube-proxy node: Services (DNAT, hairpin with masquerade, NodePort
//! from the wire) and FORWARD policy keep working, because only flows netfilter let through
//! unchanged in both directions are offloaded, and every offloaded flow goes back through
//! netfilter once per revalidation period.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use flatbridge_tests::{
    Netns, Node, Pod, require_root, seed_config,
    sockets::{tcp_echo_exchange, tcp_echo_server, udp_echo_server, udp_exchange},
    traffic,
};
use serde_json::{Value, json};

const NET: &str = "data";
const CLUSTER_IP: &str = "10.96.0.10";
const NODE_IP: &str = "10.10.0.11";
const EXTERNAL_IP: &str = "10.10.0.1";

/// A node as kube-proxy leaves it: br_netfilter on (the default in a new namespace), the
/// gateway and the node's own address on the bridge, forwarding on, conntrack liberal about
/// TCP windows, and the kube-proxy chains for one Service with a TCP and a UDP port and a
/// NodePort, all backed by `backend`. An external host sits on the uplink.
struct KubeNode {
    node: Node,
    external: Netns,
    client: Pod,
    backend: Pod,
    other: Pod,
    config: Value,
    client_ip: String,
    backend_ip: String,
    other_ip: String,
}

fn kube_node(tag: &str, config: Value) -> KubeNode {
    require_root();
    let external = Netns::new("ext");
    let node = Node::new(tag);
    for argv in [
        &["ip", "link", "add", "cni0", "type", "bridge"][..],
        &["ip", "addr", "add", "10.10.1.0/16", "dev", "cni0"],
        &["ip", "addr", "add", "10.10.0.11/16", "dev", "cni0"],
        &["ip", "link", "set", "cni0", "up"],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"],
    ] {
        node.netns.ok(argv);
    }
    assert_eq!(
        node.netns
            .ok(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"])
            .trim(),
        "1"
    );
    node.add_veth_to_bridge("uplink0", &external, "eth0");
    external.ok(&["ip", "addr", "add", "10.10.0.1/16", "dev", "eth0"]);
    let client = Pod::new("client");
    let backend = Pod::new("backend");
    let other = Pod::new("other");
    for pod in [&client, &backend, &other] {
        node.cni("ADD", &pod.env("eth0"), &config).ok("ADD");
    }
    let [client_ip, backend_ip, other_ip] =
        [&client, &backend, &other].map(|pod| pod.ipv4("eth0").expect("address"));
    let kube = KubeNode {
        node,
        external,
        client,
        backend,
        other,
        config,
        client_ip,
        backend_ip,
        other_ip,
    };
    kube.kube_proxy_rules();
    kube
}

impl KubeNode {
    fn iptables(&self, rule: &str) {
        let mut argv = vec!["iptables", "-w"];
        argv.extend(rule.split_whitespace());
        self.node.netns.ok(&argv);
    }

    /// What kube-proxy (iptables mode) writes for the Service, reduced to one backend.
    fn kube_proxy_rules(&self) {
        let backend = &self.backend_ip;
        for rule in [
            "-t nat -N KUBE-SERVICES".to_owned(),
            "-t nat -N KUBE-POSTROUTING".into(),
            "-t nat -N KUBE-MARK-MASQ".into(),
            "-t nat -N KUBE-SEP-WEB".into(),
            "-t nat -N KUBE-SEP-DNS".into(),
            "-t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".into(),
            "-t nat -A PREROUTING -j KUBE-SERVICES".into(),
            "-t nat -A OUTPUT -j KUBE-SERVICES".into(),
            "-t nat -A POSTROUTING -j KUBE-POSTROUTING".into(),
            "-t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
            "-t nat -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0".into(),
            "-t nat -A KUBE-POSTROUTING -j MASQUERADE".into(),
            format!("-t nat -A KUBE-SEP-WEB -s {backend}/32 -j KUBE-MARK-MASQ"),
            format!("-t nat -A KUBE-SEP-WEB -p tcp -j DNAT --to-destination {backend}:8080"),
            format!("-t nat -A KUBE-SEP-DNS -s {backend}/32 -j KUBE-MARK-MASQ"),
            format!("-t nat -A KUBE-SEP-DNS -p udp -j DNAT --to-destination {backend}:5353"),
            format!("-t nat -A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp --dport 80 -j KUBE-SEP-WEB"),
            format!("-t nat -A KUBE-SERVICES -d {CLUSTER_IP}/32 -p udp --dport 53 -j KUBE-SEP-DNS"),
            // A NodePort with externalTrafficPolicy: Local — no masquerade, so the backend
            // answers the external host directly, across the bridge, and conntrack must turn
            // its source back into the node's address on the way.
            format!("-t nat -A KUBE-SERVICES -d {NODE_IP}/32 -p tcp --dport 30080 -j KUBE-SEP-WEB"),
            "-N KUBE-FORWARD".into(),
            "-A FORWARD -j KUBE-FORWARD".into(),
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".into(),
            "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT".into(),
            "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
        ] {
            self.iptables(&rule);
        }
    }

    fn web(&self) -> SocketAddr {
        format!("{CLUSTER_IP}:80").parse().expect("address")
    }

    fn dns(&self) -> SocketAddr {
        format!("{CLUSTER_IP}:53").parse().expect("address")
    }

    fn backend_servers(&self) -> [flatbridge_tests::sockets::Server; 2] {
        [
            tcp_echo_server(&self.backend.netns, "0.0.0.0:8080".parse().expect("address")),
            udp_echo_server(
                &self.backend.netns,
                "0.0.0.0:5353".parse().expect("address"),
                "backend",
            ),
        ]
    }

    fn status(&self) -> Value {
        self.node.status()["networks"][0].clone()
    }

    /// Packets and bytes a rule of the filter table's chain matched.
    fn rule_bytes(&self, chain: &str, needle: &str) -> u64 {
        let listing = self
            .node
            .netns
            .ok(&["iptables", "-w", "-L", chain, "-v", "-x", "-n"]);
        listing
            .lines()
            .find(|line| line.contains(needle))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|bytes| bytes.parse().ok())
            .unwrap_or_else(|| panic!("no rule matching {needle:?} in {chain}:\n{listing}"))
    }
}

/// Flow directions the status reports as offloaded right now.
fn offloaded(status: &Value) -> Vec<(String, String)> {
    status["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|flow| flow["offloaded"] == true)
        .map(|flow| {
            (
                flow["src"].as_str().unwrap_or_default().into(),
                flow["dst"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

#[test]
fn a_cluster_ip_service_works_over_tcp_and_udp_and_is_never_offloaded() {
    let kube = kube_node("svc", seed_config("1.0.0"));
    let _servers = kube.backend_servers();
    // Long enough for several revalidation periods.
    let started = Instant::now();
    let echoed =
        tcp_echo_exchange(&kube.client.netns, kube.web(), 48 << 20).expect("TCP through the ClusterIP");
    assert_eq!(echoed, 48 << 20);
    let replies = udp_exchange(&kube.client.netns, kube.dns(), 20, Duration::from_millis(100));
    assert!(replies.len() >= 18, "UDP replies: {replies:?}");
    for (source, payload) in &replies {
        assert_eq!(
            source.to_string(),
            format!("{CLUSTER_IP}:53"),
            "a reply came from the wrong address"
        );
        assert!(payload.starts_with("backend:"), "{payload}");
    }
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the exchange was too short to see revalidation"
    );
    let status = kube.status();
    for (src, dst) in offloaded(&status) {
        assert!(
            !src.starts_with(&kube.backend_ip) && !dst.starts_with(&kube.backend_ip),
            "a NATed flow was offloaded: {src} -> {dst}"
        );
    }
}

#[test]
fn always_mode_breaks_services_which_is_why_it_is_opt_in() {
    let mut config = seed_config("1.0.0");
    config["fastPathMode"] = json!("always");
    let kube = kube_node("svcnaive", config);
    let _servers = kube.backend_servers();
    // The backend's replies go straight to the client's MAC without the reverse NAT.
    let replies = udp_exchange(&kube.client.netns, kube.dns(), 10, Duration::from_millis(50));
    let from_cluster_ip = replies
        .iter()
        .filter(|(source, _)| source.to_string() == format!("{CLUSTER_IP}:53"))
        .count();
    assert_eq!(
        from_cluster_ip, 0,
        "always mode unexpectedly kept the Service working: {replies:?}"
    );
    assert!(tcp_echo_exchange(&kube.client.netns, kube.web(), 1 << 20).is_err());
}

/// br_netfilter bridges a DNATed frame whose new destination is on the bridge, so a pod
/// reaching itself through a Service needs its port in hairpin mode — as with the reference
/// plugin, whose `promiscMode` and `hairpinMode` exclude each other.
#[test]
fn the_backend_reaches_itself_through_the_cluster_ip() {
    let mut config = seed_config("1.0.0");
    config["promiscMode"] = json!(false);
    config["hairpinMode"] = json!(true);
    let kube = kube_node("hairpin", config);
    let _servers = kube.backend_servers();
    tcp_echo_exchange(&kube.backend.netns, kube.web(), 4 << 20).expect("hairpin TCP");
    let replies = udp_exchange(&kube.backend.netns, kube.dns(), 5, Duration::from_millis(50));
    assert_eq!(replies.len(), 5, "hairpin UDP: {replies:?}");
}

#[test]
fn a_node_port_from_the_wire_reaches_the_backend() {
    let kube = kube_node("nodeport", seed_config("1.0.0"));
    let _servers = kube.backend_servers();
    let node_port: SocketAddr = format!("{NODE_IP}:30080").parse().expect("address");
    let echoed =
        tcp_echo_exchange(&kube.external, node_port, 32 << 20).expect("NodePort from the external host");
    assert_eq!(echoed, 32 << 20);
}

#[test]
fn long_tcp_transfers_are_offloaded_and_end_cleanly() {
    let kube = kube_node("offload", seed_config("1.0.0"));
    let marker = format!("{} ", kube.client_ip);
    kube.iptables(&format!(
        "-I KUBE-FORWARD 1 -s {} -d {} -j RETURN",
        kube.client_ip, kube.backend_ip
    ));
    let before_fast = kube.node.counter(NET, "pod_to_pod");
    // Look at the status while the transfer runs.
    let (during, report) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            kube.status()
        });
        let report = traffic::iperf3(
            &kube.client.netns,
            &kube.backend.netns,
            &kube.backend_ip,
            &["-t", "3"],
        )
        .expect("iperf3 through the fast path");
        (watcher.join().expect("status thread"), report)
    });
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes sent");
    let through_netfilter = kube.rule_bytes("KUBE-FORWARD", &marker);
    let share = through_netfilter as f64 / sent as f64;
    eprintln!(
        "netfilter saw {through_netfilter} of {sent} bytes ({:.4} %)",
        share * 100.0
    );
    assert!(
        share < 0.01,
        "netfilter saw {through_netfilter} of {sent} bytes ({:.3} %)",
        share * 100.0
    );
    assert!(
        kube.node.counter(NET, "pod_to_pod") > before_fast + 1000,
        "the fast path carried nothing"
    );
    let flows = offloaded(&during);
    assert!(
        flows
            .iter()
            .any(|(src, dst)| src.starts_with(&kube.client_ip) && dst.starts_with(&kube.backend_ip)),
        "status showed no offloaded flow during the transfer: {during}"
    );
    // The INVALID rule dropped nothing, and the connection ended with a clean FIN.
    assert_eq!(kube.rule_bytes("KUBE-FORWARD", "ctstate INVALID"), 0);
    std::thread::sleep(Duration::from_millis(300));
    let sockets = kube.client.netns.ok(&[
        "ss",
        "-Htan",
        "state",
        "fin-wait-1",
        "state",
        "fin-wait-2",
        "state",
        "last-ack",
    ]);
    assert!(sockets.trim().is_empty(), "connections stuck closing: {sockets}");
}

#[test]
fn tcp_stays_on_the_slow_path_unless_conntrack_is_liberal() {
    let kube = kube_node("strict", seed_config("1.0.0"));
    kube.node
        .netns
        .ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0"]);
    // The node settings are refreshed by the next ADD.
    let late = Pod::new("late");
    kube.node.cni("ADD", &late.env("eth0"), &kube.config).ok("ADD");
    assert_eq!(kube.status()["node"]["tcp_offload"], false);
    let before = kube.node.counter(NET, "pod_to_pod");
    traffic::iperf3(
        &kube.client.netns,
        &kube.backend.netns,
        &kube.backend_ip,
        &["-t", "1"],
    )
    .expect("iperf3");
    assert!(
        kube.node.counter(NET, "pod_to_pod") - before < 10,
        "TCP was offloaded with be_liberal = 0"
    );
    // UDP is still offloaded.
    let _udp = udp_echo_server(&kube.backend.netns, "0.0.0.0:7000".parse().expect("address"), "b");
    let target: SocketAddr = format!("{}:7000", kube.backend_ip).parse().expect("address");
    let replies = udp_exchange(&kube.client.netns, target, 60, Duration::from_millis(20));
    assert!(replies.len() >= 55, "UDP replies: {}", replies.len());
    assert!(
        kube.node.counter(NET, "pod_to_pod") - before > 20,
        "UDP was not offloaded"
    );
}

#[test]
fn policy_blocks_new_flows_and_stops_offloaded_ones_within_seconds() {
    let kube = kube_node("policy", seed_config("1.0.0"));
    let _servers = [
        tcp_echo_server(&kube.other.netns, "0.0.0.0:8080".parse().expect("address")),
        udp_echo_server(
            &kube.other.netns,
            "0.0.0.0:7000".parse().expect("address"),
            "other",
        ),
        udp_echo_server(
            &kube.backend.netns,
            "0.0.0.0:7000".parse().expect("address"),
            "backend",
        ),
    ];
    // Written as a policy engine would: its own chain, jumped to from FORWARD first.
    kube.iptables("-N POLICY");
    kube.iptables("-I FORWARD 1 -j POLICY");
    kube.iptables(&format!(
        "-A POLICY -s {} -d {} -j DROP",
        kube.client_ip, kube.other_ip
    ));
    let other_tcp: SocketAddr = format!("{}:8080", kube.other_ip).parse().expect("address");
    let other_udp: SocketAddr = format!("{}:7000", kube.other_ip).parse().expect("address");
    let backend_udp: SocketAddr = format!("{}:7000", kube.backend_ip).parse().expect("address");
    assert!(
        tcp_echo_exchange(&kube.client.netns, other_tcp, 1 << 16).is_err(),
        "TCP got through the DROP"
    );
    assert!(
        udp_exchange(&kube.client.netns, other_udp, 5, Duration::from_millis(50)).is_empty(),
        "UDP got through"
    );
    assert!(!kube.client.ping(&kube.other_ip), "ICMP got through the DROP");
    assert_eq!(
        udp_exchange(&kube.client.netns, backend_udp, 5, Duration::from_millis(50)).len(),
        5
    );
    kube.iptables("-F POLICY");
    assert_eq!(
        tcp_echo_exchange(&kube.client.netns, other_tcp, 1 << 16),
        Ok(1 << 16)
    );
    assert!(kube.client.ping(&kube.other_ip));

    // A DROP added while a client -> backend UDP stream is offloaded stops it within the
    // revalidation period. The stream runs 7 s; the DROP comes after 2 s.
    let (offloaded_before, replies_at) = {
        let target = backend_udp;
        let handle = kube.client.netns.spawn(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
            let started = Instant::now();
            let mut replies_at = Vec::new();
            let mut buffer = [0u8; 512];
            while started.elapsed() < Duration::from_secs(7) {
                let _ = socket.send_to(b"ping", target);
                if socket.recv_from(&mut buffer).is_ok() {
                    replies_at.push(started.elapsed());
                }
            }
            replies_at
        });
        std::thread::sleep(Duration::from_secs(2));
        let offloaded_before = offloaded(&kube.status());
        kube.iptables(&format!(
            "-A POLICY -s {} -d {} -j DROP",
            kube.client_ip, kube.backend_ip
        ));
        (offloaded_before, handle.join().expect("stream"))
    };
    // The stream's clock started at most a few ms before the 2 s sleep did.
    let drop_offset = Duration::from_secs(2);
    assert!(
        offloaded_before
            .iter()
            .any(|(src, _)| src.starts_with(&kube.client_ip)),
        "the stream was not offloaded before the DROP: {offloaded_before:?}"
    );
    let last = *replies_at.last().expect("replies before the DROP");
    eprintln!(
        "the offloaded stream stopped {:?} after the DROP",
        last.saturating_sub(drop_offset)
    );
    assert!(
        last < drop_offset + Duration::from_secs(3),
        "replies kept coming {:?} after the DROP was added",
        last.saturating_sub(drop_offset)
    );
}

#[test]
fn frames_flooded_by_the_bridge_never_go_to_the_wrong_pod() {
    let kube = kube_node("flood", seed_config("1.0.0"));
    // The bridge forgets every MAC at once, so it floods every frame to every port.
    kube.node
        .netns
        .ok(&["ip", "link", "set", "cni0", "type", "bridge", "ageing_time", "0"]);
    let _servers = [
        udp_echo_server(
            &kube.backend.netns,
            "0.0.0.0:7000".parse().expect("address"),
            "backend",
        ),
        udp_echo_server(
            &kube.other.netns,
            "0.0.0.0:7000".parse().expect("address"),
            "other",
        ),
    ];
    let target: SocketAddr = format!("{}:7000", kube.backend_ip).parse().expect("address");
    let replies = udp_exchange(&kube.client.netns, target, 150, Duration::from_millis(20));
    assert!(replies.len() >= 140, "replies: {}", replies.len());
    let wrong: Vec<_> = replies
        .iter()
        .filter(|(_, payload)| !payload.starts_with("backend:"))
        .collect();
    assert!(
        wrong.is_empty(),
        "frames for the backend reached another pod: {wrong:?}"
    );
    assert!(
        kube.node.counter(NET, "pod_to_pod") > 100,
        "the flow was never offloaded"
    );
}

#[test]
fn flows_between_the_wire_and_pods_are_offloaded_both_ways() {
    let kube = kube_node("wire", seed_config("1.0.0"));
    let marker = format!("{EXTERNAL_IP} ");
    kube.iptables(&format!("-I KUBE-FORWARD 1 -s {EXTERNAL_IP} -j RETURN"));
    let report = traffic::iperf3(&kube.external, &kube.client.netns, &kube.client_ip, &["-t", "2"])
        .expect("iperf3 from the external host");
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes");
    let through_netfilter = kube.rule_bytes("KUBE-FORWARD", &marker);
    assert!(
        (through_netfilter as f64) < 0.01 * sent as f64,
        "netfilter saw {through_netfilter} of {sent} bytes"
    );
    assert!(kube.node.counter(NET, "uplink_to_pod") > 1000);
    assert!(
        kube.node.counter(NET, "pod_to_uplink") > 100,
        "the pod's ACKs did not take the fast path"
    );
}

#[test]
fn flushing_forgets_every_offloaded_flow() {
    let kube = kube_node("flush", seed_config("1.0.0"));
    let _server = udp_echo_server(&kube.backend.netns, "0.0.0.0:7000".parse().expect("address"), "b");
    let target: SocketAddr = format!("{}:7000", kube.backend_ip).parse().expect("address");
    udp_exchange(&kube.client.netns, target, 20, Duration::from_millis(20));
    assert!(!offloaded(&kube.status()).is_empty());
    let output = kube.node.flatbridge(&["flows", "flush"]);
    assert!(output.contains("forgot"), "{output}");
    assert!(offloaded(&kube.status()).is_empty(), "flows survived the flush");
    // They come back once netfilter has seen them again.
    udp_exchange(&kube.client.netns, target, 20, Duration::from_millis(20));
    assert!(!offloaded(&kube.status()).is_empty());
}
