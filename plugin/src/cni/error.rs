//! The CNI error reply: the spec's well-known codes and flatbridge's own (>= 100).
use serde::Serialize;

use super::version::CniVersion;

/// Error codes. 1-99 are the spec's; 100 and above are flatbridge's own.
pub mod code {
    /// The config's cniVersion is not one this plugin supports.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the config is understood but not supported.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container (its network namespace) does not exist; nothing to clean up.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A CNI_* environment variable is missing or malformed.
    pub const INVALID_ENV: u32 = 4;
    /// Reading or writing local state failed.
    pub const IO_FAILURE: u32 = 5;
    /// The config or prevResult is not valid JSON of the expected shape.
    pub const DECODE_FAILURE: u32 = 6;
    /// The config decodes but its values make no sense.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition (a lock held too long): the runtime may retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: ADD works, but existing pods may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A netlink request to the kernel failed.
    pub const NETLINK: u32 = 100;
    /// No free address is left in a range set.
    pub const RANGE_EXHAUSTED: u32 = 101;
    /// Another host on the L2 segment answers for the address.
    pub const ADDRESS_CONFLICT: u32 = 102;
    /// Loading, attaching or updating the eBPF datapath failed.
    pub const DATAPATH: u32 = 103;
    /// CHECK found the container's networking different from prevResult.
    pub const CHECK_FAILED: u32 = 104;
    /// A delegated IPAM plugin failed.
    pub const IPAM_PLUGIN: u32 = 105;
    /// A requested address is taken, or the container already holds another one.
    pub const ADDRESS_UNAVAILABLE: u32 = 106;
    /// Anything else.
    pub const INTERNAL: u32 = 999;
}

/// An error as the runtime receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error JSON of the spec, in the shape of `version`.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        #[derive(Serialize)]
        struct Reply<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::json!(Reply {
            cni_version: version.as_str(),
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Renders an error and its chain of causes on one line, for `details`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // thiserror messages often embed their source already.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
