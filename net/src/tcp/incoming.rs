//! `Incoming`: accepted connections as a stream, over multishot accept.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::{
    op::{Multishot, Op},
    time::Sleep,
};

use super::{TcpStream, listener::Backoff};
use crate::{
    op::{Accept, AcceptMulti},
    socket::Socket,
};

/// Accepted connections of a [`TcpListener`](super::TcpListener), from
/// [`incoming`](super::TcpListener::incoming).
///
/// Backed by one multishot accept request (Linux 5.19): the kernel posts a completion per
/// connection without a new submission. When the kernel ends the request (it does after errors
/// and when the completion queue overflows), the stream re-arms it transparently. Errors are
/// yielded as items; after descriptor exhaustion (`EMFILE`, `ENFILE`) re-arming waits (10 ms,
/// doubling up to 1 s) so the stream does not spin the CPU. The stream ends (`None`) after the
/// listener was closed (`ECANCELED`) or stopped listening; on kernels without multishot accept
/// it falls back to one accept request per connection.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Incoming {
    socket: Socket,
    mode: Mode,
    backoff: Backoff,
    pause: Option<Sleep>,
    /// Set by an error after which re-arming is pointless.
    ended: bool,
    /// Whether the multishot request ever produced a connection (to tell "unsupported" from
    /// later errors).
    accepted_any: bool,
}

#[derive(Debug)]
enum Mode {
    Multishot(Multishot<AcceptMulti>),
    /// One `Accept` at a time (kernels before 5.19).
    Single(Option<Op<Accept>>),
}

impl Incoming {
    pub(super) fn new(socket: Socket) -> Incoming {
        Incoming {
            mode: Mode::Multishot(Multishot::new(AcceptMulti::new(socket.clone()))),
            socket,
            backoff: Backoff::default(),
            pause: None,
            ended: false,
            accepted_any: false,
        }
    }

    /// The next connection (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<TcpStream>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Classifies an error: ends the stream, pauses re-arming, or neither.
    fn on_error(&mut self, e: &io::Error) {
        if Backoff::is_exhaustion(e) {
            self.backoff.failed();
            if let Some(until) = self.backoff.until() {
                self.pause = Some(runtime::time::sleep_until(until));
            }
        } else if !matches!(
            e.raw_os_error(),
            Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
        ) {
            // ECANCELED (closed), EINVAL (not listening), EBADF...: nothing to re-arm for.
            self.ended = true;
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(pause) = &mut this.pause {
                ready!(Pin::new(pause).poll(cx));
                this.pause = None;
            }
            let item = match &mut this.mode {
                Mode::Multishot(accept) => match ready!(Pin::new(&mut *accept).poll_next(cx)) {
                    Some(item) => item,
                    None => {
                        // The kernel ended the request: re-arm it.
                        accept.rearm();
                        continue;
                    }
                },
                Mode::Single(op) => {
                    let accept =
                        op.get_or_insert_with(|| Op::new(Accept::new(this.socket.clone())));
                    let result = ready!(Pin::new(accept).poll(cx));
                    *op = None;
                    result.map(|(fd, _peer)| fd)
                }
            };
            match item {
                Ok(fd) => {
                    this.accepted_any = true;
                    this.backoff.succeeded();
                    return Poll::Ready(Some(Ok(TcpStream::from_socket(Socket::from_fd(fd)))));
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && !this.accepted_any
                        && matches!(this.mode, Mode::Multishot(_)) =>
                {
                    // A kernel without multishot accept rejects the flag: accept one by one.
                    this.mode = Mode::Single(None);
                }
                Err(e) => {
                    this.on_error(&e);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
