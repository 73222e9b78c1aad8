//! Accepting connections, shared by `TcpListener` and `UnixListener`: the backoff after
//! descriptor exhaustion, and the stream of accepted fds over multishot accept.
//!
//! # Invariants
//!
//! - Every fd the kernel accepted is owned (`OwnedFd`) from its CQE on, so one that nobody
//!   takes (the stream was dropped, or the address could not be decoded) is closed.
//! - After `EMFILE`-class errors, accepting waits (10 ms doubling to 1 s, reset by a success),
//!   so a loop that retries on errors does not spin while the condition lasts.
//! - The multishot request is re-armed whenever the kernel ends it without an error that ends
//!   the stream; on kernels without multishot accept (`EINVAL` before any connection) the
//!   stream accepts one connection per request.

use std::{
    cell::Cell,
    future::Future,
    io,
    os::fd::OwnedFd,
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use futures_core::Stream;
use runtime::{
    op::{Multishot, Op},
    time::Sleep,
};

use crate::{
    addr::RawAddr,
    op::{Accept, AcceptMulti},
    socket::Socket,
};

/// Delay before retrying after `EMFILE`-class errors: 10 ms doubling to 1 s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Whether an accept error means "out of descriptors or memory": retrying at once would
    /// fail the same way and spin.
    pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }

    pub(crate) fn failed(&mut self) {
        self.delay = if self.delay.is_zero() {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MAX)
        };
        self.until = Some(Instant::now() + self.delay);
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// One accept on `socket`: first waits out `backoff` if descriptors ran out before, then
/// accepts, and updates `backoff` (reset by a success, grown by an `EMFILE`-class error).
pub(crate) async fn accept_one(
    socket: &Socket,
    backoff: &Cell<Backoff>,
) -> io::Result<(OwnedFd, RawAddr)> {
    if let Some(until) = backoff.get().until() {
        runtime::time::sleep_until(until).await;
    }
    let res = Op::new(Accept::new(socket.clone())).await;
    let mut b = backoff.get();
    match &res {
        Ok(_) => b.succeeded(),
        Err(e) if Backoff::is_exhaustion(e) => b.failed(),
        Err(_) => {}
    }
    backoff.set(b);
    res
}

/// Accepted connections as fds, over one multishot accept request (see the module docs).
#[derive(Debug)]
pub(crate) struct AcceptStream {
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

impl AcceptStream {
    pub(crate) fn new(socket: Socket) -> AcceptStream {
        AcceptStream {
            mode: Mode::Multishot(Multishot::new(AcceptMulti::new(socket.clone()))),
            socket,
            backoff: Backoff::default(),
            pause: None,
            ended: false,
            accepted_any: false,
        }
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

impl Stream for AcceptStream {
    type Item = io::Result<OwnedFd>;

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
                    return Poll::Ready(Some(Ok(fd)));
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
