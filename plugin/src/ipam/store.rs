//! Where leases live. [`DiskStore`] is host-local's layout: in `<dataDir>/<network>/`, one
//! file per leased address named by the address and holding `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.<set>` with the last address handed out per range set, and `lock`,
//! flock()ed by every writer (ours and the reference plugin's alike).
//!
//! Every file is written whole or not at all: the content goes to a temporary file with an
//! unpredictable name, created with O_EXCL in the same directory, and only then gets its
//! name: a lease by RENAME_NOREPLACE (or link(2)), which fails when the name exists as
//! host-local's O_CREAT|O_EXCL does, `last_reserved_ip.N` and conflict markers by rename(2)
//! over the old file. Neither follows a symlink planted at the final or the temporary name
//! (both act on the directory entry), and a process killed at any point leaves the old file
//! or the new one, plus at worst a `.tmp-` file that the next locked listing removes.
//!
//! Leases that name nobody: an empty lease file (host-local, and flatbridge before atomic
//! writes, created the file and wrote it in two steps, so a crash between them left one),
//! and a lease name that is a symlink, a directory or anything else that is not a readable
//! regular file. Each still holds its address (host-local's O_EXCL create fails on it too,
//! so both plugins skip it); it belongs to no attachment, so no DEL releases it and GC does.
//! A lease cut short inside its ID cannot be told from an ID-only lease of an old host-local;
//! it names no live container either, so GC releases it as well.
//!
//! Durability: as host-local, nothing is fsynced. Only a node crash loses the page cache,
//! and it ends every pod of the node; what it can leave (a lost release, an empty lease)
//! belongs to no attachment and is freed by GC. An fsync per call cost 0.2 ms to well over
//! 100 ms here (each forces a journal commit).
//! [`MemoryStore`] is the same contract in memory, for tests, with failures to inject.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};

use super::IpamError;
use crate::mac::Mac;

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LINE_BREAK: &str = "\r\n";
/// Temporary files start with this (never an address, so never taken for a lease); those of
/// flatbridge before atomic writes (`.tmp-<pid>-<name>`) did too.
const TEMP_PREFIX: &str = ".tmp-";
/// Longer than any sane ADD holds the lock; past it the runtime gets "try again later".
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// More than any lease holds (a 64-character ID and a 15-character name): a lease name that
/// is a huge file or a device is read no further.
const MAX_LEASE_BYTES: usize = 4096;

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Empty for a lease that names nobody (see the module's doc).
    pub container_id: String,
    /// Empty for leases written by host-local versions that recorded only the ID.
    pub ifname: String,
}

