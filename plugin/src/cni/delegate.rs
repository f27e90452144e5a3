//! Calling another plugin as the spec describes (for an `ipam.type` flatbridge does not
//! serve itself): found in CNI_PATH, same environment but the verb, same stdin.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command as Process, Stdio},
};

use serde_json::Value;

use super::{
    CniResult,
    env::Command,
    error::{CniError, code},
};

/// Finds `plugin` in the CNI_PATH directories.
pub fn find(plugin: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("plugin type {plugin:?} must be a plain name"),
        ));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "IPAM plugin {plugin:?} was not found in CNI_PATH ({})",
                    cni_path
                        .iter()
                        .map(|dir| dir.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

/// Runs `binary` with `verb` and the config on stdin; returns its stdout as JSON (or
/// `None` when it printed nothing, as DEL does).
pub fn exec(binary: &Path, verb: Command, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let name = binary
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let failed = |what: String| CniError::new(code::IPAM_PLUGIN, format!("IPAM plugin {name} {what}"));
    let mut child = Process::new(binary)
        .env("CNI_COMMAND", verb.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| failed(format!("could not be started: {error}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin)
            .map_err(|error| failed(format!("did not take its config: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| failed(format!("could not be waited for: {error}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        log::info!("IPAM plugin {name} {} stderr: {}", verb.as_str(), stderr.trim());
    }
    let reply: Option<Value> = if output.stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&output.stdout).map_err(|error| {
            failed(format!(
                "printed something that is not JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            ))
        })?)
    };
    if output.status.success() {
        return Ok(reply);
    }
    // Keep the delegate's own code, so "try again later" stays retryable.
    let code = reply
        .as_ref()
        .and_then(|error| error.get("code")?.as_u64())
        .and_then(|code| u32::try_from(code).ok())
        .unwrap_or(code::IPAM_PLUGIN);
    let message = reply
        .as_ref()
        .and_then(|error| error.get("msg")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("exited with {}", output.status));
    Err(CniError::new(
        code,
        format!("IPAM plugin {name} {} failed: {message}", verb.as_str()),
    ))
}

/// ADD through a delegated IPAM plugin.
pub fn ipam_add(binary: &Path, stdin: &[u8]) -> Result<CniResult, CniError> {
    let reply = exec(binary, Command::Add, stdin)?
        .ok_or_else(|| CniError::new(code::IPAM_PLUGIN, "IPAM plugin printed no result for ADD"))?;
    let result = CniResult::from_json(&reply)?;
    if result.ips.is_empty() {
        return Err(CniError::new(
            code::IPAM_PLUGIN,
            "IPAM plugin returned no IP address",
        ));
    }
    Ok(result)
}
