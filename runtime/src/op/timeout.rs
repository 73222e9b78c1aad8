//! `IORING_OP_TIMEOUT` as a pure timer (`count` 0): completes when the duration has passed.
//!
//! The runtime's own timers (`runtime::time`) do not use this op: they share the driver's one
//! alarm (`driver/alarm.rs`), which ends the event loop's wait at the earliest deadline. It
//! exists for code that wants a kernel-side timer as an operation (and for driver tests).

use std::{io, time::Duration};

use io_uring::{opcode, squeue, types::Timespec};

use super::{Completion, OpCode};

/// A kernel timer operation. Completes with `Ok(())` when it fires.
#[derive(Debug)]
pub struct Timeout {
    /// Boxed so its address survives moves of the operation (`OpCode` rule 2).
    timespec: Box<Timespec>,
}

impl Timeout {
    /// A timer that fires after `duration`.
    pub fn new(duration: Duration) -> Timeout {
        Timeout {
            timespec: Box::new(Timespec::from(duration)),
        }
    }
}

// SAFETY: the only address in the SQE is the boxed timespec, owned by `self` and heap-stable;
// no fds are involved.
unsafe impl OpCode for Timeout {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        opcode::Timeout::new(&*self.timespec as *const Timespec).build()
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        match cqe.result() {
            // -ETIME: the timer expired, which is success for a pure timer.
            r if r == -libc::ETIME => Ok(()),
            _ => cqe.into_result().map(drop),
        }
    }
}
