//! `Multishot<T>`: a stream over the CQEs of one multishot request.
//!
//! # States
//!
//! `Unsubmitted(T)` → first poll queues the SQE → `Submitted { key, data }`: every CQE becomes
//! at most one item through `MultishotOp::next`; the first CQE without `IORING_CQE_F_MORE` ends
//! the request → `Finished(data)`, and the stream yields `None` until re-armed with
//! [`Multishot::rearm`]. Dropping it while submitted parks `data` in the driver, cancels the
//! request, and hands every later CQE to `MultishotOp::next_detached` so that what they carry
//! (accepted fds, selected buffers) is released.

use std::{
    cell::RefCell,
    fmt,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use io_uring::squeue;

use std::os::fd::RawFd;

use super::{Completion, Interest};
use crate::driver::{self, Driver, Parked, ReadyOp};

/// A multishot io_uring request: one SQE, many CQEs.
///
/// # Safety
///
/// The rules of [`OpCode`](super::OpCode) apply, with "until the final CQE" meaning the first
/// CQE without `IORING_CQE_F_MORE`; `build` may be called again after that CQE to re-arm.
/// `next` and `next_detached` must accept any CQE without undefined behaviour or panics.
pub unsafe trait MultishotOp: 'static {
    /// What each CQE turns into.
    type Item;

    /// Builds the SQE (with the request's multishot flag).
    fn build(&mut self) -> squeue::Entry;

    /// Turns one CQE into an item; `None` yields nothing for it.
    fn next(&mut self, cqe: Completion) -> Option<Self::Item>;

    /// Handles a CQE that arrives after the stream was dropped. The default drops the item,
    /// releasing what it owns. Runs while the driver is borrowed for non-final CQEs: it must not
    /// submit operations.
    fn next_detached(&mut self, cqe: Completion) {
        drop(self.next(cqe));
    }

    /// For the epoll backend: the fd and readiness to wait for when
    /// [`try_nonblocking`](MultishotOp::try_nonblocking) would block. `None` (the default):
    /// no non-blocking form, which the epoll backend reports as one final
    /// [`Completion::unsupported`] handed to `next`.
    fn readiness(&self) -> Option<(RawFd, Interest)> {
        None
    }

    /// For the epoll backend: produces the next completion the request would have posted,
    /// with one non-blocking system call, or `None` when it would block. A completion with
    /// `IORING_CQE_F_MORE` ([`cqe_flags::MORE`](super::cqe_flags::MORE)) keeps the stream
    /// armed; one without it ends the request, as on io_uring.
    fn try_nonblocking(&mut self) -> Option<Completion> {
        None
    }

    /// For the epoll backend: whether `cqe`, a completion
    /// [`try_nonblocking`](MultishotOp::try_nonblocking) just returned, emptied its
    /// direction of the fd (see `OpCode::emptied`). False (the default) when unsure.
    fn emptied(&self, cqe: &Completion) -> bool {
        let _ = cqe;
        false
    }

    /// For the epoll backend: whether a dropped stream must run on to its final completion
    /// because the kernel still references its memory (a zero-copy send awaiting its
    /// notification). Then the request is parked in the driver and tried on readiness, its
    /// completions going to [`next_detached`](MultishotOp::next_detached). Default false:
    /// nothing is in the kernel, and the data is dropped with the stream.
    fn keeps_running(&self) -> bool {
        false
    }
}

/// A stream of the items of one multishot request (see the module docs).
#[must_use = "streams do nothing unless polled"]
pub struct Multishot<T: MultishotOp> {
    /// The driver of the ring the request runs on.
    driver: Rc<RefCell<Driver>>,
    state: State<T>,
    /// Which engine the driver runs (one word, with the epoch: every idle connection's
    /// receive stream holds this).
    engine: Engine,
}

/// The engine a [`Multishot`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Uring,
    /// Items come from `try_nonblocking` on readiness, and `Unsubmitted` means "armed"
    /// (nothing is ever in the kernel). It holds the fd's cancel epoch when the stream began
    /// waiting (see `Op`).
    Epoll(Option<u32>),
}

impl Engine {
    /// On the epoll engine: the cancel epoch recorded when the stream began waiting, taken.
    fn take_epoch(&mut self) -> Option<u32> {
        match self {
            Engine::Epoll(epoch) => epoch.take(),
            Engine::Uring => None,
        }
    }
}

