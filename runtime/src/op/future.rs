//! `Op<T>`: the future that submits an operation lazily and resolves at its final CQE.
//!
//! # States
//!
//! `Unsubmitted(T)` → first poll builds the SQE and queues it → `Submitted { key, data }` →
//! non-final CQEs go to `OpCode::on_more` → the final CQE goes to `OpCode::complete` → `Done`.
//! Dropping in `Submitted` parks `data` in the driver until the final CQE.
//!
//! On the epoll backend (`epoll`), `Unsubmitted(T)` is the only state before `Done`: each
//! poll tries the op's non-blocking system call (unless its fd's direction was found empty
//! since the last event: `driver::try_ready`) and completes with its result, or waits for
//! the fd's readiness; nothing is lent to the kernel, so dropping frees the value at once.
//! A cancel that finds it waiting tries it once more, so data that came meanwhile wins over
//! the cancel, as a CQE that beats its `ASYNC_CANCEL` does on io_uring.
//!
//! These states say only where the op's value is (here, or lent to the kernel under `key`);
//! what the kernel side has reached is the slot's one `Lifecycle` (`driver/lifecycle.rs`),
//! which `poll_cqe` and `detach` read and move on.
//!
//! Polled inside a cancel scope that fired (a `CancelExt` wrapper whose deadline or signal
//! came, see `cancel.rs`): an `Unsubmitted` op completes at once with `ECANCELED` without
//! reaching the kernel, and a `Submitted` one queues one `IORING_OP_ASYNC_CANCEL` and keeps
//! waiting for its final CQE, which hands its resources back as usual.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, ready},
};

use super::{Completion, OpCode, cancel};
use crate::driver::{self, Driver, Parked, ReadyOp};

/// A future driving one io_uring operation to its final completion.
///
/// Created with [`Op::new`] on a runtime thread. Nothing reaches the kernel until the first
/// poll. Dropping it early cancels the request and keeps the operation's resources alive until
/// the kernel is done with them.
#[must_use = "an operation does nothing until polled"]
pub struct Op<T: OpCode> {
    /// The driver of the ring the op runs on: the only part of the runtime it needs.
    driver: Rc<RefCell<Driver>>,
    state: State<T>,
    /// The driver runs on the epoll engine: the op is performed by `try_nonblocking` on
    /// readiness (see `poll_ready`); `Unsubmitted` then means "not done yet", never "in the
    /// kernel".
    epoll: bool,
    /// On the epoll engine: [`Op::cancel`] was called, the next poll completes with
    /// `ECANCELED`.
    cancelled: bool,
    /// On the epoll engine: the fd's cancel epoch when the op began waiting; a different
    /// one when it is polled again means its fd's ops were cancelled meanwhile.
    epoch: Option<u32>,
}

enum State<T> {
    Unsubmitted(T),
    /// `cancel_sent`: an `IORING_OP_ASYNC_CANCEL` for `key` was queued.
    Submitted {
        key: u64,
        data: T,
        cancel_sent: bool,
    },
    Done,
}

impl<T: OpCode> Op<T> {
    /// Wraps `data` for submission on the current thread's runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a runtime (no `block_on` or `#[runtime::main]` is running on
    /// this thread).
    pub fn new(data: T) -> Op<T> {
        Op {
            driver: driver::current(),
            state: State::Unsubmitted(data),
            epoll: driver::current_is_epoll(),
            cancelled: false,
            epoch: None,
        }
    }

    /// The operation's value, until it has completed.
    pub fn data(&self) -> Option<&T> {
        match &self.state {
            State::Unsubmitted(data) | State::Submitted { data, .. } => Some(data),
            State::Done => None,
        }
    }

    /// Asks the kernel to cancel the request (`IORING_OP_ASYNC_CANCEL`) while this future keeps
    /// waiting for it: the operation then completes, usually with `ECANCELED` (or with its real
    /// result if it won the race), and hands its resources back as usual. Does nothing before
    /// the first poll or after completion.
    pub fn cancel(&mut self) {
        if self.epoll {
            // Nothing is in the kernel: the next poll completes with `ECANCELED`.
            self.cancelled = matches!(self.state, State::Unsubmitted(_));
            return;
        }
        if let State::Submitted {
            key,
            ref mut cancel_sent,
            ..
        } = self.state
            && !*cancel_sent
        {
            *cancel_sent = true;
            self.driver.borrow_mut().cancel(key);
        }
    }

    /// Whether the SQE has been queued (the future was polled at least once).
    pub fn is_submitted(&self) -> bool {
        matches!(self.state, State::Submitted { .. })
    }

