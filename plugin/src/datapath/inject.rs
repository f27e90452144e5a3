//! Frames sent through the datapath: the pinned `inject` program, run with
//! BPF_PROG_TEST_RUN, sends a copy of a frame the caller built out of a device. No socket is
//! opened, so none is closed: closing an AF_PACKET socket waits for an RCU grace period
//! (8 to 16 ms here), more than the rest of an ADD.
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use flatbridge_common::program_name;

use super::{Datapath, DatapathError, loader::program_error};

/// `struct __sk_buff` up to and including `cb[0]` (offset 48): the rest of the context is
/// zero, which every kernel's test run accepts.
const CTX_LEN: usize = 52;
const CB0: usize = 48;
const TC_ACT_OK: u32 = 0;

impl Datapath {
    /// Sends `frame` (a whole Ethernet frame) out of device `ifindex` of the calling
    /// thread's namespace.
    pub fn inject(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let name = program_name::INJECT;
        let path = self.layout().program(name);
        let program = SchedClassifier::from_pin(&path).map_err(|error| program_error("open", name, error))?;
        let mut ctx = [0u8; CTX_LEN];
        ctx[CB0..CB0 + 4].copy_from_slice(&ifindex.to_ne_bytes());
        let run = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .map_err(|error| program_error("run", name, error))?;
        if run.return_value == TC_ACT_OK {
            Ok(())
        } else {
            Err(program_error(
                "send a frame with",
                name,
                ProgramError::from(std::io::Error::other(format!(
                    "the kernel did not send the frame out of device #{ifindex}"
                ))),
            ))
        }
    }
}
