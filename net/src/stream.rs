//! Byte-stream I/O shared by `TcpStream` and `UnixStream`: reads that serve rescued bytes first
//! and keep kernel order, and writes that go behind the caller's back.
//!
//! # Invariants
//!
//! - A receive serves bytes rescued from abandoned receives before asking the kernel, and one
//!   cancelled because bytes were rescued meanwhile is retried, which serves them
//!   (`RescueAware`, below): the caller sees the stream in kernel order.
//! - Writes of up to `behind::COPY_MAX` bytes are staged (`behind.rs`); every other write
//!   first waits until nothing is staged or in flight, so the byte stream keeps call order.
//! - A failure of a staged send is reported by the next write, flush or write shutdown.
//!
//! # Receives that notice rescued data
//!
//! When a receive is abandoned after the kernel delivered data to it, that data is rescued
//! into the socket (see `socket.rs`). A receive already in flight on the same socket would then
//! wait for *new* data while the answer it needs sits in the rescue queue, possibly forever
//! (a peer that waits for our reply sends nothing more). So a receive registers its task with
//! the socket; when data is rescued it cancels its own request, and on `ECANCELED` the caller
//! serves the rescued data from the buffer the request hands back. If the request won the race
//! and delivered data, its completion already placed older rescued bytes in front.

use std::{
    future::Future,
    io,
    net::Shutdown,
    pin::Pin,
    task::{Context, Poll},
};

use runtime::{
    buf::{IoBuf, IoBufMut, Slice},
    op::{Op, OpCode},
};

use crate::{
    behind,
    op::{Readv, Recv, Send, SendMode, Writev, send_some},
    socket::Socket,
    write::{AfterSend, Kind, Slow, Write, WritevAll},
};

/// Whether `e` is `ECANCELED`.
pub(crate) fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

/// The error that ends a multi-request transfer after `done` bytes: when a surrounding
/// `CancelExt` scope cancelled it, the scope's error carrying the count, so the caller knows
/// where to resume; otherwise `e` unchanged.
pub(crate) fn stopped(e: io::Error, done: usize) -> io::Error {
    match runtime::op::cancel::reason() {
        Some(reason) if done > 0 && is_cancelled(&e) => reason.error(done),
        _ => e,
    }
}

/// Reads into `buf` (from its start, up to its capacity).
pub(crate) async fn read<B: IoBufMut>(socket: &Socket, buf: B) -> (io::Result<usize>, B) {
    receive(socket, buf, std::slice::from_mut, Recv::new).await
}

/// [`read`] for a bulk stream whose last read filled its buffer: on io_uring it first tries
/// the non-blocking `recv(2)` itself, as the epoll backend's op does, so that a read that
/// finds data ends in this turn instead of waiting for an enter (`write.rs` says why that
/// matters to a bulk stream). Only where `runtime::op::may_try_inline` allows it, on a
/// socket with an fd, with nothing rescued (which comes first) and no cancel scope fired.
pub(crate) async fn read_bulk<B: IoBufMut>(socket: &Socket, buf: B) -> (io::Result<usize>, B) {
    let tries = runtime::op::may_try_inline()
        && !runtime::op::runs_inline()
        && !socket.is_direct()
        && !socket.has_rescued()
        && runtime::op::cancel::reason().is_none();
    if !tries {
        return read(socket, buf).await;
    }
    let mut op = Recv::new(socket.clone(), buf);
    let tried = op.try_nonblocking();
    runtime::op::count_inline_op();
    if let Some(cqe) = tried {
        return op.complete(cqe);
    }
    // Empty now: the receive that waits polls first (`Socket::receive_drained`).
    socket.note_empty();
    read(socket, op.into_buf()).await
}

/// Reads into several buffers, filling each from its start in order.
pub(crate) async fn readv<B: IoBufMut>(
    socket: &Socket,
    bufs: Vec<B>,
) -> (io::Result<usize>, Vec<B>) {
    receive(socket, bufs, Vec::as_mut_slice, Readv::new).await
}