    /// Lets the operation run to its end without a future: it is submitted now if it was not
    /// yet, its value is parked in the driver (nothing is cancelled), and
    /// [`OpCode::complete_detached`] runs on this thread when its final CQE arrives (at once,
    /// with `ECANCELED`, if the runtime has shut down).
    ///
    /// A skip-success operation detached this way does not keep the event loop from blocking
    /// in its next enter: nobody waits for it, so its success is learnt after that enter
    /// returns, whenever something else completes (a failure posts a CQE, which ends the wait
    /// at once). Call [`Detached::expedite`] when something comes to depend on its outcome.
    pub fn detach(mut self) -> Detached {
        let driver = self.driver.clone();
        let epoll = self.epoll;
        // `self` is dropped in state `Done`: its destructor does nothing.
        let state = std::mem::replace(&mut self.state, State::Done);
        drop(self);
        let (key, data) = match state {
            State::Unsubmitted(data) => return start_detached(driver, epoll, data),
            State::Submitted { key, data, .. } if !epoll => (key, data),
            // Done, or on the epoll engine (where nothing is ever in the kernel) past its
            // start: nothing is left to run.
            _ => return Detached { driver, key: None },
        };
        let released = driver.borrow_mut().detach_lazy(key, Box::new(data));
        if let Some((parked, cqe)) = released {
            parked.finish(cqe);
            return Detached { driver, key: None };
        }
        Detached {
            driver,
            key: Some(key),
        }
    }
}

/// Starts an operation nobody will poll ([`Op::detach`] before the first poll,
/// [`Detached::start`]): on the epoll engine it is parked until readiness lets it run; on
/// io_uring it is submitted and parked in one step, so nothing can complete in between.
fn start_detached<T: OpCode>(driver: Rc<RefCell<Driver>>, epoll: bool, mut data: T) -> Detached {
    if epoll {
        let key = driver::detach_ready(&driver, data);
        return Detached { driver, key };
    }
    let sqe = data.build();
    let skip_success = data.skip_success();
    let submitted = driver
        .borrow_mut()
        .submit_detached(sqe, skip_success, Box::new(data));
    match submitted {
        Ok(key) => Detached {
            driver,
            key: Some(key),
        },
        Err(parked) => {
            // Shut down: finished at once, outside the borrow.
            parked.finish(Completion::new(-libc::ECANCELED, 0, [0; 2]));
            Detached { driver, key: None }
        }
    }
}

/// An operation left to run on its own ([`Op::detach`], [`Detached::start`]).
#[derive(Debug)]
pub struct Detached {
    driver: Rc<RefCell<Driver>>,
    key: Option<u64>,
}

impl Detached {
    /// Starts `data` on the current thread's runtime to run to its end with nobody waiting
    /// for it: what `Op::new(data).detach()` does, without building the future around it
    /// (a write-behind send takes this path once per message).
    ///
    /// # Panics
    ///
    /// Panics when called outside a runtime, as [`Op::new`] does.
    pub fn start<T: OpCode>(data: T) -> Detached {
        start_detached(driver::current(), driver::current_is_epoll(), data)
    }

    /// Whether the operation was still running when it was detached (false when it had
    /// already completed and `complete_detached` ran during [`Op::detach`]).
    pub fn is_running(&self) -> bool {
        self.key.is_some()
    }

    /// Something now depends on the outcome of this operation (more data queued behind a
    /// send, a task waiting for it): if it is a skip-success request whose outcome is not
    /// known yet, the event loop does not block before it is. Does nothing once the operation
    /// has completed.
    pub fn expedite(&self) {
        if let Some(key) = self.key {
            let mut driver = self.driver.borrow_mut();
            // An op parked on the epoll engine is tried again on readiness, not held back.
            if !driver.is_epoll() {
                driver.expedite(key);
            }
        }
    }
}

impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        if this.epoll {
            return this.poll_ready(cx);
        }
        if let State::Unsubmitted(_) = this.state {
            let State::Unsubmitted(mut data) = std::mem::replace(&mut this.state, State::Done)
            else {
                unreachable!("state checked just above")
            };
            if cancel::reason().is_some() {
                // A surrounding cancel scope fired: never start.
                return Poll::Ready(data.complete(Completion::new(-libc::ECANCELED, 0, [0; 2])));
            }
            let sqe = data.build();
            let skip_success = data.skip_success();
            let Some(key) = this.driver.borrow_mut().submit(sqe, skip_success) else {
                // The runtime has shut down; the kernel never saw the SQE.
                return Poll::Ready(data.complete(Completion::new(-libc::ECANCELED, 0, [0; 2])));
            };
            this.state = State::Submitted {
                key,
                data,
                cancel_sent: false,
            };
        }
        if cancel::reason().is_some() {
            this.cancel();
        }
        loop {
            let State::Submitted { key, data, .. } = &mut this.state else {
                panic!("`Op` polled after it completed");
            };
            let cqe = ready!(this.driver.borrow_mut().poll_cqe(*key, cx));
            if cqe.has_more() {
                data.on_more(cqe);
                continue;
            }
            let State::Submitted { data, .. } = std::mem::replace(&mut this.state, State::Done)
            else {
                unreachable!("state matched just above")
            };
            return Poll::Ready(data.complete(cqe));
        }
    }
}

