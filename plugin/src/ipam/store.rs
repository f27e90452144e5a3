//! Where leases live. [`DiskStore`] is host-local's layout: in `<dataDir>/<network>/`, one
//! file per leased address named by the address and holding `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.<set>` with the last address handed out per range set, and `lock`,
//! flock()ed by every writer (ours and the reference plugin's alike).
//!
//! Durability: as host-local, nothing is fsynced. Only a node crash loses the page cache,
//! and it ends every pod of the node; what it can leave (a lost release, an empty lease)
//! belongs to no attachment and is freed by GC. An fsync per call cost 0.2 ms to well over
//! 100 ms here (each forces a journal commit).
//! [`MemoryStore`] is the same contract in memory, for tests.
use std::{
    collections::BTreeMap,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

use super::IpamError;

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";
/// Longer than any sane ADD holds the lock; past it the runtime gets "try again later".
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub container_id: String,
    /// Empty for leases written by host-local versions that recorded only the ID.
    pub ifname: String,
}

/// The owner recorded for an address someone else on the wire answered for: it stays
/// reserved (host-local skips it too) until an operator removes the file.
const CONFLICT_PREFIX: &str = "flatbridge-conflict-";

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Self {
            container_id: container_id.trim().to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    /// The marker for an address that the host with `mac` answered for.
    pub fn conflict(mac: [u8; 6]) -> Self {
        let mac: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        Self::new(&format!("{CONFLICT_PREFIX}{mac}"), "")
    }

    /// The MAC of the host that answered, when this is a conflict marker.
    pub fn conflicting_mac(&self) -> Option<String> {
        let hex = self.container_id.strip_prefix(CONFLICT_PREFIX)?;
        let bytes: Vec<&str> = (0..hex.len())
            .step_by(2)
            .filter_map(|at| hex.get(at..at + 2))
            .collect();
        Some(bytes.join(":"))
    }

    fn encode(&self) -> String {
        format!("{}{LINE_BREAK}{}", self.container_id, self.ifname)
    }

    fn decode(text: &str) -> Self {
        let text = text.trim();
        match text.split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner::new(id, ifname),
            None => Owner::new(text, ""),
        }
    }

    /// True when this lease belongs to `who`; an ID-only lease belongs to any interface
    /// of its container, as host-local treats it.
    pub fn matches(&self, who: &Owner) -> bool {
        self.container_id == who.container_id && (self.ifname == who.ifname || self.ifname.is_empty())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The operations the allocator needs; every call happens under the store's lock.
pub trait Store {
    /// Records `ip` for `owner` unless it is taken; returns whether it was free.
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, range_set: usize) -> Result<bool, IpamError>;
    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;
    /// Removes one lease.
    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError>;
    /// Records `owner` for `ip`, whoever held it.
    fn set(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError>;
    /// Every lease, by address.
    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError>;
}

/// host-local's on-disk store, locked for as long as it is open.
pub struct DiskStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl DiskStore {
    /// Opens (creating it if needed) `<data_dir>/<network>` and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(|source| io_error("create", dir, source))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| io_error("open", &lock_path, source))?;
        let lock = lock_with_timeout(file, &lock_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates lease `name` holding `content` unless it exists (O_EXCL: the exclusion
    /// among concurrent allocators on top of the lock). Returns false when it existed.
    ///
    /// Not fsynced, like host-local's: only a node crash loses the page cache, and it takes
    /// every pod of the node with it; a lease it loses belongs to nobody any more, and one
    /// it leaves empty belongs to no attachment, so GC releases it. An fsync costs every ADD
    /// 0.2 ms here, and over 100 ms whenever the disk is busy.
    fn create_lease(&self, name: &str, content: &str) -> Result<bool, IpamError> {
        let path = self.dir.join(name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(io_error("create", &path, source)),
        };
        if let Err(source) = file.write_all(content.as_bytes()) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(io_error("write", &path, source));
        }
        Ok(true)
    }

    /// Replaces file `name` with `content` atomically (a temporary file renamed over it), so
    /// readers see the old content or the new, never a part.
    fn replace_file(&self, name: &str, content: &str) -> Result<(), IpamError> {
        let target = self.dir.join(name);
        let temp = self.dir.join(format!(".tmp-{}-{name}", std::process::id()));
        fs::write(&temp, content)
            .and_then(|()| fs::rename(&temp, &target))
            .map_err(|source| {
                let _ = fs::remove_file(&temp);
                io_error("write", &target, source)
            })
    }

    /// Checks that the directory takes new files (for STATUS).
    pub fn check_writable(&self) -> Result<(), IpamError> {
        self.replace_file(".write-check", "")?;
        let path = self.dir.join(".write-check");
        fs::remove_file(&path).map_err(|source| io_error("remove", &path, source))
    }
}

fn lock_with_timeout(mut file: File, path: &Path) -> Result<Flock<File>, IpamError> {
    let started = Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((returned, nix::errno::Errno::EWOULDBLOCK)) => {
                if started.elapsed() > LOCK_TIMEOUT {
                    return Err(IpamError::LockTimeout {
                        path: path.to_path_buf(),
                        seconds: LOCK_TIMEOUT.as_secs(),
                    });
                }
                file = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, errno)) => return Err(io_error("lock", path, errno.into())),
        }
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> IpamError {
    IpamError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Store for DiskStore {
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, range_set: usize) -> Result<bool, IpamError> {
        if !self.create_lease(&ip.to_string(), &owner.encode())? {
            return Ok(false);
        }
        // Only a hint for the round robin: not worth an fsync.
        self.replace_file(&format!("{LAST_RESERVED_PREFIX}{range_set}"), &ip.to_string())?;
        Ok(true)
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_error("read", &path, source)),
        }
    }

    fn set(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        self.replace_file(&ip.to_string(), &owner.encode())
    }

    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        // No fsync: a release lost in a crash leaves a lease of no attachment, which GC frees.
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &path, source)),
        }
    }

    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
        read_leases(&self.dir)
    }
}

