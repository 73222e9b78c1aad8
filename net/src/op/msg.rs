//! `SendMsg` and `RecvMsg`: datagrams with an address and control messages.

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

use super::{
    MAX_IO,
    msg_box::MsgBox,
    nonblocking,
    stream::{MsgHdr, SendMode, superseded},
};
use crate::{
    addr::RawAddr,
    bufs,
    socket::{Rescued, Socket, on_target},
};

/// The kernel structures of one message, boxed so their addresses survive moves.
#[derive(Debug)]
pub(crate) struct MsgState {
    pub(super) hdr: MsgHdr,
    iov: IoVec,
    /// The `iovec` array of a vectored message (empty otherwise).
    iovs: Vec<IoVec>,
    pub(super) addr: RawAddr,
}

/// A plain `iovec`.
#[repr(transparent)]
struct IoVec(libc::iovec);

impl std::fmt::Debug for IoVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iovec({} bytes)", self.0.iov_len)
    }
}

impl MsgState {
    /// A state for a message to or from `addr`, to be boxed ([`MsgBox::new`]).
    pub(super) fn new(addr: RawAddr) -> MsgState {
        MsgState {
            hdr: MsgHdr::zeroed(),
            iov: IoVec(libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }),
            iovs: Vec::new(),
            addr,
        }
    }

    /// Makes a used state as new, for `addr` (keeping its `iovec` array's allocation).
    pub(super) fn reset(&mut self, addr: RawAddr) {
        self.hdr = MsgHdr::zeroed();
        self.iov.0 = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        self.iovs.clear();
        self.addr = addr;
    }

    /// Points the header at an `iovec` array held by the state (its heap array does not move
    /// with the state, and is not touched again until the next `point_at_many`).
    pub(super) fn point_at_many(&mut self, iovs: impl Iterator<Item = libc::iovec>) {
        self.iovs.clear();
        self.iovs.extend(iovs.map(IoVec));
        // `IoVec` is a transparent `iovec`.
        self.hdr.0.msg_iov = self.iovs.as_mut_ptr().cast();
        self.hdr.0.msg_iovlen = self.iovs.len();
    }

    /// Points the header at the address storage, for the kernel to read (`namelen` = the
    /// address's length) or fill in.
    pub(super) fn point_at_addr(&mut self) {
        self.hdr.0.msg_name = self.addr.as_mut_ptr().cast();
        self.hdr.0.msg_namelen = self.addr.len;
    }

    /// Reads a receive's answer (`len` = the CQE's result, the datagram's length on the wire
    /// under `MSG_TRUNC`) out of the header, for buffers of `capacity` bytes in all; sets
    /// the control vector's length to what the kernel wrote.
    pub(super) fn output(
        &mut self,
        len: usize,
        capacity: usize,
        control: Option<&mut Vec<u8>>,
        sequence: u64,
    ) -> RecvMsgOutput {
        self.addr.len = self.hdr.0.msg_namelen;
        if let Some(control) = control {
            let n = self.hdr.0.msg_controllen.min(control.capacity());
            // SAFETY: the kernel wrote `msg_controllen` bytes of control data into the vector's
            // buffer (at most its capacity, which we passed as `msg_controllen`).
            unsafe { control.set_len(n) };
        }
        RecvMsgOutput {
            len,
            copied: len.min(capacity),
            peer: self.addr.socket_addr().ok(),
            addr: self.addr,
            flags: self.hdr.0.msg_flags,
            sequence,
        }
    }
}

impl MsgState {
    /// Points the header at one buffer (`len` bytes at `ptr`), the address if `with_addr`,
    /// and the control data if any; returns the header for the SQE.
    pub(crate) fn prepare_send(
        &mut self,
        ptr: *const u8,
        len: usize,
        with_addr: bool,
        control: Option<&mut Vec<u8>>,
    ) -> *const libc::msghdr {
        self.iov.0 = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        self.hdr.0.msg_iov = &mut self.iov.0;
        self.hdr.0.msg_iovlen = 1;
        if with_addr {
            self.hdr.0.msg_name = self.addr.as_mut_ptr().cast();
            self.hdr.0.msg_namelen = self.addr.len;
        }
        if let Some(control) = control {
            self.hdr.0.msg_control = control.as_mut_ptr().cast();
            self.hdr.0.msg_controllen = control.len();
        }
        &self.hdr.0
    }
}

