//! `SendMsgVectored` and `RecvMsgVectored`: one datagram gathered from, or scattered into,
//! several buffers.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use io_uring::{opcode, squeue};
use runtime::{
    buf::{IoBuf, IoBufMut},
    op::{Completion, Interest, OpCode},
};

use super::{MAX_IO, msg::RecvMsgOutput, msg_box::MsgBox, nonblocking};
use crate::{
    addr::RawAddr,
    bufs,
    socket::{Rescued, Socket, on_target},
};

/// `IORING_OP_SENDMSG` of one datagram gathered from several buffers, to an optional address.
#[derive(Debug)]
pub(crate) struct SendMsgVectored<B> {
    socket: Socket,
    bufs: Vec<B>,
    state: MsgBox,
    has_addr: bool,
    fast: bool,
}

impl<B: IoBuf> SendMsgVectored<B> {
    /// `fast` selects the skip-success `MSG_DONTWAIT` path (see `op`'s module docs); it is
    /// ignored when the buffers hold more than one request can report.
    pub(crate) fn new(
        socket: Socket,
        bufs: Vec<B>,
        addr: Option<&SocketAddr>,
        fast: bool,
    ) -> SendMsgVectored<B> {
        let state = MsgBox::new(addr.map_or_else(RawAddr::empty, RawAddr::from_socket_addr));
        let total: usize = bufs.iter().map(IoBuf::bytes_init).sum();
        SendMsgVectored {
            socket,
            fast: fast && total <= MAX_IO,
            bufs,
            state,
            has_addr: addr.is_some(),
        }
    }

    fn len(&self) -> usize {
        self.bufs.iter().map(IoBuf::bytes_init).sum()
    }

    /// Points the boxed header at the buffers' initialized bytes and the address.
    fn prepare(&mut self) {
        let state = &mut *self.state;
        state.point_at_many(self.bufs.iter().map(|b| libc::iovec {
            iov_base: b.stable_ptr() as *mut libc::c_void,
            iov_len: b.bytes_init(),
        }));
        if self.has_addr {
            state.point_at_addr();
        }
    }
}

// SAFETY: the SQE points at the boxed `msghdr`, which points at the boxed address and at the
// state's `iovec` array (heap, not touched after `build`), whose entries cover the buffers'
// initialized bytes in their stable memory; the fd is kept open by `socket`. All are owned by
// `self`. With `fast` (only when the total fits the CQE's result), the SQE carries
// `MSG_DONTWAIT` and `IOSQE_CQE_SKIP_SUCCESS`, so it completes or fails inside the submitting
// enter, as `skip_success` requires; a datagram is sent whole, so success means `len` bytes.
unsafe impl<B: IoBuf> OpCode for SendMsgVectored<B> {
    type Output = (io::Result<usize>, Vec<B>);

    fn build(&mut self) -> squeue::Entry {
        self.prepare();
        super::SendMode::datagram(self.fast).sendmsg_sqe(self.socket.uring_fd(), &self.state.hdr.0)
    }

    fn skip_success(&self) -> Option<i32> {
        self.fast.then(|| self.len() as i32)
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Writable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        self.prepare();
        // SAFETY: the boxed header, pointing at the buffers' initialized bytes and the boxed
        // address, all owned by `self`.
        unsafe { nonblocking::sendmsg(self.socket.as_raw_fd(), &self.state.hdr.0, 0) }
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        (cqe.into_result().map(|n| n as usize), self.bufs)
    }
}

/// `IORING_OP_RECVMSG` of one datagram scattered over several buffers (each filled from its
/// start, in order), with its source address.
#[derive(Debug)]
pub(crate) struct RecvMsgVectored<B> {
    socket: Socket,
    bufs: Vec<B>,
    state: MsgBox,
}

impl<B: IoBufMut> RecvMsgVectored<B> {
    pub(crate) fn new(socket: Socket, bufs: Vec<B>) -> RecvMsgVectored<B> {
        RecvMsgVectored {
            socket,
            bufs,
            state: MsgBox::new(RawAddr::empty()),
        }
    }

    /// Points the boxed header at the buffers' stable memory and the address storage.
    fn prepare(&mut self) {
        let state = &mut *self.state;
        state.point_at_many(self.bufs.iter_mut().map(|b| libc::iovec {
            iov_base: b.stable_mut_ptr().cast(),
            iov_len: b.bytes_total(),
        }));
        state.point_at_addr();
    }

    fn output(&mut self, len: usize, sequence: u64) -> RecvMsgOutput {
        let capacity = bufs::capacity(&self.bufs);
        self.state.output(len, capacity, None, sequence)
    }
}

// SAFETY: the SQE points at the boxed `msghdr`, which points at the boxed address storage and
// at the state's `iovec` array (heap, not touched after `build`), whose entries cover each
// buffer's stable memory (`bytes_total` bytes); the fd is kept open by `socket`. All owned by
// `self`.
unsafe impl<B: IoBufMut> OpCode for RecvMsgVectored<B> {
    type Output = (io::Result<RecvMsgOutput>, Vec<B>);

    fn build(&mut self) -> squeue::Entry {
        self.prepare();
        let hdr = &mut self.state.hdr.0;
        on_target!(self.socket.uring_fd(), fd => opcode::RecvMsg::new(fd, hdr)
            .flags(libc::MSG_TRUNC as u32)
            .build())
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        self.prepare();
        let hdr = &mut self.state.hdr.0;
        // SAFETY: the boxed header, pointing at the buffers' stable memory and the boxed
        // address storage, all owned by `self` and borrowed mutably for the call.
        unsafe { nonblocking::recvmsg(self.socket.as_raw_fd(), hdr, libc::MSG_TRUNC) }
    }

    fn complete(mut self, cqe: Completion) -> Self::Output {
        let res = cqe.into_result().map(|len| {
            let out = self.output(len as usize, cqe.sequence());
            bufs::set_init_across(&mut self.bufs, out.copied);
            out
        });
        (res, self.bufs)
    }

    fn complete_detached(mut self, cqe: Completion) {
        if let Ok(len) = cqe.into_result() {
            let out = self.output(len as usize, cqe.sequence());
            self.socket.rescue(Rescued {
                sequence: cqe.sequence(),
                data: bufs::gather(&self.bufs, out.copied),
                peer: out.peer,
                full_len: out.len,
                raw_peer: Some(out.addr),
            });
        }
    }
}
