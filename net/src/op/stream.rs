//! Byte-stream operations: `Recv`, `Send`, `Readv`, `Writev`.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use io_uring::{opcode, squeue};
use runtime::{
    buf::{IoBuf, IoBufMut},
    op::{Completion, Interest, Op, OpCode},
};

use super::MAX_IO;
use crate::{
    bufs,
    socket::{Rescued, Socket, Target, on_target},
};

/// A stream receive into `bufs` completed: marks the bytes it wrote as initialized and puts
/// older rescued bytes in front (`Socket::merge_older`). Returns how many bytes `bufs` now hold.
fn received<B: IoBufMut>(socket: &Socket, cqe: Completion, bufs: &mut [B]) -> io::Result<usize> {
    let offered = bufs::capacity(bufs);
    let res = cqe.into_result();
    socket.note_receive(res.as_ref().map_or(0, |&n| n as usize), offered);
    let n = (res? as usize).min(offered);
    bufs::set_init_across(bufs, n);
    Ok(socket.merge_older(cqe.sequence(), bufs, n))
}

/// A stream receive into `bufs` completed after its future was dropped: keeps the bytes it
/// delivered for the socket's next receive.
fn rescue_received<B: IoBufMut>(socket: &Socket, cqe: Completion, bufs: &[B]) {
    if let Ok(n) = cqe.into_result()
        && n > 0
    {
        let n = (n as usize).min(bufs::capacity(bufs));
        socket.rescue(Rescued::stream(cqe.sequence(), bufs::gather(bufs, n)));
    }
}

/// `IORING_RECVSEND_POLL_FIRST` (in the SQE's `ioprio`): the receive arms its wait for data
/// before trying, skipping the try that would fail with `EAGAIN` (`io_recv` in the kernel's
/// `io_uring/net.c`; `docs/kernel-notes.md` §2). Set when the socket was drained by the last
/// receive (`Socket::receive_drained`).
const RECVSEND_POLL_FIRST: u16 = 1;

/// `IORING_OP_RECV` on a stream socket into an owned buffer (filled from its start).
#[derive(Debug)]
pub(crate) struct Recv<B> {
    socket: Socket,
    buf: B,
    /// `MSG_PEEK`: the bytes stay in the socket for the next receive.
    peek: bool,
}

impl<B: IoBufMut> Recv<B> {
    pub(crate) fn new(socket: Socket, buf: B) -> Recv<B> {
        Recv {
            socket,
            buf,
            peek: false,
        }
    }

    /// The buffer back, for a receive never submitted.
    pub(crate) fn into_buf(self) -> B {
        self.buf
    }

    /// A receive with `MSG_PEEK`. It completes with `ECANCELED`, leaving the buffer as it
    /// was, when the socket holds rescued bytes by then: those are what the next read
    /// returns (they are older than what the kernel holds, or the kernel's copy went to the
    /// receive that rescued them), so the caller serves the peek from them.
    pub(crate) fn peek(socket: Socket, buf: B) -> Recv<B> {
        Recv {
            socket,
            buf,
            peek: true,
        }
    }
}

/// Whether a stream receive's completion `cqe` brought some bytes but fewer than the
/// `offered` room: the socket had no more, so it is empty now (`OpCode::emptied`).
pub(crate) fn short(cqe: &Completion, offered: usize) -> bool {
    cqe.result() > 0 && (cqe.result() as usize) < offered
}

/// The error of a request whose result is not used (`ECANCELED`).
pub(crate) fn superseded() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

// SAFETY: the SQE points into `buf`'s stable memory (`IoBufMut` contract), at most
// `bytes_total` bytes, and at the fd kept open by `socket`; both are owned by `self`.
unsafe impl<B: IoBufMut> OpCode for Recv<B> {
    type Output = (io::Result<usize>, B);

    fn build(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_total().min(MAX_IO) as u32;
        let flags = if self.peek { libc::MSG_PEEK } else { 0 };
        let poll_first = !self.peek && self.socket.receive_drained();
        on_target!(self.socket.uring_fd(), fd => opcode::Recv::new(fd, self.buf.stable_mut_ptr(), len)
            .flags(flags)
            .ioprio(if poll_first { RECVSEND_POLL_FIRST } else { 0 })
            .build())
    }