/// `IORING_OP_SENDMSG` of one buffer, to an optional address, with optional control data.
#[derive(Debug)]
pub(crate) struct SendMsg<B> {
    socket: Socket,
    buf: B,
    control: Option<Vec<u8>>,
    state: MsgBox,
    has_addr: bool,
    fast: bool,
}

impl<B: IoBuf> SendMsg<B> {
    /// `fast` selects the skip-success `MSG_DONTWAIT` path (see `op`'s module docs).
    pub(crate) fn new(
        socket: Socket,
        buf: B,
        addr: Option<&SocketAddr>,
        control: Option<Vec<u8>>,
        fast: bool,
    ) -> SendMsg<B> {
        let addr = addr.map(RawAddr::from_socket_addr);
        SendMsg::to_raw(socket, buf, addr, control, fast)
    }

    /// As [`new`](SendMsg::new), to an address already in the kernel's layout (a Unix socket
    /// path, say).
    pub(crate) fn to_raw(
        socket: Socket,
        buf: B,
        addr: Option<RawAddr>,
        control: Option<Vec<u8>>,
        fast: bool,
    ) -> SendMsg<B> {
        SendMsg {
            socket,
            buf,
            control,
            state: MsgBox::new(addr.unwrap_or_else(RawAddr::empty)),
            has_addr: addr.is_some(),
            fast,
        }
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_IO)
    }

    /// The boxed destination (null and 0 without one), for a send without a `msghdr`.
    fn dest(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self.has_addr {
            true => (self.state.addr.as_ptr(), self.state.addr.len),
            false => (std::ptr::null(), 0),
        }
    }
}

// SAFETY: the SQE points at the boxed `msghdr`, which points at the boxed `iovec` and address
// and at the control vector's heap memory; the `iovec` points into `buf`'s stable memory; the
// fd is kept open by `socket`. All are owned by `self` and not modified after `build`.
// Without control data, where the kernel's `SEND` takes an address, the SQE is a `SEND` of
// the same bytes to the same boxed address instead. With `fast`, the SQE carries
// `MSG_DONTWAIT` and `IOSQE_CQE_SKIP_SUCCESS`, so it completes or fails inside the submitting
// enter, as `skip_success` requires; a datagram is sent whole.
unsafe impl<B: IoBuf> OpCode for SendMsg<B> {
    type Output = (io::Result<usize>, B, Option<Vec<u8>>);

    fn build(&mut self) -> squeue::Entry {
        let len = self.len();
        let mode = SendMode::datagram(self.fast);
        if self.control.is_none() && runtime::op::send_takes_address() {
            // A datagram and its address need no `msghdr`: `SEND` copies in neither a
            // header nor an `iovec` (~0.1 µs of each datagram here).
            let ptr = self.buf.stable_ptr();
            return mode.send_to_sqe(self.socket.uring_fd(), ptr, len as u32, self.dest());
        }
        let hdr = self.state.prepare_send(
            self.buf.stable_ptr(),
            len,
            self.has_addr,
            self.control.as_mut(),
        );
        mode.sendmsg_sqe(self.socket.uring_fd(), hdr)
    }

    fn skip_success(&self) -> Option<i32> {
        self.fast.then(|| self.len() as i32)
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        (
            cqe.into_result().map(|n| n as usize),
            self.buf,
            self.control,
        )
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Writable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let (ptr, len) = (self.buf.stable_ptr(), self.len());
        if self.control.is_none() {
            let addr = self.has_addr.then_some(&self.state.addr);
            let bytes = &self.buf.as_slice()[..len];
            return nonblocking::send_to_slice(self.socket.as_raw_fd(), bytes, addr);
        }
        let hdr = self
            .state
            .prepare_send(ptr, len, self.has_addr, self.control.as_mut());
        // SAFETY: the boxed header, pointing at `buf`'s initialized bytes, the boxed address
        // and the control vector, all owned by `self`.
        unsafe { nonblocking::sendmsg(self.socket.as_raw_fd(), hdr, 0) }
    }
}

/// What a `RecvMsg` learned besides the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMsgOutput {
    /// The datagram's length on the wire (`MSG_TRUNC` makes the kernel report it).
    pub(crate) len: usize,
    /// Bytes placed in the buffer (less than `len` when truncated).
    pub(crate) copied: usize,
    pub(crate) peer: Option<SocketAddr>,
    /// The sender as the kernel wrote it (any family; `peer` holds only IPv4 and IPv6).
    pub(crate) addr: RawAddr,
    /// `msg_flags` as returned (`MSG_TRUNC`, `MSG_CTRUNC`, ...).
    pub(crate) flags: i32,
    /// Sequence number of the CQE (for stream order, see `Socket::merge_older`).
    pub(crate) sequence: u64,
}

