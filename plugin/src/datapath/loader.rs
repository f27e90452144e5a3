//! Loads the embedded eBPF object once per network and node, pins its maps, programs and
//! TCX links under `<bpf_root>/flatbridge/<network>/`, and attaches programs to devices.
//!
//! The plugin is a short-lived process: everything it sets up must outlive it. Maps and
//! programs are pinned. Pods' programs are clsact filters (see [`Datapath::attach_pod`]).
//! The uplink's are TCX links where the kernel has TCX (6.6+): a TCX link lives as long as
//! its pin does, so removing the pin is how a program is detached. Where it has not, they
//! are clsact filters too, with a handle of the network's own, recorded by a directory in
//! place of the link's pin; removing the filter and the directory detaches them.
//!
//! A node that runs programs of another build (a plugin upgrade) gets the new programs on
//! the next call: the object is loaded again over the same pinned maps, and every pinned
//! link is switched to the new program atomically (`BPF_LINK_UPDATE`), every filter
//! replaced in place, without a moment in which a device has no program.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, Link, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle, qdisc_add_clsact},
    },
};
use flatbridge_common::{ABI_VERSION, PIN_DIR, map_name, program_name};
use nix::{
    fcntl::{Flock, FlockArg},
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::{BPF_OBJECT, BPF_OBJECT_HASH, DatapathError};

/// The pin paths of one network on one node:
/// `<root>/flatbridge/<network>/<map>`, `.../progs/<program>`,
/// `.../links/<program>/<ifname>`, and `.../build-<hash>`, which says which build of the
/// programs is loaded.
#[derive(Clone, Debug)]
pub struct PinLayout {
    dir: PathBuf,
}

impl PinLayout {
    /// `network` must already be validated as a CNI network name (no `/`, no `..`); its
    /// dots are escaped, as bpffs refuses them.
    pub fn new(bpf_root: &Path, network: &str) -> Self {
        Self {
            dir: bpf_root.join(PIN_DIR).join(escape_pin_name(network)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join("progs").join(name)
    }

    pub fn links_dir(&self, program: &str) -> PathBuf {
        self.dir.join("links").join(program)
    }

    pub fn link(&self, program: &str, ifname: &str) -> PathBuf {
        self.links_dir(program).join(escape_pin_name(ifname))
    }

    /// What the markers named `<prefix><value>` in the directory say (`build-`, `abi-`).
    pub fn markers(&self, prefix: &str) -> Vec<String> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_prefix(prefix)
                    .map(str::to_owned)
            })
            .collect()
    }

    fn build_marker(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("build-{hash}"))
    }

    fn abi_marker(&self, version: u32) -> PathBuf {
        self.dir.join(format!("abi-{version}"))
    }
}

/// bpffs refuses names containing a dot, which interface names may have (`bond0.100`):
/// percent-escape it, and the escape character itself, so distinct names stay distinct.
fn escape_pin_name(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2e")
}

fn unescape_pin_name(name: &str) -> String {
    name.replace("%2e", ".").replace("%25", "%")
}

/// Where flatbridge mounts a BPF filesystem itself when there is none: anywhere else
/// `bpfRoot` must already be one (a config must not make the plugin mount over any path).
const BPFFS_MOUNT_ROOT: &str = "/sys/fs/bpf";

