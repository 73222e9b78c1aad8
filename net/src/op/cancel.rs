//! `CancelFd`: cancel every request in flight on one fd.

use std::io;

use io_uring::{opcode, squeue, types::CancelBuilder};
use runtime::op::{Completion, OpCode};

use crate::socket::{Socket, on_target};

/// `IORING_OP_ASYNC_CANCEL` with `IORING_ASYNC_CANCEL_FD | ALL` (Linux 5.19). Each cancelled
/// request completes with `ECANCELED`; the result is how many were found.
#[derive(Debug)]
pub(crate) struct CancelFd {
    socket: Socket,
}

impl CancelFd {
    pub(crate) fn new(socket: Socket) -> CancelFd {
        CancelFd { socket }
    }
}

// SAFETY: the SQE names the fd by number only; `socket` keeps it open so the number cannot be
// reused meanwhile. No memory is lent to the kernel.
unsafe impl OpCode for CancelFd {
    type Output = io::Result<usize>;

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::AsyncCancel2::new(CancelBuilder::fd(fd).all()).build())
    }

    fn complete(self, cqe: Completion) -> io::Result<usize> {
        match cqe.result() {
            r if r == -libc::ENOENT => Ok(0),
            _ => cqe.into_result().map(|n| n as usize),
        }
    }
}
