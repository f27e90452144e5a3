//! Where a network's datapath lives in bpffs: its maps, programs, links and markers under
//! `<bpf_root>/flatbridge/<network>/`, the bpffs itself, and the locks on those directories.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use flatbridge_common::PIN_DIR;

use super::DatapathError;

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

    pub(super) fn build_marker(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("build-{hash}"))
    }

    pub(super) fn abi_marker(&self, version: u32) -> PathBuf {
        self.dir.join(format!("abi-{version}"))
    }
}

/// bpffs refuses names containing a dot, which interface names may have (`bond0.100`):
/// percent-escape it, and the escape character itself, so distinct names stay distinct.
pub(super) fn escape_pin_name(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2e")
}

pub(super) fn unescape_pin_name(name: &str) -> String {
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

/// Whether `bpf_root` is a BPF filesystem or one could be mounted there by
/// [`ensure_bpffs`], without mounting it.
pub(super) fn bpffs_usable(bpf_root: &Path) -> Result<(), DatapathError> {
    let on_bpffs = statfs(bpf_root).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC);
    let mountable = bpf_root.starts_with(BPFFS_MOUNT_ROOT)
        && fs::read_dir(bpf_root).map_or(true, |mut dir| dir.next().is_none());
    if on_bpffs || mountable {
        return Ok(());
    }
    Err(DatapathError::Bpffs {
        path: bpf_root.to_path_buf(),
        source: io::Error::other("it is not a BPF filesystem, and one cannot be mounted there"),
    })
}

pub(super) fn create_dir(dir: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        action: "create pin directory",
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn lock_dir(dir: &Path) -> Result<Flock<File>, DatapathError> {
    let io_error = |source| DatapathError::Io {
        action: "lock",
        path: dir.to_path_buf(),
        source,
    };
    let file = File::open(dir).map_err(io_error)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io_error(errno.into()))
}

/// Removes a pin; returns whether there was one.
pub(super) fn remove_pin(path: &Path) -> Result<bool, DatapathError> {
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
