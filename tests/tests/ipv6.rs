//! IPv6 on the fast path, on a node as kube-proxy runs it (br_netfilter, ip6tables): TCP
//! between pods and with the wire offloaded once ip6tables accepted it (its counters see
//! under 1 % of the bytes), an IPv6 ClusterIP Service (DNAT) that works and is never
//! offloaded, and a policy DROP that stops an offloaded IPv6 flow within the revalidation
//! period.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use flatbridge_tests::{
    Netns, Node, Pod, dual_stack_config, netfilter, require_root,
    sockets::{tcp_echo_exchange, tcp_echo_server, udp_echo_server},
    traffic,
};
use serde_json::{Value, json};

const NET: &str = "data";
const EXTERNAL_IPV6: &str = "fd10:10::ff";
const CLUSTER_IPV6: &str = "fd10:96::10";

struct Node6 {
    node: Node,
    external: Netns,
    client: Pod,
    backend: Pod,
    client_ip: String,
    backend_ip: String,
}

/// A node whose bridge holds both gateways, an external host on its uplink, and two
/// dual-stack pods; ip6tables' FORWARD ends in kube-proxy's `ctstate INVALID -j DROP`.
fn node6(tag: &str, config: &Value) -> Node6 {
    require_root();
    let external = Netns::new(&format!("{tag}x"));
    let node = Node::new(tag);
    for argv in [
        &["ip", "link", "add", "cni0", "type", "bridge"][..],
        &["ip", "addr", "add", "10.10.1.0/16", "dev", "cni0"],
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd10:10::1:0/64",
            "dev",
            "cni0",
            "nodad",
        ],
        &["ip", "link", "set", "cni0", "up"],
        &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"],
    ] {
        node.netns.ok(argv);
    }
    assert_eq!(
        node.netns
            .ok(&["cat", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"])
            .trim(),
        "1"
    );
    node.add_veth_to_bridge("uplink0", &external, "eth0");
    external.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{EXTERNAL_IPV6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let client = Pod::new(&format!("{tag}c"));
    let backend = Pod::new(&format!("{tag}b"));
    for pod in [&client, &backend] {
        node.cni("ADD", &pod.env("eth0"), config).ok("ADD");
    }
    let [client_ip, backend_ip] = [&client, &backend].map(|pod| pod.ipv6("eth0").expect("IPv6 address"));
    let node6 = Node6 {
        node,
        external,
        client,
        backend,
        client_ip,
        backend_ip,
    };
    node6.ip6tables("-N KUBE-FORWARD");
    node6.ip6tables("-A FORWARD -j KUBE-FORWARD");
    node6.ip6tables("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP");
    node6
}

impl Node6 {
    fn ip6tables(&self, rule: &str) {
        let mut argv = vec!["ip6tables", "-w"];
        argv.extend(rule.split_whitespace());
        self.node.netns.ok(&argv);
    }

    /// Counts what ip6tables sees between `a` and `b` (see [`netfilter::count_flow`]).
    fn count_flow(&self, tag: &str, a: &str, b: &str) {
        netfilter::count_flow(&self.node.netns, "ip6tables", tag, a, b);
    }

    /// Bytes a rule of the filter table's `chain` matched.
    fn rule_bytes(&self, chain: &str, needle: &str) -> u64 {
        netfilter::rule_bytes(&self.node.netns, "ip6tables", chain, needle)
    }

    /// Flow directions `flatbridge status` reports as offloaded now.
    fn offloaded(&self) -> Vec<(String, String)> {
        netfilter::offloaded(&self.node.status()["networks"][0])
    }
}

/// `address` in brackets, as a socket address needs it.
fn socket(address: &str, port: u16) -> SocketAddr {
    format!("[{address}]:{port}").parse().expect("socket address")
}

#[test]
fn ipv6_tcp_is_offloaded_once_ip6tables_accepted_it_between_pods_and_with_the_wire() {
    let node = node6("v6tcp", &dual_stack_config("1.0.0"));
    node.count_flow("pods", &node.client_ip, &node.backend_ip);
    let before = node.node.counter(NET, "pod_to_pod");
    let (report, during) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            node.offloaded()
        });
        let report = traffic::iperf3(
            &node.client.netns,
            &node.backend.netns,
            &node.backend_ip,
            &["-t", "3", "--snd-timeout", "15000"],
        )
        .expect("iperf3 between the pods over IPv6");
        (report, watcher.join().expect("status thread"))
    });
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes sent");
    let [out, back] = ["pods-out", "pods-back"].map(|tag| node.rule_bytes("FORWARD", tag));
    assert!(
        out > 0 && back > 0,
        "ip6tables saw {out} bytes client -> backend and {back} back: the flow never went through it"
    );
    let share = (out + back) as f64 / sent as f64;
    eprintln!(
        "pod to pod: ip6tables saw {} of {sent} bytes ({:.4} %)",
        out + back,
        share * 100.0
    );
    assert!(share < 0.01, "ip6tables saw {:.3} % of the bytes", share * 100.0);
    assert!(
        node.node.counter(NET, "pod_to_pod") > before + 1000,
        "the fast path carried nothing"
    );
    let client = format!("[{}]", node.client_ip);
    assert!(
        during.iter().any(|(src, _)| src.starts_with(&client)),
        "status showed no offloaded IPv6 flow during the transfer: {during:?}"
    );
    assert_eq!(node.rule_bytes("KUBE-FORWARD", "ctstate INVALID"), 0);

    // From the wire to a pod, and its ACKs back.
    node.count_flow("wire", EXTERNAL_IPV6, &node.client_ip);
    let before = (
        node.node.counter(NET, "uplink_to_pod"),
        node.node.counter(NET, "pod_to_uplink"),
    );
    let report = traffic::iperf3(
        &node.external,
        &node.client.netns,
        &node.client_ip,
        &["-t", "2", "--snd-timeout", "15000"],
    )
    .expect("iperf3 from the external host over IPv6");
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes sent");
    let [out, back] = ["wire-out", "wire-back"].map(|tag| node.rule_bytes("FORWARD", tag));
    assert!(out > 0 && back > 0, "ip6tables saw {out} and {back} bytes");
    let share = (out + back) as f64 / sent as f64;
    eprintln!(
        "wire to pod: ip6tables saw {} of {sent} bytes ({:.4} %)",
        out + back,
        share * 100.0
    );
    assert!(share < 0.01, "ip6tables saw {:.3} % of the bytes", share * 100.0);
    let after = (
        node.node.counter(NET, "uplink_to_pod"),
        node.node.counter(NET, "pod_to_uplink"),
    );
    assert!(
        after.0 > before.0 + 1000,
        "from the wire: {before:?} -> {after:?}"
    );
    assert!(
        after.1 > before.1 + 100,
        "the pod's ACKs: {before:?} -> {after:?}"
    );
    assert_eq!(node.rule_bytes("KUBE-FORWARD", "ctstate INVALID"), 0);
}