/// Makes sure `bpf_root` is a BPF filesystem, mounting one when it is not (as on a node
/// where nothing mounted /sys/fs/bpf yet): only at or under /sys/fs/bpf, and never over a
/// directory that holds anything.
pub fn ensure_bpffs(bpf_root: &Path) -> Result<(), DatapathError> {
    let bpffs_error = |source| DatapathError::Bpffs {
        path: bpf_root.to_path_buf(),
        source,
    };
    if let Ok(fs) = statfs(bpf_root)
        && fs.filesystem_type() == BPF_FS_MAGIC
    {
        return Ok(());
    }
    if !bpf_root.starts_with(BPFFS_MOUNT_ROOT) {
        return Err(bpffs_error(io::Error::other(format!(
            "it is not a BPF filesystem, and flatbridge mounts one only at or under {BPFFS_MOUNT_ROOT}"
        ))));
    }
    fs::create_dir_all(bpf_root).map_err(bpffs_error)?;
    let fs = statfs(bpf_root).map_err(|errno| bpffs_error(errno.into()))?;
    if fs.filesystem_type() == BPF_FS_MAGIC {
        return Ok(());
    }
    if fs::read_dir(bpf_root).map_err(bpffs_error)?.next().is_some() {
        return Err(bpffs_error(io::Error::other(
            "it is not a BPF filesystem and not empty: refusing to mount one over it",
        )));
    }
    mount(
        Some("bpf"),
        bpf_root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| bpffs_error(errno.into()))
}

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

/// Whether the kernel has TCX (6.6+), asked of the kernel: a TCX query of the loopback
/// device fails with EINVAL where it has not. (Test builds can pretend it has not, see
/// `fault::kernel_lacks`.)
pub fn has_tcx() -> bool {
    if crate::cmd::fault::kernel_lacks("tcx") {
        return false;
    }
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok()
}

/// The loaded datapath of one network, found through its pins.
#[derive(Debug)]
pub struct Datapath {
    layout: PinLayout,
    network: String,
}

impl Datapath {
    /// Loads and pins the object unless this build is loaded already. Concurrent callers
    /// (many first ADDs at once) are serialised by a lock on the network's pin directory.
    /// Returns whether this call loaded it.
    pub fn ensure_loaded(bpf_root: &Path, network: &str) -> Result<(Self, bool), DatapathError> {
        ensure_bpffs(bpf_root)?;
        let datapath = Self {
            layout: PinLayout::new(bpf_root, network),
            network: network.to_owned(),
        };
        let progs = datapath.layout.dir().join("progs");
        create_dir(&progs)?;
        let _lock = lock_dir(datapath.layout.dir())?;
        let load = !datapath.is_loaded();
        if load {
            datapath.load()?;
        }
        Ok((datapath, load))
    }

    /// Opens an already loaded datapath without loading anything.
    pub fn open(bpf_root: &Path, network: &str) -> Result<Self, DatapathError> {
        let datapath = Self {
            layout: PinLayout::new(bpf_root, network),
            network: network.to_owned(),
        };
        if datapath.has_programs() {
            Ok(datapath)
        } else {
            Err(DatapathError::NotLoaded {
                network: network.to_owned(),
                path: datapath.layout.program(program_name::FROM_POD),
            })
        }
    }

