//! Attaching the programs to devices: pods' as clsact filters on their host veths, the
//! uplink's over TCX links where the kernel has TCX and as clsact filters of the network's
//! own where it has not; upgrading each attachment in place; asking the kernel what runs.
use std::{fs, os::fd::AsFd};

use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    links::{FdLink, Link, PinnedLink},
    tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle, qdisc_add_clsact},
};
use flatbridge_common::program_name;

use super::{
    Datapath, DatapathError,
    loader::program_error,
    pins::{create_dir, lock_dir, remove_pin, unescape_pin_name},
};

/// The programs on every pod's host veth, and their hooks.
const POD_PROGRAMS: [(&str, TcAttachType); 2] = [
    (program_name::FROM_POD, TcAttachType::Ingress),
    (program_name::TO_POD, TcAttachType::Egress),
];
/// The clsact filter slot flatbridge uses on host veths: first in line.
const POD_FILTER_PRIORITY: u16 = 1;
const POD_FILTER_HANDLE: u32 = 0xfb;

fn pod_filter() -> NlOptions {
    NlOptions {
        priority: POD_FILTER_PRIORITY,
        handle: TcHandle::from(POD_FILTER_HANDLE),
        ..NlOptions::default()
    }
}

/// The clsact filter slot of a network's uplink programs where the kernel has no TCX: after
/// the pods' (priority 1 on their own devices anyway), with a handle of the network's own
/// (from its name), so that networks sharing an uplink never replace each other's.
const UPLINK_FILTER_PRIORITY: u16 = 2;

fn uplink_filter(network: &str) -> NlOptions {
    // FNV-1a, as host veth names are made.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in network.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NlOptions {
        priority: UPLINK_FILTER_PRIORITY,
        handle: TcHandle::from(0xfb00_0000 | (hash & 0x00ff_ffff)),
        ..NlOptions::default()
    }
}

/// How a program is attached to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A TCX link, pinned.
    Tcx,
    /// A clsact filter (kernels without TCX).
    TcFilter,
}

impl Attachment {
    pub fn name(self) -> &'static str {
        match self {
            Attachment::Tcx => "tcx",
            Attachment::TcFilter => "tc-filter",
        }
    }
}

