//! The readiness engine: one edge-triggered epoll instance per driver, for where io_uring
//! cannot be used (a seccomp profile or `kernel.io_uring_disabled` refuses it).
//!
//! Operations run as non-blocking system calls (`OpCode::try_nonblocking`) performed by the
//! op layer (`op/future.rs`); only those that would block reach this file, as a waiter on
//! their fd's readiness (`OpCode::readiness`). Nothing is ever in the kernel's hands between
//! tries, so an op waiting here owns all its resources and dropping it frees them at once.
//!
//! # Invariants
//!
//! - Each fd is added to the epoll instance once (`EPOLLIN | EPOLLRDHUP | EPOLLET`) and made
//!   `O_NONBLOCK`, the first time an op names it (`prepare`), and forgotten when its owner
//!   closes it (`forget_fd`). Edge-triggered: an op always tries its system call before it
//!   waits, and registers as a waiter only after the try said `EAGAIN`, so an edge that came
//!   between the two is reported by the next `epoll_wait`, never lost.
//! - `EPOLLOUT` is in the registration only while a writer may need it (`FdSlot::watch_out`):
//!   added (`EPOLL_CTL_MOD`) when the first writer waits, removed when an `EPOLLOUT` event
//!   finds no writer waiting. A datagram or Unix socket signals room after every send whose
//!   buffer the kernel freed, so watching it always would wake the loop once per message
//!   for nothing (tokio pays that: two `epoll_wait`s per UDP echo). The modification polls
//!   the file, so room that came before it is reported, not lost.
//! - A readiness event wakes every waiter of that direction; each tries again, and those
//!   that find `EAGAIN` wait again. Spurious wake-ups are harmless.
//! - Each fd remembers, per direction, whether it may be ready (`FdSlot::ready`): set when
//!   it is registered and by every event of that direction, cleared only when a try found
//!   the direction empty (`EAGAIN`, or a stream receive that filled less than it offered,
//!   which emptied the socket: tokio's rule too). An op whose direction is clear waits
//!   without trying: edge-triggered epoll reports the next arrival after the clear, since
//!   the clear happens in the same loop turn as the try that found it empty, before the next
//!   `epoll_wait`. A direction that reported its end (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`)
//!   is never cleared again: the end is reported once and read any number of times.
//!   Clearing is only ever an optimisation: a set bit costs one system call.
//! - Ops detached on this engine (sends written behind, the signal read) wait in `parked`;
//!   their retries run after the driver borrow ended, like any parked op's finish.
//! - The wake-up eventfd is registered under [`WAKE_KEY`] and read (reset) whenever it fires;
//!   the alarm's timerfd (`alarm.rs`) under `ALARM_KEY`.
//! - Fds closed while no driver of theirs is current reach every live engine through its
//!   list of closed fds (`closed.rs`), taken before the next fd is prepared, so a reused fd
//!   number is never taken for the old, registered file.

mod alarm;
mod closed;
mod waiters;

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::Arc,
    task::Waker,
};

use slab::Slab;

use super::{Wait, completion::Completion};
use alarm::{ALARM_KEY, Alarm};
use closed::ClosedFds;
pub(crate) use closed::forget_fd;
use waiters::Waiters;

/// `epoll_event.u64` of the wake-up eventfd (no fd number is this large).
const WAKE_KEY: u64 = u64::MAX;

/// Events read per `epoll_wait`.
const EVENTS: usize = 256;

/// The readiness an op waits for on the epoll backend ([`OpCode::readiness`]).
///
/// [`OpCode::readiness`]: crate::op::OpCode::readiness
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interest {
    /// Data (or a connection, or end of stream) to read: `EPOLLIN`.
    Readable,
    /// Room to write: `EPOLLOUT`.
    Writable,
    /// A message on the socket's error queue (`EPOLLERR`): zero-copy send notifications.
    Error,
}

/// An op detached on this engine, waiting for readiness to try again (implemented by the op
/// layer for every `OpCode`).
pub(crate) trait ReadyOp {
    /// The fd and readiness to wait for (`OpCode::readiness`).
    fn readiness(&self) -> Option<(RawFd, Interest)>;
    /// One more non-blocking try (`OpCode::try_nonblocking`).
    fn retry(&mut self) -> Option<Completion>;
    /// Finishes the op with its completion. Runs after the driver borrow ended.
    fn finish(self: Box<Self>, cqe: Completion);
    /// [`finish`](ReadyOp::finish) for an op that was never boxed (it completed at once).
    fn finish_owned(self, cqe: Completion)
    where
        Self: Sized;
    /// Whether the kernel still references the op's memory (a zero-copy send awaiting its
    /// notification): shutdown then waits for it, bounded, and leaks it past the deadline,
    /// instead of finishing it with `ECANCELED`.
    fn in_kernel(&self) -> bool {
        false
    }
}