    fn complete(mut self, cqe: Completion) -> Self::Output {
        if self.peek {
            if self.socket.has_rescued() {
                return (Err(superseded()), self.buf);
            }
            let res = cqe.into_result().map(|n| {
                let n = (n as usize).min(self.buf.bytes_total());
                bufs::set_init_across(std::slice::from_mut(&mut self.buf), n);
                n
            });
            return (res, self.buf);
        }
        let res = received(&self.socket, cqe, std::slice::from_mut(&mut self.buf));
        (res, self.buf)
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let len = self.buf.bytes_total().min(MAX_IO);
        let flags = libc::MSG_DONTWAIT | if self.peek { libc::MSG_PEEK } else { 0 };
        // SAFETY: the same memory and fd the SQE would name: `len` bytes of `buf`'s stable
        // memory, owned by `self` and borrowed mutably for the call, and `socket`'s open fd.
        let ret = unsafe {
            libc::recv(
                self.socket.as_raw_fd(),
                self.buf.stable_mut_ptr().cast(),
                len,
                flags,
            )
        };
        Completion::from_syscall(ret)
    }

    fn emptied(&self, cqe: &Completion) -> bool {
        // A stream receive that filled less than it offered took all the socket had.
        !self.peek && short(cqe, self.buf.bytes_total().min(MAX_IO))
    }

    fn complete_detached(self, cqe: Completion) {
        // A peek took nothing from the socket: there is nothing to keep.
        if !self.peek {
            rescue_received(&self.socket, cqe, std::slice::from_ref(&self.buf));
        }
    }
}

/// How a send waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendMode {
    /// Skip-success fast path for streams: `MSG_DONTWAIT | MSG_WAITALL`, no CQE when all bytes
    /// went out.
    FastStream,
    /// Skip-success fast path for datagrams: `MSG_DONTWAIT`.
    FastDatagram,
    /// Waits for room in the socket; with `all`, until every byte is sent (`MSG_WAITALL`).
    Wait { all: bool },
}

impl SendMode {
    fn flags(self) -> i32 {
        libc::MSG_NOSIGNAL
            | match self {
                SendMode::FastStream => libc::MSG_DONTWAIT | libc::MSG_WAITALL,
                SendMode::FastDatagram => libc::MSG_DONTWAIT,
                SendMode::Wait { all: true } => libc::MSG_WAITALL,
                SendMode::Wait { all: false } => 0,
            }
    }

    pub(crate) fn is_fast(self) -> bool {
        matches!(self, SendMode::FastStream | SendMode::FastDatagram)
    }

    /// The mode of a datagram send: the skip-success path with `fast`, else one that waits
    /// for room.
    pub(crate) fn datagram(fast: bool) -> SendMode {
        match fast {
            true => SendMode::FastDatagram,
            false => SendMode::Wait { all: false },
        }
    }

    /// `sqe` with `IOSQE_CQE_SKIP_SUCCESS` in the fast modes, which carry `MSG_DONTWAIT`
    /// with it (`flags`), as the skip-success contract requires.
    fn skip_success(self, sqe: squeue::Entry) -> squeue::Entry {
        if self.is_fast() {
            sqe.flags(squeue::Flags::SKIP_SUCCESS)
        } else {
            sqe
        }
    }

    /// The `IORING_OP_SEND` SQE of `len` bytes at `ptr` on `fd` in this mode. The caller
    /// keeps `ptr..ptr + len` and `fd` valid until the final CQE.
    pub(crate) fn send_sqe(self, target: Target, ptr: *const u8, len: u32) -> squeue::Entry {
        self.send_to_sqe(target, ptr, len, (std::ptr::null(), 0))
    }

    /// [`send_sqe`](SendMode::send_sqe) to the address `dest` (its pointer and length; null
    /// and 0 for the connected peer), which the caller also keeps valid until the final CQE.
    /// `IORING_OP_SEND` takes an address from Linux 6.1 (`runtime::op::send_takes_address`).
    pub(crate) fn send_to_sqe(
        self,
        target: Target,
        ptr: *const u8,
        len: u32,
        dest: (*const libc::sockaddr, libc::socklen_t),
    ) -> squeue::Entry {
        self.skip_success(on_target!(target, fd => opcode::Send::new(fd, ptr, len)
            .dest_addr(dest.0)
            .dest_addr_len(dest.1)
            .flags(self.flags())
            .build()))
    }

