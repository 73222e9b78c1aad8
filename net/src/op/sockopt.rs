//! `SetSockOpt`: `setsockopt(2)` through the ring (`IORING_OP_URING_CMD` with
//! `SOCKET_URING_OP_SETSOCKOPT`, Linux 6.7), which works on a fixed file, so a direct
//! descriptor's options need no installed fd.

use std::io;

use io_uring::{opcode, squeue};
use runtime::op::{Completion, OpCode};

use crate::socket::{Socket, on_target};

/// One integer-valued socket option, set through the ring.
#[derive(Debug)]
pub(crate) struct SetSockOpt {
    socket: Socket,
    level: i32,
    name: i32,
    /// Boxed: the kernel reads the value from here.
    value: Box<libc::c_int>,
}

impl SetSockOpt {
    /// Sets option `name` of `level` to `value` before returning (the request completes
    /// inline), with `setsockopt(2)`'s errors; `EOPNOTSUPP` or `EINVAL` from kernels without
    /// the command.
    pub(crate) fn run_now(socket: Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
        runtime::direct::run_now(SetSockOpt {
            socket,
            level,
            name,
            value: Box::new(value),
        })
    }
}

// SAFETY: the SQE points at the boxed value, owned by `self` and never written; the socket
// (fd or fixed slot) is kept open by `socket`.
unsafe impl OpCode for SetSockOpt {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        let value = (&*self.value as *const libc::c_int).cast();
        let len = std::mem::size_of::<libc::c_int>() as u32;
        let (level, name) = (self.level as u32, self.name as u32);
        on_target!(self.socket.uring_fd(), fd => opcode::SetSockOpt::new(fd, level, name, value, len).build())
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        cqe.into_result().map(drop)
    }
}
