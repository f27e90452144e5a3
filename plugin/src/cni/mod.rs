//! The CNI protocol: environment, config, result and error JSON, and the one `run` that
//! reads a request and writes exactly one reply. Knows nothing of the kernel: the verbs
//! are implemented by a [`Plugin`] (see `cmd/`).
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

use std::io::{Read, Write};

pub use config::{Attachment, Config};
pub use env::{CniEnv, Command};
pub use error::{CniError, code};
pub use result::CniResult;
pub use version::CniVersion;

/// One invocation: the verb, its environment and its decoded config.
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub env: CniEnv,
    pub config: Config,
}

/// The verbs a plugin implements. VERSION is answered by `run` itself.
pub trait Plugin {
    fn add(&self, request: &Request) -> Result<CniResult, CniError>;
    fn del(&self, request: &Request) -> Result<(), CniError>;
    fn check(&self, request: &Request) -> Result<(), CniError>;
    fn status(&self, request: &Request) -> Result<(), CniError>;
    fn gc(&self, request: &Request) -> Result<(), CniError>;
    /// Called once the config is decoded (or not), before the verb: sets up logging.
    fn start(&self, config: Option<&Config>, command: &str);
}

/// Runs one CNI invocation: reads the environment and stdin, calls the verb, writes the
/// result or error JSON on stdout. Returns the process exit code.
pub fn run(plugin: &impl Plugin) -> i32 {
    let lookup = |name: &str| std::env::var(name).ok();
    let command_text = lookup("CNI_COMMAND").unwrap_or_default();
    let Some(command) = Command::parse(&command_text) else {
        plugin.start(None, &command_text);
        return reply_error(
            &CniError::new(
                code::INVALID_ENV,
                format!("CNI_COMMAND {command_text:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            ),
            CniVersion::LATEST,
        );
    };
    if command == Command::Version {
        // Never fails: a runtime (podman) that cannot get VERSION drops the network.
        return reply(&version::version_info());
    }
    let mut stdin = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut stdin) {
        plugin.start(None, command.as_str());
        return reply_error(
            &CniError::new(
                code::IO_FAILURE,
                format!("failed to read the config from stdin: {error}"),
            ),
            CniVersion::LATEST,
        );
    }
    let config = match Config::parse(&stdin) {
        Ok(config) => config,
        Err(error) => {
            plugin.start(None, command.as_str());
            return reply_error(&error, version_of_raw(&stdin));
        }
    };
    plugin.start(Some(&config), command.as_str());
    let version = config.version;
    let request = match CniEnv::from_lookup(lookup) {
        Ok(env) => Request { command, env, config },
        Err(error) => return reply_error(&error, version),
    };
    match dispatch(plugin, &request) {
        Ok(Some(result)) => reply(&result.to_json(version)),
        Ok(None) => 0,
        Err(error) => reply_error(&error, version),
    }
}

fn dispatch(plugin: &impl Plugin, request: &Request) -> Result<Option<CniResult>, CniError> {
    let version = request.config.version;
    let refuse = |verb: &str, since: &str| {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {version} does not have {verb}; it needs cniVersion {since} or later"),
        ))
    };
    match request.command {
        Command::Add => plugin.add(request).map(Some),
        Command::Del => plugin.del(request).map(|()| None),
        Command::Check if !version.has_check() => refuse("CHECK", "0.4.0"),
        Command::Check => plugin.check(request).map(|()| None),
        Command::Status if !version.has_status_and_gc() => refuse("STATUS", "1.1.0"),
        Command::Status => plugin.status(request).map(|()| None),
        Command::Gc if !version.has_status_and_gc() => refuse("GC", "1.1.0"),
        Command::Gc => plugin.gc(request).map(|()| None),
        Command::Version => Ok(None),
    }
}

/// The version to answer an undecodable config in: its own, if it names one we know.
fn version_of_raw(raw: &[u8]) -> CniVersion {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|value| value.get("cniVersion")?.as_str().and_then(CniVersion::parse))
        .unwrap_or(CniVersion::LATEST)
}

fn reply(value: &serde_json::Value) -> i32 {
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, value)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(error) => {
            log::error!("failed to write the reply to stdout: {error}");
            1
        }
    }
}

fn reply_error(error: &CniError, version: CniVersion) -> i32 {
    log::error!("{error}");
    reply(&error.to_json(version));
    1
}

/// The spec's rule for network names and container IDs: an alphanumeric character, then
/// alphanumerics, `_`, `.` and `-`. Either becomes part of a path (IPAM data, BPF pins), so
/// the rule also keeps paths safe. `what` names the value in the error, `code` is its code.
pub(crate) fn validate_identifier(value: &str, what: &str, code: u32) -> Result<(), CniError> {
    let mut chars = value.chars();
    let valid = chars.next().is_some_and(|first| first.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        return Ok(());
    }
    Err(CniError::new(
        code,
        format!(
            "{what} {value:?} is invalid: it must start with a letter or digit and contain only letters, \
             digits, '_', '.' and '-'"
        ),
    ))
}
