//! Operations: one struct per io_uring request, and the [`Op`] future that drives it.
//!
//! This is the layer every I/O type (sockets in the `net` crate, timers, your own types) is
//! built on. An operation is a value that owns everything the kernel will touch: fds, buffers,
//! socket addresses, `msghdr`s, timespecs. [`Op::new`] wraps it; the first poll queues its SQE;
//! the driver routes each CQE back to it; the final CQE turns the value back into a result with
//! [`OpCode::complete`].
//!
//! # Invariants
//!
//! - Resources are never freed while the kernel may still use them. If an [`Op`] is dropped
//!   before its final CQE, its value moves into the driver (its slot's `Lifecycle::Parked` state), an
//!   `IORING_OP_ASYNC_CANCEL` is queued, and the value is dropped only when the final CQE
//!   arrives. Whatever that CQE produced (an accepted fd, a selected buffer) is released by
//!   dropping the output of [`OpCode::complete`].
//! - An operation may receive any number of CQEs; only one without `IORING_CQE_F_MORE` ends it
//!   (multishot items, `SEND_ZC` result + notification).
//! - Submission is lazy: an `Op` that is never polled never reaches the kernel, and dropping it
//!   costs nothing.
//! - An `Op` polled after its runtime shut down completes at once with `ECANCELED` without
//!   reaching the kernel.
//! - An `Op` polled inside a fired [`CancelExt`] scope (see [`cancel`]) completes at once with
//!   `ECANCELED` if it was not submitted yet, and otherwise queues one
//!   `IORING_OP_ASYNC_CANCEL` and still waits for its final CQE. So [`OpCode::complete`] may
//!   run without [`OpCode::build`] having run.

//! # One op, any backend
//!
//! An op describes itself once, in one struct and one `OpCode` impl, in terms that do not
//! depend on who runs it:
//!
//! - for a completion backend (this crate's io_uring driver): [`OpCode::build`] gives the
//!   SQE, and each CQE goes to [`OpCode::on_more`] / [`OpCode::complete`];
//! - for the epoll backend (`Backend::Epoll`, or `Auto` where io_uring is refused):
//!   [`OpCode::try_nonblocking`] performs the same operation once without blocking and
//!   reports its outcome as the [`Completion`] the kernel would have posted (`res` is the
//!   system call's return value or `-errno`), and [`OpCode::readiness`] names the fd and
//!   [`Interest`] to wait for when it would block. `Op` calls `try_nonblocking` (after the
//!   driver made the fd non-blocking and registered it with epoll, once per fd), hands a
//!   `Some` to `complete`, and otherwise waits for readiness and tries again; since nothing
//!   is in the kernel between tries, dropping such an op frees it at once. Each completion is
//!   stamped with the driver's next [`Completion::sequence`], as a CQE would be. A detached
//!   op that would block waits in the driver and is tried again on readiness.
//!   [`MultishotOp`] has the same two methods: each `Some` with `IORING_CQE_F_MORE` is one
//!   more item.
//!
//! Either way the socket code only builds op values and awaits [`Op`]: which backend runs
//! them is the runtime's choice, made in `Op` and the driver, not in the caller. Ops without
//! a non-blocking form keep the defaults (`None`), which the epoll backend completes with
//! [`Completion::unsupported`]: an `Unsupported` error that names the backend. See
//! `docs/epoll.md` of this repository.

pub mod cancel;
mod future;
mod multishot;
mod nop;
#[cfg(test)]
mod tests;
mod timeout;

pub use crate::driver::{Completion, Interest, cqe_flags};
pub use cancel::{CancelExt, CancelOutput, CancelReason, Cancelled, WithCancel, is_cancelled};
pub use future::{Detached, Op};
pub use multishot::{Multishot, MultishotOp};
pub use nop::{Nop, nop};
pub use timeout::Timeout;

use std::os::fd::RawFd;

use io_uring::squeue;

/// Whether the current thread's ring supports opcode `code` (from `IORING_REGISTER_PROBE`);
/// on the epoll backend, whether the runtime's ops run it through a non-blocking form
/// (sends and receives, accept, connect, `SEND_ZC` as `MSG_ZEROCOPY`, ...).
///
/// # Panics
///
/// Panics outside a runtime.
pub fn is_supported(code: u8) -> bool {
    crate::driver::current().borrow().supports_opcode(code)
}