/// What a readiness event asks the caller to do once the driver borrow ended.
pub(crate) enum Ready {
    Wake(Waker),
    Retry(usize),
}

/// [`FdSlot::ready`]: the fd may have data (or a connection, or end of stream) to read.
const READABLE: u8 = 1;
/// [`FdSlot::ready`]: the fd may have room to write.
const WRITABLE: u8 = 2;
/// [`FdSlot::ready`]: the read side reached its end (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`):
/// every read returns at once from now on, and no further event will say so, so
/// `READABLE` is never cleared again.
const READ_CLOSED: u8 = 4;
/// [`FdSlot::ready`]: the write side is broken (`EPOLLHUP`, `EPOLLERR`); `WRITABLE` stays.
const WRITE_CLOSED: u8 = 8;

/// The bit of [`FdSlot::ready`] that `interest` is tracked under; 0 (never cleared, always
/// tried) for the error queue.
fn ready_bit(interest: Interest) -> u8 {
    match interest {
        Interest::Readable => READABLE,
        Interest::Writable => WRITABLE,
        Interest::Error => 0,
    }
}

/// One fd's registration and waiters.
#[derive(Default)]
struct FdSlot {
    registered: bool,
    /// `EPOLLOUT` is in the fd's registration (see the module docs).
    watch_out: bool,
    /// Directions that may be ready (`READABLE | WRITABLE`, see the module docs).
    ready: u8,
    /// Bumped by every `cancel`: an op that waited under an older epoch was cancelled.
    epoch: u32,
    readers: Waiters,
    writers: Waiters,
    errors: Waiters,
}

/// The epoll engine of one driver (see the module docs).
pub(crate) struct Poller {
    epoll: OwnedFd,
    /// Held open for as long as it is registered.
    wake: Arc<OwnedFd>,
    events: Vec<libc::epoll_event>,
    /// Events read by the last wait, not routed yet.
    pending: usize,
    fds: Vec<FdSlot>,
    pub(crate) parked: Slab<Option<Box<dyn ReadyOp>>>,
    closed: ClosedFds,
    /// Scratch space for `route`, reused so that routing allocates nothing.
    pub(crate) scratch: Vec<Ready>,
    /// The timer that ends waits for a deadline (`alarm.rs`).
    alarm: Alarm,
}

