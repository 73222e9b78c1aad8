//! The driver's side of the epoll engine: what `Op` and `Multishot` call on it (prepare an
//! fd, stamp a completion, wait, park a detached op), and the routing of readiness events to
//! the tasks and parked ops waiting for them.
//!
//! # Invariants
//!
//! - Every completion an op produced without the ring is stamped with the driver's next
//!   sequence number (`stamp`), as a CQE would be, so rescued bytes keep stream order.
//! - A parked op's retry runs with no driver borrow held; the op is taken out of its slab
//!   entry meanwhile and put back (same key) if it would still block.
//! - After shutdown began, parked ops are finished with `ECANCELED` and nothing new is
//!   accepted: nothing is in the kernel's hands, so nothing needs to be waited for.
//! - An op's try ([`try_ready`]) runs only while its fd's direction may be ready, and a try
//!   that found the direction empty clears it before the op waits (see `epoll.rs`); the
//!   op counts in `stats.submitted` only when it tries.

use std::{cell::RefCell, os::fd::RawFd, task::Waker};

use super::{
    Driver, Engine,
    completion::Completion,
    epoll::{Interest, Ready, ReadyOp},
};

/// Routes the events of the last `epoll_wait`: wakes waiting tasks and retries parked ops,
/// with no driver borrow held while either runs.
pub(crate) fn dispatch(driver: &RefCell<Driver>) {
    // The routing happens inside the borrow, into the poller's scratch vector (taken out and
    // put back, so nothing is allocated per turn); wakers and retries run after it ended.
    let mut ready = {
        let mut d = driver.borrow_mut();
        let Engine::Epoll(poller) = &mut d.ring else {
            return;
        };
        let mut ready = std::mem::take(&mut poller.scratch);
        poller.route(&mut ready);
        ready
    };
    for item in ready.drain(..) {
        match item {
            Ready::Wake(waker) => waker.wake(),
            Ready::Retry(key) => retry(driver, key),
        }
    }
    if let Engine::Epoll(poller) = &mut driver.borrow_mut().ring {
        poller.scratch = ready;
    }
}

/// One step of an op (or a multishot stream's next item) on the epoll engine, for `Op` and
/// `Multishot`: registers `fd` (once), completes with `ECANCELED` when the fd's ops were
/// cancelled since the op began waiting (`waited` is the epoch it recorded), and otherwise
/// runs `attempt` (the op's non-blocking system call) if `interest` may be ready.
///
/// `attempt` returns the completion, and whether it emptied the direction (a stream
/// receive that filled less than it offered), or `None` for `EAGAIN`. Returns the
/// completion (stamped when it came from the system call), or, once `waker` waits for the
/// fd's next `interest` event, `Err` with the epoch the op records while it waits.
pub(crate) fn try_ready(
    driver: &RefCell<Driver>,
    fd: RawFd,
    interest: Interest,
    waited: Option<u32>,
    waker: &Waker,
    attempt: impl FnOnce() -> Option<(Completion, bool)>,
) -> Result<Completion, u32> {
    let epoch = {
        let mut d = driver.borrow_mut();
        let epoch = match d.prepare(fd) {
            Err(errno) => return Ok(Completion::new(-errno, 0, [0; 2])),
            Ok(epoch) if waited.is_some_and(|e| e != epoch) => {
                return Ok(Completion::new(-libc::ECANCELED, 0, [0; 2]));
            }
            Ok(epoch) => epoch,
        };
        let Engine::Epoll(poller) = &mut d.ring else {
            return Ok(Completion::new(-libc::EOPNOTSUPP, 0, [0; 2]));
        };
        if !poller.may_be_ready(fd, interest) {
            // A try since the last event found nothing: the next event is what to wait for.
            poller.wait_task(fd, interest, waker);
            return Err(epoch);
        }
        d.stats.submitted += 1;
        epoch
    };
    // The try runs without the driver borrowed: it may use the driver, as `CancelFd` does.
    let tried = attempt();
    let mut d = driver.borrow_mut();
    let Engine::Epoll(poller) = &mut d.ring else {
        return Ok(Completion::new(-libc::EOPNOTSUPP, 0, [0; 2]));
    };
    match tried {
        Some((cqe, emptied)) => {
            if emptied {
                poller.clear_ready(fd, interest);
            }
            Ok(d.stamp(cqe))
        }
        None => {
            poller.clear_ready(fd, interest);
            poller.wait_task(fd, interest, waker);
            Err(epoch)
        }
    }
}

