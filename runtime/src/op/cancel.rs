//! Cancel scopes: bound an operation by a deadline or another future and get its buffer back.
//!
//! `runtime::time::timeout(d, stream.read(buf))` drops the read at the deadline, and its buffer
//! with it (the driver frees the buffer once the kernel's final CQE arrives). A [`CancelExt`]
//! wrapper instead keeps the operation's future alive when its deadline or signal comes:
//!
//! 1. it marks the thread as polling inside a fired scope ([`reason`]) and polls the future
//!    again;
//! 2. every [`Op`](super::Op) polled under the mark queues one `IORING_OP_ASYNC_CANCEL` for its
//!    request, and an op not yet submitted completes at once with `ECANCELED` without reaching
//!    the kernel, so loops (`write_all`, `read_exact`) stop at their next step;
//! 3. the future resolves when the kernel posted the final CQE of its request: `ECANCELED`, or
//!    the real result when the request completed before the cancel took effect. Its buffer
//!    comes back either way, and so do bytes a receive got or the count a send sent.
//!
//! The wrapper then turns a bare `ECANCELED` into the scope's error ([`CancelReason::error`]).
//!
//! # Invariants
//!
//! - The mark is a thread-local set only for the duration of one poll of the wrapped future
//!   and restored afterwards (also on unwind), so it covers exactly the ops that future polls,
//!   never another task's. Nested scopes: the innermost fired one decides the reason; a scope
//!   that has not fired leaves an outer scope's mark in place.
//! - Only [`Op`](super::Op) futures react. Anything else the future awaits (a channel, a
//!   sleep, a spawned task) keeps running, so the wrapper waits for it; the futures of the
//!   `net` crate await only ops, and name resolution on the resolver thread for host names.

use std::{
    cell::Cell,
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use pin_project_lite::pin_project;

use crate::time::{Sleep, sleep, sleep_until};

thread_local! {
    /// Why the scope being polled on this thread is cancelling, if one fired.
    static REASON: Cell<Option<CancelReason>> = const { Cell::new(None) };
}

/// Why the operation being polled on this thread is being cancelled: `Some` while a
/// [`CancelExt`] wrapper around it has fired and is polling it to its end. Code that
/// assembles results from several operations reads it to report progress in its own error
/// (as `net`'s `write_all` reports the bytes it sent).
pub fn reason() -> Option<CancelReason> {
    REASON.with(Cell::get)
}

/// Sets the mark for one poll; restores the previous value when dropped.
struct Mark(Option<CancelReason>);

impl Mark {
    fn set(reason: CancelReason) -> Mark {
        Mark(REASON.with(|r| r.replace(Some(reason))))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        REASON.with(|r| r.set(self.0));
    }
}

/// What stopped an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// [`CancelExt::timeout`] or [`CancelExt::timeout_at`]: the deadline passed.
    TimedOut,
    /// [`CancelExt::cancel_on`]: the signal future completed.
    Requested,
}

impl CancelReason {
    /// The error kind reported: `TimedOut`, or `Other` for a requested cancellation (not
    /// `Interrupted`, which retry loops would retry).
    pub fn kind(self) -> io::ErrorKind {
        match self {
            CancelReason::TimedOut => io::ErrorKind::TimedOut,
            CancelReason::Requested => io::ErrorKind::Other,
        }
    }

    /// The error of an operation stopped for this reason after moving `transferred` bytes; it
    /// carries a [`Cancelled`].
    pub fn error(self, transferred: usize) -> io::Error {
        io::Error::new(
            self.kind(),
            Cancelled {
                reason: self,
                transferred,
            },
        )
    }
}

/// The payload of an error from a [`CancelExt`] scope; get it with
/// `err.get_ref().and_then(|e| e.downcast_ref::<Cancelled>())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// What stopped the operation.
    pub reason: CancelReason,
    /// Bytes the operation had moved before it stopped (a `write_all` that sent part of its
    /// buffer); 0 for a single request, whose byte count is its `Ok` result instead.
    pub transferred: usize,
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.reason {
            CancelReason::TimedOut => "the operation timed out",
            CancelReason::Requested => "the operation was cancelled by its `cancel_on` signal",
        })?;
        if self.transferred > 0 {
            write!(
                f,
                " after {} bytes went through; the rest starts at that offset",
                self.transferred
            )?;
        }
        f.write_str(" (the buffer came back with this error and the socket is still usable)")
    }
}

impl std::error::Error for Cancelled {}

/// Whether `err` reports a cancellation: `ECANCELED` from the kernel, or an error from a
/// [`CancelExt`] scope.
pub fn is_cancelled(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECANCELED)
        || err
            .get_ref()
            .is_some_and(|e| e.downcast_ref::<Cancelled>().is_some())
}