/// `IORING_OP_RECVMSG` of one datagram into a buffer, with its source address and control
/// messages (or, on a stream socket, of some bytes with their control messages).
///
/// Descriptors passed with `SCM_RIGHTS` arrive close-on-exec (`MSG_CMSG_CLOEXEC`). If the
/// future was dropped, they are closed when the completion arrives (the received bytes are
/// rescued as usual): nobody could take them any more.
#[derive(Debug)]
pub(crate) struct RecvMsg<B> {
    socket: Socket,
    buf: B,
    control: Option<Vec<u8>>,
    state: MsgBox,
    /// `MSG_PEEK`: the datagram stays queued for the next receive.
    peek: bool,
    /// On a stream socket: no `MSG_TRUNC` (it means "discard" there).
    stream: bool,
    /// On a Unix socket: always `recvmsg(2)`, even without control data, since descriptors
    /// that find no room are reported by `MSG_CTRUNC`, which only `recvmsg` returns.
    unix: bool,
}

impl<B: IoBufMut> RecvMsg<B> {
    pub(crate) fn new(socket: Socket, buf: B, control: Option<Vec<u8>>) -> RecvMsg<B> {
        RecvMsg {
            socket,
            buf,
            control,
            state: MsgBox::new(RawAddr::empty()),
            peek: false,
            stream: false,
            unix: false,
        }
    }

    /// A datagram receive on a Unix socket.
    pub(crate) fn unix(socket: Socket, buf: B, control: Option<Vec<u8>>) -> RecvMsg<B> {
        RecvMsg {
            unix: true,
            ..RecvMsg::new(socket, buf, control)
        }
    }

    /// A receive with `MSG_PEEK`. It completes with `ECANCELED` when the socket holds a
    /// rescued datagram by then: that one is what the next receive returns, so the caller
    /// serves the peek from it.
    pub(crate) fn peek(socket: Socket, buf: B) -> RecvMsg<B> {
        RecvMsg {
            peek: true,
            ..RecvMsg::new(socket, buf, None)
        }
    }

    /// A receive on a Unix stream socket (the result is a byte count, not a datagram's
    /// length).
    pub(crate) fn stream(socket: Socket, buf: B, control: Option<Vec<u8>>) -> RecvMsg<B> {
        RecvMsg {
            stream: true,
            unix: true,
            ..RecvMsg::new(socket, buf, control)
        }
    }

    /// Reads the kernel's answer out of the message state.
    fn output(&mut self, len: usize, sequence: u64) -> RecvMsgOutput {
        let capacity = self.buf.bytes_total();
        self.state
            .output(len, capacity, self.control.as_mut(), sequence)
    }

    /// Points the boxed header at the buffer (`bytes_total` bytes of its stable memory), the
    /// boxed address storage and the control vector's spare capacity.
    fn prepare(&mut self) -> *mut libc::msghdr {
        let state = &mut *self.state;
        state.iov.0 = libc::iovec {
            iov_base: self.buf.stable_mut_ptr().cast(),
            iov_len: self.buf.bytes_total().min(MAX_IO),
        };
        state.hdr.0.msg_iov = &mut state.iov.0;
        state.hdr.0.msg_iovlen = 1;
        state.point_at_addr();
        if let Some(control) = &mut self.control {
            control.clear();
            state.hdr.0.msg_control = control.as_mut_ptr().cast();
            state.hdr.0.msg_controllen = control.capacity();
        }
        &mut state.hdr.0
    }