/// The owner recorded for an address someone else on the wire answered for: it stays
/// reserved (host-local skips it too) until the conflict-retry period has passed or an
/// operator removes it (`flatbridge conflicts clear`).
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
        Self::new(&format!("{CONFLICT_PREFIX}{}", Mac(mac).to_hex()), "")
    }

    /// The MAC of the host that answered, when this is a conflict marker.
    pub fn conflicting_mac(&self) -> Option<String> {
        let hex = self.container_id.strip_prefix(CONFLICT_PREFIX)?;
        // A marker another version wrote in another shape is still a marker.
        Some(Mac::from_hex(hex).map_or_else(|| hex.to_owned(), |mac| mac.to_string()))
    }

    /// True for a lease that names nobody: empty, or not a readable file.
    pub fn is_nobody(&self) -> bool {
        self.container_id.is_empty()
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
    /// of its container, as host-local treats it. A lease of nobody belongs to no one.
    pub fn matches(&self, who: &Owner) -> bool {
        !self.is_nobody()
            && self.container_id == who.container_id
            && (self.ifname == who.ifname || self.ifname.is_empty())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_nobody() {
            return f.write_str("nobody (an empty or unreadable lease)");
        }
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The operations the allocator needs; every call happens under the store's lock.
pub trait Store {
    /// Creates the lease of `ip` for `owner` unless the address is taken (by any file of that
    /// name, whatever it is); returns whether it was free.
    fn create(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError>;
    /// Records `ip` as the address reserved last in `range_set`: host-local's round-robin hint.
    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<(), IpamError>;
    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;
    /// Removes one lease; removing none is success.
    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError>;
    /// Records `owner` for `ip`, whoever held it, as written at `at`.
    fn set(&mut self, ip: IpAddr, owner: &Owner, at: SystemTime) -> Result<(), IpamError>;
    /// When the lease of `ip` was last written (its file's mtime); `None` when there is none.
    fn written_at(&self, ip: IpAddr) -> Result<Option<SystemTime>, IpamError>;
    /// Every lease, by address.
    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError>;
}

/// How a file written by [`DiskStore::write_file`] takes its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Only when the name is free, as host-local creates a lease (O_CREAT|O_EXCL).
    New,
    /// Over whatever has the name.
    Replace,
}

/// host-local's on-disk store, locked for as long as it is open; or, from
/// [`DiskStore::peek`], a read-only view that takes no lock and writes nothing.
pub struct DiskStore {
    dir: PathBuf,
    lock: Option<Flock<File>>,
}

impl DiskStore {
    /// Opens (creating it if needed) `<data_dir>/<network>` and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(|source| io_error("create", dir, source))?;
        let lock_path = dir.join(LOCK_FILE);
        // O_NOFOLLOW: a symlink planted as `lock` would have O_CREAT create its target.
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|source| io_error("open", &lock_path, source))?;
        let lock = lock_with_timeout(file, &lock_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            lock: Some(lock),
        })
    }

    /// The store at `dir` for reading only (STATUS): no directory or lock file is created,
    /// no lock taken, no dead writer's temporary file removed, and every write fails.
    /// `None` when the directory does not exist yet.
    pub fn peek(dir: &Path) -> Result<Option<Self>, IpamError> {
        // Followed like `open` follows it: a store that is a link to a directory is one.
        match fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => Ok(Some(Self {
                dir: dir.to_path_buf(),
                lock: None,
            })),
            Ok(_) => Err(io_error(
                "use",
                dir,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            )),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_error("stat", dir, source)),
        }
    }

    fn writable(&self) -> Result<(), IpamError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(io_error(
                "write into",
                &self.dir,
                io::Error::new(io::ErrorKind::PermissionDenied, "the store was opened read-only"),
            )),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes file `name` whole or not at all (see the module's doc): `fill` writes the
    /// content into a fresh temporary file, which then takes the name as `place` says.
    /// Returns false when `place` is [`Place::New`] and the name exists; on every error the
    /// temporary file is removed and the name keeps what it had.
    ///
    /// Not fsynced, like host-local's: only a node crash loses the page cache, and it takes
    /// every pod of the node with it; a lease it loses belongs to nobody any more, and one
    /// it leaves empty belongs to no attachment, so GC releases it. An fsync costs every ADD
    /// 0.2 ms here, and over 100 ms whenever the disk is busy.
    fn write_file(
        &self,
        name: &str,
        place: Place,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<bool, IpamError> {
        self.writable()?;
        let path = self.dir.join(name);
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|source| io_error("create a temporary file in", &self.dir, source))?;
        fill(temp.as_file_mut()).map_err(|source| io_error("write", &path, source))?;
        let placed = match place {
            Place::New => temp.persist_noclobber(&path),
            Place::Replace => temp.persist(&path),
        };
        match placed {
            Ok(_) => Ok(true),
            Err(error) if place == Place::New && error.error.kind() == io::ErrorKind::AlreadyExists => {
                Ok(false)
            }
            Err(error) => Err(io_error("write", &path, error.error)),
        }
    }

    fn path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
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
    fn create(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
        self.write_file(&ip.to_string(), Place::New, |file| {
            file.write_all(owner.encode().as_bytes())
        })
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<(), IpamError> {
        // Only a hint for the round robin: not worth an fsync.
        self.write_file(
            &format!("{LAST_RESERVED_PREFIX}{range_set}"),
            Place::Replace,
            |file| file.write_all(ip.to_string().as_bytes()),
        )
        .map(drop)
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        match read_small(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            // Absent, or not a file we wrote: no hint, so the round robin starts over.
            Err(error) if error.kind() == io::ErrorKind::NotFound || not_a_file(&error) => Ok(None),
            Err(source) => Err(io_error("read", &path, source)),
        }
    }

    fn set(&mut self, ip: IpAddr, owner: &Owner, at: SystemTime) -> Result<(), IpamError> {
        self.write_file(&ip.to_string(), Place::Replace, |file| {
            file.write_all(owner.encode().as_bytes())?;
            file.set_modified(at)
        })
        .map(drop)
    }

    fn written_at(&self, ip: IpAddr) -> Result<Option<SystemTime>, IpamError> {
        let path = self.path(ip);
        match fs::symlink_metadata(&path).and_then(|metadata| metadata.modified()) {
            Ok(time) => Ok(Some(time)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_error("stat", &path, source)),
        }
    }

    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.writable()?;
        let path = self.path(ip);
        // No fsync: a release lost in a crash leaves a lease of no attachment, which GC frees.
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &path, source)),
        }
    }

    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
        // Under the lock no writer is half-way, so temporary files are a dead writer's.
        scan(&self.dir, self.lock.is_some())
    }
}

