//! `Connect`.

use std::{io, net::SocketAddr};

use io_uring::{opcode, squeue};
use runtime::op::{Completion, OpCode};

use crate::{
    addr::RawAddr,
    socket::{Socket, on_target},
};

/// `IORING_OP_CONNECT` to one address.
#[derive(Debug)]
pub(crate) struct Connect {
    socket: Socket,
    /// Boxed: the kernel reads it after submission (tokio-rs/tokio-uring#125).
    addr: Box<RawAddr>,
}

impl Connect {
    pub(crate) fn new(socket: Socket, addr: &SocketAddr) -> Connect {
        Connect {
            socket,
            addr: Box::new(RawAddr::from_socket_addr(addr)),
        }
    }

    /// A connect to an address already in the kernel's layout (a Unix socket path, say).
    pub(crate) fn raw(socket: Socket, addr: RawAddr) -> Connect {
        Connect {
            socket,
            addr: Box::new(addr),
        }
    }
}

// SAFETY: the SQE points at the boxed address owned by `self` and at the fd kept open by
// `socket`.
unsafe impl OpCode for Connect {
    type Output = (io::Result<()>, Socket);

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::Connect::new(fd, self.addr.as_ptr(), self.addr.len).build())
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        (cqe.into_result().map(drop), self.socket)
    }
}
