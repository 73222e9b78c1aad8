//! `Accept` (one connection) and `AcceptMulti` (multishot, behind `TcpListener::incoming`),
//! each into a new fd or, given a [`DirectTable`], into a slot of the ring's file table.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use io_uring::{opcode, squeue, types::DestinationSlot};
use runtime::{
    direct::DirectTable,
    op::{Completion, Interest, MultishotOp, OpCode},
};

use super::nonblocking;
use crate::{
    addr::RawAddr,
    socket::{Socket, on_target},
};

/// The accepted socket a successful CQE result stands for: a new fd, or with `direct` the
/// slot the kernel allocated.
fn accepted(res: u32, direct: Option<&DirectTable>) -> Socket {
    match direct {
        // SAFETY: an accept with IORING_FILE_INDEX_ALLOC reports the slot it filled with the
        // new socket, which nothing else owns.
        Some(table) => Socket::from_direct(unsafe { table.adopt(res) }),
        // SAFETY: a successful accept returns a new fd that nothing else owns. Owning it at once
        // means it is closed even if the caller cannot decode the address.
        None => Socket::from_fd(unsafe { OwnedFd::from_raw_fd(res as i32) }),
    }
}

/// `SOCK_CLOEXEC` for an accept into an fd. An accept into a slot has no fd to mark, and the
/// kernel refuses the flag there (`EINVAL`, `io_accept_prep` in `io_uring/net.c`); an fd
/// installed for it later is close-on-exec (`IORING_OP_FIXED_FD_INSTALL`'s default).
fn cloexec(direct: bool) -> i32 {
    if direct { 0 } else { libc::SOCK_CLOEXEC }
}

/// `IORING_OP_ACCEPT` with `SOCK_CLOEXEC`, returning the peer address as the kernel wrote it
/// (any family: the listener decodes it).
#[derive(Debug)]
pub(crate) struct Accept {
    socket: Socket,
    /// Boxed: the kernel writes the peer address and its length here.
    addr: Box<RawAddr>,
    direct: Option<DirectTable>,
}

impl Accept {
    /// An accept into a new fd, or with `direct` into a slot of that table.
    pub(crate) fn new(socket: Socket, direct: Option<DirectTable>) -> Accept {
        Accept {
            socket,
            addr: Box::new(RawAddr::empty()),
            direct,
        }
    }
}

// SAFETY: the SQE points at the boxed address storage and its length field, owned by `self`,
// and at the listener fd kept open by `socket`.
unsafe impl OpCode for Accept {
    type Output = io::Result<(Socket, RawAddr)>;

    fn build(&mut self) -> squeue::Entry {
        let addr = &mut *self.addr;
        let slot = self.direct.as_ref().map(|_| DestinationSlot::auto_target());
        on_target!(self.socket.uring_fd(), fd => opcode::Accept::new(fd, addr.as_mut_ptr(), &mut addr.len)
            .flags(cloexec(self.direct.is_some()))
            .file_index(slot)
            .build())
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        let res = cqe.into_result()?;
        Ok((accepted(res, self.direct.as_ref()), *self.addr))
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
    direct: Option<DirectTable>,
}

impl AcceptMulti {
    /// A multishot accept into new fds, or with `direct` into slots of that table.
    pub(crate) fn new(socket: Socket, direct: Option<DirectTable>) -> AcceptMulti {
        AcceptMulti { socket, direct }
    }
}

// SAFETY: no addresses (the peer address is not requested, so the kernel writes nothing into
// our memory); the listener fd is kept open by `socket`.
unsafe impl MultishotOp for AcceptMulti {
    type Item = io::Result<Socket>;

    fn build(&mut self) -> squeue::Entry {
        on_target!(self.socket.uring_fd(), fd => opcode::AcceptMulti::new(fd)
            .flags(cloexec(self.direct.is_some()))
            .allocate_file_index(self.direct.is_some())
            .build())
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some(
            cqe.into_result()
                .map(|res| accepted(res, self.direct.as_ref())),
        )
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