impl<T: OpCode> Op<T> {
    /// The epoll engine's poll: try the system call, else wait for the fd's readiness.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<T::Output> {
        let State::Unsubmitted(data) = &mut self.state else {
            panic!("`Op` polled after it completed");
        };
        let cqe = if self.cancelled || cancel::reason().is_some() {
            // A cancel that finds the op waiting races its completion, as on io_uring: one
            // last try, whose result wins if it has one (its fd may have become ready since
            // the loop last read events). An op never polled before never starts.
            let last = match self.epoch.take() {
                Some(_) if !self.driver.borrow().is_closed() => data.try_nonblocking(),
                _ => None,
            };
            match last {
                Some(cqe) => self.driver.borrow_mut().stamp(cqe),
                None => Completion::new(-libc::ECANCELED, 0, [0; 2]),
            }
        } else {
            let readiness = data.readiness();
            let attempt = || {
                let cqe = data.try_nonblocking()?;
                let emptied = data.emptied(&cqe);
                Some((cqe, emptied))
            };
            ready!(poll_epoll(
                &self.driver,
                cx,
                readiness,
                &mut self.epoch,
                attempt
            ))
        };
        let State::Unsubmitted(data) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("state matched just above")
        };
        Poll::Ready(data.complete(cqe))
    }
}

/// One try of an op (or of a multishot request's next item) on the epoll engine, for `Op`
/// and `Multishot`: with no fd to wait for (`readiness` is `None`), `attempt` once (finishing
/// at once or never, as a NOP); otherwise, after taking its share of the turn
/// (`coop::poll_proceed`), `attempt` if the fd's direction may be ready
/// (`driver::try_ready`). `epoch` is the fd's cancel epoch recorded when the op last began
/// waiting: taken here, and set again when it waits once more (`Pending`). `attempt` returns
/// the completion and whether it emptied its direction, or `None` for `EAGAIN`.
pub(super) fn poll_epoll(
    driver: &RefCell<Driver>,
    cx: &mut Context<'_>,
    readiness: Option<(std::os::fd::RawFd, super::Interest)>,
    epoch: &mut Option<u32>,
    attempt: impl FnOnce() -> Option<(Completion, bool)>,
) -> Poll<Completion> {
    let Some((fd, interest)) = readiness else {
        // (The borrow ends before the try: it may use the driver, as `CancelFd` does.)
        if driver.borrow().is_closed() {
            return Poll::Ready(Completion::new(-libc::ECANCELED, 0, [0; 2]));
        }
        return Poll::Ready(attempt().map_or_else(Completion::unsupported, |(cqe, _)| cqe));
    };
    ready!(crate::coop::poll_proceed(cx));
    match driver::try_ready(driver, fd, interest, epoch.take(), cx.waker(), attempt) {
        Ok(cqe) => Poll::Ready(cqe),
        Err(waiting) => {
            *epoch = Some(waiting);
            Poll::Pending
        }
    }
}

/// A detached op's value, parked on the epoll engine until readiness lets it finish.
impl<T: OpCode> ReadyOp for T {
    fn readiness(&self) -> Option<(std::os::fd::RawFd, super::Interest)> {
        OpCode::readiness(self)
    }

    fn retry(&mut self) -> Option<Completion> {
        OpCode::try_nonblocking(self)
    }

    fn finish(self: Box<Self>, cqe: Completion) {
        (*self).complete_detached(cqe);
    }

    fn finish_owned(self, cqe: Completion) {
        self.complete_detached(cqe);
    }
}

impl<T: OpCode> Drop for Op<T> {
    fn drop(&mut self) {
        let State::Submitted { key, data, .. } = std::mem::replace(&mut self.state, State::Done)
        else {
            return;
        };
        let released = match self.driver.try_borrow_mut() {
            Ok(mut driver) => driver.detach(key, Box::new(data)),
            Err(_) => {
                // Dropped from inside the driver (a parked op's `on_more` dropping another op).
                // The kernel may still use `data`: leaking it is the only sound choice.
                std::mem::forget(data);
                None
            }
        };
        // Outside the borrow: dropping the output may run user code that re-enters the runtime.
        if let Some((parked, cqe)) = released {
            parked.finish(cqe);
        }
    }
}

/// A dropped (or detached) op's value, parked in the driver until its final CQE.
impl<T: OpCode> Parked for T {
    fn on_more(&mut self, cqe: Completion) {
        OpCode::on_more(self, cqe);
    }

    fn finish(self: Box<Self>, cqe: Completion) {
        (*self).complete_detached(cqe);
    }
}

impl<T: OpCode> fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Unsubmitted(_) => "unsubmitted",
            State::Submitted { .. } => "submitted",
            State::Done => "done",
        };
        f.debug_struct("Op")
            .field("op", &std::any::type_name::<T>())
            .field("state", &state)
            .finish()
    }
}
