//! The io_uring instance of one worker thread: setup with flag fallbacks, the registered ring fd,
//! and the single `io_uring_enter` call the event loop makes per turn.
//!
//! # Invariants
//!
//! - A `Ring` is used only by the thread that created it. With `IORING_SETUP_SINGLE_ISSUER` the
//!   kernel enforces this (`-EEXIST` from any other thread); the owning `Driver` is `!Send`.
//! - When the ring fd is registered (`IORING_REGISTER_RING_FDS`), `enter_fd` holds the registered
//!   index and every enter carries `IORING_ENTER_REGISTERED_RING`. The index lives in the
//!   creating thread's io_uring context, which is this thread, so it stays valid for the ring's
//!   lifetime.
//! - SQEs become visible to the kernel only when the SQ tail is published; the io-uring crate
//!   publishes it when the `SubmissionQueue` borrow ends, which is before every enter here.
//! - With `IORING_SETUP_DEFER_TASKRUN`, completions are produced only inside an enter carrying
//!   `IORING_ENTER_GETEVENTS` (`docs/kernel-notes.md` §1), so every enter here carries it.
//! - With `IORING_SETUP_SQPOLL` (`sqpoll`), a kernel thread consumes the SQ on its own and an
//!   enter submits nothing: it is needed only to wake that thread when it sleeps
//!   (`IORING_SQ_NEED_WAKEUP`, answered with `IORING_ENTER_SQ_WAKEUP`), to wait for room in a
//!   full SQ (`IORING_ENTER_SQ_WAIT`), to wait for completions, or to flush CQ overflow. The
//!   tail store and the flag load are separated by a full fence, matching the thread's
//!   flag store, barrier, tail load before it sleeps (`io_uring/sqpoll.c`, `io_sq_thread`):
//!   either we see the flag or the thread sees our SQEs.

use std::{
    io, mem,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use io_uring::{
    EnterFlags, IoUring, Parameters, Submitter, cqueue,
    squeue::{self, PushError},
    types::{SubmitArgs, Timespec},
};

use super::completion::Completion;

/// `IORING_REGISTER_RING_FDS` (Linux 5.18), not exported by the io-uring crate.
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
/// `IORING_UNREGISTER_RING_FDS` (Linux 5.18).
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;

/// The io-uring crate's ring, with 16- or 32-byte CQEs.
pub(super) enum Uring {
    Normal(IoUring),
    Big(IoUring<squeue::Entry, cqueue::Entry32>),
}

/// Runs `$body` with `$u` bound to whichever ring type is in use.
macro_rules! with_uring {
    ($uring:expr, $u:ident => $body:expr) => {
        match $uring {
            Uring::Normal($u) => $body,
            Uring::Big($u) => $body,
        }
    };
}

impl Uring {
    pub(super) fn params(&self) -> &Parameters {
        with_uring!(self, u => u.params())
    }

    pub(super) fn submitter(&self) -> Submitter<'_> {
        with_uring!(self, u => u.submitter())
    }

    pub(super) fn fd(&self) -> RawFd {
        with_uring!(self, u => u.as_raw_fd())
    }
}

/// The ring and how to enter it.
pub(crate) struct Ring {
    pub(super) uring: Uring,
    /// The registered ring index, or the raw ring fd when registration is off or failed.
    pub(super) enter_fd: RawFd,
    /// `IORING_ENTER_REGISTERED_RING` when `enter_fd` is a registered index, else 0.
    pub(super) enter_flags: u32,
    /// A kernel thread consumes the SQ (`IORING_SETUP_SQPOLL`).
    pub(super) sqpoll: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.uring.fd())
            .field("registered", &(self.enter_flags != 0))
            .field("sqpoll", &self.sqpoll)
            .finish()
    }
}

/// How long an enter may block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Submit and reap; do not block.
    No,
    /// Block until at least one CQE is available.
    Forever,
    /// Block until a CQE is available or the duration has passed.
    Timeout(Duration),
    /// Block until a CQE is available or the deadline has passed. The driver keeps a kernel
    /// timer armed for it across waits (`alarm.rs`, `epoll/alarm.rs`) rather than passing a
    /// timeout to every wait.
    Until(Instant),
}

impl Ring {
    /// Registers the ring fd with the kernel and switches enters to the registered index.
    pub(super) fn register_ring_fd(&mut self) -> io::Result<()> {
        let mut update = libc_rsrc_update {
            offset: u32::MAX,
            resv: 0,
            data: self.uring.fd() as u64,
        };
        // SAFETY: IORING_REGISTER_RING_FDS reads and writes one `io_uring_rsrc_update` (the kernel
        // stores the chosen index in `offset`); `update` is a live, exclusively borrowed value of
        // that exact layout for the duration of the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.uring.fd(),
                IORING_REGISTER_RING_FDS,
                &mut update as *mut libc_rsrc_update,
                1u32,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        self.enter_fd = update.offset as RawFd;
        self.enter_flags = EnterFlags::REGISTERED_RING.bits();
        Ok(())
    }

