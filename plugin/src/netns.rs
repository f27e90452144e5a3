//! The only place in the crate that changes network namespace. `setns(CLONE_NEWNET)`
//! changes the namespace of the calling thread only, so everything that runs inside the
//! closure must stay on this thread (no thread pools, no multi-threaded runtimes).
use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("failed to open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

impl NetnsError {
    /// True when the namespace itself is gone, which DEL treats as success.
    pub fn is_missing(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// An open handle on a network namespace, usable long after the path that named it is
/// gone (a runtime may unmount `/run/netns/x` while we still hold the file).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` with the calling thread inside this namespace and returns to the original
    /// namespace afterwards, also when `f` panics.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let _guard = self.enter()?;
        Ok(f())
    }

    fn enter(&self) -> Result<Restore, NetnsError> {
        let original = Netns::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })?;
        Ok(Restore { original })
    }
}

/// Puts the thread back into its original namespace when dropped.
struct Restore {
    original: Netns,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(error) = setns(self.original.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread left in the wrong namespace would configure the wrong host: stop here.
            log::error!(
                "cannot return to network namespace {:?}: {error}",
                self.original.path
            );
            std::process::abort();
        }
    }
}
