//! Fault points for the tests: with the `fault-injection` feature, `FLATBRIDGE_FAULT=<point>`
//! makes the verb fail at that point as if the step after it had failed, and
//! `FLATBRIDGE_FAULT=<point>:kill` kills the process there (SIGKILL), as a crash or a
//! runtime's timeout would. Without the feature (every build but the tests') each point is
//! nothing at all.
use crate::cni::CniError;

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) -> Result<(), CniError> {
    let Ok(wanted) = std::env::var("FLATBRIDGE_FAULT") else {
        return Ok(());
    };
    match wanted.strip_suffix(":kill") {
        Some(point) if point == name => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            Ok(())
        }
        None if wanted == name => Err(CniError::new(
            crate::cni::code::INTERNAL,
            format!("fault injected at {name}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) -> Result<(), CniError> {
    Ok(())
}
