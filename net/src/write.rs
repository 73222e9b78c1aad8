//! `Write`: the future of a byte stream's `write` and `write_all` (`stream.rs`), and
//! `WritevAll`, that of `writev_all`, which does the same for several buffers.
//!
//! # Invariants
//!
//! - Nothing happens before the first poll (like an `async fn`): that poll either writes the
//!   bytes behind (`behind.rs`) and is ready, or reports an earlier failure, or sends the
//!   buffer itself.
//! - A send of the caller's buffer starts only once nothing is staged or in flight on the
//!   socket, so the byte stream keeps call order.
//! - Where ops run inline (the epoll backend, `runtime::op::runs_inline`) and nothing is
//!   behind, that first poll sends from the caller's buffer itself, as the op would, and is
//!   ready when the socket took what the write needs (tokio's write): a large write then
//!   costs its system call and nothing else. On io_uring a write too large to go behind does
//!   the same (`runtime::op::may_try_inline`: not under SQPOLL, and not on a direct
//!   descriptor, which has no fd to call with): the task goes on in the same turn instead of
//!   waiting for an enter, so a bulk stream's next read follows at once, as with epoll, and
//!   the peer is woken once for several writes instead of once per loop turn
//!   (`docs/benchmarks.md`). Inside a cancel scope that fired it does not (the op path
//!   completes with `ECANCELED` there).
//! - `WritevAll` writes behind when all its buffers together are few enough to copy (one by
//!   one, in order; a buffer refused because too much is staged goes, with the rest, through
//!   the slow path, after what is staged), and otherwise takes the slow path: vectored sends
//!   from the caller's buffers, once nothing is behind.
//! - Everything else is the slow path, boxed: on io_uring every write the kernel must see
//!   (larger than `behind::COPY_MAX`), and anywhere a write behind bytes still staged, one
//!   that found no room, or a `write_all` the socket took only part of. Keeping that state
//!   out of line keeps every caller's future small: it would otherwise sit in the memory of
//!   every idle connection's task (the `Op` of a send alone is larger than this future).

use std::{
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    os::fd::AsRawFd,
    pin::Pin,
    task::{Context, Poll},
};

use runtime::{buf::IoBuf, op};

use crate::{
    behind,
    op::{MAX_IO, nonblocking},
    socket::Socket,
    stream::{write_behind, writev_rest},
};

/// The boxed slow path of a write.
pub(crate) type Slow<'a, B, T> = Pin<Box<dyn Future<Output = (io::Result<T>, B)> + 'a>>;

/// How a write goes on after a send: done with its result, or on to the slow path.
pub(crate) type AfterSend<'a, B, T> = Result<(io::Result<T>, B), Slow<'a, B, T>>;

/// What a write returns, and how it goes on after its first send: `write` or `write_all`.
pub(crate) trait Kind<B> {
    /// `usize` (bytes written) for `write`, `()` for `write_all`.
    type Output: Unpin;

    /// The result of a write whose bytes were all written behind.
    fn staged(buf: &B) -> Self::Output;

    /// The whole write when its first poll does not send it: flush what is behind, then send.
    fn slow(socket: &Socket, buf: B) -> Slow<'_, B, Self::Output>;

    /// The result of a first send that did not wait (`MSG_DONTWAIT`), or the slow path that
    /// goes on from it.
    fn sent(socket: &Socket, res: io::Result<usize>, buf: B) -> AfterSend<'_, B, Self::Output>;
}

/// A write that is written behind when it can be (see the module docs).
pub(crate) enum Write<'a, B: IoBuf, K: Kind<B>> {
    Start { socket: &'a Socket, buf: B },
    Slow(Slow<'a, B, K::Output>),
    Done(PhantomData<K>),
}

impl<'a, B: IoBuf, K: Kind<B>> Write<'a, B, K> {
    pub(crate) fn new(socket: &'a Socket, buf: B) -> Self {
        Write::Start { socket, buf }
    }
}

impl<B: IoBuf, K: Kind<B>> fmt::Debug for Write<'_, B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Write::Start { .. } => "Write::Start",
            Write::Slow(_) => "Write::Slow",
            Write::Done(_) => "Write::Done",
        })
    }
}

impl<B: IoBuf, K: Kind<B>> Unpin for Write<'_, B, K> {}

