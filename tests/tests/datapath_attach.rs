//! The eBPF chain end to end, attached the way the plugin attaches it: the embedded object is
//! loaded and pinned under a private BPF root; a pod's host veth gets `from_pod` and `to_pod`
//! as clsact filters (`Datapath::attach_pod`), the uplink gets `from_uplink` and `to_uplink`
//! as pinned TCX links (`Datapath::attach`), or as clsact filters on a kernel without TCX
//! (pretended here). The kernel is asked what each hook runs: the
//! pinned program, once, also after attaching twice and after another build was loaded over
//! the same pins (an upgrade). Real packets raise the counters; a detached uplink keeps
//! nothing.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use flatbridge::{
    datapath::{BPF_OBJECT_HASH, Datapath},
    netns::Netns as PluginNetns,
};
use flatbridge_common::{Endpoint, Verdict, program_name};
use flatbridge_tests::{BpfFs, Netns, check, require_root};
use serde_json::Value;

const NETWORK: &str = "attachtest";
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 5);

fn packets(datapath: &Datapath, verdict: Verdict) -> u64 {
    datapath
        .counters()
        .expect("read counters")
        .iter()
        .find(|count| count.verdict == verdict)
        .unwrap_or_else(|| panic!("no counter {verdict:?}"))
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

/// What the kernel runs on one device: the ids of the BPF programs attached as tc filters
/// and over TCX, at ingress and at egress.
#[derive(Debug, PartialEq, Eq)]
struct Hooks {
    filters_ingress: Vec<u32>,
    filters_egress: Vec<u32>,
    tcx_ingress: Vec<u32>,
    tcx_egress: Vec<u32>,
}

/// The program ids of the bpf filters `tc filter show` lists on `hook` of `ifname`; none
/// when the device has no clsact qdisc.
fn tc_filter_programs(node: &Netns, ifname: &str, hook: &str) -> Vec<u32> {
    let qdiscs = node.ok(&["tc", "qdisc", "show", "dev", ifname]);
    if !qdiscs.contains("clsact") {
        return Vec::new();
    }
    let listing = node.ok(&["tc", "-j", "filter", "show", "dev", ifname, hook]);
    let filters: Value = serde_json::from_str(&listing)
        .unwrap_or_else(|error| panic!("tc -j filter show printed no JSON ({error}): {listing}"));
    filters
        .as_array()
        .unwrap_or_else(|| panic!("tc -j filter show: {listing}"))
        .iter()
        // The filter's chain header has no options; each bpf filter names its program.
        .filter(|filter| filter["kind"] == "bpf" && filter.get("options").is_some())
        .map(|filter| {
            filter["options"]["prog"]["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .unwrap_or_else(|| panic!("bpf filter without a program id: {filter}"))
        })
        .collect()
}

fn hooks(node: &Netns, ifname: &str) -> Hooks {
    let tcx = |hook| {
        let name = ifname.to_owned();
        in_node(node, move || {
            SchedClassifier::query_tcx(&name, hook)
                .expect("query tcx")
                .1
                .iter()
                .map(|program| program.id())
                .collect()
        })
    };
    Hooks {
        filters_ingress: tc_filter_programs(node, ifname, "ingress"),
        filters_egress: tc_filter_programs(node, ifname, "egress"),
        tcx_ingress: tcx(TcAttachType::Ingress),
        tcx_egress: tcx(TcAttachType::Egress),
    }
}

/// Ids of the pinned programs, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ids {
    from_pod: u32,
    to_pod: u32,
    from_uplink: u32,
    to_uplink: u32,
}

fn pinned_ids(datapath: &Datapath) -> Ids {
    let id = |name| {
        datapath
            .program_id(name)
            .unwrap_or_else(|| panic!("no pinned program {name}"))
    };
    Ids {
        from_pod: id(program_name::FROM_POD),
        to_pod: id(program_name::TO_POD),
        from_uplink: id(program_name::FROM_UPLINK),
        to_uplink: id(program_name::TO_UPLINK),
    }
}

/// The pod's programs as filters on the host veth (nothing over TCX), the uplink's over
/// TCX (no filters) or, without TCX, as filters; each exactly once.
fn expected(ids: Ids, tcx: bool) -> (Hooks, Hooks) {
    let (on_tcx, as_filters) = if tcx {
        ((vec![ids.from_uplink], vec![ids.to_uplink]), (vec![], vec![]))
    } else {
        ((vec![], vec![]), (vec![ids.from_uplink], vec![ids.to_uplink]))
    };
    (
        Hooks {
            filters_ingress: vec![ids.from_pod],
            filters_egress: vec![ids.to_pod],
            tcx_ingress: vec![],
            tcx_egress: vec![],
        },
        Hooks {
            filters_ingress: as_filters.0,
            filters_egress: as_filters.1,
            tcx_ingress: on_tcx.0,
            tcx_egress: on_tcx.1,
        },
    )
}

/// Whether the kernel runs `program` on `ifname`, as the plugin asks it.
fn is_attached(node: &Netns, datapath: &Datapath, program: &'static str, ifname: &str) -> bool {
    in_node(node, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let netlink = flatbridge::netlink::Netlink::open().expect("netlink");
                datapath.runs_on(&netlink, program, ifname).await
            })
    })
}

