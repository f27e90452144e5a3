//! The fast path on a kube-proxy node: Services (DNAT, hairpin with masquerade, NodePort
//! from the wire) and FORWARD policy keep working, because only flows netfilter let through
//! unchanged in both directions are offloaded, and every offloaded flow goes back through
//! netfilter once per revalidation period.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use flatbridge_tests::{
    Netns, Node, Pod,
    netfilter::{self, offloaded},
    require_root, seed_config,
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

    /// Counts what netfilter sees of the flow between `a` and `b` (see
    /// [`netfilter::count_flow`]).
    fn count_flow(&self, tag: &str, a: &str, b: &str) {
        netfilter::count_flow(&self.node.netns, "iptables", tag, a, b);
    }

    /// Bytes a rule of the filter table's chain matched.
    fn rule_bytes(&self, chain: &str, needle: &str) -> u64 {
        netfilter::rule_bytes(&self.node.netns, "iptables", chain, needle)
    }
}

/// Echoes 16 KiB chunks over one TCP connection from `netns` to `target` for `duration`,
/// checking every echo; returns when each echo came back, from the start.
fn timed_tcp_echo(netns: &Netns, target: SocketAddr, duration: Duration) -> Result<Vec<Duration>, String> {
    netns.within(move || {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|error| format!("connect: {error}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|error| error.to_string())?;
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        let mut back = vec![0u8; chunk.len()];
        let started = Instant::now();
        let mut echoes = Vec::new();
        while started.elapsed() < duration {
            stream
                .write_all(&chunk)
                .map_err(|error| format!("write after {} echoes: {error}", echoes.len()))?;
            stream
                .read_exact(&mut back)
                .map_err(|error| format!("read after {} echoes: {error}", echoes.len()))?;
            if back != chunk {
                return Err(format!("corrupted echo after {} echoes", echoes.len()));
            }
            echoes.push(started.elapsed());
        }
        stream
            .shutdown(std::net::Shutdown::Both)
            .map_err(|error| error.to_string())?;
        Ok(echoes)
    })
}

/// The revalidation periods, of `periods` from the start, in which nothing happened.
fn silent_periods(times: &[Duration], revalidate: Duration, periods: u32) -> Vec<u32> {
    (0..periods)
        .filter(|&period| {
            let (from, to) = (revalidate * period, revalidate * (period + 1));
            !times.iter().any(|time| (from..to).contains(time))
        })
        .collect()
}

#[test]
fn a_cluster_ip_service_works_over_tcp_and_udp_and_is_never_offloaded() {
    // Short, so that each exchange spans several revalidation periods: every flow goes back
    // through netfilter (and egress confirms it again) at each period's end.
    const REVALIDATE_MS: u64 = 200;
    const PERIODS: u32 = 8;
    let revalidate = Duration::from_millis(REVALIDATE_MS);
    let mut config = seed_config("1.0.0");
    config["revalidateMs"] = json!(REVALIDATE_MS);
    let kube = kube_node("svc", config);
    assert_eq!(kube.status()["node"]["revalidate_ms"], REVALIDATE_MS);
    let _servers = kube.backend_servers();
    let fast_before = kube.node.counter(NET, "pod_to_pod");

    // One TCP connection through the ClusterIP, watched half-way.
    let (echoes, during) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            std::thread::sleep(revalidate * PERIODS / 2);
            kube.status()
        });
        let echoes = timed_tcp_echo(&kube.client.netns, kube.web(), revalidate * PERIODS)
            .expect("TCP through the ClusterIP");
        (echoes, watcher.join().expect("status thread"))
    });
    // The Service kept answering across every revalidation, not only in the first period.
    assert_eq!(
        silent_periods(&echoes, revalidate, PERIODS),
        Vec::<u32>::new(),
        "revalidation periods of {revalidate:?} without a TCP echo ({} echoes)",
        echoes.len()
    );

    // One UDP flow (one socket), two datagrams per period.
    let gap = revalidate / 2;
    let replies = udp_exchange(&kube.client.netns, kube.dns(), 2 * PERIODS as usize, gap);
    assert!(
        replies.len() >= 2 * PERIODS as usize - 2,
        "UDP replies: {replies:?}"
    );
    let mut sent_at = Vec::new();
    for (source, payload) in &replies {
        assert_eq!(
            source.to_string(),
            format!("{CLUSTER_IP}:53"),
            "a reply came from the wrong address"
        );
        let sequence: u32 = payload
            .strip_prefix("backend:")
            .and_then(|sequence| sequence.parse().ok())
            .unwrap_or_else(|| panic!("not the backend's echo: {payload}"));
        sent_at.push(gap * sequence);
    }
    assert_eq!(
        silent_periods(&sent_at, revalidate, PERIODS),
        Vec::<u32>::new(),
        "revalidation periods of {revalidate:?} without a UDP reply: {replies:?}"
    );

    // Over all those periods not one frame of either flow went from pod to pod directly.
    assert_eq!(
        kube.node.counter(NET, "pod_to_pod"),
        fast_before,
        "frames of a NATed flow took the fast path"
    );
    for status in [during, kube.status()] {
        for (src, dst) in offloaded(&status) {
            assert!(
                !src.starts_with(&kube.backend_ip) && !dst.starts_with(&kube.backend_ip),
                "a NATed flow was offloaded: {src} -> {dst}"
            );
        }
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
    kube.count_flow("iperf", &kube.client_ip, &kube.backend_ip);
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
            // A connection conntrack kills must fail the test in seconds, not after
            // TCP's 15 minutes of retransmissions.
            &["-t", "3", "--snd-timeout", "15000"],
        )
        .expect("iperf3 through the fast path");
        (watcher.join().expect("status thread"), report)
    });
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes sent");
    let [out, back] = ["iperf-out", "iperf-back"].map(|tag| kube.rule_bytes("FORWARD", tag));
    // The handshake, the first data and the FIN took the bridge both ways, so both
    // directions did meet the INVALID rule.
    assert!(
        out > 0 && back > 0,
        "netfilter saw {out} bytes client -> backend and {back} back"
    );
    let through_netfilter = out + back;
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
    // The INVALID rule dropped nothing, and the connection ended with a clean FIN: only
    // because conntrack is liberal about TCP windows (kube_node sets it), since the packets
    // that came back from an offloaded stretch carry sequence numbers conntrack never saw.
    assert_eq!(
        kube.rule_bytes("KUBE-FORWARD", "ctstate INVALID"),
        0,
        "conntrack found packets of the flow INVALID"
    );
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
fn policy_blocks_new_flows_and_stops_offloaded_ones_within_the_revalidation_period() {
    // An offloaded flow goes back through netfilter within one revalidation period, so a
    // DROP stops it within that (plus the slack of a shared 2-vCPU machine).
    const REVALIDATE_MS: u64 = 1000;
    let revalidate = Duration::from_millis(REVALIDATE_MS);
    let slack = Duration::from_millis(500);
    let mut config = seed_config("1.0.0");
    config["revalidateMs"] = json!(REVALIDATE_MS);
    let kube = kube_node("policy", config);
    assert_eq!(kube.status()["node"]["revalidate_ms"], REVALIDATE_MS);
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
    let (offloaded_before, drop_at, replies_at) = {
        let target = backend_udp;
        // The stream's clock, and the DROP's time on it.
        let started = Instant::now();
        let handle = kube.client.netns.spawn(move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
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
        // The rule is in force once iptables returns (a little earlier, at most).
        let drop_at = started.elapsed();
        (offloaded_before, drop_at, handle.join().expect("stream"))
    };
    assert!(
        offloaded_before
            .iter()
            .any(|(src, _)| src.starts_with(&kube.client_ip)),
        "the stream was not offloaded before the DROP: {offloaded_before:?}"
    );
    assert!(
        replies_at.iter().any(|&at| at < drop_at),
        "no replies before the DROP"
    );
    let last = *replies_at.last().expect("replies");
    let stopped_after = last.saturating_sub(drop_at);
    eprintln!(
        "the offloaded stream stopped {stopped_after:?} after the DROP (revalidation every {revalidate:?})"
    );
    assert!(
        stopped_after <= revalidate + slack,
        "replies kept coming {stopped_after:?} after the DROP was added, more than the revalidation \
         period of {revalidate:?} (+ {slack:?})"
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
    kube.count_flow("wire", EXTERNAL_IP, &kube.client_ip);
    let report = traffic::iperf3(
        &kube.external,
        &kube.client.netns,
        &kube.client_ip,
        &["-t", "2", "--snd-timeout", "15000"],
    )
    .expect("iperf3 from the external host");
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().expect("bytes");
    let [out, back] = ["wire-out", "wire-back"].map(|tag| kube.rule_bytes("FORWARD", tag));
    assert!(
        out > 0 && back > 0,
        "netfilter saw {out} bytes from the wire and {back} back"
    );
    let through_netfilter = out + back;
    assert!(
        (through_netfilter as f64) < 0.01 * sent as f64,
        "netfilter saw {through_netfilter} of {sent} bytes"
    );
    assert_eq!(
        kube.rule_bytes("KUBE-FORWARD", "ctstate INVALID"),
        0,
        "conntrack found packets of the flow INVALID"
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

/// `status --json` is the documented report (`docs/status.schema.json`, the schema of
/// `flatbridge::report::NodeReport`): it parses into the typed report, which refuses fields
/// it does not know, and each part says what the node is doing — here with three pods, the
/// uplink, the gateway and an offloaded UDP flow between two pods.
#[test]
fn status_json_is_the_documented_report() {
    use flatbridge::{
        cmd::host_veth_name,
        report::{AttachMode, FlowProtocol, NodeReport, OffloadMode, SCHEMA_VERSION, VerdictKind},
    };
    use flatbridge_common::{Verdict, program_name};

    let kube = kube_node("schema", seed_config("1.0.0"));
    let _server = udp_echo_server(&kube.backend.netns, "0.0.0.0:7000".parse().expect("address"), "b");
    let target: SocketAddr = format!("{}:7000", kube.backend_ip).parse().expect("address");
    udp_exchange(&kube.client.netns, target, 20, Duration::from_millis(20));

    let status = kube.node.status();
    let report: NodeReport = serde_json::from_value(status.clone())
        .unwrap_or_else(|error| panic!("status --json is not the typed report: {error}\n{status:#}"));
    assert_eq!(report.schema, SCHEMA_VERSION);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(report.kernel.release, release.trim());
    assert!(report.kernel.tcx && report.kernel.btf, "{:?}", report.kernel);
    assert!(report.conflicts.is_empty());
    let [network] = report.networks.as_slice() else {
        panic!("one network expected: {status:#}");
    };
    assert_eq!(network.network, NET);
    assert!(network.build_current);
    assert_eq!(network.node.bridge, "cni0");
    assert_eq!(network.node.uplink, "uplink0");
    assert_eq!(network.node.mode, OffloadMode::Confirmed);
    assert!(network.node.enabled && network.node.anti_spoof && network.node.tcp_offload);
    assert_eq!(network.node.bridge_mac.to_string(), kube.node.netns.mac("cni0"));

    let veth = |pod: &Pod| host_veth_name(NET, &pod.container_id, "eth0");
    for (pod, ip) in [
        (&kube.client, &kube.client_ip),
        (&kube.backend, &kube.backend_ip),
        (&kube.other, &kube.other_ip),
    ] {
        let endpoint = network
            .endpoints
            .iter()
            .find(|endpoint| endpoint.host_veth == veth(pod))
            .unwrap_or_else(|| panic!("no endpoint on {}: {status:#}", veth(pod)));
        assert_eq!(
            endpoint.addresses,
            vec![ip.parse::<std::net::Ipv4Addr>().expect("ip")]
        );
        assert_eq!(endpoint.mac.to_string(), pod.netns.mac("eth0"));
        assert_eq!(endpoint.ifindex, kube.node.netns.ifindex(&veth(pod)));
        assert!(endpoint.attached);
    }
    let names: Vec<&str> = network
        .programs
        .iter()
        .map(|program| program.name.as_str())
        .collect();
    assert_eq!(names, program_name::ALL);
    for program in &network.programs {
        assert!(program.id.is_some(), "{program:?}");
        let expected = if program_name::UPLINK.contains(&program.name.as_str()) {
            1
        } else {
            3
        };
        assert_eq!(program.devices.len(), expected, "{program:?}");
        for device in &program.devices {
            assert!(device.attached, "{program:?}");
            let attach = if expected == 1 {
                AttachMode::Tcx
            } else {
                AttachMode::TcFilter
            };
            assert_eq!(device.attach, attach, "{program:?}");
        }
    }
    let [gateway] = network.gateways.as_slice() else {
        panic!("one gateway expected: {status:#}");
    };
    assert_eq!(gateway.subnet.to_string(), "10.10.1.0/16");
    assert_eq!(gateway.address.to_string(), "10.10.1.0");
    assert_eq!(gateway.mac, network.node.bridge_mac);

    let flow = network
        .flows
        .iter()
        .find(|flow| flow.dst == target.to_string().parse().expect("v4"))
        .unwrap_or_else(|| panic!("no flow to {target}: {status:#}"));
    assert_eq!(flow.protocol, FlowProtocol::Udp);
    assert_eq!(flow.src.ip().to_string(), kube.client_ip);
    assert_eq!(flow.from, veth(&kube.client));
    assert_eq!(flow.to.as_deref(), Some(veth(&kube.backend).as_str()));
    assert!(flow.offloaded && !flow.closed, "{flow:?}");
    assert!(flow.confirmed_ms_ago.is_some_and(|ago| ago < 60_000), "{flow:?}");
    let reverse = network
        .flows
        .iter()
        .find(|back| back.src == flow.dst && back.dst == flow.src)
        .unwrap_or_else(|| panic!("no reverse of {flow:?}: {status:#}"));
    assert!(reverse.offloaded, "{reverse:?}");

    let verdicts: Vec<&str> = network
        .counters
        .iter()
        .map(|counter| counter.verdict.as_str())
        .collect();
    assert_eq!(verdicts, Verdict::ALL.map(Verdict::name));
    let pod_to_pod = network
        .counters
        .iter()
        .find(|counter| counter.verdict == "pod_to_pod")
        .expect("pod_to_pod");
    assert_eq!(pod_to_pod.kind, VerdictKind::Forward);
    assert!(
        pod_to_pod.packets > 0 && pod_to_pod.bytes > pod_to_pod.packets * 42,
        "{pod_to_pod:?}"
    );
    assert!(
        network
            .counters
            .iter()
            .filter(|counter| counter.verdict.starts_with("drop_"))
            .all(|counter| counter.kind == VerdictKind::Drop)
    );
}
