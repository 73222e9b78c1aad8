//! The process-wide part of signal handling: the handler, the per-signal delivery counters,
//! the eventfd the handler writes, and the wakers of waiting `Signal`s.
//!
//! # Invariants
//!
//! - The handler touches only `COUNTERS`, `EVENTFD` (atomics) and `write(2)`, and restores
//!   `errno`: it is async-signal-safe. `WAITERS` (a mutex) is never touched by it.
//! - The eventfd is created before any handler is installed and never closed, so the number
//!   the handler loads can never name another file.

use std::{
    cell::Cell,
    io,
    os::fd::RawFd,
    sync::{
        Mutex, MutexGuard, OnceLock,
        atomic::{AtomicI32, AtomicU64, Ordering},
    },
    task::Waker,
};

use io_uring::{opcode, squeue, types};
use slab::Slab;

use crate::op::{Completion, OpCode};

/// Signal numbers on Linux are `1..=64` (`SIGRTMAX`).
pub(super) const SIGNALS: usize = 65;

/// Deliveries of each signal since its handler was installed.
static COUNTERS: [AtomicU64; SIGNALS] = [const { AtomicU64::new(0) }; SIGNALS];

/// Whether each signal's handler is installed (`Err(errno)`: installing it failed).
static INSTALLED: [OnceLock<Result<(), i32>>; SIGNALS] = [const { OnceLock::new() }; SIGNALS];

/// The eventfd the handler writes to (-1 before the first installation).
static EVENTFD: AtomicI32 = AtomicI32::new(-1);

/// The wakers of `Signal`s, one entry per `Signal` (`None`: not waiting).
static WAITERS: Mutex<Slab<Option<Waker>>> = Mutex::new(Slab::new());

extern "C" fn on_signal(signum: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for the thread's life.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above; reading an int.
    let saved = unsafe { *errno };
    if let Some(counter) = usize::try_from(signum).ok().and_then(|s| COUNTERS.get(s)) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    let fd = EVENTFD.load(Ordering::SeqCst);
    if fd >= 0 {
        crate::wake::signal_eventfd(fd);
    }
    // SAFETY: as above; the interrupted code must not see the handler's `write` in errno.
    unsafe { *errno = saved };
}

static EVENTFD_CREATED: OnceLock<Result<RawFd, i32>> = OnceLock::new();

/// The eventfd, created on first use.
fn eventfd() -> io::Result<RawFd> {
    let created = EVENTFD_CREATED.get_or_init(|| {
        // SAFETY: eventfd takes no pointers. Blocking mode: io_uring completes reads of
        // O_NONBLOCK files with EAGAIN instead of waiting.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(errno());
        }
        EVENTFD.store(fd, Ordering::SeqCst);
        Ok(fd)
    });
    created.map_err(|errno| {
        let err = io::Error::from_raw_os_error(errno);
        io::Error::new(
            err.kind(),
            format!("could not create the eventfd that signals are delivered through: {err}"),
        )
    })
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Installs the handler of `signum` (an allowed signal number, below `SIGNALS`) unless it
/// already is.
pub(super) fn install(signum: usize, name: &str) -> io::Result<()> {
    eventfd()?;
    let Some(installed) = INSTALLED.get(signum) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} is not a signal number of Linux (1 to 64)"),
        ));
    };
    let installed = installed.get_or_init(|| {
        // SAFETY: `sigaction` is plain data, zeroed then filled with a handler of the right
        // signature; sigaction(2) reads it.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signum as libc::c_int, &action, std::ptr::null_mut())
        };
        if ret != 0 { Err(errno()) } else { Ok(()) }
    });
    installed.map_err(|errno| {
        let err = io::Error::from_raw_os_error(errno);
        io::Error::new(
            err.kind(),
            format!("could not install the handler of {name}: {err}"),
        )
    })
}

/// Deliveries of `signum` so far.
pub(super) fn deliveries(signum: usize) -> u64 {
    COUNTERS[signum].load(Ordering::SeqCst)
}

fn waiters() -> MutexGuard<'static, Slab<Option<Waker>>> {
    // No code that can panic runs under the lock; a poisoned lock still holds valid data.
    WAITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new waiter entry, not waiting.