impl Datapath {
    /// Switches every device running an older build of `program` (`name`) to the new one,
    /// atomically: host veths by replacing their filter in place, the uplink by updating its
    /// TCX link (or replacing its filter, where it is one).
    pub(super) fn switch_attachments(
        &self,
        program: &mut SchedClassifier,
        name: &'static str,
    ) -> Result<(), DatapathError> {
        if let Some((_, hook)) = POD_PROGRAMS.iter().find(|(pod_program, _)| *pod_program == name) {
            for ifname in self.pod_veths() {
                let switched = SchedClassifierLink::attached(
                    &ifname,
                    *hook,
                    POD_FILTER_PRIORITY,
                    pod_filter().handle,
                    None,
                )
                .map_err(|error| {
                    program_error(
                        "find the filter of",
                        name,
                        aya::programs::ProgramError::from(TcError::IoError(error)),
                    )
                })
                .and_then(|link| {
                    program
                        .attach_to_link(link)
                        .map_err(|error| program_error("switch to the new build of", name, error))
                });
                match switched {
                    // Like the filter itself, the link handle must outlive this process.
                    Ok(link_id) => std::mem::forget(program.take_link(link_id)),
                    Err(error) => log::warn!("{ifname}: {error}"),
                }
            }
        }
        for ifname in self.pinned_devices(name) {
            let path = self.layout.link(name, &ifname);
            if path.is_dir() {
                // A filter: replaced in place by the new build.
                let options = uplink_filter(&self.network);
                let switched = SchedClassifierLink::attached(
                    &ifname,
                    hook(name),
                    options.priority,
                    options.handle,
                    None,
                )
                .map_err(|error| aya::programs::ProgramError::from(TcError::IoError(error)))
                .and_then(|link| program.attach_to_link(link));
                match switched {
                    Ok(link_id) => std::mem::forget(program.take_link(link_id)),
                    // Gone with its device, or removed by another tool: the next ADD
                    // attaches it again.
                    Err(error) => log::warn!("{ifname}: switching {name} to the new build: {error}"),
                }
                continue;
            }
            let link = PinnedLink::from_pin(&path)
                .map_err(|source| link_error(name, &ifname, source))
                .and_then(|pinned| {
                    SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|source| link_error(name, &ifname, source))
                })?;
            program
                .attach_to_link(link)
                .map_err(|error| program_error("switch to the new build of", name, error))?;
        }
        Ok(())
    }

    /// Attaches `program` to its tc hook (ingress, or egress for the `to_*` programs) of the
    /// device `ifname` in the calling thread's network namespace so that it stays attached
    /// after this process exits: over TCX with a pinned link, or as a clsact filter where
    /// the kernel has no TCX. Attaching again replaces the previous attachment (never a
    /// second one beside it).
    pub fn attach(&self, program: &'static str, ifname: &str) -> Result<Attachment, DatapathError> {
        let mut classifier = SchedClassifier::from_pin(self.layout.program(program))
            .map_err(|error| program_error("open pinned", program, error))?;
        create_dir(&self.layout.links_dir(program))?;
        let path = self.layout.link(program, ifname);
        if !crate::kernel::has_tcx() {
            self.attach_filter(&mut classifier, program, ifname)?;
            if path.is_file() {
                // A TCX link of before (a kernel downgrade keeps no pins; a hand-made one).
                remove_pin(&path)?;
            }
            create_dir(&path)?;
            return Ok(Attachment::TcFilter);
        }
        let link_id = classifier
            .attach_with_options(
                ifname,
                hook(program),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|error| program_error("attach over TCX", program, error))?;
        let link: FdLink = classifier
            .take_link(link_id)
            .map_err(|error| program_error("take the link of", program, error))?
            .try_into()
            .map_err(|source| link_error(program, ifname, source))?;
        if path.is_dir() {
            self.detach_filter(program, ifname)?;
            let _ = fs::remove_dir(&path);
        }
        remove_pin(&path)?;
        link.pin(&path)
            .map_err(|source| DatapathError::Pin { path, source })?;
        Ok(Attachment::Tcx)
    }

    /// `program` as the network's clsact filter on `ifname`: the filter there replaced in
    /// place, or made (with the qdisc) when there is none.
    fn attach_filter(
        &self,
        classifier: &mut SchedClassifier,
        program: &'static str,
        ifname: &str,
    ) -> Result<(), DatapathError> {
        let options = uplink_filter(&self.network);
        let replaced =
            SchedClassifierLink::attached(ifname, hook(program), options.priority, options.handle, None)
                .map_err(|error| aya::programs::ProgramError::from(TcError::IoError(error)))
                .and_then(|link| classifier.attach_to_link(link));
        let link_id = match replaced {
            Ok(link_id) => link_id,
            Err(_) => {
                match qdisc_add_clsact(ifname) {
                    Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
                    other => {
                        other.map_err(|error| program_error("add the clsact qdisc for", program, error))?
                    }
                }
                classifier
                    .attach_with_options(ifname, hook(program), TcAttachOptions::Netlink(options))
                    .map_err(|error| program_error("attach as a tc filter", program, error))?
            }
        };
        // Dropping the handle would delete the filter; it must outlive this process.
        std::mem::forget(
            classifier
                .take_link(link_id)
                .map_err(|error| program_error("take the link of", program, error))?,
        );
        Ok(())
    }

    fn detach_filter(&self, program: &str, ifname: &str) -> Result<(), DatapathError> {
        detach_filter_in(program, ifname, &uplink_filter(&self.network))
    }

    /// Takes the pod programs off a pod's host veth (the filters in flatbridge's slot; the
    /// clsact qdisc and other tools' filters stay): its frames go to the bridge unchecked.
    pub fn detach_pod(&self, ifname: &str) -> Result<(), DatapathError> {
        for program in program_name::POD {
            detach_filter_in(program, ifname, &pod_filter())?;
        }
        Ok(())
    }

    /// How `program` is attached to `ifname`, as this datapath recorded it.
    pub fn attachment(&self, program: &str, ifname: &str) -> Option<Attachment> {
        let path = self.layout.link(program, ifname);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_dir() => Some(Attachment::TcFilter),
            Ok(_) => Some(Attachment::Tcx),
            Err(_) => None,
        }
    }

    /// Attaches the pod programs to a pod's host veth, as clsact filters, while the veth is
    /// still down. TCX links would cost an RCU grace period per hook (about 10 ms each here,
    /// more than the rest of ADD together); a filter added to a device that is not up costs
    /// 0.1 ms, needs no pin (it belongs to the device, not to a process) and goes away with
    /// the veth.
    pub fn attach_pod(&self, ifname: &str) -> Result<(), DatapathError> {
        match qdisc_add_clsact(ifname) {
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            other => other
                .map_err(|error| program_error("add the clsact qdisc for", program_name::FROM_POD, error))?,
        }
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|error| {
            program_error(
                "find the device for",
                program_name::FROM_POD,
                ProgramError::from(std::io::Error::from(error)),
            )
        })?;
        for (program, hook) in POD_PROGRAMS {
            // Not through aya's `from_pin`: see `sys`.
            let fd = super::sys::obj_get(&self.layout.program(program))
                .map_err(|error| program_error("open pinned", program, ProgramError::from(error)))?;
            super::sys::add_tc_filter(
                ifindex,
                matches!(hook, TcAttachType::Ingress),
                fd.as_fd(),
                program,
                POD_FILTER_PRIORITY,
                POD_FILTER_HANDLE,
            )
            .map_err(|error| program_error("attach as a tc filter", program, ProgramError::from(error)))?;
        }
        Ok(())
    }

    /// The host veths of the pods this datapath knows.
    fn pod_veths(&self) -> Vec<String> {
        self.endpoint_ports()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|ifindex| nix::net::if_::if_indextoname(ifindex).ok())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    /// Detaches `program` from `ifname`. Returns false when it was not attached.
    pub fn detach(&self, program: &str, ifname: &str) -> Result<bool, DatapathError> {
        let path = self.layout.link(program, ifname);
        if path.is_dir() {
            self.detach_filter(program, ifname)?;
            fs::remove_dir(&path).map_err(|source| DatapathError::Io {
                action: "remove",
                path,
                source,
            })?;
            return Ok(true);
        }
        remove_pin(&path)
    }

    /// The devices `program` has a pinned link on.
    pub fn pinned_devices(&self, program: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.layout.links_dir(program))
            .map(|dir| {
                dir.filter_map(|entry| Some(unescape_pin_name(&entry.ok()?.file_name().into_string().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// True when `program` is attached to its hook of `ifname` in the calling thread's
    /// namespace, as the kernel says (not only as the pins say).
    pub async fn runs_on(&self, node: &crate::netlink::Netlink, program: &str, ifname: &str) -> bool {
        let Some(id) = self.program_id(program) else {
            return false;
        };
        match self.attachment(program, ifname) {
            Some(Attachment::TcFilter) => {
                let Ok(Some(link)) = node.link_by_name(ifname).await else {
                    return false;
                };
                node.bpf_filter_programs(link.index, !program_name::is_egress(program))
                    .await
                    .is_ok_and(|ids| ids.contains(&id))
            }
            _ => SchedClassifier::query_tcx(ifname, hook(program))
                .is_ok_and(|(_, programs)| programs.iter().any(|attached| attached.id() == id)),
        }
    }
}

fn hook(program: &str) -> TcAttachType {
    if program_name::is_egress(program) {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

fn link_error(program: &str, ifname: &str, source: aya::programs::links::LinkError) -> DatapathError {
    DatapathError::Link {
        program: program.to_owned(),
        ifname: ifname.to_owned(),
        source: Box::new(source),
    }
}

/// A device that lost a program it should run (another tool removed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detached {
    /// A pod's host veth without its `from_pod` or `to_pod`.
    Pod { ifname: String },
    /// The uplink without `program`.
    Uplink { ifname: String, program: &'static str },
}

impl std::fmt::Display for Detached {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detached::Pod { ifname } => write!(out, "host veth {ifname} has lost its programs"),
            Detached::Uplink { ifname, program } => write!(out, "uplink {ifname} has lost {program}"),
        }
    }
}

impl Datapath {
    /// The devices whose programs are not (all) attached, as the kernel says: pods' host
    /// veths that still exist, and the uplink the node's settings name.
    pub async fn detached(&self, node: &crate::netlink::Netlink) -> Result<Vec<Detached>, DatapathError> {
        let mut missing = Vec::new();
        let from_pod = self.program_id(program_name::FROM_POD);
        let to_pod = self.program_id(program_name::TO_POD);
        for (endpoint, _) in self.endpoints()? {
            let Some(link) = node.link_by_index(endpoint.ifindex).await? else {
                // Gone with its pod; the next DEL, GC or sweep forgets it.
                continue;
            };
            let ingress = node.bpf_filter_programs(link.index, true).await?;
            let egress = node.bpf_filter_programs(link.index, false).await?;
            let attached = from_pod.is_some_and(|id| ingress.contains(&id))
                && to_pod.is_some_and(|id| egress.contains(&id));
            if !attached {
                missing.push(Detached::Pod { ifname: link.name });
            }
        }
        let settings = self.node_config()?;
        if settings.flags & flatbridge_common::NODE_ENABLED != 0
            && settings.uplink_ifindex != 0
            && let Some(uplink) = node.link_by_index(settings.uplink_ifindex).await?
        {
            for program in program_name::UPLINK {
                if !self.runs_on(node, program, &uplink.name).await {
                    missing.push(Detached::Uplink {
                        ifname: uplink.name.clone(),
                        program,
                    });
                }
            }
        }
        Ok(missing)
    }

    /// Attaches `program` to `ifname` unless the kernel runs it there already; returns how,
    /// when it attached. Under the lock on the network's pin directory, so that concurrent
    /// ADDs (or the agent) that all find it missing attach it once: a second TCX attach of the
    /// same program would fail with EEXIST.
    pub async fn ensure_attached(
        &self,
        node: &crate::netlink::Netlink,
        program: &'static str,
        ifname: &str,
    ) -> Result<Option<Attachment>, DatapathError> {
        let _lock = lock_dir(self.layout.dir())?;
        if self.runs_on(node, program, ifname).await {
            return Ok(None);
        }
        self.attach(program, ifname).map(Some)
    }

    /// Attaches again what [`Datapath::detached`] found missing.
    pub fn reattach(&self, detached: &Detached) -> Result<(), DatapathError> {
        match detached {
            Detached::Pod { ifname } => self.attach_pod(ifname),
            // Under the lock ADD's `ensure_attached` takes: never a second TCX attach.
            Detached::Uplink { ifname, program } => {
                let _lock = lock_dir(self.layout.dir())?;
                self.attach(program, ifname).map(drop)
            }
        }
    }
}

/// Deletes `program`'s clsact filter in the slot `options` names from `ifname`; a device or
/// filter that is gone already is fine.
fn detach_filter_in(program: &str, ifname: &str, options: &NlOptions) -> Result<(), DatapathError> {
    let name = program_name::ALL
        .into_iter()
        .find(|known| *known == program)
        .unwrap_or("(unknown)");
    let link =
        match SchedClassifierLink::attached(ifname, hook(program), options.priority, options.handle, None) {
            Ok(link) => link,
            // The device is gone, and its filters with it.
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(error) => {
                return Err(program_error(
                    "find the filter of",
                    name,
                    aya::programs::ProgramError::from(TcError::IoError(error)),
                ));
            }
        };
    match link.detach() {
        Ok(()) => Ok(()),
        // Removed already (by hand, or with the qdisc).
        Err(aya::programs::ProgramError::NetlinkError(error))
            if matches!(
                error.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(program_error("detach the filter of", name, error)),
    }
}
