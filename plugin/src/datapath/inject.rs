//! Frames sent through the datapath: the pinned `inject` program, run with
//! BPF_PROG_TEST_RUN, sends a copy of a frame the caller built out of a device. No socket is
//! opened, so none is closed: closing an AF_PACKET socket waits for an RCU grace period
//! (8 to 16 ms here), more than the rest of an ADD.
//!
//! The program is opened and run with bpf(2) directly, not through aya: aya's
//! `SchedClassifier::from_pin` first probes the kernel's BPF features (nine BTF and five
//! program loads, 0.3 to 0.5 ms measured here), which ADD pays on every call otherwise.
use std::os::fd::{AsRawFd, OwnedFd};

use aya::programs::ProgramError;
use flatbridge_common::program_name;

use super::{
    Datapath, DatapathError,
    loader::program_error,
    sys::{BPF_PROG_TEST_RUN, bpf, obj_get},
};

/// `struct __sk_buff` up to and including `cb[0]` (offset 48): the rest of the context is
/// zero, which every kernel's test run accepts.
const CTX_LEN: usize = 52;
const CB0: usize = 48;
const TC_ACT_OK: u32 = 0;

/// `union bpf_attr` for BPF_PROG_TEST_RUN, up to `ctx_out`.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}
const _: () = assert!(std::mem::size_of::<TestRun>() == 64);

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
        let length = |bytes: usize| u32::try_from(bytes).unwrap_or(u32::MAX);
        let mut attr = TestRun {
            prog_fd: program.as_raw_fd().cast_unsigned(),
            data_size_in: length(frame.len()),
            data_in: frame.as_ptr() as u64,
            ctx_size_in: length(ctx.len()),
            ctx_in: ctx.as_ptr() as u64,
            ..TestRun::default()
        };
        // SAFETY: a TEST_RUN attr whose frame and context, of the sizes given, outlive the
        // call; no output buffers.
        unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map_err(|error| io_error("run", error))?;
        if attr.retval == TC_ACT_OK {
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
