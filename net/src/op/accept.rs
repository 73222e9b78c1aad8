//! `Accept` (one connection) and `AcceptMulti` (multishot, behind `TcpListener::incoming`).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use io_uring::{opcode, squeue};
use runtime::op::{Completion, Interest, MultishotOp, OpCode};

use super::nonblocking;
use crate::{addr::RawAddr, socket::Socket};

/// `IORING_OP_ACCEPT` with `SOCK_CLOEXEC`, returning the peer address as the kernel wrote it
/// (any family: the listener decodes it).
#[derive(Debug)]
pub(crate) struct Accept {
    socket: Socket,
    /// Boxed: the kernel writes the peer address and its length here.
    addr: Box<RawAddr>,
}

impl Accept {
    pub(crate) fn new(socket: Socket) -> Accept {
        Accept {
            socket,
            addr: Box::new(RawAddr::empty()),
        }
    }
}

// SAFETY: the SQE points at the boxed address storage and its length field, owned by `self`,
// and at the listener fd kept open by `socket`.
unsafe impl OpCode for Accept {
    type Output = io::Result<(OwnedFd, RawAddr)>;

    fn build(&mut self) -> squeue::Entry {
        let addr = &mut *self.addr;
        opcode::Accept::new(self.socket.uring_fd(), addr.as_mut_ptr(), &mut addr.len)
            .flags(libc::SOCK_CLOEXEC)
            .build()
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        let fd = cqe.into_result()?;
        // SAFETY: a successful accept returns a new fd that nothing else owns. Owning it at once
        // means it is closed even if the caller cannot decode the address.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok((fd, *self.addr))
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        *self.addr = RawAddr::empty();
        let addr = &mut *self.addr;
        // SAFETY: the boxed address storage and its length, owned by `self`.
        unsafe {
            nonblocking::accept(
                self.socket.as_raw_fd(),
                addr.as_mut_ptr(),
                &mut addr.len,
                false,
            )
        }
    }
}

/// `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT` (Linux 5.19): one CQE per connection.
#[derive(Debug)]
pub(crate) struct AcceptMulti {
    socket: Socket,
}

impl AcceptMulti {
    pub(crate) fn new(socket: Socket) -> AcceptMulti {
        AcceptMulti { socket }
    }
}

// SAFETY: no addresses (the peer address is not requested, so the kernel writes nothing into
// our memory); the listener fd is kept open by `socket`.
unsafe impl MultishotOp for AcceptMulti {
    type Item = io::Result<OwnedFd>;

    fn build(&mut self) -> squeue::Entry {
        opcode::AcceptMulti::new(self.socket.uring_fd())
            .flags(libc::SOCK_CLOEXEC)
            .build()
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some(cqe.into_result().map(|fd| {
            // SAFETY: each successful CQE carries a new fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        }))
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let null = std::ptr::null_mut();
        // SAFETY: no address is asked for (null pointers).
        unsafe { nonblocking::accept(self.socket.as_raw_fd(), null, null.cast(), true) }
    }
}