    /// Registers an empty table of `slots` files (direct descriptors; Linux 5.19, sparse
    /// registration), from which `IORING_FILE_INDEX_ALLOC` requests take free slots.
    pub(crate) fn register_file_table(&self, slots: u32) -> io::Result<()> {
        self.uring.submitter().register_files_sparse(slots)
    }

    /// Registers an empty table of `slots` fixed buffers (Linux 5.19, sparse registration).
    pub(crate) fn register_buffer_table(&self, slots: u32) -> io::Result<()> {
        self.uring.submitter().register_buffers_sparse(slots)
    }

    /// Fills fixed-buffer slots `offset..offset + iovecs.len()` (an empty `iovec` clears one).
    ///
    /// # Safety
    ///
    /// Every non-empty `iovec` must describe memory that stays valid, and is not freed, until
    /// its slot is cleared again or the ring is closed.
    pub(crate) unsafe fn update_buffers(
        &self,
        offset: u32,
        iovecs: &[libc::iovec],
    ) -> io::Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe {
            self.uring
                .submitter()
                .register_buffers_update(offset, iovecs, None)
        }
    }

    /// Registers a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) as group
    /// `bgid`.
    ///
    /// # Safety
    ///
    /// `ring_addr` must point to page-aligned memory of `entries` `io_uring_buf` entries that
    /// stays valid until the group is unregistered (or the ring closes), and every buffer an
    /// entry names must stay valid while the entry may be used by the kernel.
    pub(crate) unsafe fn register_buf_ring(
        &self,
        ring_addr: u64,
        entries: u16,
        bgid: u16,
        flags: u16,
    ) -> io::Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe {
            self.uring
                .submitter()
                .register_buf_ring_with_flags(ring_addr, entries, bgid, flags)
        }
    }

    /// Unregisters provided-buffer group `bgid`.
    pub(crate) fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.uring.submitter().unregister_buf_ring(bgid)
    }

    /// Queues one SQE. Fails only when the SQ is full; the caller flushes and retries.
    pub(crate) fn push(&mut self, sqe: &squeue::Entry) -> Result<(), PushError> {
        with_uring!(&mut self.uring, u => {
            let mut sq = u.submission();
            // SAFETY: the `OpCode` contract (op/mod.rs) makes every address and fd in `sqe`
            // valid until its final CQE; internal SQEs (wake read, cancels) uphold the same
            // rule.
            unsafe { sq.push(sqe) }
        })
    }

    /// Number of SQEs queued and not yet consumed by the kernel.
    pub(crate) fn sq_len(&mut self) -> usize {
        with_uring!(&mut self.uring, u => u.submission().len())
    }

    /// Whether queued SQEs need an enter to reach the kernel: whenever there are some, except
    /// with SQPOLL, where the kernel thread takes them by itself unless it sleeps.
    pub(crate) fn must_enter_to_submit(&mut self) -> bool {
        if self.sq_len() == 0 {
            return false;
        }
        !self.sqpoll || self.sq_thread_sleeps()
    }

    /// With SQPOLL: whether the kernel thread sleeps and must be woken to see the SQ.
    fn sq_thread_sleeps(&mut self) -> bool {
        // `need_wakeup` issues the SeqCst fence between our tail store (made when the last
        // `SubmissionQueue` borrow ended) and its flag load (see the module docs).
        with_uring!(&mut self.uring, u => u.submission().need_wakeup())
    }

    /// With SQPOLL: whether every queued SQE has been consumed by the kernel thread. The
    /// thread posts the CQEs of a batch before it moves the SQ head past it
    /// (`io_submit_sqes`: `io_submit_state_end` flushes completions, then `io_commit_sqring`),
    /// so once this holds, a CQ read after it shows every completion those SQEs made inline.
    pub(crate) fn sq_consumed(&mut self) -> bool {
        self.sq_len() == 0
    }

    /// Whether a kernel thread consumes the SQ (`IORING_SETUP_SQPOLL`).
    pub(crate) fn is_sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// Whether an enter is needed to see every completion even with nothing to submit: task work
    /// is pending (`IORING_SQ_TASKRUN`) or CQEs wait in the kernel's overflow list.
    pub(crate) fn has_pending_kernel_work(&mut self) -> bool {
        with_uring!(&mut self.uring, u => {
            let sq = u.submission();
            sq.taskrun() || sq.cq_overflow()
        })
    }

    /// Whether completions overflowed the CQ and wait in the kernel's list.
    pub(crate) fn cq_overflowed(&mut self) -> bool {
        with_uring!(&mut self.uring, u => u.submission().cq_overflow())
    }

    /// Copies up to `max` CQEs out of the CQ into `out` as (user_data, completion); the second
    /// half of 32-byte CQEs goes into `Completion::extra`.
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, Completion)>, max: usize) {
        match &mut self.uring {
            Uring::Normal(u) => out.extend(u.completion().take(max).map(|cqe| {
                (
                    cqe.user_data(),
                    Completion::new(cqe.result(), cqe.flags(), [0; 2]),
                )
            })),
            Uring::Big(u) => out.extend(u.completion().take(max).map(|cqe| {
                (
                    cqe.user_data(),
                    Completion::new(cqe.result(), cqe.flags(), *cqe.big_cqe()),
                )
            })),
        }
    }

    /// Whether completions are waiting in the CQ.
    pub(crate) fn cq_is_empty(&mut self) -> bool {
        with_uring!(&mut self.uring, u => u.completion().is_empty())
    }

    /// The raw ring fd (for registrations made with raw syscalls).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.uring.fd()
    }

    /// Submits every queued SQE and reaps completions, blocking as `wait` says.
    ///
    /// Returns the number of SQEs the kernel consumed. A wait that times out or is interrupted by
    /// a signal is not an error: the caller looks at the CQ either way.
    pub(crate) fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        let to_submit = self.sq_len() as u32;
        let mut flags = EnterFlags::GETEVENTS.bits() | self.enter_flags;
        if self.sqpoll {
            flags |= self.sqpoll_enter_flags(to_submit);
        }
        let result = match wait {
            Wait::No => self.raw_enter(to_submit, 0, flags, None),
            Wait::Forever => self.raw_enter(to_submit, 1, flags, None),
            Wait::Timeout(d) => self.timed_enter(to_submit, flags, d),
            // The driver turns this into `Forever` once its alarm is armed; a ring entered
            // directly waits with a timeout instead.
            Wait::Until(deadline) => self.timed_enter(
                to_submit,
                flags,
                deadline.saturating_duration_since(Instant::now()),
            ),
        };
        match result {
            Ok(n) => Ok(n),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            },
        }
    }

    /// An enter that waits for one CQE at most `timeout` (`IORING_ENTER_EXT_ARG`).
    fn timed_enter(&self, to_submit: u32, flags: u32, timeout: Duration) -> io::Result<usize> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        self.raw_enter(
            to_submit,
            1,
            flags | EnterFlags::EXT_ARG.bits(),
            Some(&args),
        )
    }

    /// With SQPOLL, the flags an enter needs for the SQ: wake the thread if it sleeps, and
    /// wait for room when the SQ is full (so a caller retrying its push finds some).
    fn sqpoll_enter_flags(&mut self, to_submit: u32) -> u32 {
        let mut flags = 0;
        if to_submit > 0 && self.sq_thread_sleeps() {
            flags |= EnterFlags::SQ_WAKEUP.bits();
        }
        let capacity = with_uring!(&mut self.uring, u => u.submission().capacity());
        if to_submit as usize >= capacity {
            flags |= EnterFlags::SQ_WAIT.bits();
        }
        flags
    }

    fn raw_enter(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        args: Option<&SubmitArgs<'_, '_>>,
    ) -> io::Result<usize> {
        let (arg_ptr, arg_size) = match args {
            Some(a) => (
                a as *const SubmitArgs<'_, '_> as *const libc::c_void,
                mem::size_of::<SubmitArgs<'_, '_>>(),
            ),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `enter_fd` is this ring's fd or its registered index (flag set accordingly);
        // with EXT_ARG, `arg_ptr` points at a live `io_uring_getevents_arg` (`SubmitArgs` is
        // `repr(transparent)` over it) whose timespec outlives the call; otherwise it is null.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.enter_fd,
                to_submit,
                min_complete,
                flags,
                arg_ptr,
                arg_size,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.enter_flags == 0 {
            return;
        }
        // A registered ring fd holds a reference to the ring in this thread's io_uring context
        // (at most 16 per thread): without unregistering, closing the fd would not free the ring.
        let mut update = libc_rsrc_update {
            offset: self.enter_fd as u32,
            resv: 0,
            data: 0,
        };
        // SAFETY: IORING_UNREGISTER_RING_FDS reads one `io_uring_rsrc_update` naming our index;
        // `update` is live for the call. Failure leaves the registration to thread exit.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.uring.fd(),
                IORING_UNREGISTER_RING_FDS,
                &mut update as *mut libc_rsrc_update,
                1u32,
            );
        }
    }
}

/// `struct io_uring_rsrc_update` from `<linux/io_uring.h>`.
#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_rsrc_update {
    offset: u32,
    resv: u32,
    data: u64,
}

const _: () = assert!(mem::size_of::<libc_rsrc_update>() == 16);