/// Runs receives built by `recv` until one yields data in kernel order: rescued bytes are
/// served first, and a receive cancelled because data was rescued meanwhile is retried,
/// which serves them.
async fn receive<B, Bufs, T>(
    socket: &Socket,
    mut bufs: Bufs,
    as_slice: fn(&mut Bufs) -> &mut [B],
    recv: fn(Socket, Bufs) -> T,
) -> (io::Result<usize>, Bufs)
where
    B: IoBufMut,
    T: OpCode<Output = (io::Result<usize>, Bufs)>,
{
    loop {
        if let Some(n) = socket.read_rescued(as_slice(&mut bufs)) {
            return (Ok(n), bufs);
        }
        let op = recv(socket.clone(), bufs);
        let ((res, b), cancelled) = RescueAware::new(socket.clone(), op).await;
        bufs = b;
        match res {
            // Cancelled because data was rescued: serve it.
            Err(e) if cancelled && is_cancelled(&e) => continue,
            res => return (res, bufs),
        }
    }
}

/// Reads until `buf` is full (to its capacity) with `read` (a handle's read of a slice);
/// `UnexpectedEof` if the peer closes first.
pub(crate) async fn read_exact<B: IoBufMut>(
    buf: B,
    mut read: impl AsyncFnMut(Slice<B>) -> (io::Result<usize>, Slice<B>),
) -> (io::Result<()>, B) {
    let total = buf.bytes_total();
    let mut filled = 0;
    let mut buf = buf;
    while filled < total {
        let (res, slice) = read(buf.slice(filled..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the peer closed after {filled} of {total} bytes"),
                    )),
                    buf,
                );
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(stopped(e, filled)), buf),
        }
    }
    (Ok(()), buf)
}

/// Reports an earlier failure, or stages `bytes` behind the caller's back when they are few
/// enough (`Ok(true)`; nothing to stage counts as staged).
pub(crate) fn write_behind(socket: &Socket, bytes: &[u8]) -> io::Result<bool> {
    if let Some(e) = behind::take_error(socket) {
        return Err(e);
    }
    Ok(bytes.is_empty() || behind::try_stage(socket, bytes))
}

/// Writes some of `buf`'s initialized bytes (all of them when they are written behind). The
/// future is small: its rare slow path is boxed (see `write.rs`).
pub(crate) fn write<B: IoBuf>(
    socket: &Socket,
    buf: B,
) -> impl Future<Output = (io::Result<usize>, B)> + use<'_, B> {
    Write::<B, WriteSome>::new(socket, buf)
}

/// `write`: resolves with how many bytes the kernel took.
pub(crate) enum WriteSome {}

impl<B: IoBuf> Kind<B> for WriteSome {
    type Output = usize;

    fn staged(buf: &B) -> usize {
        buf.bytes_init()
    }

    fn slow(socket: &Socket, buf: B) -> Slow<'_, B, usize> {
        Box::pin(async move {
            if let Err(e) = behind::flush(socket).await {
                return (Err(e), buf);
            }
            send_some(socket, buf, SendMode::FastStream).await
        })
    }

    fn sent(socket: &Socket, res: io::Result<usize>, buf: B) -> AfterSend<'_, B, usize> {
        match res {
            // No room: wait for some (what `send_some` does after its first try).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Box::pin(Op::new(Send::new(
                socket.clone(),
                buf,
                SendMode::Wait { all: false },
            )))),
            res => Ok((res, buf)),
        }
    }
}

/// Writes all of `buf`'s initialized bytes, behind the caller's back when they are few.
pub(crate) fn write_all<B: IoBuf>(
    socket: &Socket,
    buf: B,
) -> impl Future<Output = (io::Result<()>, B)> + use<'_, B> {
    Write::<B, WriteAll>::new(socket, buf)
}

/// `write_all`: resolves once the kernel took every byte.
pub(crate) enum WriteAll {}

impl<B: IoBuf> Kind<B> for WriteAll {
    type Output = ();

    fn staged(_: &B) {}

    fn slow(socket: &Socket, buf: B) -> Slow<'_, B, ()> {
        Box::pin(async move {
            if let Err(e) = behind::flush(socket).await {
                return (Err(e), buf);
            }
            write_all_now(socket, buf).await
        })
    }

    fn sent(socket: &Socket, res: io::Result<usize>, buf: B) -> AfterSend<'_, B, ()> {
        let len = buf.bytes_init();
        match res {
            Ok(n) if n >= len => Ok((Ok(()), buf)),
            Ok(n) => Err(Box::pin(write_rest(socket, buf, n, len))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(Box::pin(write_rest(socket, buf, 0, len)))
            }
            Err(e) => Ok((Err(e), buf)),
        }
    }
}