    /// The networks with a datapath under `bpf_root`.
    pub fn networks(bpf_root: &Path) -> Vec<String> {
        let mut networks: Vec<String> = fs::read_dir(bpf_root.join(PIN_DIR))
            .map(|dir| {
                dir.filter_map(|entry| Some(unescape_pin_name(&entry.ok()?.file_name().into_string().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        networks.sort();
        networks
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// Serialises changes of the node's datapath state — every network's settings and who
    /// holds what — between concurrent plugin calls; held until the returned guard drops.
    /// One lock for all networks of the BPF root (its pin directory): the networks on one
    /// bridge share an L2, so one's checks read the others' state. Held only for map
    /// updates, never while a program loads. Not re-entrant: take it once per call.
    pub fn lock(&self) -> Result<Flock<File>, DatapathError> {
        lock_dir(self.layout.dir().parent().unwrap_or(self.layout.dir()))
    }

    /// The same lock, taken without a datapath at hand; `None` when no network has a
    /// datapath under `bpf_root` (there is nothing to serialise with).
    pub fn lock_node(bpf_root: &Path) -> Result<Option<Flock<File>>, DatapathError> {
        let dir = bpf_root.join(PIN_DIR);
        match fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => lock_dir(&dir).map(Some),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DatapathError::Io {
                action: "stat",
                path: dir,
                source,
            }),
        }
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    fn has_programs(&self) -> bool {
        program_name::ALL
            .iter()
            .all(|program| self.layout.program(program).exists())
    }

    /// Whether an ADD could load this build's programs on this node: the BPF filesystem is
    /// there (or can be mounted) and the kernel takes the object (its verifier, BTF, map
    /// types). Loads nothing that outlives the call and pins nothing.
    pub fn probe(bpf_root: &Path) -> Result<(), DatapathError> {
        let on_bpffs = statfs(bpf_root).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
        if !on_bpffs {
            let mountable = bpf_root.starts_with(BPFFS_MOUNT_ROOT)
                && fs::read_dir(bpf_root).map_or(true, |mut dir| dir.next().is_none());
            if !mountable {
                return Err(DatapathError::Bpffs {
                    path: bpf_root.to_path_buf(),
                    source: io::Error::other("it is not a BPF filesystem, and one cannot be mounted there"),
                });
            }
        }
        let mut ebpf = EbpfLoader::new()
            .load(BPF_OBJECT)
            .map_err(|error| DatapathError::Load(Box::new(error)))?;
        for name in program_name::ALL {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?
                .try_into()
                .map_err(|error| program_error("load", name, error))?;
            load_program(program, name)?;
        }
        Ok(())
    }

    /// True when the programs of this very build are pinned.
    pub fn is_loaded(&self) -> bool {
        self.has_programs() && self.layout.build_marker(BPF_OBJECT_HASH).exists()
    }

    /// Maps pinned with another layout cannot be reused: say so rather than load programs
    /// that would misread them.
    fn check_abi(&self) -> Result<(), DatapathError> {
        let pinned = self.layout.markers("abi-");
        let has_maps = map_name::ALL.iter().any(|map| self.layout.map(map).exists());
        match pinned.as_slice() {
            [] if !has_maps => create_dir(&self.layout.abi_marker(ABI_VERSION)),
            [found] if *found == ABI_VERSION.to_string() => Ok(()),
            _ => Err(DatapathError::IncompatibleMaps {
                dir: self.layout.dir().to_path_buf(),
                found: if pinned.is_empty() {
                    "unknown".into()
                } else {
                    pinned.join(",")
                },
                expected: ABI_VERSION,
            }),
        }
    }

    fn load(&self) -> Result<(), DatapathError> {
        self.check_abi()?;
        let mut loader = EbpfLoader::new();
        for map in map_name::ALL {
            loader.map_pin_path(map, self.layout.map(map));
        }
        let mut ebpf = loader
            .load(BPF_OBJECT)
            .map_err(|error| DatapathError::Load(Box::new(error)))?;
        for name in program_name::ALL {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?
                .try_into()
                .map_err(|error| program_error("load", name, error))?;
            load_program(program, name)?;
            // Devices attached to an older build switch to this one atomically: host veths
            // by replacing their filter, the uplink by updating its link.
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
            for ifname in self.attached(name) {
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
            let path = self.layout.program(name);
            // A pin of an older build, or of a process that died half-way, is replaced.
            remove_pin(&path)?;
            program
                .pin(&path)
                .map_err(|source| DatapathError::Pin { path, source })?;
        }
        for entry in fs::read_dir(self.layout.dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("build-") {
                let _ = fs::remove_dir(entry.path());
            }
        }
        create_dir(&self.layout.build_marker(BPF_OBJECT_HASH))?;
        log::info!(
            "loaded build {BPF_OBJECT_HASH} of the eBPF datapath of network {} into {}",
            self.network,
            self.layout.dir().display()
        );
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
        if !has_tcx() {
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
        let options = uplink_filter(&self.network);
        let link = match SchedClassifierLink::attached(
            ifname,
            hook(program),
            options.priority,
            options.handle,
            None,
        ) {
            Ok(link) => link,
            // The device is gone, and its filters with it.
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(error) => {
                return Err(program_error(
                    "find the filter of",
                    "uplink",
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
            Err(error) => Err(program_error("detach the filter of", "uplink", error)),
        }
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
        for (program, hook) in POD_PROGRAMS {
            let mut classifier = SchedClassifier::from_pin(self.layout.program(program))
                .map_err(|error| program_error("open pinned", program, error))?;
            let link_id = classifier
                .attach_with_options(ifname, hook, TcAttachOptions::Netlink(pod_filter()))
                .map_err(|error| program_error("attach as a tc filter", program, error))?;
            // Dropping the handle would delete the filter; it must outlive this process.
            std::mem::forget(
                classifier
                    .take_link(link_id)
                    .map_err(|error| program_error("take the link of", program, error))?,
            );
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

    /// The id of a pinned program, as `bpftool prog show` prints it.
    pub fn program_id(&self, program: &str) -> Option<u32> {
        let pinned = SchedClassifier::from_pin(self.layout.program(program)).ok()?;
        pinned.info().ok().map(|info| info.id())
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
    pub fn attached(&self, program: &str) -> Vec<String> {
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
    pub async fn is_attached(&self, node: &crate::netlink::Netlink, program: &str, ifname: &str) -> bool {
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

    /// Detaches every program and removes every pin of this network.
    pub fn remove(self) -> Result<(), DatapathError> {
        fs::remove_dir_all(self.layout.dir()).map_err(|source| DatapathError::Io {
            action: "remove",
            path: self.layout.dir().to_path_buf(),
            source,
        })
    }
}

fn hook(program: &str) -> TcAttachType {
    if program_name::is_egress(program) {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

fn create_dir(dir: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        action: "create pin directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, DatapathError> {
    let io_error = |source| DatapathError::Io {
        action: "lock",
        path: dir.to_path_buf(),
        source,
    };
    let file = File::open(dir).map_err(io_error)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_error(errno.into()))
}

/// Removes a pin; returns whether there was one.
fn remove_pin(path: &Path) -> Result<bool, DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DatapathError::Io {
            action: "remove pin",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn program_error(
    action: &'static str,
    program: &'static str,
    error: impl Into<aya::programs::ProgramError>,
) -> DatapathError {
    DatapathError::Program {
        action,
        program,
        source: Box::new(error.into()),
    }
}

fn link_error(program: &str, ifname: &str, source: aya::programs::links::LinkError) -> DatapathError {
    DatapathError::Link {
        program: program.to_owned(),
        ifname: ifname.to_owned(),
        source: Box::new(source),
    }
}

/// Loads `program`, again when the verifier gave up because a signal came in (EAGAIN: it
/// stops on a pending signal; a runtime or a busy test harness sends those), as libbpf
/// does, up to five times.
fn load_program(program: &mut SchedClassifier, name: &'static str) -> Result<(), DatapathError> {
    let mut attempts = 5;
    loop {
        match program.load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts > 1 =>
            {
                attempts -= 1;
                log::debug!("{name}: the verifier was interrupted ({io_error}), loading it again");
            }
            Err(error) => return Err(program_error("load", name, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_layout_is_per_network_and_link_names_have_no_dots() {
        let layout = PinLayout::new(Path::new("/sys/fs/bpf"), "data");
        assert_eq!(
            layout.map("counters"),
            Path::new("/sys/fs/bpf/flatbridge/data/counters")
        );
        assert_eq!(
            layout.program("from_pod"),
            Path::new("/sys/fs/bpf/flatbridge/data/progs/from_pod")
        );
        assert_eq!(
            layout.link("from_uplink", "bond0.100"),
            Path::new("/sys/fs/bpf/flatbridge/data/links/from_uplink/bond0%2e100")
        );
        assert_ne!(layout.link("from_pod", "a%2eb"), layout.link("from_pod", "a.b"));
        assert_eq!(
            PinLayout::new(Path::new("/sys/fs/bpf"), "data.v1").dir(),
            Path::new("/sys/fs/bpf/flatbridge/data%2ev1")
        );
        for name in ["bond0.100", "a%2eb", "eth0", "x.%.y"] {
            assert_eq!(unescape_pin_name(&escape_pin_name(name)), name);
        }
    }
}