pub(super) fn add_waiter() -> usize {
    waiters().insert(None)
}

pub(super) fn remove_waiter(key: usize) {
    let removed = waiters().try_remove(key);
    drop(removed);
}

/// Sets (`Some`) or clears the waker of entry `key`.
pub(super) fn set_waker(key: usize, waker: Option<&Waker>) {
    let replaced = match waiters().get_mut(key) {
        Some(slot) => match (slot.as_ref(), waker) {
            (Some(old), Some(new)) if old.will_wake(new) => None,
            _ => std::mem::replace(slot, waker.cloned()),
        },
        None => None,
    };
    // Dropped after the lock: a waker's destructor may run any code.
    drop(replaced);
}

/// Wakes every waiting `Signal`, of every kind and on every worker.
pub(super) fn wake_all() {
    let wakers: Vec<Waker> = waiters().iter_mut().filter_map(|(_, w)| w.take()).collect();
    for waker in wakers {
        waker.wake();
    }
}

thread_local! {
    /// The runtime (`Remote::id`) of this thread whose ring has a read of the eventfd armed.
    static ARMED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes sure the current worker's ring has a read of the eventfd in flight: one per ring,
/// detached (owned by no `Signal`), whose completion wakes every waiter.
///
/// One read per ring, not one per waiting `Signal`: with two reads of the eventfd in one ring,
/// the completion of the one that takes the count was not posted until the ring shut down
/// (seen on Linux 6.18; `tests/signal.rs`, `one_delivery_wakes_every_waiting_task`). And a
/// read owned by a `Signal` that is no longer polled would hold the wake-up of the others.
///
/// # Panics
///
/// Panics outside a runtime.
pub(super) fn arm() {
    let handle = crate::executor::context::current();
    let id = handle.remote.id;
    if ARMED.with(|armed| armed.get()) == Some(id) {
        return;
    }
    let Some(&Ok(fd)) = EVENTFD_CREATED.get() else {
        // `signal` created it before any `Signal` exists.
        return;
    };
    ARMED.with(|armed| armed.set(Some(id)));
    drop(crate::op::Op::new(EventfdRead::new(fd, id)).detach());
}

/// An 8-byte read of the signal eventfd, which is never closed.
#[derive(Debug)]
pub(super) struct EventfdRead {
    fd: RawFd,
    /// The runtime whose ring runs it.
    runtime: u64,
    /// Boxed: the kernel writes the counter here.
    buf: Box<[u8; 8]>,
}

impl EventfdRead {
    fn new(fd: RawFd, runtime: u64) -> EventfdRead {
        EventfdRead {
            fd,
            runtime,
            buf: Box::new([0; 8]),
        }
    }
}

// SAFETY: the SQE points at the boxed 8-byte buffer owned by `self`, and at an eventfd that
// stays open for the life of the process.
unsafe impl OpCode for EventfdRead {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        opcode::Read::new(types::Fd(self.fd), self.buf.as_mut_ptr(), 8).build()
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        cqe.into_result().map(drop)
    }

    fn readiness(&self) -> Option<(RawFd, crate::op::Interest)> {
        Some((self.fd, crate::op::Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        // SAFETY: reads 8 bytes into the boxed buffer owned by `self`; the eventfd is
        // non-blocking on this backend (made so when it was registered).
        let ret = unsafe { libc::read(self.fd, self.buf.as_mut_ptr().cast(), 8) };
        Completion::from_syscall(ret)
    }

    fn complete_detached(self, cqe: Completion) {
        let runtime = self.runtime;
        // Runs on the thread of the ring (the driver's contract); the next waiting `Signal`
        // polled there arms a new read.
        let _ = ARMED.try_with(|armed| {
            if armed.get() == Some(runtime) {
                armed.set(None);
            }
        });
        // It took the eventfd's count: every waiter, on every worker, looks at its counter.
        // A failure (cancelled: the runtime is shutting down) took nothing.
        if self.complete(cqe).is_ok() {
            wake_all();
        }
    }
}