    /// The receive as one non-blocking system call, its answer left in the boxed header as
    /// the ring's `RECVMSG` leaves it. Without control data (and off Unix sockets, whose
    /// descriptors need `recvmsg`'s `MSG_CTRUNC`) it is `recvfrom(2)`: the kernel
    /// then copies in and checks no `msghdr` or `iovec` (about 0.2 µs of every datagram here,
    /// a twentieth of a UDP echo); `msg_flags` gets the one flag a datagram receive without
    /// control data can report, `MSG_TRUNC`.
    fn recv_now(&mut self) -> isize {
        let hdr = self.prepare();
        let flags = self.flags() | libc::MSG_DONTWAIT;
        let fd = self.socket.as_raw_fd();
        if self.control.is_some() || self.unix {
            // SAFETY: `hdr` points at the boxed header, which points at memory `self` owns
            // (the buffer's stable memory, the boxed address storage, the control vector's
            // capacity); all of it outlives this synchronous call, and `socket` keeps the fd
            // open.
            return unsafe { libc::recvmsg(fd, hdr, flags) };
        }
        let state = &mut *self.state;
        let (ptr, len) = (state.iov.0.iov_base.cast(), state.iov.0.iov_len);
        // SAFETY: `prepare` pointed the iovec at `len` bytes of the buffer's stable memory,
        // owned by `self` and outliving this synchronous call.
        let n = unsafe { nonblocking::recvfrom(fd, ptr, len, flags, &mut state.addr) };
        if n >= 0 {
            // Where the ring's `RECVMSG` leaves the sender's length (`output` reads it).
            state.hdr.0.msg_namelen = state.addr.len;
            let truncated = !self.stream && n as usize > state.iov.0.iov_len;
            state.hdr.0.msg_flags = if truncated { libc::MSG_TRUNC } else { 0 };
        }
        n
    }

    fn flags(&self) -> i32 {
        let mut flags = libc::MSG_CMSG_CLOEXEC;
        if !self.stream {
            flags |= libc::MSG_TRUNC;
        }
        if self.peek {
            flags |= libc::MSG_PEEK;
        }
        flags
    }

    /// Tries a datagram receive at once with a non-blocking `recvmsg(2)`, without the ring.
    /// When a datagram (or an error) was waiting, returns what `complete` would have; when
    /// none was (`EAGAIN`), gives the request back, to be submitted as usual. Not for peeks
    /// or stream sockets (their completions have more to check).
    pub(crate) fn try_now(mut self) -> Result<<Self as OpCode>::Output, RecvMsg<B>> {
        debug_assert!(!self.peek && !self.stream);
        let n = self.recv_now();
        let res = match usize::try_from(n) {
            Ok(len) => {
                // A datagram has no place in the stream order that sequences keep.
                let out = self.output(len, 0);
                bufs::set_init_across(std::slice::from_mut(&mut self.buf), out.copied);
                Ok(out)
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(self);
                }
                Err(e)
            }
        };
        Ok((res, self.buf, self.control))
    }
}

// SAFETY: the SQE points at the boxed `msghdr`, which points at the boxed `iovec`, the boxed
// address storage and the control vector's spare capacity; the `iovec` covers `buf`'s stable
// memory (`bytes_total` bytes); the fd is kept open by `socket`. All owned by `self`.
unsafe impl<B: IoBufMut> OpCode for RecvMsg<B> {
    type Output = (io::Result<RecvMsgOutput>, B, Option<Vec<u8>>);

    fn build(&mut self) -> squeue::Entry {
        let hdr = self.prepare();
        on_target!(self.socket.uring_fd(), fd => opcode::RecvMsg::new(fd, hdr)
            .flags(self.flags() as u32)
            .build())
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        Completion::from_syscall(self.recv_now())
    }

    fn complete(mut self, cqe: Completion) -> Self::Output {
        if self.peek && self.socket.has_rescued() {
            return (Err(superseded()), self.buf, self.control);
        }
        let res = cqe.into_result().map(|len| {
            let out = self.output(len as usize, cqe.sequence());
            bufs::set_init_across(std::slice::from_mut(&mut self.buf), out.copied);
            out
        });
        (res, self.buf, self.control)
    }

    fn complete_detached(mut self, cqe: Completion) {
        // A peek took nothing from the socket: there is nothing to keep.
        if self.peek {
            return;
        }
        if let Ok(len) = cqe.into_result() {
            let out = self.output(len as usize, cqe.sequence());
            if let Some(control) = &self.control {
                // Passed descriptors are ours now, and nobody can take them: close them.
                // SAFETY: `output` just set the vector's length to the control data this
                // successful receive wrote, and this consumed operation is its only reader.
                drop(unsafe { crate::unix::take_rights(control) });
            }
            self.socket.rescue(Rescued {
                sequence: cqe.sequence(),
                data: bufs::gather(std::slice::from_ref(&self.buf), out.copied),
                peer: out.peer,
                full_len: out.len,
                raw_peer: Some(out.addr),
            });
        }
    }
}