/// Whether `dir`, or the nearest of its parents that exists (which the first ADD creates
/// it in), takes new files, asked of the kernel (access(2)) so that nothing is written:
/// a read-only filesystem or missing permission fails. (Root passes permission checks,
/// and a full disk is not seen: ADD reports that one itself, with the path.)
pub fn check_writable(dir: &Path) -> Result<(), IpamError> {
    let mut at = dir;
    loop {
        match nix::unistd::access(
            at,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::ENOENT) => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(io_error("find", dir, io::ErrorKind::NotFound.into())),
            },
            Err(errno) => return Err(io_error("create files in", at, errno.into())),
        }
    }
}

/// The leases in a host-local directory, read without taking its lock (for reports).
pub fn read_leases(dir: &Path) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
    scan(dir, false)
}

/// The leases in `dir`; with `sweep`, temporary files left by a killed writer are removed.
fn scan(dir: &Path, sweep: bool) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
    let entries = fs::read_dir(dir).map_err(|source| io_error("list", dir, source))?;
    let mut leases = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error("list", dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Lease files are named by their address; everything else (lock, last_reserved_ip.N,
        // temporary files) is not a lease.
        let Ok(ip) = name.parse::<IpAddr>() else {
            if sweep && name.starts_with(TEMP_PREFIX) {
                log::warn!("removing {name}, left in {} by a writer that died", dir.display());
                let _ = fs::remove_file(entry.path());
            }
            continue;
        };
        let path = entry.path();
        match read_small(&path) {
            Ok(text) => {
                leases.insert(ip, Owner::decode(&text));
            }
            // Released by someone else between listing and reading.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            // The name holds the address whatever it is (see the module's doc).
            Err(error) if not_a_file(&error) => {
                leases.insert(ip, Owner::new("", ""));
            }
            Err(source) => return Err(io_error("read", &path, source)),
        }
    }
    Ok(leases)
}

/// Errors of [`read_small`] that mean the name is not a regular file: a symlink (O_NOFOLLOW),
/// a directory, a FIFO with a writer, a socket.
fn not_a_file(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ELOOP | libc::EISDIR | libc::EAGAIN | libc::ENXIO)
    )
}

/// A lease file's text. Every ADD and DEL reads all of them (to find the owner's), so this
/// is open, one read, close: no size query, no read to confirm the end (a regular file
/// that gives less than asked for has ended). A symlink is not followed and a FIFO does not
/// block the open; at most [`MAX_LEASE_BYTES`] are read.
fn read_small(path: &Path) -> io::Result<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut buffer = [0; 256];
    let mut text = Vec::new();
    while text.len() < MAX_LEASE_BYTES {
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
    /// When `set` wrote a lease; a lease without one counts as written at the epoch.
    pub written: BTreeMap<IpAddr, SystemTime>,
    pub last: BTreeMap<usize, IpAddr>,
    /// Failures to inject: removing these leases fails.
    pub fail_remove: BTreeSet<IpAddr>,
    /// Failures to inject: recording the last reserved address fails.
    pub fail_last_reserved: bool,
}

