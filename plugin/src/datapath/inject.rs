//! Frames sent through the datapath: the pinned `inject` program, run with
//! BPF_PROG_TEST_RUN, sends a copy of a frame the caller built out of a device. No socket is
//! opened, so none is closed: closing an AF_PACKET socket waits for an RCU grace period
//! (8 to 16 ms here), more than the rest of an ADD.
//!
//! The program is opened and run with bpf(2) directly, not through aya: aya's
//! `SchedClassifier::from_pin` first probes the kernel's BPF features (nine BTF and five
//! program loads, 0.3 to 0.5 ms measured here), which ADD pays on every call otherwise.
use std::os::fd::{AsFd, OwnedFd};

use aya::programs::ProgramError;
use flatbridge_common::program_name;

use super::{
    Datapath, DatapathError,
    loader::program_error,
    sys::{obj_get, prog_test_run},
};

/// `struct __sk_buff` up to and including `cb[0]` (offset 48): the rest of the context is
/// zero, which every kernel's test run accepts.
const CTX_LEN: usize = 52;
const CB0: usize = 48;
const TC_ACT_OK: u32 = 0;

fn io_error(action: &'static str, error: std::io::Error) -> DatapathError {
    program_error(action, program_name::INJECT, ProgramError::from(error))
}

impl Datapath {
    /// The pinned inject program, opened once per process.
    fn inject_program(&self) -> Result<&OwnedFd, DatapathError> {
        if let Some(fd) = self.inject.get() {
            return Ok(fd);
        }
        let fd =
            obj_get(&self.layout().program(program_name::INJECT)).map_err(|error| io_error("open", error))?;
        Ok(self.inject.get_or_init(|| fd))
    }

    /// Sends `frame` (a whole Ethernet frame) out of device `ifindex` of the calling
    /// thread's namespace.
    pub fn inject(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let program = self.inject_program()?;
        let mut ctx = [0u8; CTX_LEN];
        ctx[CB0..CB0 + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let retval = prog_test_run(program.as_fd(), frame, &ctx).map_err(|error| io_error("run", error))?;
        if retval == TC_ACT_OK {
            Ok(())
        } else {
            Err(io_error(
                "send a frame with",
                std::io::Error::other(format!(
                    "the kernel did not send the frame out of device #{ifindex}"
                )),
            ))
        }
    }
}