enum State<T> {
    Unsubmitted(T),
    Submitted {
        key: u64,
        data: T,
    },
    Finished(T),
    /// Transient, while moving `data` between states.
    Empty,
}

impl<T: MultishotOp> Multishot<T> {
    /// Wraps `data` for submission on the current thread's runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a runtime.
    pub fn new(data: T) -> Multishot<T> {
        Multishot {
            driver: driver::current(),
            state: State::Unsubmitted(data),
            engine: if driver::current_is_epoll() {
                Engine::Epoll(None)
            } else {
                Engine::Uring
            },
        }
    }

    /// Whether the kernel ended the request (a CQE without `IORING_CQE_F_MORE` arrived).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }

    /// After the request ended, makes the next poll submit it again with the same data.
    /// Returns false (and does nothing) while the request is still armed.
    pub fn rearm(&mut self) -> bool {
        match std::mem::replace(&mut self.state, State::Empty) {
            State::Finished(data) => {
                self.state = State::Unsubmitted(data);
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// Takes the request's data back once the kernel ended the request (or before it was
    /// submitted); otherwise returns the stream unchanged.
    pub fn into_inner(mut self) -> Result<T, Multishot<T>> {
        match std::mem::replace(&mut self.state, State::Empty) {
            State::Finished(data) | State::Unsubmitted(data) => Ok(data),
            other => {
                self.state = other;
                Err(self)
            }
        }
    }

    /// Asks the kernel to end the request (`IORING_OP_ASYNC_CANCEL`) while this stream keeps
    /// receiving its CQEs: items the kernel produced before the cancel still arrive, then a
    /// final CQE (usually `ECANCELED`) ends it, and [`rearm`](Multishot::rearm) may submit it
    /// again. Does nothing unless the request is armed.
    pub fn cancel(&mut self) {
        if let State::Submitted { key, .. } = self.state {
            self.driver.borrow_mut().cancel(key);
        }
    }

    /// Whether the request is armed: submitted, and not ended by the kernel yet.
    pub fn is_armed(&self) -> bool {
        matches!(self.state, State::Submitted { .. })
    }

    /// The request's data, unless it is in the kernel's hands.
    pub fn data(&self) -> Option<&T> {
        match &self.state {
            State::Unsubmitted(data) | State::Finished(data) => Some(data),
            _ => None,
        }
    }
}

impl<T: MultishotOp> Unpin for Multishot<T> {}

impl<T: MultishotOp> Stream for Multishot<T> {
    type Item = T::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        let this = self.get_mut();
        if this.engine != Engine::Uring {
            return this.poll_ready(cx);
        }
        // `data` never leaves `this.state` while user code (`build`, `next`) runs: if that code
        // panics, the state still says where the data is, so `Drop` parks and cancels a request
        // the kernel still owns instead of freeing what it uses.
        loop {
            match &mut this.state {
                State::Unsubmitted(data) => {
                    let sqe = data.build();
                    let submitted = this.driver.borrow_mut().submit(sqe, None);
                    let State::Unsubmitted(data) = std::mem::replace(&mut this.state, State::Empty)
                    else {
                        unreachable!("state matched just above")
                    };
                    match submitted {
                        Some(key) => this.state = State::Submitted { key, data },
                        None => {
                            // The runtime has shut down: the request ends without reaching the
                            // kernel.
                            this.state = State::Finished(data);
                            let State::Finished(data) = &mut this.state else {
                                unreachable!("state set just above")
                            };
                            let item = data.next(Completion::new(-libc::ECANCELED, 0, [0; 2]));
                            return Poll::Ready(item);
                        }
                    }
                }
                State::Submitted { key, data } => {
                    let cqe = ready!(this.driver.borrow_mut().poll_cqe(*key, cx));
                    let item = if cqe.has_more() {
                        // The request stays armed, so the data stays `Submitted` while `next`
                        // runs: a panic there leaves it for `Drop` to park.
                        data.next(cqe)
                    } else {
                        // The final CQE released the slot: the data is ours again before
                        // `next` sees it, so a panic there simply drops it.
                        let State::Submitted { data, .. } =
                            std::mem::replace(&mut this.state, State::Empty)
                        else {
                            unreachable!("state matched just above")
                        };
                        this.state = State::Finished(data);
                        let State::Finished(data) = &mut this.state else {
                            unreachable!("state set just above")
                        };
                        data.next(cqe)
                    };
                    match item {
                        Some(item) => return Poll::Ready(Some(item)),
                        None if this.is_finished() => return Poll::Ready(None),
                        None => continue,
                    }
                }
                State::Finished(_) => return Poll::Ready(None),
                State::Empty => unreachable!("`Multishot` state is restored before returning"),
            }
        }
    }
}

impl<T: MultishotOp> Multishot<T> {
    /// The epoll engine's poll: one non-blocking try per item, else wait for readiness.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        loop {
            let State::Unsubmitted(data) = &mut self.state else {
                return Poll::Ready(None);
            };
            let readiness = data.readiness();
            let attempt = || {
                let cqe = data.try_nonblocking()?;
                let emptied = data.emptied(&cqe);
                Some((cqe, emptied))
            };
            // A cancel (`CancelFd`) since the stream began waiting completes it with
            // `ECANCELED`, which ends the request, as on io_uring.
            let mut epoch = self.engine.take_epoch();
            let polled =
                super::future::poll_epoll(&self.driver, cx, readiness, &mut epoch, attempt);
            if epoch.is_some() {
                self.engine = Engine::Epoll(epoch);
            }
            let cqe = ready!(polled);
            let item = if cqe.has_more() {
                data.next(cqe)
            } else {
                let State::Unsubmitted(data) = std::mem::replace(&mut self.state, State::Empty)
                else {
                    unreachable!("state matched just above")
                };
                self.state = State::Finished(data);
                let State::Finished(data) = &mut self.state else {
                    unreachable!("state set just above")
                };
                data.next(cqe)
            };
            match item {
                Some(item) => return Poll::Ready(Some(item)),
                None if self.is_finished() => return Poll::Ready(None),
                None => continue,
            }
        }
    }
}