fn injected(action: &'static str, what: String) -> IpamError {
    io_error(action, Path::new(&what), io::Error::other("injected failure"))
}

impl Store for MemoryStore {
    fn create(&mut self, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
        if self.leases.contains_key(&ip) {
            return Ok(false);
        }
        self.leases.insert(ip, owner.clone());
        Ok(true)
    }

    fn set_last_reserved(&mut self, range_set: usize, ip: IpAddr) -> Result<(), IpamError> {
        if self.fail_last_reserved {
            return Err(injected("write", format!("{LAST_RESERVED_PREFIX}{range_set}")));
        }
        self.last.insert(range_set, ip);
        Ok(())
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        Ok(self.last.get(&range_set).copied())
    }

    fn remove(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        if self.fail_remove.contains(&ip) {
            return Err(injected("remove", ip.to_string()));
        }
        self.leases.remove(&ip);
        self.written.remove(&ip);
        Ok(())
    }

    fn set(&mut self, ip: IpAddr, owner: &Owner, at: SystemTime) -> Result<(), IpamError> {
        self.leases.insert(ip, owner.clone());
        self.written.insert(ip, at);
        Ok(())
    }

    fn written_at(&self, ip: IpAddr) -> Result<Option<SystemTime>, IpamError> {
        Ok(self
            .leases
            .contains_key(&ip)
            .then(|| self.written.get(&ip).copied().unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    fn leases(&self) -> Result<BTreeMap<IpAddr, Owner>, IpamError> {
        Ok(self.leases.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        names.sort();
        names
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|name| name.starts_with(TEMP_PREFIX))
            .collect()
    }

    fn is_symlink(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink())
    }

    #[test]
    fn disk_layout_is_host_local_s() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut store = DiskStore::open(&dir).expect("open");
        let ip = ip("10.10.1.1");
        let owner = Owner::new("c0ffee", "eth0");
        assert!(store.create(ip, &owner).expect("create"));
        store.set_last_reserved(0, ip).expect("last reserved");
        assert!(
            !store
                .create(ip, &Owner::new("other", "eth0"))
                .expect("create again")
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
        assert!(
            temp_files(&dir).is_empty(),
            "temporary files left: {:?}",
            names(&dir)
        );
        assert_eq!(store.leases().expect("leases").get(&ip), Some(&owner));
        let conflict = Owner::conflict([2, 0, 0, 0, 0, 0xab]);
        let marked_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store.set(ip, &conflict, marked_at).expect("mark a conflict");
        assert_eq!(
            fs::read_to_string(dir.join("10.10.1.1")).expect("lease file"),
            "flatbridge-conflict-0200000000ab\r\n"
        );
        assert_eq!(store.written_at(ip).expect("written"), Some(marked_at));
        assert_eq!(
            store.leases().expect("leases")[&ip].conflicting_mac().as_deref(),
            Some("02:00:00:00:00:ab")
        );
        store.remove(ip).expect("remove");
        assert!(store.leases().expect("leases").is_empty());
        assert_eq!(store.written_at(ip).expect("written"), None);
    }

    #[test]
    fn a_peek_creates_locks_and_writes_nothing() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        assert!(DiskStore::peek(&dir).expect("peek").is_none());
        check_writable(&dir).expect("a parent takes the directory");
        assert!(!dir.exists(), "the check created the directory");
        let ip = "10.10.1.1".parse().expect("ip");
        let owner = Owner::new("c0ffee", "eth0");
        {
            let mut store = DiskStore::open(&dir).expect("open");
            store.create(ip, &owner).expect("create");
        }
        // A dead writer's temporary file: only a locked store may sweep it.
        fs::write(dir.join(format!("{TEMP_PREFIX}dead")), "").expect("write");
        let before = names(&dir);
        let mut view = DiskStore::peek(&dir).expect("peek").expect("the store exists");
        // Held by a writer while peeked at: the view does not wait for the lock.
        let _writer = DiskStore::open(&dir).expect("a writer takes the lock beside a peek");
        assert_eq!(view.leases().expect("leases").get(&ip), Some(&owner));
        assert!(view.create("10.10.1.2".parse().expect("ip"), &owner).is_err());
        assert!(view.remove(ip).is_err());
        assert!(view.set_last_reserved(0, ip).is_err());
        check_writable(&dir).expect("writable");
        assert_eq!(names(&dir), before, "the peek changed the directory");
    }

    #[test]
    fn reads_leases_written_by_host_local() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("10.10.1.7"), "abc\r\neth1").expect("write");
        fs::write(dir.join("10.10.1.8"), "old-id-only\n").expect("write");
        fs::write(dir.join("fd00::5"), "v6\r\neth0").expect("write");
        fs::write(dir.join("last_reserved_ip.0"), "10.10.1.8").expect("write");
        let store = DiskStore::open(&dir).expect("open");
        let leases = store.leases().expect("leases");
        assert_eq!(leases.len(), 3);
        assert_eq!(leases[&ip("10.10.1.7")], Owner::new("abc", "eth1"));
        let legacy = &leases[&ip("10.10.1.8")];
        assert!(legacy.matches(&Owner::new("old-id-only", "eth0")));
        assert_eq!(store.last_reserved(0).expect("last"), Some(ip("10.10.1.8")));
        assert_eq!(store.last_reserved(1).expect("last"), None);
    }

    #[test]
    fn a_file_is_never_visible_half_written() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut store = DiskStore::open(&dir).expect("open");
        let lease = dir.join("10.10.1.1");

        // A writer that dies (here: fails) half-way through a new lease leaves nothing
        // under the lease's name, neither during the write nor after it.
        let written = store.write_file("10.10.1.1", Place::New, |file| {
            file.write_all(b"c0ff")?;
            assert!(
                fs::symlink_metadata(&lease).is_err(),
                "the lease is visible before it is whole"
            );
            Err(io::Error::other("killed half-way"))
        });
        assert!(written.is_err());
        assert!(fs::symlink_metadata(&lease).is_err(), "a partial lease was left");
        assert!(
            temp_files(&dir).is_empty(),
            "temporary files left: {:?}",
            names(&dir)
        );

        // A replaced file shows its old content until the new one is whole.
        store
            .set_last_reserved(0, ip("10.10.1.1"))
            .expect("last reserved");
        let last = dir.join("last_reserved_ip.0");
        let written = store.write_file("last_reserved_ip.0", Place::Replace, |file| {
            file.write_all(b"10.10.")?;
            assert_eq!(fs::read_to_string(&last).expect("last"), "10.10.1.1");
            Err(io::Error::other("killed half-way"))
        });
        assert!(written.is_err());
        assert_eq!(fs::read_to_string(&last).expect("last"), "10.10.1.1");
        assert!(
            temp_files(&dir).is_empty(),
            "temporary files left: {:?}",
            names(&dir)
        );

        // What a writer killed before the rename leaves is not a lease, and the next
        // locked listing removes it; an unlocked one leaves it alone.
        fs::write(dir.join(".tmp-Xy9aQ2"), "c0ffee\r\neth0").expect("write");
        assert!(read_leases(&dir).expect("leases").is_empty());
        assert_eq!(temp_files(&dir), [".tmp-Xy9aQ2"]);
        assert!(store.leases().expect("leases").is_empty());
        assert!(temp_files(&dir).is_empty(), "a dead writer's file stayed");
    }

    #[test]
    fn symlinks_planted_at_any_name_written_are_not_followed() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let victim = temp.path().join("victim");
        fs::write(&victim, "victim\r\neth0").expect("write");
        let absent = temp.path().join("absent");
        let mut store = DiskStore::open(&dir).expect("open");
        let owner = Owner::new("c0ffee", "eth0");

        // At a lease's name: the address counts as taken, the link stays, its target is
        // neither written nor created.
        symlink(&victim, dir.join("10.10.1.1")).expect("symlink");
        symlink(&absent, dir.join("10.10.1.2")).expect("symlink");
        assert!(!store.create(ip("10.10.1.1"), &owner).expect("create"));
        assert!(!store.create(ip("10.10.1.2"), &owner).expect("create"));
        assert!(is_symlink(&dir.join("10.10.1.1")) && is_symlink(&dir.join("10.10.1.2")));

        // At the temporary names flatbridge used to write (`.tmp-<pid>-<name>`) and at a
        // name that is replaced: the link is replaced, its target is not written.
        let pid = std::process::id();
        for name in [
            format!(".tmp-{pid}-last_reserved_ip.0"),
            format!(".tmp-{pid}-10.10.1.3"),
        ] {
            symlink(&victim, dir.join(name)).expect("symlink");
        }
        symlink(&victim, dir.join("last_reserved_ip.1")).expect("symlink");
        symlink(&victim, dir.join("10.10.1.4")).expect("symlink");
        store
            .set_last_reserved(0, ip("10.10.1.3"))
            .expect("last reserved");
        store
            .set_last_reserved(1, ip("10.10.1.3"))
            .expect("last reserved");
        let marker = Owner::conflict([2, 0, 0, 0, 0, 1]);
        store
            .set(ip("10.10.1.3"), &marker, SystemTime::now())
            .expect("set");
        store
            .set(ip("10.10.1.4"), &marker, SystemTime::now())
            .expect("set");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim\r\neth0");
        assert!(!absent.exists(), "a dangling link's target was created");
        assert!(!is_symlink(&dir.join("last_reserved_ip.1")));
        assert_eq!(store.last_reserved(1).expect("last"), Some(ip("10.10.1.3")));

        // Reading does not follow one either: the address is held, by nobody.
        let leases = store.leases().expect("leases");
        assert!(
            leases[&ip("10.10.1.1")].is_nobody(),
            "{:?}",
            leases[&ip("10.10.1.1")]
        );
        assert!(leases[&ip("10.10.1.2")].is_nobody());
        assert_eq!(leases[&ip("10.10.1.4")], marker);
        symlink(&victim, dir.join("last_reserved_ip.2")).expect("symlink");
        assert_eq!(store.last_reserved(2).expect("last"), None);
    }

    #[test]
    fn empty_and_odd_lease_files_hold_their_address_for_nobody() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut store = DiskStore::open(&dir).expect("open");
        // An older version's crash between create and write; a directory; a FIFO, which
        // must not block the listing.
        fs::write(dir.join("10.10.1.1"), "").expect("write");
        fs::create_dir(dir.join("10.10.1.2")).expect("mkdir");
        nix::unistd::mkfifo(&dir.join("10.10.1.3"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let leases = store.leases().expect("leases");
        assert_eq!(leases.len(), 3);
        for (ip, owner) in &leases {
            assert!(owner.is_nobody(), "{ip}: {owner:?}");
            assert!(!owner.matches(&Owner::new("", "")), "{ip} matches an empty owner");
            assert!(!store.create(*ip, &Owner::new("c0ffee", "eth0")).expect("create"));
        }
        assert_eq!(
            leases[&ip("10.10.1.1")].to_string(),
            "nobody (an empty or unreadable lease)"
        );
    }

    #[test]
    fn the_lock_excludes_a_second_opener_until_dropped() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
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

    #[test]
    fn a_symlink_planted_as_the_lock_is_refused() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        fs::create_dir_all(&dir).expect("mkdir");
        let target = temp.path().join("created-through-the-link");
        symlink(&target, dir.join("lock")).expect("symlink");
        assert!(DiskStore::open(&dir).is_err());
        assert!(!target.exists());
    }
}
