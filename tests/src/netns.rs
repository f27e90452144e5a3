//! A network namespace that lives as long as its guard.
use std::{
    path::PathBuf,
    process::{Command, Output},
};

use crate::{check, unique_name};

pub struct Netns {
    name: String,
    /// Deleted on drop (false for a second handle on a namespace someone else owns).
    owned: bool,
}

impl Netns {
    /// Creates `fbt-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        check(
            &format!("ip netns add {name}"),
            Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .expect("run ip"),
        );
        let netns = Self { name, owned: true };
        netns.ok(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// Another handle on an existing namespace; dropping it leaves the namespace alone.
    pub fn open_existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that names the namespace, as a runtime passes it in CNI_NETNS.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that will run inside the namespace (network only: the mount namespace,
    /// and with it /sys/fs/bpf, stays the caller's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `argv` in the namespace and returns its output, whatever the exit status.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("run nsenter")
    }

    /// Runs `argv` in the namespace; panics unless it succeeds; returns stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        check(&format!("[{}] {}", self.name, argv.join(" ")), self.run(argv))
    }

    /// The interface index of `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        // Not /sys/class/net: without `ip netns exec` it shows the caller's namespace.
        let link = self.ok(&["ip", "-o", "link", "show", "dev", ifname]);
        link.split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .expect("ifindex in `ip -o link`")
    }

    /// The MAC address of `ifname`, lower case.
    pub fn mac(&self, ifname: &str) -> String {
        let link = self.ok(&["ip", "-o", "link", "show", "dev", ifname]);
        link.split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {link}"))
            .to_lowercase()
    }

    /// Moves one end of a new veth pair into `peer`: `local` stays here, `remote` goes there.
    pub fn add_veth(&self, local: &str, peer: &Netns, remote: &str) {
        self.ok(&[
            "ip",
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            peer.name(),
        ]);
        self.ok(&["ip", "link", "set", local, "up"]);
        peer.ok(&["ip", "link", "set", remote, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Processes left running inside (iperf3 servers, ...) would keep the namespace alive.
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                // One that ended since the listing is fine: say nothing.
                let _ = Command::new("kill")
                    .args(["-9", pid])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).status();
        if !deleted.is_ok_and(|status| status.success()) {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}
