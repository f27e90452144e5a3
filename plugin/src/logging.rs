//! Diagnostics go to a log file (stdout is the protocol), one line per record:
//! `<unix time> <pid> <LEVEL> <COMMAND> <container> <message>`. When the file cannot be
//! opened the records go to stderr, which runtimes usually keep.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use log::{LevelFilter, Log, Metadata, Record};

struct FileLogger {
    file: Option<Mutex<File>>,
    level: LevelFilter,
    context: String,
}

impl Log for FileLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let line = format!(
            "{}.{:03} {} {} {} {}\n",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id(),
            record.level(),
            self.context,
            record.args()
        );
        match &self.file {
            // One write per line with O_APPEND: concurrent plugin processes do not interleave.
            Some(file) => {
                if let Ok(mut file) = file.lock() {
                    let _ = file.write_all(line.as_bytes());
                }
            }
            None => eprint!("{line}"),
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once per process; later calls do nothing.
pub fn init(path: &Path, level: LevelFilter, context: String) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Never through a symbolic link: a link planted at the path must not make the plugin
    // (root) append to another file.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()
        .map(Mutex::new);
    let logger = FileLogger { file, level, context };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// The same records on stderr, for a long-running process whose output a supervisor keeps
/// (the agent under Kubernetes).
pub fn init_stderr(level: LevelFilter, context: String) {
    let logger = FileLogger {
        file: None,
        level,
        context,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