impl Poller {
    /// A new epoll instance with `wake` registered.
    pub(crate) fn new(wake: Arc<OwnedFd>) -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("epoll_create1 failed ({e}): the epoll backend cannot start"),
            ));
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: WAKE_KEY,
        };
        // SAFETY: both fds are open; `event` is a live local the kernel only reads.
        let ret = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                wake.as_raw_fd(),
                &mut event,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("registering the wake-up eventfd with epoll failed: {e}"),
            ));
        }
        let alarm = Alarm::new(epoll.as_raw_fd());
        Ok(Poller {
            epoll,
            wake,
            events: Vec::with_capacity(EVENTS),
            pending: 0,
            fds: Vec::new(),
            parked: Slab::new(),
            closed: ClosedFds::new(),
            scratch: Vec::new(),
            alarm,
        })
    }

    /// Makes `fd` non-blocking and registers it, once; `Err(errno)` when epoll refuses it
    /// (a regular file, say).
    pub(crate) fn prepare(&mut self, fd: RawFd) -> Result<u32, i32> {
        if let Some(closed) = self.closed.take() {
            self.forget(closed);
        }
        let index = usize::try_from(fd).map_err(|_| libc::EBADF)?;
        if let Some(slot) = self.fds.get(index).filter(|s| s.registered) {
            return Ok(slot.epoch);
        }
        if self.fds.len() <= index {
            self.fds.resize_with(index + 1, FdSlot::default);
        }
        // Non-blocking once, for every op on this fd: accept4 and connect have no per-call
        // flag, and a read of an eventfd would otherwise block the thread. The flag stays on
        // the file when it leaves the runtime (`into_std`), as with tokio.
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one int from a live local; `fd` is open (owned by the op).
        if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
            return Err(errno());
        }
        // Edge-triggered, reading side only: one registration serves every reader of the fd
        // for its whole life, and writers add `EPOLLOUT` only when one must wait (module
        // docs). `EPOLLERR` and `EPOLLHUP` are always reported (the kernel adds them);
        // `EPOLLRDHUP` makes a peer's shutdown wake readers even when no data comes with it.
        // The key is the fd number: a table index.
        let mut ret = self.register(fd, libc::EPOLL_CTL_ADD, false);
        // EEXIST: the file is registered under this number already (a forgotten slot whose
        // file was not closed after all, e.g. a duplicate kept it open): it reports to us,
        // once its mask is ours.
        if ret == Err(libc::EEXIST) {
            ret = self.register(fd, libc::EPOLL_CTL_MOD, false);
        }
        ret?;
        let slot = &mut self.fds[index];
        slot.registered = true;
        slot.watch_out = false;
        // Whatever the fd holds already is reported by the add, but an op is about to try
        // anyway: it starts as possibly ready both ways.
        slot.ready = READABLE | WRITABLE;
        Ok(slot.epoch)
    }

    /// `epoll_ctl(op)` of `fd` under its own number, watching for room to write when
    /// `write` is set.
    fn register(&self, fd: RawFd, op: i32, write: bool) -> Result<(), i32> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        if write {
            events |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: fd as u64,
        };
        // SAFETY: the epoll fd and `fd` are open; `event` is a live local the kernel reads.
        let ret = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if ret < 0 { Err(errno()) } else { Ok(()) }
    }

    /// Adds or removes `EPOLLOUT` in `fd`'s registration (module docs). Adding polls the
    /// file: room that came before is reported by the next wait.
    fn watch_out(&mut self, fd: RawFd, watch: bool) {
        if self.register(fd, libc::EPOLL_CTL_MOD, watch).is_ok()
            && let Some(slot) = self.fds.get_mut(fd as usize)
        {
            slot.watch_out = watch;
        }
    }

    /// Whether `fd` may be ready for `interest` (see the module docs): false only after a
    /// try found it empty and no event of that direction came since.
    pub(crate) fn may_be_ready(&self, fd: RawFd, interest: Interest) -> bool {
        let bit = ready_bit(interest);
        bit == 0
            || usize::try_from(fd)
                .ok()
                .and_then(|i| self.fds.get(i))
                .is_none_or(|slot| slot.ready & bit != 0)
    }

    /// A try on `fd` found `interest`'s direction empty: later ops wait for its next event
    /// instead of trying, unless that direction has closed (the end of a stream is reported
    /// once, and then read any number of times).
    pub(crate) fn clear_ready(&mut self, fd: RawFd, interest: Interest) {
        if let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) {
            let closed = match interest {
                Interest::Readable => slot.ready & READ_CLOSED != 0,
                Interest::Writable => slot.ready & WRITE_CLOSED != 0,
                Interest::Error => true,
            };
            if !closed {
                slot.ready &= !ready_bit(interest);
            }
        }
    }

    /// Cancels everything waiting on `fd` (`IORING_ASYNC_CANCEL_FD | ALL`'s counterpart):
    /// bumps its epoch, so woken ops that waited before complete with `ECANCELED`, and
    /// appends their wake-ups and the parked ops' keys to `out`. Returns how many waited.
    pub(crate) fn cancel(&mut self, fd: RawFd, out: &mut Vec<Ready>) -> usize {
        let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) else {
            return 0;
        };
        slot.epoch = slot.epoch.wrapping_add(1);
        let before = out.len();
        for list in [&mut slot.readers, &mut slot.writers, &mut slot.errors] {
            list.drain_into(out);
        }
        out.len() - before
    }

    /// Forgets the registrations of fds closed since the last call: the numbers may be
    /// handed to new files, which must be registered afresh. The kernel itself removed the
    /// old registrations when the files closed (unless a duplicate kept one open, whose
    /// later events then only wake the new file's waiters spuriously).
    fn forget(&mut self, closed: Vec<RawFd>) {
        for fd in closed {
            if let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)) {
                // Nothing waits on a closed fd (its ops hold it open), but release anyway.
                *slot = FdSlot::default();
            }
        }
    }

    /// The waiters of `fd`'s next `interest` event (`fd` was prepared), with `EPOLLOUT`
    /// watched when they wait for room.
    fn waiters(&mut self, fd: RawFd, interest: Interest) -> Option<&mut Waiters> {
        let index = usize::try_from(fd).ok().filter(|&i| i < self.fds.len())?;
        if interest == Interest::Writable && !self.fds[index].watch_out {
            self.watch_out(fd, true);
        }
        let slot = &mut self.fds[index];
        Some(match interest {
            Interest::Readable => &mut slot.readers,
            Interest::Writable => &mut slot.writers,
            Interest::Error => &mut slot.errors,
        })
    }

    /// A task waits for `fd`'s `interest` (once, however often it asks before the event).
    pub(crate) fn wait_task(&mut self, fd: RawFd, interest: Interest, waker: &Waker) {
        if let Some(waiters) = self.waiters(fd, interest) {
            waiters.add_task(waker);
        }
    }

    /// The parked op under `key` waits for `fd`'s `interest`.
    fn wait_parked(&mut self, fd: RawFd, interest: Interest, key: usize) {
        if let Some(waiters) = self.waiters(fd, interest) {
            waiters.add_parked(key);
        }
    }

    /// A detached op waits for `fd`'s `interest`; returns its key.
    pub(crate) fn park(&mut self, fd: RawFd, interest: Interest, op: Box<dyn ReadyOp>) -> usize {
        let key = self.parked.insert(Some(op));
        self.wait_parked(fd, interest, key);
        key
    }

    /// A parked op that tried again and would still block waits again under its key.
    pub(crate) fn repark(
        &mut self,
        key: usize,
        fd: RawFd,
        interest: Interest,
        op: Box<dyn ReadyOp>,
    ) {
        if let Some(entry) = self.parked.get_mut(key) {
            *entry = Some(op);
            self.wait_parked(fd, interest, key);
        }
    }

    /// Waits for events as `wait` allows (`epoll_wait`; a deadline ends the wait through
    /// the alarm's timerfd, a timeout is rounded up to a millisecond: `alarm.rs`).
    pub(crate) fn poll(&mut self, wait: Wait) -> io::Result<()> {
        // Events not routed yet are work: reading more now could only delay them.
        if self.pending > 0 {
            return Ok(());
        }
        let timeout = self.alarm.epoll_timeout(wait);
        self.events.clear();
        // SAFETY: the kernel writes at most `capacity` events into the vector's spare
        // capacity; `set_len` below covers exactly the count it reports.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.capacity() as i32,
                timeout,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel initialized the first `n` (at most `capacity`) events.
        unsafe { self.events.set_len(n as usize) };
        self.pending = n as usize;
        Ok(())
    }

    /// Turns the events of the last wait into wake-ups and retries, appended to `out`.
    pub(crate) fn route(&mut self, out: &mut Vec<Ready>) {
        let n = std::mem::take(&mut self.pending);
        // Each event wakes every waiter of the directions it reports, in the order they
        // registered; each tries its system call again and waits again on `EAGAIN`. Errors
        // and hang-ups wake both directions, since both calls will now return at once.
        for i in 0..n {
            let libc::epoll_event { events, u64: key } = self.events[i];
            if key == WAKE_KEY {
                let mut counter = [0u8; 8];
                // SAFETY: reads 8 bytes into a live local. The eventfd fired, so its counter
                // is non-zero and the read returns at once (resetting it).
                unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
                continue;
            }
            if key == ALARM_KEY {
                self.alarm.fired();
                continue;
            }
            let Some(slot) = self.fds.get_mut(key as usize) else {
                continue;
            };
            let events = events as i32;
            let hangup = events & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
            if hangup {
                slot.ready |= READ_CLOSED | WRITE_CLOSED;
            } else if events & libc::EPOLLRDHUP != 0 {
                slot.ready |= READ_CLOSED;
            }
            if hangup || events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) != 0 {
                slot.ready |= READABLE;
                slot.readers.drain_into(out);
            }
            if hangup || events & libc::EPOLLOUT != 0 {
                slot.ready |= WRITABLE;
                if slot.writers.is_empty() && slot.watch_out && !hangup {
                    // Room nobody waited for: stop watching until a writer must wait.
                    self.watch_out(key as RawFd, false);
                    continue;
                }
                slot.writers.drain_into(out);
            }
            if events & libc::EPOLLERR != 0 {
                slot.errors.drain_into(out);
            }
        }
    }

    /// Takes every parked op the kernel holds nothing of (shutdown finishes them); those it
    /// still references stay parked.
    pub(crate) fn take_parked(&mut self) -> Vec<Box<dyn ReadyOp>> {
        let keys: Vec<usize> = self
            .parked
            .iter()
            .filter(|(_, op)| op.as_ref().is_some_and(|op| !op.in_kernel()))
            .map(|(key, _)| key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.parked.remove(key))
            .collect()
    }

    /// Shutdown gave up: the parked ops the kernel still references are leaked, never
    /// freed. Returns how many.
    pub(crate) fn leak_parked(&mut self) -> usize {
        let n = self.parked.len();
        for op in self.parked.drain().flatten() {
            std::mem::forget(op);
        }
        n
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("epoll", &self.epoll.as_raw_fd())
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}

/// The error of an io_uring-only feature asked for on the epoll backend.
pub(crate) fn unsupported(feature: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{feature}: not supported on the epoll backend, which this runtime runs on \
             (see runtime::capabilities() for why); it needs io_uring \
             (Builder::backend(Backend::IoUring) or RUNTIME_BACKEND=io_uring where io_uring is \
             allowed)"
        ),
    )
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