/// Whether `IORING_OP_SEND` takes a destination address (`io_uring::opcode::Send::dest_addr`,
/// Linux 6.1): a datagram to an address then needs no `SENDMSG` and no `msghdr` for the
/// kernel to copy in. Known once a ring of this process probed its kernel; false before that
/// and on the epoll backend. A cheap load, for use while building an SQE.
pub fn send_takes_address() -> bool {
    crate::driver::SEND_TAKES_ADDRESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Tells the runtime that `fd`, which operations may have used, is about to be closed or to
/// leave the runtime's care (`into_raw_fd`): the epoll backend forgets its registration, so
/// that a later file given the same number is registered afresh. Call it right before the
/// close. Costs nothing while no runtime runs on epoll; the io_uring backend needs nothing.
pub fn forget_fd(fd: RawFd) {
    crate::driver::forget_fd(fd);
}

/// Whether ops on this thread's runtime run as non-blocking system calls inside their
/// first poll (the epoll backend), not as requests a later enter submits (io_uring): code
/// that stages work so that it shares the next enter (write-behind sends) may then do it at
/// once, in the caller's call. False outside a runtime.
pub fn runs_inline() -> bool {
    crate::driver::current_is_epoll()
}

/// Whether a caller that has the bytes at hand may try a socket's non-blocking system call
/// itself before it submits the op: where ops run inline ([`runs_inline`]), and on io_uring
/// unless a kernel thread consumes the SQ (SQPOLL, whose point is to make no system calls).
/// On io_uring the try saves the task a loop turn, which a bulk stream's reads and writes
/// otherwise each wait for. False outside a runtime.
pub fn may_try_inline() -> bool {
    crate::driver::current_enters_itself()
}

/// Counts an operation that the caller performed itself as a system call, in
/// [`metrics`](crate::metrics)' `inline_calls`: where ops run inline ([`runs_inline`]; a
/// write-behind send sent at once) also in `ops_submitted` and `completions`, so per-message
/// counts stay what they would be through an op; on io_uring ([`may_try_inline`]) no SQE
/// went out, and `ops_submitted` stays the count of SQEs. Does nothing outside a runtime.
pub fn count_inline_op() {
    if let Some(driver) = crate::driver::try_current()
        && let Ok(mut driver) = driver.try_borrow_mut()
    {
        driver.count_inline_op();
    }
}

/// Tells the epoll backend that a non-blocking system call the caller made itself on `fd`
/// (ops running inline, [`runs_inline`]) found `interest`'s direction empty (`EAGAIN`): the op
/// the caller then awaits waits for the fd's next readiness event instead of repeating a
/// call that could only say `EAGAIN` again. Call it in the same poll as the try (the
/// edge-triggered engine reports every arrival after it). Does nothing on io_uring or
/// outside a runtime.
pub fn found_empty(fd: RawFd, interest: Interest) {
    crate::driver::found_empty(fd, interest);
}

/// For the epoll backend: cancels every operation waiting on `fd` in this thread's
/// runtime, as `IORING_OP_ASYNC_CANCEL` with `IORING_ASYNC_CANCEL_FD | ALL` does on io_uring
/// (each completes with `ECANCELED`); returns how many there were. Does nothing (0) on
/// io_uring or outside a runtime. An op's `try_nonblocking` may call it (`CancelFd` does).
pub fn cancel_fd_waiters(fd: RawFd) -> usize {
    crate::driver::cancel_fd(fd)
}

/// An io_uring request: builds its SQE and turns its final CQE into a result.
///
/// # Safety
///
/// The SQE returned by [`build`](OpCode::build) is handed to the kernel, which reads and writes
/// the memory it points to asynchronously. Implementors guarantee:
///
/// 1. Every address in the SQE points to memory owned by `self` (or `'static`) that stays valid
///    from the call to `build` until `self` is consumed by [`complete`](OpCode::complete) or
///    dropped. The driver guarantees `self` is neither consumed nor dropped before the final CQE.
/// 2. That memory does **not** move when `self` is moved: it lives in a heap allocation owned by
///    `self` (a `Vec`, `Box`, an [`IoBuf`](crate::buf::IoBuf) buffer), never inline in `self`.
///    Operations move from the future into the driver when the future is dropped.
/// 3. Memory the kernel writes is not read or written through any other path until the final
///    CQE, and memory the kernel reads is not written.
/// 4. Every file descriptor in the SQE stays open (owned or shared by `self`) until the final
///    CQE, so a racing `close` can never redirect the operation to a reused fd number.
/// 5. `build` is called at most once.
/// 6. `complete` and `on_more` accept any CQE, including errors and values a well-behaved
///    kernel would not produce, without undefined behaviour or panics. `complete` may also be
///    called without `build` (with `-ECANCELED`, when the operation is cancelled before it was
///    submitted), so an error result must not read memory the kernel would have written.
pub unsafe trait OpCode: 'static {
    /// What the operation produces, usually `io::Result<_>` or `(io::Result<_>, Buffer)`.
    type Output;

    /// Builds the SQE. The driver sets `user_data` and submits it on the next loop turn.
    fn build(&mut self) -> squeue::Entry;

    /// Handles a CQE that has `IORING_CQE_F_MORE` set. The default ignores it.
    ///
    /// Called both while a future owns the operation and after it was dropped; in the latter
    /// case it runs while the driver is borrowed, so it must release what the CQE carries
    /// without submitting operations.
    fn on_more(&mut self, cqe: Completion) {
        let _ = cqe;
    }

    /// Turns the final CQE into the result, handing back owned resources.
    fn complete(self, cqe: Completion) -> Self::Output;

    /// Handles the final CQE of an operation whose future was dropped. The default calls
    /// [`complete`](OpCode::complete) and drops the output, which releases whatever the CQE
    /// produced; receives override it to keep data the kernel already delivered.
    ///
    /// Runs on the runtime thread after the driver borrow has ended; it may use the runtime.
    fn complete_detached(self, cqe: Completion)
    where
        Self: Sized,
    {
        drop(self.complete(cqe));
    }

    /// For an SQE submitted with `IOSQE_CQE_SKIP_SUCCESS`: the result to report when it
    /// succeeds, since success then posts no CQE. `None` (the default) for ordinary SQEs.
    ///
    /// Returning `Some` is part of the safety contract: the SQE must carry
    /// `IOSQE_CQE_SKIP_SUCCESS` and must complete or fail *inside the `io_uring_enter` call that
    /// submits it* (e.g. a send with `MSG_DONTWAIT`, which never waits for poll), so that once
    /// that enter returned and its CQEs were reaped without one for this operation, the
    /// operation is known to have succeeded and its resources are free.
    fn skip_success(&self) -> Option<i32> {
        None
    }

    /// For a readiness backend: the fd whose readiness this op waits for when its
    /// non-blocking form would block, and which readiness. `None` (the default): the op has no
    /// non-blocking form. The io_uring driver does not call it.
    fn readiness(&self) -> Option<(RawFd, Interest)> {
        None
    }

    /// For a readiness backend: performs the operation once as a non-blocking system call and
    /// returns the completion the kernel would have posted for its SQE (`res`: the call's
    /// return value, or `-errno`), to be handed to [`complete`](OpCode::complete); `None` when
    /// it would block (`EAGAIN`) or has no non-blocking form (the default).
    ///
    /// It is called only while no SQE of this op is in the kernel, and may be called any
    /// number of times until it returns `Some`. The io_uring driver does not call it.
    fn try_nonblocking(&mut self) -> Option<Completion> {
        None
    }

    /// For a readiness backend: whether `cqe`, a completion [`try_nonblocking`] just
    /// returned, shows that its direction of the fd is now empty, so the next op of that
    /// direction waits for an event instead of trying: true for a stream receive that filled
    /// less than it offered (the socket had no more). False (the default) when unsure; true
    /// when more may be there loses a wake-up, so only a sure emptiness says true.
    ///
    /// [`try_nonblocking`]: OpCode::try_nonblocking
    fn emptied(&self, cqe: &Completion) -> bool {
        let _ = cqe;
        false
    }
}

impl Completion {
    /// The completion a system call's return value `ret` (with `errno` on failure) stands
    /// for, as [`OpCode::try_nonblocking`] reports it; `None` for `EAGAIN`/`EWOULDBLOCK`.
    /// Call it right after the system call, before anything else can change `errno`.
    pub fn from_syscall(ret: isize) -> Option<Completion> {
        if ret >= 0 {
            return Some(Completion::new(
                ret.min(i32::MAX as isize) as i32,
                0,
                [0; 2],
            ));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => None,
            Some(errno) => Some(Completion::new(-errno, 0, [0; 2])),
            None => Some(Completion::new(-libc::EIO, 0, [0; 2])),
        }
    }
}
