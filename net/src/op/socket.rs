//! `SocketDirect`: `IORING_OP_SOCKET` (Linux 5.19) into a slot of the ring's file table, for
//! connections that are direct descriptors from the start.

use std::io;

use io_uring::{opcode, squeue, types::DestinationSlot};
use runtime::{
    direct::DirectTable,
    op::{Completion, OpCode},
};

use crate::socket::Socket;

/// A new socket in a slot the kernel allocates (`IORING_FILE_INDEX_ALLOC`).
#[derive(Debug)]
pub(crate) struct SocketDirect {
    domain: i32,
    ty: i32,
    protocol: i32,
    table: DirectTable,
}

impl SocketDirect {
    pub(crate) fn new(domain: i32, ty: i32, protocol: i32, table: DirectTable) -> SocketDirect {
        SocketDirect {
            domain,
            ty,
            protocol,
            table,
        }
    }
}

// SAFETY: the SQE points at no memory and names no fd.
unsafe impl OpCode for SocketDirect {
    type Output = io::Result<Socket>;

    fn build(&mut self) -> squeue::Entry {
        // No SOCK_CLOEXEC: a slot has no fd to mark, and the kernel refuses the flag there.
        opcode::Socket::new(self.domain, self.ty, self.protocol)
            .file_index(Some(DestinationSlot::auto_target()))
            .build()
    }

    fn complete(self, cqe: Completion) -> io::Result<Socket> {
        let slot = cqe.into_result()?;
        // SAFETY: a socket request with IORING_FILE_INDEX_ALLOC reports the slot it filled with
        // the new socket, which nothing else owns.
        Ok(Socket::from_direct(unsafe { self.table.adopt(slot) }))
    }
}