/// An operation output a [`CancelExt`] scope can rewrite: an `io::Result`, alone or first in a
/// tuple with the buffers handed back.
pub trait CancelOutput {
    /// Replaces a bare `ECANCELED` error with `reason`'s error; leaves everything else
    /// (successes, other errors, errors that already carry a [`Cancelled`]) as it is.
    fn cancelled(self, reason: CancelReason) -> Self;
}

fn rewrite<T>(res: io::Result<T>, reason: CancelReason) -> io::Result<T> {
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Err(reason.error(0)),
        res => res,
    }
}

impl<T> CancelOutput for io::Result<T> {
    fn cancelled(self, reason: CancelReason) -> Self {
        rewrite(self, reason)
    }
}

impl<T, B> CancelOutput for (io::Result<T>, B) {
    fn cancelled(self, reason: CancelReason) -> Self {
        (rewrite(self.0, reason), self.1)
    }
}

impl<T, B, C> CancelOutput for (io::Result<T>, B, C) {
    fn cancelled(self, reason: CancelReason) -> Self {
        (rewrite(self.0, reason), self.1, self.2)
    }
}

/// Bounds an operation future by a deadline or by another future, cancelling its io_uring
/// requests through `IORING_OP_ASYNC_CANCEL` and waiting for their final completions, so the
/// buffer comes back with the result instead of being dropped.
///
/// Implemented for every future whose output is a [`CancelOutput`], such as the `net` crate's
/// reads, writes, receives and sends (`let (res, buf) = stream.read(buf).timeout(d).await;`,
/// see `docs/cancellation.md`) and a bare [`Op`](super::Op):
///
/// ```
/// use std::time::Duration;
/// use runtime::op::{CancelExt, Op, Timeout};
/// # runtime::Runtime::new().unwrap().block_on(async {
/// // A 10 s io_uring timeout bounded to 10 ms: the wrapper cancels the request and waits for
/// // its final completion (-ECANCELED), then reports `TimedOut`.
/// let slow = Op::new(Timeout::new(Duration::from_secs(10)));
/// let res = slow.timeout(Duration::from_millis(10)).await;
/// // (The epoll backend, where io_uring is refused, has no timeout op: `Unsupported`.)
/// if runtime::capabilities().backend() == runtime::Backend::IoUring {
///     assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// }
/// assert_eq!(runtime::metrics().ops_in_flight, 0);
/// # });
/// ```
///
/// The result is the operation's own when its request completed first (no byte is lost: a
/// read's data, a write's partial count), otherwise the reason's error: `TimedOut` for
/// [`timeout`](CancelExt::timeout), `Other` for [`cancel_on`](CancelExt::cancel_on), carrying
/// a [`Cancelled`]. See the module docs for what is cancelled and what is waited for.
pub trait CancelExt: Future + Sized
where
    Self::Output: CancelOutput,
{
    /// Cancels the operation if it has not completed `duration` from now.
    ///
    /// # Panics
    ///
    /// Panics when called outside a runtime.
    fn timeout(self, duration: Duration) -> WithCancel<Self, Sleep> {
        WithCancel::new(self, sleep(duration), CancelReason::TimedOut)
    }

    /// Cancels the operation if it has not completed by `deadline`.
    ///
    /// # Panics
    ///
    /// Panics when called outside a runtime.
    fn timeout_at(self, deadline: Instant) -> WithCancel<Self, Sleep> {
        WithCancel::new(self, sleep_until(deadline), CancelReason::TimedOut)
    }

    /// Cancels the operation when `signal` completes first (a shutdown notification, a
    /// channel receive, a user's "stop" button).
    fn cancel_on<S: Future>(self, signal: S) -> WithCancel<Self, S> {
        WithCancel::new(self, signal, CancelReason::Requested)
    }
}

impl<F: Future> CancelExt for F where F::Output: CancelOutput {}

pin_project! {
    /// The future returned by [`CancelExt`]'s methods.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct WithCancel<F, S> {
        #[pin]
        future: F,
        #[pin]
        signal: S,
        reason: CancelReason,
        fired: bool,
    }
}

impl<F, S> WithCancel<F, S> {
    fn new(future: F, signal: S, reason: CancelReason) -> Self {
        WithCancel {
            future,
            signal,
            reason,
            fired: false,
        }
    }

    /// Whether the deadline or signal came and the operation is being cancelled.
    pub fn is_cancelling(&self) -> bool {
        self.fired
    }
}

impl<F, S> Future for WithCancel<F, S>
where
    F: Future,
    F::Output: CancelOutput,
    S: Future,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if !*this.fired {
            // A result that is ready wins over a deadline that passed meanwhile.
            if let Poll::Ready(out) = this.future.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if this.signal.poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.fired = true;
        }
        let reason = *this.reason;
        let _mark = Mark::set(reason);
        this.future.poll(cx).map(|out| out.cancelled(reason))
    }
}
