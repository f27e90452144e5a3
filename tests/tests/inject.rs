//! The inject program (attached nowhere) sends the frame the plugin hands it out of the
//! device it names, and nowhere else. On the host's kernel only: the guests of `cargo
//! xtask test-kernel` could not bring a veth up for it (to look into; ADD falls back to a
//! packet socket where inject fails).
use flatbridge::{datapath::Datapath, netns::Netns as PluginNetns};
use flatbridge_tests::{BpfFs, Netns, frames::arp, require_root};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const IP_OUTSIDE: [u8; 4] = [10, 10, 0, 1];

#[test]
fn inject_sends_the_frame_it_is_given_out_of_the_device_it_is_told_and_nowhere_else() {
    use flatbridge_tests::raw::{Capture, contains};
    require_root();
    let node = Netns::new("inject");
    let bpffs = BpfFs::new("inject");
    let (datapath, _) = Datapath::ensure_loaded(bpffs.path(), "inject").expect("load the datapath");
    node.ok(&[
        "ip", "link", "add", "injq", "type", "veth", "peer", "name", "injq-p",
    ]);
    node.ok(&["ip", "link", "set", "injq", "up"]);
    node.ok(&["ip", "link", "set", "injq-p", "up"]);
    let ifindex = node.ifindex("injq");
    let capture = Capture::start(&node, "injq-p");
    let probe = arp(1, MAC_A, [0; 4], [0; 6], IP_OUTSIDE);
    let inject = |ifindex: u32| {
        let datapath = &datapath;
        let frame = probe.clone();
        let netns = node.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    PluginNetns::open(&netns)
                        .expect("node netns")
                        .run(|| {
                            datapath
                                .inject(ifindex, &frame)
                                .map_err(|error| error.to_string())
                        })
                        .expect("enter the node netns")
                })
                .join()
                .expect("inject thread")
        })
    };
    inject(ifindex).expect("inject out of the veth");
    assert!(
        capture.wait_for(&probe, std::time::Duration::from_secs(2)),
        "the frame never came out of the veth"
    );
    // No device: refused, and nothing is sent.
    let refused = inject(0);
    assert!(refused.is_err(), "inject without a device succeeded");
    let missing = inject(999_999);
    assert!(
        missing.is_err(),
        "inject to a device that does not exist succeeded"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let frames = capture.stop();
    assert_eq!(
        frames.iter().filter(|frame| contains(frame, &probe)).count(),
        1,
        "one frame injected, one seen"
    );
}