impl<T: MultishotOp> Drop for Multishot<T> {
    fn drop(&mut self) {
        if self.engine != Engine::Uring {
            if let State::Unsubmitted(data) = &self.state
                && data.keeps_running()
            {
                let State::Unsubmitted(data) = std::mem::replace(&mut self.state, State::Empty)
                else {
                    unreachable!("state matched just above")
                };
                driver::detach_ready(&self.driver, ReadyStream(data));
            }
            return;
        }
        let State::Submitted { key, data } = std::mem::replace(&mut self.state, State::Empty)
        else {
            return;
        };
        let parked: Box<dyn Parked> = Box::new(ParkedStream(data));
        let released = match self.driver.try_borrow_mut() {
            Ok(mut driver) => driver.detach(key, parked),
            Err(_) => {
                std::mem::forget(parked);
                None
            }
        };
        if let Some((parked, cqe)) = released {
            parked.finish(cqe);
        }
    }
}

/// A dropped stream's data on the epoll backend, tried on readiness until its final
/// completion.
struct ReadyStream<T>(T);

impl<T: MultishotOp> ReadyOp for ReadyStream<T> {
    fn readiness(&self) -> Option<(RawFd, Interest)> {
        self.0.readiness()
    }

    fn retry(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.0.try_nonblocking()?;
            if !cqe.has_more() {
                return Some(cqe);
            }
            self.0.next_detached(cqe);
        }
    }

    fn finish(mut self: Box<Self>, cqe: Completion) {
        self.0.next_detached(cqe);
    }

    fn finish_owned(mut self, cqe: Completion) {
        self.0.next_detached(cqe);
    }

    fn in_kernel(&self) -> bool {
        self.0.keeps_running()
    }
}

/// A dropped stream's data, fed the CQEs that still arrive.
struct ParkedStream<T>(T);

impl<T: MultishotOp> Parked for ParkedStream<T> {
    fn on_more(&mut self, cqe: Completion) {
        self.0.next_detached(cqe);
    }

    fn finish(mut self: Box<Self>, cqe: Completion) {
        self.0.next_detached(cqe);
    }
}

impl<T: MultishotOp> fmt::Debug for Multishot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Unsubmitted(_) => "unsubmitted",
            State::Submitted { .. } => "submitted",
            State::Finished(_) => "finished",
            State::Empty => "empty",
        };
        f.debug_struct("Multishot")
            .field("op", &std::any::type_name::<T>())
            .field("state", &state)
            .finish()
    }
}
