//! `Write`: the future of a byte stream's `write` and `write_all` (`stream.rs`).
//!
//! # Invariants
//!
//! - Nothing happens before the first poll (like an `async fn`): that poll either writes the
//!   bytes behind (`behind.rs`) and is ready, or reports an earlier failure, or moves to the
//!   slow path, which waits for what was written behind and then sends the buffer itself.
//! - The slow path is boxed. It is rare (writes of more than 4 KiB, or more than 256 KiB
//!   staged), and keeping its state out of line keeps every caller's future small: that
//!   state would otherwise sit in the memory of every idle connection's task.

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use runtime::buf::IoBuf;

use crate::{socket::Socket, stream::write_behind};

/// The boxed slow path of a write.
pub(crate) type Slow<'a, B, T> = Pin<Box<dyn Future<Output = (io::Result<T>, B)> + 'a>>;

/// A write that is written behind when it can be (see the module docs). `W` (what the write
/// returns when its bytes were written behind) and `S` (the slow path) are closures without
/// captures, so they take no room.
pub(crate) enum Write<'a, B, T, W, S> {
    Start {
        socket: &'a Socket,
        buf: B,
        written: W,
        slow: S,
    },
    Slow(Slow<'a, B, T>),
    Done,
}

impl<B, T, W, S> fmt::Debug for Write<'_, B, T, W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Write::Start { .. } => "Write::Start",
            Write::Slow(_) => "Write::Slow",
            Write::Done => "Write::Done",
        })
    }
}

impl<'a, B, T, W, S> Future for Write<'a, B, T, W, S>
where
    B: IoBuf,
    T: Unpin,
    W: FnOnce(&B) -> T + Unpin,
    S: FnOnce(&'a Socket, B) -> Slow<'a, B, T> + Unpin,
{
    type Output = (io::Result<T>, B);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match std::mem::replace(this, Write::Done) {
                Write::Start {
                    socket,
                    buf,
                    written,
                    slow,
                } => match write_behind(socket, buf.as_slice()) {
                    Err(e) => return Poll::Ready((Err(e), buf)),
                    Ok(true) => return Poll::Ready((Ok(written(&buf)), buf)),
                    Ok(false) => *this = Write::Slow(slow(socket, buf)),
                },
                Write::Slow(mut fut) => {
                    let poll = fut.as_mut().poll(cx);
                    if poll.is_pending() {
                        *this = Write::Slow(fut);
                    }
                    return poll;
                }
                Write::Done => panic!("a stream's write future polled after it completed"),
            }
        }
    }
}