/// The leases in a host-local directory, read without taking its lock (for reports).
pub fn read_leases(dir: &Path) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
    let entries = fs::read_dir(dir).map_err(|source| io_error("list", dir, source))?;
    let mut leases = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error("list", dir, source))?;
        // Lease files are named by their address; everything else (lock, last_reserved_ip.N,
        // temporary files) is not a lease.
        let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let path = entry.path();
        match read_lease(&path) {
            Ok(text) => {
                leases.insert(ip, Owner::decode(&text));
            }
            // Released by someone else between listing and reading.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("read", &path, source)),
        }
    }
    Ok(leases)
}

/// A lease file's text. Every ADD and DEL reads all of them (to find the owner's), so this
/// is open, one read, close: no size query, no read to confirm the end (a regular file
/// that gives less than asked for has ended).
fn read_lease(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut buffer = [0; 256];
    let mut text = Vec::new();
    loop {
        let read = match file.read(&mut buffer) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        text.extend_from_slice(&buffer[..read]);
        if read < buffer.len() {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The store contract in memory, for unit tests of the allocator.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub leases: BTreeMap<IpAddr, Owner>,
    pub last: BTreeMap<usize, IpAddr>,
}

impl Store for MemoryStore {
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, range_set: usize) -> Result<bool, IpamError> {
        if self.leases.contains_key(&ip) {
            return Ok(false);
        }
        self.leases.insert(ip, owner.clone());
        self.last.insert(range_set, ip);
        Ok(true)
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        Ok(self.last.get(&range_set).copied())
    }

    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.leases.remove(&ip);
        Ok(())
    }

    fn set(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        self.leases.insert(ip, owner.clone());
        Ok(())
    }

    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
        Ok(self.leases.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("flatbridge-store-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn disk_layout_is_host_local_s() {
        let temp = TempDir::new("layout");
        let dir = temp.0.join("data");
        let mut store = DiskStore::open(&dir).expect("open");
        let ip: IpAddr = "10.10.1.1".parse().expect("ip");
        let owner = Owner::new("c0ffee", "eth0");
        assert!(store.reserve(ip, &owner, 0).expect("reserve"));
        assert!(
            !store
                .reserve(ip, &Owner::new("other", "eth0"), 0)
                .expect("reserve again")
        );
        assert_eq!(
            fs::read_to_string(dir.join("10.10.1.1")).expect("lease file"),
            "c0ffee\r\neth0"
        );
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).expect("last"),
            "10.10.1.1"
        );
        assert!(dir.join("lock").exists());
        let names: Vec<String> = fs::read_dir(&dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert!(
            !names.iter().any(|name| name.starts_with(".tmp")),
            "temporary files left: {names:?}"
        );
        assert_eq!(store.leases().expect("leases").get(&ip), Some(&owner));
        let conflict = Owner::conflict([2, 0, 0, 0, 0, 0xab]);
        store.set(ip, &conflict).expect("mark a conflict");
        assert_eq!(
            fs::read_to_string(dir.join("10.10.1.1")).expect("lease file"),
            "flatbridge-conflict-0200000000ab\r\n"
        );
        assert_eq!(
            store.leases().expect("leases")[&ip].conflicting_mac().as_deref(),
            Some("02:00:00:00:00:ab")
        );
        store.remove(ip).expect("remove");
        assert!(store.leases().expect("leases").is_empty());
        store.check_writable().expect("writable");
    }

    #[test]
    fn reads_leases_written_by_host_local() {
        let temp = TempDir::new("legacy");
        let dir = temp.0.join("data");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("10.10.1.7"), "abc\r\neth1").expect("write");
        fs::write(dir.join("10.10.1.8"), "old-id-only\n").expect("write");
        fs::write(dir.join("fd00::5"), "v6\r\neth0").expect("write");
        fs::write(dir.join("last_reserved_ip.0"), "10.10.1.8").expect("write");
        let store = DiskStore::open(&dir).expect("open");
        let leases = store.leases().expect("leases");
        assert_eq!(leases.len(), 3);
        assert_eq!(
            leases[&"10.10.1.7".parse::<IpAddr>().expect("ip")],
            Owner::new("abc", "eth1")
        );
        let legacy = &leases[&"10.10.1.8".parse::<IpAddr>().expect("ip")];
        assert!(legacy.matches(&Owner::new("old-id-only", "eth0")));
        assert_eq!(
            store.last_reserved(0).expect("last"),
            Some("10.10.1.8".parse().expect("ip"))
        );
        assert_eq!(store.last_reserved(1).expect("last"), None);
    }

    #[test]
    fn the_lock_excludes_a_second_opener_until_dropped() {
        let temp = TempDir::new("lock");
        let dir = temp.0.join("data");
        let first = DiskStore::open(&dir).expect("open");
        let lock_path = dir.join("lock");
        let other = File::open(&lock_path).expect("open lock");
        assert!(
            Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err(),
            "lock not held"
        );
        drop(first);
        let other = File::open(&lock_path).expect("open lock");
        assert!(
            Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok(),
            "lock not released"
        );
    }
}