    /// The `IORING_OP_SENDMSG` SQE of the message `hdr` describes, on `target`, in this mode.
    /// The caller keeps `hdr`, what it points at and the fd valid until the final CQE.
    pub(crate) fn sendmsg_sqe(self, target: Target, hdr: *const libc::msghdr) -> squeue::Entry {
        self.skip_success(on_target!(target, fd => opcode::SendMsg::new(fd, hdr)
            .flags(self.flags() as u32)
            .build()))
    }
}

/// Sends some of `buf`'s initialized bytes: first on the skip-success path `fast`, then, if
/// the socket had no room (`EAGAIN`), with a request that waits for some.
pub(crate) async fn send_some<B: IoBuf>(
    socket: &Socket,
    buf: B,
    fast: SendMode,
) -> (io::Result<usize>, B) {
    let (res, buf) = Op::new(Send::new(socket.clone(), buf, fast)).await;
    match res {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let wait = SendMode::Wait { all: false };
            Op::new(Send::new(socket.clone(), buf, wait)).await
        }
        res => (res, buf),
    }
}

/// `IORING_OP_SEND` of a buffer's initialized bytes.
#[derive(Debug)]
pub(crate) struct Send<B> {
    socket: Socket,
    buf: B,
    mode: SendMode,
}

impl<B: IoBuf> Send<B> {
    pub(crate) fn new(socket: Socket, buf: B, mode: SendMode) -> Send<B> {
        Send { socket, buf, mode }
    }

    fn len(&self) -> usize {
        self.buf.bytes_init().min(MAX_IO)
    }
}

// SAFETY: the SQE points into `buf`'s stable memory (`IoBuf` contract), `bytes_init` bytes,
// and at the fd kept open by `socket`. The fast modes carry `IOSQE_CQE_SKIP_SUCCESS` and
// `MSG_DONTWAIT`, so they complete or fail inside the submitting enter (no poll is armed), as
// `skip_success` requires; success means all `len` bytes were sent.
unsafe impl<B: IoBuf> OpCode for Send<B> {
    type Output = (io::Result<usize>, B);

    fn build(&mut self) -> squeue::Entry {
        self.mode.send_sqe(
            self.socket.uring_fd(),
            self.buf.stable_ptr(),
            self.len() as u32,
        )
    }

    fn skip_success(&self) -> Option<i32> {
        self.mode.is_fast().then(|| self.len() as i32)
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        (cqe.into_result().map(|n| n as usize), self.buf)
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Writable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        // Waiting for all bytes is the readiness loop's business: one non-blocking attempt.
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        // SAFETY: the same memory and fd the SQE would name: `len` initialized bytes of
        // `buf`'s stable memory, owned by `self`, and `socket`'s open fd.
        let ret = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                self.buf.stable_ptr().cast(),
                self.len(),
                flags,
            )
        };
        Completion::from_syscall(ret)
    }
}

/// `IORING_OP_READV` into owned buffers, each filled from its start, in order.
#[derive(Debug)]
pub(crate) struct Readv<B> {
    socket: Socket,
    bufs: Vec<B>,
    /// Heap array the SQE points at.
    iovecs: Vec<libc::iovec>,
}

impl<B: IoBufMut> Readv<B> {
    pub(crate) fn new(socket: Socket, bufs: Vec<B>) -> Readv<B> {
        Readv {
            socket,
            bufs,
            iovecs: Vec::new(),
        }
    }
}

// SAFETY: the SQE points at `iovecs` (a heap array owned by `self`, not resized after
// `build`), whose entries point into the buffers' stable memory; the fd is kept open by
// `socket`.
unsafe impl<B: IoBufMut> OpCode for Readv<B> {
    type Output = (io::Result<usize>, Vec<B>);

    fn build(&mut self) -> squeue::Entry {
        self.iovecs = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        on_target!(self.socket.uring_fd(), fd => opcode::Readv::new(
            fd,
            self.iovecs.as_ptr(),
            self.iovecs.len() as u32,
        )
        .offset(u64::MAX)
        .build())
    }