#[test]
fn an_ipv6_cluster_ip_works_and_is_never_offloaded() {
    let node = node6("v6svc", &dual_stack_config("1.0.0"));
    let _server = tcp_echo_server(&node.backend.netns, socket("::", 8080));
    // kube-proxy's IPv6 rules, reduced to one backend: DNAT in PREROUTING.
    node.ip6tables(&format!(
        "-t nat -A PREROUTING -d {CLUSTER_IPV6}/128 -p tcp --dport 80 -j DNAT --to-destination [{}]:8080",
        node.backend_ip
    ));
    // The pods reach the Service address through their default route (the gateway).
    let before = node.node.counter(NET, "pod_to_pod");
    for _ in 0..3 {
        assert_eq!(
            tcp_echo_exchange(&node.client.netns, socket(CLUSTER_IPV6, 80), 1 << 18),
            Ok(1 << 18),
            "TCP through the IPv6 ClusterIP"
        );
    }
    assert_eq!(
        node.node.counter(NET, "pod_to_pod"),
        before,
        "frames of a NATed IPv6 flow took the fast path"
    );
    let backend = format!("[{}]", node.backend_ip);
    for (src, dst) in node.offloaded() {
        assert!(
            !src.starts_with(&backend) && !dst.starts_with(&backend),
            "a NATed flow was offloaded: {src} -> {dst}"
        );
    }
}

#[test]
fn an_ip6tables_drop_stops_an_offloaded_ipv6_flow_within_the_revalidation_period() {
    const REVALIDATE_MS: u64 = 1000;
    let revalidate = Duration::from_millis(REVALIDATE_MS);
    let slack = Duration::from_millis(500);
    let mut config = dual_stack_config("1.0.0");
    config["revalidateMs"] = json!(REVALIDATE_MS);
    let node = node6("v6pol", &config);
    let _server = udp_echo_server(&node.backend.netns, socket("::", 7000), "backend");
    node.ip6tables("-N POLICY");
    node.ip6tables("-I FORWARD 1 -j POLICY");
    let target = socket(&node.backend_ip, 7000);
    let started = Instant::now();
    let stream = node.client.netns.spawn(move || {
        let socket = std::net::UdpSocket::bind("[::]:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let mut replies_at = Vec::new();
        let mut buffer = [0u8; 512];
        while started.elapsed() < Duration::from_secs(6) {
            let _ = socket.send_to(b"ping", target);
            if socket.recv_from(&mut buffer).is_ok() {
                replies_at.push(started.elapsed());
            }
        }
        replies_at
    });
    std::thread::sleep(Duration::from_millis(1500));
    let early = node.node.counter(NET, "pod_to_pod");
    std::thread::sleep(Duration::from_millis(500));
    let offloaded_before = node.offloaded();
    let before = node.node.counter(NET, "pod_to_pod");
    node.ip6tables(&format!(
        "-A POLICY -s {} -d {} -j DROP",
        node.client_ip, node.backend_ip
    ));
    let drop_at = started.elapsed();
    // Once the period is over nothing of the stream takes the fast path any more.
    std::thread::sleep(revalidate + slack);
    let settled = node.node.counter(NET, "pod_to_pod");
    let replies_at = stream.join().expect("stream");
    let after = node.node.counter(NET, "pod_to_pod");
    let client = format!("[{}]", node.client_ip);
    assert!(
        offloaded_before.iter().any(|(src, _)| src.starts_with(&client)),
        "the IPv6 stream was not offloaded before the DROP: {offloaded_before:?}"
    );
    assert!(
        before > early,
        "the stream was not on the fast path before the DROP: {early} -> {before}"
    );
    assert_eq!(
        after, settled,
        "frames took the fast path more than {revalidate:?} (+ {slack:?}) after the DROP"
    );
    assert!(
        replies_at.iter().any(|&at| at < drop_at),
        "no replies before the DROP"
    );
    let last = *replies_at.last().expect("replies");
    let stopped_after = last.saturating_sub(drop_at);
    eprintln!("the offloaded IPv6 stream stopped {stopped_after:?} after the DROP");
    assert!(
        stopped_after <= revalidate + slack,
        "replies kept coming {stopped_after:?} after the DROP, more than {revalidate:?} (+ {slack:?})"
    );
}
