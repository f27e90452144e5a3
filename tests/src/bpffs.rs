//! A private BPF filesystem per test: its own instance, mounted under
//! /run/flatbridge-tests/, so that every pin a test makes disappears when the test ends
//! (unmounting drops the pins, and with them the maps, programs and TCX links).
use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::unique_name;

/// Directory holding the mount points of the tests' BPF filesystems.
pub const MOUNT_BASE: &str = "/run/flatbridge-tests";

pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    pub fn new(tag: &str) -> Self {
        let path = Path::new(MOUNT_BASE).join(unique_name(tag));
        fs::create_dir_all(&path).expect("create bpffs mount point");
        mount(Some("bpf"), &path, Some("bpf"), MsFlags::empty(), None::<&str>).expect("mount bpffs");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        unmount(&self.path);
    }
}

/// Unmounts (lazily, so open pins do not block it) and removes the mount point.
pub fn unmount(path: &Path) {
    if let Err(error) = umount2(path, MntFlags::MNT_DETACH) {
        eprintln!("warning: could not unmount {}: {error}", path.display());
    }
    let _ = fs::remove_dir(path);
}
