//! `Shutdown`: `IORING_OP_SHUTDOWN`, for sockets that have no fd to call `shutdown(2)` on
//! (direct descriptors).

use std::{io, net::Shutdown as How};

use io_uring::{opcode, squeue};
use runtime::op::{Completion, Detached, OpCode};

use crate::socket::{Socket, on_target};

/// `IORING_OP_SHUTDOWN` (Linux 5.11) on the socket's target (a fixed file for a direct
/// descriptor).
#[derive(Debug)]
pub(crate) struct Shutdown {
    socket: Socket,
    how: i32,
}

impl Shutdown {
    /// Shuts down `how` on `socket` before returning (the request completes inline), with
    /// `shutdown(2)`'s errors.
    pub(crate) fn run_now(socket: Socket, how: How) -> io::Result<()> {
        runtime::direct::run_now(Shutdown::new(socket, how))
    }

    /// Submits the shutdown and lets it finish on its own (its outcome is not reported), for
    /// code that runs while the driver routes completions and so must not wait for one.
    pub(crate) fn detach(socket: Socket, how: How) {
        drop(Detached::start(Shutdown::new(socket, how)));
    }

    fn new(socket: Socket, how: How) -> Shutdown {
        let how = match how {
            How::Read => libc::SHUT_RD,
            How::Write => libc::SHUT_WR,
            How::Both => libc::SHUT_RDWR,
        };
        Shutdown { socket, how }
    }
}

// SAFETY: the SQE points at no memory; the socket (fd or fixed slot) is kept open by `socket`.
unsafe impl OpCode for Shutdown {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::Shutdown::new(fd, self.how).build())
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        cqe.into_result().map(drop)
    }
}