/// A non-blocking try that the caller made itself found `fd`'s `interest` empty
/// (`EAGAIN`): on the current thread's epoll engine, the op that follows waits for the next
/// event without trying again (the same clear `try_ready` makes). Nothing on io_uring.
pub(crate) fn found_empty(fd: RawFd, interest: Interest) {
    let Some(driver) = super::try_current() else {
        return;
    };
    let Ok(mut d) = driver.try_borrow_mut() else {
        return;
    };
    // Registered first (a no-op when it is): the clear must outlive the registration, which
    // starts an fd as possibly ready. Data that came after the try is reported by the add.
    if d.prepare(fd).is_ok()
        && let Engine::Epoll(poller) = &mut d.ring
    {
        poller.clear_ready(fd, interest);
    }
}

/// Cancels every op waiting on `fd` on the current thread's epoll engine: waiting tasks
/// are woken and their ops complete with `ECANCELED`; parked ops finish with it now.
/// Returns how many were cancelled (0 on io_uring, where `IORING_OP_ASYNC_CANCEL` does it).
pub(crate) fn cancel_fd(fd: RawFd) -> usize {
    let Some(driver) = super::try_current() else {
        return 0;
    };
    let mut out = Vec::new();
    let (n, parked) = {
        let Ok(mut d) = driver.try_borrow_mut() else {
            return 0;
        };
        let Engine::Epoll(poller) = &mut d.ring else {
            return 0;
        };
        let n = poller.cancel(fd, &mut out);
        let mut parked = Vec::new();
        out.retain(|r| match r {
            Ready::Retry(key) => {
                if let Some(Some(op)) = poller.parked.try_remove(*key) {
                    parked.push(op);
                }
                false
            }
            Ready::Wake(_) => true,
        });
        (n, parked)
    };
    for op in parked {
        op.finish(Completion::new(-libc::ECANCELED, 0, [0; 2]));
    }
    for r in out {
        if let Ready::Wake(waker) = r {
            waker.wake();
        }
    }
    n
}

/// Tries parked op `key` once more: finishes it, or parks it again.
fn retry(driver: &RefCell<Driver>, key: usize) {
    let taken = {
        let mut d = driver.borrow_mut();
        let closed = d.closed;
        match &mut d.ring {
            Engine::Epoll(poller) => match poller.parked.get_mut(key).and_then(Option::take) {
                Some(op) if closed && !op.in_kernel() => {
                    poller.parked.remove(key);
                    drop(d);
                    op.finish(Completion::new(-libc::ECANCELED, 0, [0; 2]));
                    return;
                }
                other => other,
            },
            Engine::Uring(_) => None,
        }
    };
    // Taken out already (or cancelled meanwhile, then `None`): nothing to do.
    let Some(mut op) = taken else { return };
    // The retry runs without the driver borrowed: it is the op's own system call, and its
    // completion may run user code (a send behind finishing wakes its flushers).
    match op.retry() {
        Some(cqe) => {
            let cqe = {
                let mut d = driver.borrow_mut();
                if let Engine::Epoll(poller) = &mut d.ring {
                    poller.parked.try_remove(key);
                }
                d.stamp(cqe)
            };
            op.finish(cqe);
        }
        None => {
            // Would block again: it waits for the next edge under the same key, which the
            // `Detached` handle still names.
            let Some((fd, interest)) = op.readiness() else {
                op.finish(Completion::unsupported());
                return;
            };
            let mut d = driver.borrow_mut();
            if let Engine::Epoll(poller) = &mut d.ring {
                poller.repark(key, fd, interest, op);
            }
        }
    }
}

