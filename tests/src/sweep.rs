//! Removes what a killed earlier run left behind: namespaces, BPF filesystems and state
//! directories whose name carries the pid of a process that no longer exists.
use std::{path::Path, process::Command, sync::Once};

use crate::bpffs::{MOUNT_BASE, unmount};

/// Sweeps once per test process.
pub fn once() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        for name in stale(list_netns()) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        let mounts = std::fs::read_dir(MOUNT_BASE)
            .map(|dir| {
                dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for name in stale(mounts) {
            unmount(&Path::new(MOUNT_BASE).join(name));
        }
        let temp = std::env::temp_dir();
        let dirs = std::fs::read_dir(&temp)
            .map(|dir| {
                dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for name in stale(dirs) {
            let _ = std::fs::remove_dir_all(temp.join(name));
        }
    });
}

fn list_netns() -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Names `fbt-<tag>-<pid>-<n>` whose pid is not a running process.
fn stale(names: Vec<String>) -> impl Iterator<Item = String> {
    names.into_iter().filter(|name| {
        let mut parts = name.rsplitn(3, '-');
        let (_n, pid) = (parts.next(), parts.next());
        name.starts_with("fbt-")
            && pid
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    })
}
