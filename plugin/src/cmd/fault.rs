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

/// Test builds only: whether the tests pretend the kernel lacks `feature` (one of the
/// comma-separated names in `FLATBRIDGE_KERNEL_LACKS`, e.g. `tcx`), to run the paths of
/// older kernels on this one.
#[cfg(feature = "fault-injection")]
pub fn kernel_lacks(feature: &str) -> bool {
    (feature == "tcx" && PRETEND_NO_TCX.load(std::sync::atomic::Ordering::Relaxed))
        || std::env::var("FLATBRIDGE_KERNEL_LACKS")
            .is_ok_and(|lacks| lacks.split(',').any(|lacked| lacked == feature))
}

#[cfg(feature = "fault-injection")]
static PRETEND_NO_TCX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test builds only: the same as `FLATBRIDGE_KERNEL_LACKS=tcx`, for tests that call the
/// library in their own process.
#[cfg(feature = "fault-injection")]
pub fn pretend_no_tcx(pretend: bool) {
    PRETEND_NO_TCX.store(pretend, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn kernel_lacks(_feature: &str) -> bool {
    false
}