/// Asserts that `ifname` runs what `want` says. A TCX link whose last pin went away is
/// released after an RCU grace period, so the kernel gets a moment to settle.
fn assert_hooks(node: &Netns, ifname: &str, want: &Hooks, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = hooks(node, ifname);
        if found == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {ifname} runs {found:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn programs_are_attached_once_where_the_plugin_puts_them_and_survive_an_upgrade() {
    require_root();
    // One mode after the other: the pretence is the whole test process's.
    for tcx in [true, false] {
        flatbridge::datapath::pretend_no_tcx(!tcx);
        attached_once_and_upgraded(tcx);
    }
    flatbridge::datapath::pretend_no_tcx(false);
}

fn attached_once_and_upgraded(tcx: bool) {
    let bpffs = BpfFs::new("attach");
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let wire = Netns::new("wire");
    node.add_veth("hostveth", &pod, "eth0");
    node.add_veth("uplink0", &wire, "eth0");
    node.ok(&["ip", "addr", "add", "10.10.1.1/24", "dev", "hostveth"]);
    node.ok(&["ip", "addr", "add", "10.10.2.1/24", "dev", "uplink0"]);
    pod.ok(&["ip", "addr", "add", &format!("{POD_IP}/24"), "dev", "eth0"]);
    wire.ok(&["ip", "addr", "add", "10.10.2.2/24", "dev", "eth0"]);
    let host_ifindex = node.ifindex("hostveth");
    let pod_mac: [u8; 6] = pod
        .mac("eth0")
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16).expect("MAC byte"))
        .collect::<Vec<_>>()
        .try_into()
        .expect("6-byte MAC");

    // As ADD does: load, the pod's filters, its endpoint (which is how a later load finds
    // its veth), the uplink's links; then every userspace handle goes: only the pins and
    // the filters keep it alive.
    let loaded = in_node(&node, || {
        let (datapath, loaded) = Datapath::ensure_loaded(bpffs.path(), NETWORK).expect("load datapath");
        datapath.attach_pod("hostveth").expect("attach_pod");
        datapath
            .add_endpoint(
                Endpoint {
                    ifindex: host_ifindex,
                    ipv4: POD_IP.octets(),
                    mac: pod_mac,
                    ..Endpoint::default()
                },
                &[POD_IP],
                &[],
            )
            .expect("add endpoint");
        for program in program_name::UPLINK {
            datapath.attach(program, "uplink0").expect("attach uplink");
        }
        loaded
    });
    assert!(loaded, "the first load did not load");
    let datapath = Datapath::open(bpffs.path(), NETWORK).expect("open the pinned datapath");
    let first = pinned_ids(&datapath);
    let (pod_hooks, uplink_hooks) = expected(first, tcx);
    assert_hooks(&node, "hostveth", &pod_hooks, "after ADD");
    assert_hooks(&node, "uplink0", &uplink_hooks, "after ADD");
    for program in program_name::UPLINK {
        assert!(
            is_attached(&node, &datapath, program, "uplink0"),
            "{program} (tcx {tcx})"
        );
    }

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

    // Attaching again (a retried ADD, `node setup` run twice) stacks nothing. Whether the
    // call succeeds is not the point here (the kernel refuses a second filter in the same
    // slot, and the same program twice on a TCX hook): what runs afterwards is.
    in_node(&node, || {
        if let Err(error) = datapath.attach_pod("hostveth") {
            eprintln!("attach_pod again: {error}");
        }
        for program in program_name::UPLINK {
            if let Err(error) = datapath.attach(program, "uplink0") {
                eprintln!("attach {program} again: {error}");
            }
        }
    });
    assert_eq!(pinned_ids(&datapath), first, "attaching loaded programs anew");
    assert_hooks(&node, "hostveth", &pod_hooks, "after attaching twice");
    assert_hooks(&node, "uplink0", &uplink_hooks, "after attaching twice");

    // Loading again with the same build (the next ADD) reuses the pins.
    let reloaded = in_node(&node, || {
        Datapath::ensure_loaded(bpffs.path(), NETWORK).expect("reload").1
    });
    assert!(!reloaded, "the same build was loaded twice");
    assert_eq!(pinned_ids(&datapath), first, "the same build was loaded twice");

    // An upgrade: the pins say another build runs, so the next ADD loads this one over the
    // same maps and switches every hook to the new programs.
    let marker = |hash: &str| layout.dir().join(format!("build-{hash}"));
    std::fs::remove_dir(marker(BPF_OBJECT_HASH)).expect("remove the build marker");
    std::fs::create_dir(marker("0ld")).expect("mark an older build");
    let upgraded = in_node(&node, || {
        Datapath::ensure_loaded(bpffs.path(), NETWORK)
            .expect("load the new build")
            .1
    });
    assert!(upgraded, "another build's pins were taken for this build's");
    let second = pinned_ids(&datapath);
    for (old, new) in [
        (first.from_pod, second.from_pod),
        (first.to_pod, second.to_pod),
        (first.from_uplink, second.from_uplink),
        (first.to_uplink, second.to_uplink),
    ] {
        assert_ne!(
            old, new,
            "the upgrade did not load new programs: {first:?} -> {second:?}"
        );
    }
    let (pod_hooks, uplink_hooks) = expected(second, tcx);
    assert_hooks(&node, "hostveth", &pod_hooks, "after the upgrade");
    assert_hooks(&node, "uplink0", &uplink_hooks, "after the upgrade");
    assert_eq!(layout.markers("build-"), [BPF_OBJECT_HASH], "build markers");

    // The new programs run, and count into the maps the old ones used.
    let before = (
        packets(&datapath, Verdict::PodToBridge),
        packets(&datapath, Verdict::UplinkToBridge),
    );
    pod.ok(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "10.10.1.1"]);
    wire.ok(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "10.10.2.1"]);
    let after = (
        packets(&datapath, Verdict::PodToBridge),
        packets(&datapath, Verdict::UplinkToBridge),
    );
    // Five echo requests at least each way; ARP adds to it.
    assert!(
        after.0 >= before.0 + 5 && after.1 >= before.1 + 5,
        "counters went from {before:?} to {after:?} for 5 pings each"
    );

    // Detaching the uplink (its pins go) leaves nothing on it.
    for program in program_name::UPLINK {
        assert!(
            in_node(&node, || datapath.detach(program, "uplink0").expect("detach")),
            "{program} had no link pinned"
        );
        assert!(
            !is_attached(&node, &datapath, program, "uplink0"),
            "{program} after detach"
        );
    }
    let bare = Hooks {
        filters_ingress: vec![],
        filters_egress: vec![],
        tcx_ingress: vec![],
        tcx_egress: vec![],
    };
    assert_hooks(&node, "uplink0", &bare, "after detach");
    wire.ok(&["ping", "-c", "3", "-i", "0.05", "-W", "1", "10.10.2.1"]);
    assert_eq!(
        packets(&datapath, Verdict::UplinkToBridge),
        after.1,
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
