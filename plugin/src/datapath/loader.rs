//! Loads the embedded eBPF object once per network and node, pins its maps, programs and
//! TCX links under `<bpf_root>/flatbridge/<network>/`, and attaches programs to devices.
//!
//! The plugin is a short-lived process: everything it sets up must outlive it. Maps and
//! programs are pinned; each attachment is a TCX link, and a TCX link lives as long as its
//! pin does, so removing the pin is how a program is detached.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
    },
};
use flatbridge_common::{PIN_DIR, map_name, program_name};
use nix::{
    fcntl::{Flock, FlockArg},
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::{BPF_OBJECT, DatapathError};

/// Every map of the object; each is pinned by name in the network's directory, and a map
/// already pinned there is reused, so counters and endpoints survive a reload.
const MAPS: [&str; 1] = [map_name::COUNTERS];

/// Every program of the object.
const PROGRAMS: [&str; 1] = [program_name::FROM_POD];

/// Where a program is attached on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// The pin paths of one network on one node:
/// `<root>/flatbridge/<network>/<map>`, `.../progs/<program>`, `.../links/<ifname>@<hook>`.
#[derive(Clone, Debug)]
pub struct PinLayout {
    dir: PathBuf,
}

impl PinLayout {
    /// `network` must already be validated as a CNI network name (no `/`, no `..`).
    pub fn new(bpf_root: &Path, network: &str) -> Self {
        Self {
            dir: bpf_root.join(PIN_DIR).join(network),
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

    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn link(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.links_dir()
            .join(format!("{}@{}", escape_pin_name(ifname), hook.name()))
    }
}

/// bpffs refuses names containing a dot, which interface names may have (`bond0.100`):
/// percent-escape it, and the escape character itself, so distinct names stay distinct.
fn escape_pin_name(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2e")
}

/// Makes sure `bpf_root` is a BPF filesystem, mounting one when it is not (as on a node
/// where nothing mounted /sys/fs/bpf yet).
pub fn ensure_bpffs(bpf_root: &Path) -> Result<(), DatapathError> {
    let bpffs_error = |source| DatapathError::Bpffs {
        path: bpf_root.to_path_buf(),
        source,
    };
    fs::create_dir_all(bpf_root).map_err(bpffs_error)?;
    let fs = statfs(bpf_root).map_err(|errno| bpffs_error(errno.into()))?;
    if fs.filesystem_type() == BPF_FS_MAGIC {
        return Ok(());
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

/// The loaded datapath of one network, found through its pins.
#[derive(Debug)]
pub struct Datapath {
    layout: PinLayout,
    network: String,
}

impl Datapath {
    /// Loads and pins the object unless a previous call already did. Concurrent callers
    /// (many first ADDs at once) are serialised by a lock on the network's pin directory.
    pub fn ensure_loaded(bpf_root: &Path, network: &str) -> Result<Self, DatapathError> {
        ensure_bpffs(bpf_root)?;
        let layout = PinLayout::new(bpf_root, network);
        for dir in [layout.dir().join("progs"), layout.links_dir()] {
            fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
                action: "create pin directory",
                path: dir.clone(),
                source,
            })?;
        }
        let _lock = lock_dir(layout.dir())?;
        let datapath = Self {
            layout,
            network: network.to_owned(),
        };
        if !datapath.is_loaded() {
            datapath.load()?;
        }
        Ok(datapath)
    }

    /// Opens an already loaded datapath without loading anything.
    pub fn open(bpf_root: &Path, network: &str) -> Result<Self, DatapathError> {
        let datapath = Self {
            layout: PinLayout::new(bpf_root, network),
            network: network.to_owned(),
        };
        if datapath.is_loaded() {
            Ok(datapath)
        } else {
            Err(DatapathError::NotLoaded {
                network: network.to_owned(),
                path: datapath.layout.program(PROGRAMS[0]),
            })
        }
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    fn is_loaded(&self) -> bool {
        PROGRAMS
            .iter()
            .all(|program| self.layout.program(program).exists())
    }

    fn load(&self) -> Result<(), DatapathError> {
        let mut loader = EbpfLoader::new();
        for map in MAPS {
            loader.map_pin_path(map, self.layout.map(map));
        }
        let mut ebpf = loader
            .load(BPF_OBJECT)
            .map_err(|error| DatapathError::Load(Box::new(error)))?;
        for name in PROGRAMS {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?
                .try_into()
                .map_err(|error| program_error("load", name, error))?;
            program
                .load()
                .map_err(|error| program_error("load", name, error))?;
            let path = self.layout.program(name);
            // A pin left by a process that died half-way through loading is replaced.
            remove_pin(&path)?;
            program
                .pin(&path)
                .map_err(|source| DatapathError::Pin { path, source })?;
        }
        log::info!(
            "loaded the eBPF datapath of network {} into {:?}",
            self.network,
            self.layout.dir()
        );
        Ok(())
    }

    /// Attaches `program` to `hook` of the device `ifname` in the calling thread's network
    /// namespace and pins the link, so it stays attached after this process exits.
    /// Attaching again replaces the previous attachment.
    pub fn attach(&self, program: &'static str, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let mut classifier = SchedClassifier::from_pin(self.layout.program(program))
            .map_err(|error| program_error("open pinned", program, error))?;
        let link_id = classifier
            .attach_with_options(
                ifname,
                hook.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|error| program_error("attach over TCX", program, error))?;
        let link: FdLink = classifier
            .take_link(link_id)
            .map_err(|error| program_error("take the link of", program, error))?
            .try_into()
            .map_err(|source| DatapathError::Link {
                program,
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;
        let path = self.layout.link(ifname, hook);
        remove_pin(&path)?;
        link.pin(&path)
            .map_err(|source| DatapathError::Pin { path, source })?;
        Ok(())
    }

    /// Detaches whatever this network attached to `hook` of `ifname`. Returns false when
    /// nothing was attached.
    pub fn detach(&self, ifname: &str, hook: Hook) -> Result<bool, DatapathError> {
        remove_pin(&self.layout.link(ifname, hook))
    }

    /// True when this network has a live attachment on `hook` of `ifname`.
    pub fn is_attached(&self, ifname: &str, hook: Hook) -> bool {
        PinnedLink::from_pin(self.layout.link(ifname, hook)).is_ok()
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
            layout.link("bond0.100", Hook::Ingress),
            Path::new("/sys/fs/bpf/flatbridge/data/links/bond0%2e100@ingress")
        );
        assert_ne!(
            layout.link("a%2eb", Hook::Egress),
            layout.link("a.b", Hook::Egress)
        );
    }
}