    fn complete(mut self, cqe: Completion) -> Self::Output {
        let res = received(&self.socket, cqe, &mut self.bufs);
        (res, self.bufs)
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let _ = self.build();
        let mut hdr = MsgHdr::zeroed();
        hdr.0.msg_iov = self.iovecs.as_mut_ptr();
        hdr.0.msg_iovlen = self.iovecs.len();
        // SAFETY: the header (a live local) points at `iovecs`, whose entries cover the
        // buffers' stable memory; all owned by `self` and borrowed mutably for the call.
        unsafe { super::nonblocking::recvmsg(self.socket.as_raw_fd(), &mut hdr.0, 0) }
    }

    fn emptied(&self, cqe: &Completion) -> bool {
        short(cqe, self.iovecs.iter().map(|iov| iov.iov_len).sum())
    }

    fn complete_detached(self, cqe: Completion) {
        rescue_received(&self.socket, cqe, &self.bufs);
    }
}

/// The most buffers one vectored send takes: the kernel's `UIO_MAXIOV`
/// (`include/uapi/linux/uio.h`).
const MAX_IOVECS: usize = 1024;

/// `IORING_OP_SENDMSG` of several owned buffers (a vectored write that cannot raise SIGPIPE);
/// at most [`MAX_IOVECS`] of them per request.
#[derive(Debug)]
pub(crate) struct Writev<B> {
    socket: Socket,
    bufs: Vec<B>,
    /// Leading bytes of `bufs` already sent (by earlier requests), left out of this one.
    skip: usize,
    iovecs: Vec<libc::iovec>,
    /// Boxed: the SQE points at it.
    hdr: Box<MsgHdr>,
}

/// A `msghdr` that may be sent between threads in debug output; plain data.
pub(crate) struct MsgHdr(pub(crate) libc::msghdr);

impl std::fmt::Debug for MsgHdr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("msghdr")
            .field("iovlen", &self.0.msg_iovlen)
            .field("namelen", &self.0.msg_namelen)
            .field("controllen", &self.0.msg_controllen)
            .finish()
    }
}

impl MsgHdr {
    pub(crate) fn zeroed() -> MsgHdr {
        // SAFETY: `msghdr` is plain old data; all-zero (null pointers, zero lengths) is valid.
        MsgHdr(unsafe { std::mem::zeroed() })
    }
}

impl<B: IoBuf> Writev<B> {
    pub(crate) fn new(socket: Socket, bufs: Vec<B>) -> Writev<B> {
        Writev::after(socket, bufs, 0)
    }

    /// Sends what follows the first `skip` bytes of `bufs`.
    pub(crate) fn after(socket: Socket, bufs: Vec<B>, skip: usize) -> Writev<B> {
        Writev {
            socket,
            bufs,
            skip,
            iovecs: Vec::new(),
            hdr: Box::new(MsgHdr::zeroed()),
        }
    }
}

// SAFETY: the SQE points at `hdr` (boxed), which points at `iovecs` (heap, not resized after
// `build`), whose entries point into the buffers' stable memory; the fd is kept open by
// `socket`. All owned by `self`.
unsafe impl<B: IoBuf> OpCode for Writev<B> {
    type Output = (io::Result<usize>, Vec<B>);

    fn build(&mut self) -> squeue::Entry {
        let mut skip = self.skip;
        self.iovecs = self
            .bufs
            .iter()
            .filter_map(|b| {
                let len = b.bytes_init();
                let start = skip.min(len);
                skip -= start;
                (start < len).then(|| libc::iovec {
                    // In bounds: `start < len`, and the buffer has `len` initialized bytes.
                    iov_base: b.stable_ptr().wrapping_add(start) as *mut libc::c_void,
                    iov_len: len - start,
                })
            })
            // More would fail the whole send (`EMSGSIZE`); the rest goes with the next one.
            .take(MAX_IOVECS)
            .collect();
        self.hdr.0.msg_iov = self.iovecs.as_mut_ptr();
        self.hdr.0.msg_iovlen = self.iovecs.len();
        on_target!(self.socket.uring_fd(), fd => opcode::SendMsg::new(fd, &self.hdr.0)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build())
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        (cqe.into_result().map(|n| n as usize), self.bufs)
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Writable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let _ = self.build();
        // SAFETY: the boxed header points at `iovecs`, whose entries cover the buffers'
        // initialized bytes; all owned by `self`.
        unsafe { super::nonblocking::sendmsg(self.socket.as_raw_fd(), &self.hdr.0, 0) }
    }
}