impl<'a, B: IoBuf, K: Kind<B>> Future for Write<'a, B, K> {
    type Output = (io::Result<K::Output>, B);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match std::mem::replace(this, Write::Done(PhantomData)) {
                Write::Start { socket, buf } => match write_behind(socket, buf.as_slice()) {
                    Err(e) => return Poll::Ready((Err(e), buf)),
                    Ok(true) => return Poll::Ready((Ok(K::staged(&buf)), buf)),
                    Ok(false) if sends_inline(socket, buf.bytes_init()) => {
                        match K::sent(socket, send_now(socket, buf.as_slice()), buf) {
                            Ok(done) => return Poll::Ready(done),
                            Err(slow) => *this = Write::Slow(slow),
                        }
                    }
                    Ok(false) => *this = Write::Slow(K::slow(socket, buf)),
                },
                Write::Slow(mut fut) => {
                    let poll = fut.as_mut().poll(cx);
                    if poll.is_pending() {
                        *this = Write::Slow(fut);
                    }
                    return poll;
                }
                Write::Done(_) => panic!("a stream's write future polled after it completed"),
            }
        }
    }
}

/// `writev_all`: [`Write`] for several buffers (see the module docs).
pub(crate) enum WritevAll<'a, B: IoBuf> {
    Start { socket: &'a Socket, bufs: Vec<B> },
    Slow(Slow<'a, Vec<B>, ()>),
    Done,
}

impl<'a, B: IoBuf> WritevAll<'a, B> {
    pub(crate) fn new(socket: &'a Socket, bufs: Vec<B>) -> Self {
        WritevAll::Start { socket, bufs }
    }
}

impl<B: IoBuf> fmt::Debug for WritevAll<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WritevAll::Start { .. } => "WritevAll::Start",
            WritevAll::Slow(_) => "WritevAll::Slow",
            WritevAll::Done => "WritevAll::Done",
        })
    }
}

impl<B: IoBuf> Unpin for WritevAll<'_, B> {}

impl<'a, B: IoBuf> Future for WritevAll<'a, B> {
    type Output = (io::Result<()>, Vec<B>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match std::mem::replace(this, WritevAll::Done) {
                WritevAll::Start { socket, bufs } => {
                    let total: usize = bufs.iter().map(IoBuf::bytes_init).sum();
                    let mut staged = 0;
                    if total <= behind::COPY_MAX {
                        for buf in &bufs {
                            match write_behind(socket, buf.as_slice()) {
                                Ok(true) => staged += buf.bytes_init(),
                                Ok(false) => break,
                                Err(e) => return Poll::Ready((Err(e), bufs)),
                            }
                        }
                        if staged == total {
                            return Poll::Ready((Ok(()), bufs));
                        }
                    }
                    *this = WritevAll::Slow(Box::pin(writev_rest(socket, bufs, staged, total)));
                }
                WritevAll::Slow(mut fut) => {
                    let poll = fut.as_mut().poll(cx);
                    if poll.is_pending() {
                        *this = WritevAll::Slow(fut);
                    }
                    return poll;
                }
                WritevAll::Done => panic!("a writev_all future polled after it completed"),
            }
        }
    }
}

/// Whether the first poll sends `len` bytes from the caller's buffer itself (see the module
/// docs).
fn sends_inline(socket: &Socket, len: usize) -> bool {
    let allowed = op::runs_inline()
        || (len > behind::COPY_MAX && op::may_try_inline() && !socket.is_direct());
    allowed && op::cancel::reason().is_none() && behind::is_clear(socket)
}

/// One non-blocking `send(2)` of `bytes` (`nonblocking::send_slice_inline`); `EAGAIN` comes
/// back as `WouldBlock`.
fn send_now(socket: &Socket, bytes: &[u8]) -> io::Result<usize> {
    let bytes = &bytes[..bytes.len().min(MAX_IO)];
    nonblocking::send_slice_inline(socket.as_raw_fd(), bytes)
        .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
}

#[cfg(test)]
mod tests {
    use super::{Write, WritevAll};
    use crate::stream::{WriteAll, WriteSome};

    /// The future sits in every connection task that writes, idle or not: it holds the
    /// caller's buffer and the socket and nothing else (the `Op` of a send alone is larger).
    #[test]
    fn a_write_future_is_its_buffer_and_socket() {
        let inline = std::mem::size_of::<(&crate::socket::Socket, Vec<u8>)>();
        assert_eq!(std::mem::size_of::<Write<'_, Vec<u8>, WriteAll>>(), inline);
        assert_eq!(std::mem::size_of::<Write<'_, Vec<u8>, WriteSome>>(), inline);
        let several = std::mem::size_of::<(&crate::socket::Socket, Vec<Vec<u8>>)>();
        assert_eq!(std::mem::size_of::<WritevAll<'_, Vec<u8>>>(), several);
    }
}
