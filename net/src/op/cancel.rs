//! `CancelFd`: cancel every request in flight on one fd.

use std::{io, os::fd::AsRawFd};

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

    fn try_nonblocking(&mut self) -> Option<Completion> {
        // The epoll backend's own cancel: its waiters are in the runtime, not the kernel.
        let n = runtime::op::cancel_fd_waiters(self.socket.as_raw_fd());
        Some(Completion::new(n.min(i32::MAX as usize) as i32, 0, [0; 2]))
    }

    fn complete(self, cqe: Completion) -> io::Result<usize> {
        match cqe.result() {
            r if r == -libc::ENOENT => Ok(0),
            _ => cqe.into_result().map(|n| n as usize),
        }
    }
}
