//! The eBPF chain end to end: the embedded object is loaded and pinned under a private BPF
//! root, its program attached to tc ingress of a veth in a node namespace; real packets
//! raise its counter; after detaching, nothing of it is left on the device.
use flatbridge::{datapath::Datapath, netns::Netns as PluginNetns};
use flatbridge_common::{Verdict, program_name};
use flatbridge_tests::{BpfFs, Netns, check, require_root};

const NETWORK: &str = "attachtest";

fn pass_to_bridge_packets(datapath: &Datapath) -> u64 {
    let counters = datapath.counters().expect("read counters");
    counters
        .iter()
        .find(|count| count.verdict == Verdict::PodToBridge)
        .expect("pass_to_bridge counter")
        .total
        .packets
}

/// Runs `f` inside `node` on a thread of its own, as the plugin would.
fn in_node<T: Send>(node: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = node.path();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                PluginNetns::open(&path)
                    .expect("open node netns")
                    .run(f)
                    .expect("enter node netns")
            })
            .join()
            .expect("thread in node netns")
    })
}

#[test]
fn program_counts_real_packets_until_detached() {
    require_root();
    let bpffs = BpfFs::new("attach");
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    node.add_veth("hostveth", &pod, "eth0");
    node.ok(&["ip", "addr", "add", "10.10.1.1/24", "dev", "hostveth"]);
    pod.ok(&["ip", "addr", "add", "10.10.1.5/24", "dev", "eth0"]);

    // Load, attach and let every userspace handle go: only the pins keep it alive.
    in_node(&node, || {
        let (datapath, _) = Datapath::ensure_loaded(bpffs.path(), NETWORK).expect("load datapath");
        datapath
            .attach(program_name::FROM_POD, "hostveth")
            .expect("attach");
    });
    let datapath = Datapath::open(bpffs.path(), NETWORK).expect("open the pinned datapath");
    assert!(in_node(&node, || datapath.is_attached(program_name::FROM_POD, "hostveth")));

    // bpftool finds the program and the map by name, with BTF field names.
    let layout = datapath.layout().clone();
    let program = bpftool_pinned("prog", "show", &layout.program(program_name::FROM_POD));
    assert!(program.contains("name from_pod"), "bpftool prog show: {program}");
    assert!(program.contains("sched_cls"), "bpftool prog show: {program}");
    let dump = bpftool_pinned("map", "dump", &layout.map("counters"));
    assert!(
        dump.contains("\"packets\""),
        "counters dump has no BTF field names: {dump}"
    );

    // Loading again (a second ADD) reuses the pins instead of loading a second copy.
    let program_id = |text: &str| text.split(':').next().map(str::to_owned);
    in_node(&node, || {
        Datapath::ensure_loaded(bpffs.path(), NETWORK).expect("reload")
    });
    let again = bpftool_pinned("prog", "show", &layout.program(program_name::FROM_POD));
    assert_eq!(
        program_id(&program),
        program_id(&again),
        "the program was loaded twice"
    );

    let before = pass_to_bridge_packets(&datapath);
    pod.ok(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "10.10.1.1"]);
    let after = pass_to_bridge_packets(&datapath);
    // Five echo requests at least; ARP adds to it.
    assert!(
        after >= before + 5,
        "counter went from {before} to {after} for 5 pings"
    );

    assert!(
        datapath
            .detach(program_name::FROM_POD, "hostveth")
            .expect("detach")
    );
    assert!(!in_node(&node, || datapath.is_attached(program_name::FROM_POD, "hostveth")));
    let attached = in_node(&node, || {
        aya::programs::SchedClassifier::query_tcx("hostveth", aya::programs::TcAttachType::Ingress)
            .expect("query tcx")
            .1
    });
    assert!(
        attached.is_empty(),
        "programs still attached after detach: {attached:?}"
    );
    pod.ok(&["ping", "-c", "3", "-i", "0.05", "-W", "1", "10.10.1.1"]);
    assert_eq!(
        pass_to_bridge_packets(&datapath),
        after,
        "counting went on after detach"
    );

    datapath.remove().expect("remove pins");
    assert!(!layout.dir().exists(), "pins left in {:?}", layout.dir());
}

/// `bpftool <object> <verb> pinned <path>`, which must succeed; its output.
fn bpftool_pinned(object: &str, verb: &str, path: &std::path::Path) -> String {
    check(
        &format!("bpftool {object} {verb}"),
        std::process::Command::new("bpftool")
            .args([object, verb, "pinned"])
            .arg(path)
            .output()
            .expect("run bpftool"),
    )
}
