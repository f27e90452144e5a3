//! Running commands with their command line echoed, so a person sees what the task does.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, bail};

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with inherited stdio; fails when it exits non-zero.
pub fn exec(command: &mut Command) -> anyhow::Result<()> {
    let text = describe(command);
    eprintln!("+ {text}");
    let status = command
        .status()
        .with_context(|| format!("failed to start `{text}`"))?;
    if !status.success() {
        bail!("`{text}` failed with {status}");
    }
    Ok(())
}

/// Runs `command` quietly and returns its output, whatever its exit status.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    let text = describe(command);
    command
        .output()
        .with_context(|| format!("failed to start `{text}`"))
}

/// Runs `command` quietly; true when it exits with 0.
pub fn succeeds(command: &mut Command) -> bool {
    output(command).is_ok_and(|output| output.status.success())
}

/// Ctrl-C during the demo or the bench: the first one lets the task stop at its next step
/// and remove every namespace, mount and server it made (their `Drop`s do) — the commands
/// it runs get the signal too and end; a second one exits at once.
pub mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    use anyhow::{Context, bail};

    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    pub fn catch() -> anyhow::Result<()> {
        ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: exiting without cleaning up");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: cleaning up (Ctrl-C again to exit at once)");
        })
        .context("failed to catch Ctrl-C")
    }

    /// Fails once Ctrl-C was pressed, so that the task unwinds and cleans up.
    pub fn check() -> anyhow::Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}
