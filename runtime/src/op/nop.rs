//! `IORING_OP_NOP`: completes immediately; measures the cost of the op path itself.

use std::io;

use io_uring::{opcode, squeue};

use super::{Completion, Op, OpCode};

/// An operation that does nothing and completes with 0.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nop {
    _priv: (),
}

impl Nop {
    /// A new no-op.
    pub fn new() -> Nop {
        Nop { _priv: () }
    }
}

/// Submits an `IORING_OP_NOP` and waits for its completion.
///
/// # Panics
///
/// Panics outside a runtime, like [`Op::new`].
pub fn nop() -> Op<Nop> {
    Op::new(Nop::new())
}

// SAFETY: a NOP carries no addresses and no fds.
unsafe impl OpCode for Nop {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        cqe.into_result().map(drop)
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        Some(Completion::new(0, 0, [0; 2]))
    }
}
