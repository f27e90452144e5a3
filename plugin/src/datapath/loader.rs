//! Loads the embedded eBPF object once per network and node and pins its maps and programs
//! (see [`super::pins`] for where).
//!
//! The plugin is a short-lived process: everything it sets up must outlive it, so maps and
//! programs are pinned, and attachments are pinned links or tc filters (see
//! [`super::attach`]). A node that runs programs of another build (a plugin upgrade) gets the
//! new programs on the next call: the object is loaded again over the same pinned maps, and
//! every attachment is switched to the new program atomically, without a moment in which a
//! device has no program.
use std::{
    fs::{self, File},
    io,
    path::Path,
};

use aya::{EbpfLoader, programs::SchedClassifier};
use flatbridge_common::{ABI_VERSION, PIN_DIR, map_name, program_name};
use nix::fcntl::Flock;

use super::{
    BPF_OBJECT, BPF_OBJECT_HASH, DatapathError,
    pins::{PinLayout, bpffs_usable, create_dir, ensure_bpffs, lock_dir, remove_pin, unescape_pin_name},
};

/// The loaded datapath of one network, found through its pins.
#[derive(Debug)]
pub struct Datapath {
    pub(super) layout: PinLayout,
    pub(super) network: String,
    /// The inject program, once a frame was sent (see `inject`).
    pub(super) inject: std::sync::OnceLock<std::os::fd::OwnedFd>,
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
            inject: std::sync::OnceLock::new(),
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
            inject: std::sync::OnceLock::new(),
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
        bpffs_usable(bpf_root)?;
        load_each(&mut EbpfLoader::new(), |_, _| Ok(()))
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
        load_each(&mut loader, |program, name| {
            // Devices attached to an older build switch to this one atomically.
            self.switch_attachments(program, name)?;
            let path = self.layout.program(name);
            // A pin of an older build, or of a process that died half-way, is replaced.
            remove_pin(&path)?;
            program
                .pin(&path)
                .map_err(|source| DatapathError::Pin { path, source })
        })?;
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

    /// The id of a pinned program, as `bpftool prog show` prints it.
    pub fn program_id(&self, program: &str) -> Option<u32> {
        // Not through aya's `from_pin`: see `sys`.
        super::sys::pinned_program_id(&self.layout.program(program)).ok()
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

pub(super) fn program_error(
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

/// Loads the embedded object with `loader` and each of its programs into the kernel, then
/// hands each loaded program to `then`.
fn load_each(
    loader: &mut EbpfLoader<'_>,
    mut then: impl FnMut(&mut SchedClassifier, &'static str) -> Result<(), DatapathError>,
) -> Result<(), DatapathError> {
    let mut ebpf = loader
        .load(BPF_OBJECT)
        .map_err(|error| DatapathError::Load(Box::new(error)))?;
    for name in program_name::ALL.into_iter().chain([program_name::INJECT]) {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|error| program_error("load", name, error))?;
        load_program(program, name)?;
        then(program, name)?;
    }
    Ok(())
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