/// Runs a detached op on the epoll engine: tries it now, and parks it if it would block.
/// Returns its key while it is parked.
pub(crate) fn detach<O: ReadyOp + 'static>(driver: &RefCell<Driver>, mut op: O) -> Option<u64> {
    let Some((fd, interest)) = op.readiness() else {
        let closed = driver.borrow().closed;
        let cqe = match closed {
            true => Completion::new(-libc::ECANCELED, 0, [0; 2]),
            false => op.retry().unwrap_or_else(Completion::unsupported),
        };
        op.finish_owned(cqe);
        return None;
    };
    let prepared = {
        let mut d = driver.borrow_mut();
        // What the kernel still references runs on, even during shutdown (bounded there).
        if d.closed && !op.in_kernel() {
            Err(libc::ECANCELED)
        } else {
            d.register_fd(fd)
        }
    };
    if let Err(errno) = prepared {
        op.finish_owned(Completion::new(-errno, 0, [0; 2]));
        return None;
    }
    // Parked ops are not tied to an epoch: a cancel of their fd finishes them itself.
    // The common case for a send behind: the socket had room, the op is done before
    // `detach` returns, and nothing is parked (nor boxed: no allocation).
    driver.borrow_mut().stats.submitted += 1;
    if let Some(cqe) = op.retry() {
        let cqe = driver.borrow_mut().stamp(cqe);
        op.finish_owned(cqe);
        return None;
    }
    let mut d = driver.borrow_mut();
    let Engine::Epoll(poller) = &mut d.ring else {
        drop(d);
        op.finish_owned(Completion::new(-libc::EOPNOTSUPP, 0, [0; 2]));
        return None;
    };
    Some(poller.park(fd, interest, Box::new(op)) as u64)
}

impl Driver {
    /// Readies `fd` for an op on the epoll engine: refuses after shutdown (`ECANCELED`),
    /// registers the fd once (`Poller::prepare`).
    fn prepare(&mut self, fd: RawFd) -> Result<u32, i32> {
        if self.closed {
            return Err(libc::ECANCELED);
        }
        self.register_fd(fd)
    }

    /// Registers `fd` with the epoll engine (once), even after shutdown began (for ops the
    /// kernel still references).
    fn register_fd(&mut self, fd: RawFd) -> Result<u32, i32> {
        match &mut self.ring {
            Engine::Epoll(poller) => poller.prepare(fd),
            Engine::Uring(_) => Err(libc::EOPNOTSUPP),
        }
    }

    /// An operation performed in place as a system call by its caller (`op::count_inline_op`):
    /// on the epoll engine also counted as the op it replaces; on io_uring no SQE went out.
    pub(crate) fn count_inline_op(&mut self) {
        self.stats.inline_calls += 1;
        if self.is_epoll() {
            self.stats.submitted += 1;
            self.stats.completions += 1;
        }
    }

    /// Whether shutdown began (no new operation is accepted).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Stamps a completion produced by a system call with the next sequence number.
    pub(crate) fn stamp(&mut self, cqe: Completion) -> Completion {
        self.stats.completions += 1;
        let cqe = cqe.with_sequence(self.next_sequence);
        self.next_sequence += 1;
        cqe
    }

    /// Shutdown on the epoll engine: the parked ops the kernel holds nothing of, to be
    /// finished with `ECANCELED` (the others are waited for, see `shutdown.rs`).
    pub(crate) fn take_parked_ready(&mut self) -> Vec<Box<dyn ReadyOp>> {
        match &mut self.ring {
            Engine::Epoll(poller) => poller.take_parked(),
            Engine::Uring(_) => Vec::new(),
        }
    }
}