/// `write_all` without writing behind: resolves once the kernel took every byte. The caller
/// has flushed what was written behind.
pub(crate) async fn write_all_now<B: IoBuf>(socket: &Socket, buf: B) -> (io::Result<()>, B) {
    let len = buf.bytes_init();
    let (res, buf) = Op::new(Send::new(socket.clone(), buf, SendMode::FastStream)).await;
    let sent = match res {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return (Err(e), buf),
    };
    write_rest(socket, buf, sent, len).await
}

/// Sends `buf[sent..len]` with requests that wait for room, until every byte went out.
pub(crate) async fn write_rest<B: IoBuf>(
    socket: &Socket,
    buf: B,
    mut sent: usize,
    len: usize,
) -> (io::Result<()>, B) {
    let mut buf = buf;
    while sent < len {
        let mode = SendMode::Wait { all: true };
        let (res, slice) = Op::new(Send::new(socket.clone(), buf.slice(sent..), mode)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(stopped(e, sent)), buf),
        }
    }
    (Ok(()), buf)
}

/// Writes the initialized bytes of several buffers, in order, with one request.
pub(crate) async fn writev<B: IoBuf>(socket: &Socket, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
    if let Err(e) = behind::flush(socket).await {
        return (Err(e), bufs);
    }
    Op::new(Writev::new(socket.clone(), bufs)).await
}

/// Writes every initialized byte of several buffers, in order: behind the caller's back (copied,
/// as `write_all` does) when they are few, otherwise with vectored sends straight from the
/// buffers, as many as it takes (`write.rs`).
pub(crate) fn writev_all<B: IoBuf>(
    socket: &Socket,
    bufs: Vec<B>,
) -> impl Future<Output = (io::Result<()>, Vec<B>)> + use<'_, B> {
    WritevAll::new(socket, bufs)
}

/// Sends the bytes of `bufs` after the first `sent` of `total`, once what was written behind
/// went out.
pub(crate) async fn writev_rest<B: IoBuf>(
    socket: &Socket,
    bufs: Vec<B>,
    mut sent: usize,
    total: usize,
) -> (io::Result<()>, Vec<B>) {
    if let Err(e) = behind::flush(socket).await {
        return (Err(e), bufs);
    }
    let mut bufs = bufs;
    while sent < total {
        let (res, b) = Op::new(Writev::after(socket.clone(), bufs, sent)).await;
        bufs = b;
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), bufs),
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return (Err(stopped(e, sent)), bufs),
        }
    }
    (Ok(()), bufs)
}

/// Shuts down the read half, the write half (after the bytes written behind) or both. A
/// connection the kernel already tore down gives `Ok(())` (see `TcpStream::shutdown`).
pub(crate) fn shutdown(socket: &Socket, how: Shutdown) -> io::Result<()> {
    if matches!(how, Shutdown::Read | Shutdown::Both) {
        match socket.shutdown(Shutdown::Read) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
            _ => {}
        }
    }
    if matches!(how, Shutdown::Write | Shutdown::Both) {
        // After the bytes written behind, if any still wait.
        return behind::shutdown_write(socket);
    }
    Ok(())
}

/// Drives `op`, cancelling it if data is rescued meanwhile. Yields the operation's output and
/// whether a cancellation was requested for that reason.
pub(crate) struct RescueAware<T: OpCode> {
    op: Op<T>,
    socket: Socket,
    cancelled: bool,
}

impl<T: OpCode> RescueAware<T> {
    pub(crate) fn new(socket: Socket, op: T) -> RescueAware<T> {
        RescueAware {
            op: Op::new(op),
            socket,
            cancelled: false,
        }
    }
}

impl<T: OpCode> Unpin for RescueAware<T> {}

impl<T: OpCode> Future for RescueAware<T> {
    type Output = (T::Output, bool);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.op).poll(cx) {
            return Poll::Ready((out, this.cancelled));
        }
        if !this.cancelled && this.socket.has_rescued() {
            this.op.cancel();
            this.cancelled = true;
        }
        this.socket.set_reader(cx.waker());
        Poll::Pending
    }
}

impl<T: OpCode> std::fmt::Debug for RescueAware<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RescueAware")
            .field("op", &self.op)
            .field("cancelled", &self.cancelled)
            .finish()
    }
}