#[cfg(test)]
mod tests {
    use std::os::{fd::OwnedFd, unix::net::UnixStream};

    use super::*;

    fn pair() -> (Socket, Socket) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Socket::from_fd(OwnedFd::from(a)),
            Socket::from_fd(OwnedFd::from(b)),
        )
    }

    /// What a readiness backend would do with the same op values the socket code builds:
    /// try the non-blocking form, wait for the named readiness when it would block, and hand
    /// the outcome to `complete`. No ring and no runtime are involved.
    #[test]
    fn stream_ops_run_through_their_nonblocking_form() {
        let (a, b) = pair();
        let mut recv = Recv::new(b.clone(), Vec::<u8>::with_capacity(16));
        assert_eq!(recv.readiness(), Some((b.as_raw_fd(), Interest::Readable)));
        assert!(
            recv.try_nonblocking().is_none(),
            "nothing to read: it would block"
        );

        let mut send = Send::new(a.clone(), b"hello".to_vec(), SendMode::Wait { all: true });
        assert_eq!(send.readiness(), Some((a.as_raw_fd(), Interest::Writable)));
        let sent = send.try_nonblocking().expect("room in an empty socket");
        let (res, _) = send.complete(sent);
        assert_eq!(res.unwrap(), 5);

        let got = recv.try_nonblocking().expect("the bytes arrived");
        let (res, buf) = recv.complete(got);
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"hello");

        drop(a);
        let mut recv = Recv::new(b, Vec::<u8>::with_capacity(16));
        let eof = recv.try_nonblocking().expect("end of stream is ready");
        assert_eq!(recv.complete(eof).0.unwrap(), 0);
    }

    /// The `ioprio` field of a built SQE (bytes 2..4 of `struct io_uring_sqe`).
    fn ioprio(entry: squeue::Entry) -> u16 {
        // SAFETY: `squeue::Entry` is a `repr(C)` wrapper of the 64-byte `io_uring_sqe`, all
        // plain integers (the size is checked by `transmute` at compile time).
        let raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
        u16::from_ne_bytes([raw[2], raw[3]])
    }

    /// Runs `recv` through its non-blocking form and returns its output.
    fn run(mut recv: Recv<Vec<u8>>) -> (io::Result<usize>, Vec<u8>) {
        let cqe = recv.try_nonblocking().expect("data waits");
        recv.complete(cqe)
    }

    /// A receive that filled less than it offered drained the socket, so the next one asks
    /// to wait for data before its first try; one after a receive that filled its buffer or
    /// read the end of the stream does not, nor does a peek.
    #[test]
    fn a_receive_after_one_that_drained_the_socket_polls_first() {
        let (a, b) = pair();
        let first = || Recv::new(b.clone(), Vec::<u8>::with_capacity(16));
        assert_eq!(ioprio(first().build()), 0, "a new socket is tried first");

        let send = |bytes: &[u8]| {
            let mut send = Send::new(a.clone(), bytes.to_vec(), SendMode::Wait { all: true });
            let cqe = send.try_nonblocking().unwrap();
            send.complete(cqe).0.unwrap();
        };
        send(b"hello");
        assert_eq!(run(first()).0.unwrap(), 5);
        assert_eq!(ioprio(first().build()), RECVSEND_POLL_FIRST);
        assert_eq!(
            ioprio(Recv::peek(b.clone(), Vec::<u8>::with_capacity(16)).build()),
            0,
            "a peek leaves the bytes and tries first"
        );

        send(&[7; 16]);
        assert_eq!(
            run(first()).0.unwrap(),
            16,
            "filled: the socket may hold more"
        );
        assert_eq!(ioprio(first().build()), 0);

        send(b"x");
        assert_eq!(run(first()).0.unwrap(), 1);
        drop(a);
        assert_eq!(run(first()).0.unwrap(), 0, "the end of the stream");
        assert_eq!(ioprio(first().build()), 0, "the end is read at once");
    }
}
