//! Cross-thread wake-ups: the only state of a runtime that other threads touch.
//!
//! `Waker`s must be `Send + Sync`, so a task or the `block_on` future may be woken from any
//! thread. Such a wake pushes the task onto `queue` (or sets `main_woken`), then *kicks* the
//! runtime thread if it may be asleep in `io_uring_enter`: the kick is a write to an eventfd
//! that the driver keeps a read armed on, so the sleeping enter returns with that CQE.
//!
//! The protocol itself (queue, sleep flags, shutdown handshake) is [`queue::WakeQueue`],
//! model-checked with loom; this module adds how a kick reaches a sleeping runtime.
//!
//! # Kicks between rings
//!
//! When the waker runs on a thread that drives a ring of its own (another worker), the kick is
//! an `IORING_OP_MSG_RING` from that ring to the sleeping one (Linux 5.18): it posts a CQE
//! straight into the target ring, with no eventfd write and no read to re-arm. It is submitted
//! with the waker's next enter. If it fails (the target ring closed, an old kernel), the
//! sender's driver falls back to the eventfd write when it sees the failure.
//!
//! The kick names its target by a file descriptor number, resolved only when the sender's
//! enter submits it. So that the number can never be closed and reused by another ring in
//! between, kicks never use the target's own ring fd: `Remote` holds a duplicate of it
//! (`kick_ring`), each queued kick holds a reference to that duplicate until its CQE, and the
//! target's shutdown only drops its own reference. The duplicate (and with it the number) is
//! closed when the last in-flight kick completes; until then the kernel keeps the target's
//! ring alive, which is harmless: its operations are finished or leaked by then.

mod queue;

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::Wake,
};

use async_task::Runnable;

pub(crate) use crate::driver::signal_eventfd;
use crate::{
    current,
    driver::{self, Driver, KickTarget},
};
pub(crate) use queue::Round;
use queue::{Pushed, WakeQueue};

/// The cross-thread half of one runtime.
pub(crate) struct Remote {
    /// Unique per runtime, to tell whether a wake happens on this runtime's own thread.
    pub(crate) id: u64,
    queue: WakeQueue<Runnable>,
    /// Shared with the driver's wake read and with kicks in flight, which keep it open.
    eventfd: Arc<OwnedFd>,
    /// A duplicate of this runtime's ring fd while it can receive `MSG_RING` kicks (see the
    /// module docs); `None` before the ring exists and after shutdown.
    kick_ring: Mutex<Option<Arc<OwnedFd>>>,
    /// `Driver::id` of this runtime's driver (0 before it exists): a kick from the thread
    /// that runs this very driver is no kick at all.
    driver_id: AtomicU64,
    /// Tasks alive on this runtime (for graceful shutdown, read from other workers).
    alive: AtomicUsize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("id", &self.id)
            .field("alive", &self.alive.load(SeqCst))
            .finish_non_exhaustive()
    }
}

impl Remote {
    pub(crate) fn new() -> io::Result<Arc<Remote>> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        // Blocking on purpose: io_uring completes reads of O_NONBLOCK files with -EAGAIN
        // instead of waiting for data.
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::other(format!(
                "creating the runtime's wake-up eventfd failed: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(Arc::new(Remote {
            id: NEXT_ID.fetch_add(1, SeqCst),
            queue: WakeQueue::new(),
            // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
            eventfd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            kick_ring: Mutex::new(None),
            driver_id: AtomicU64::new(0),
            alive: AtomicUsize::new(0),
        }))
    }

    /// Queues a task woken (or spawned) on a thread that is not running this runtime. After the
    /// runtime closed, the task is dropped here instead: it can only be a task that never ran
    /// on it (a `spawn_on` whose future was not made yet), which may be dropped on any thread,
    /// because closing waits until every task that ran here has been dropped there.
    pub(crate) fn push(self: &Arc<Self>, runnable: Runnable) {
        #[cfg(test)]
        test_hooks::before_push();
        match self.queue.push(runnable) {
            Pushed::Queued => {}
            Pushed::Kick => self.kick(),
            Pushed::Closed(runnable) => drop(runnable),
        }
    }

    /// Shutdown: hands `round` every task queued here, until it reports that no task of this
    /// runtime is left (see `WakeQueue::close_when`), then closes the queue: from then on tasks
    /// sent here are dropped by their sender. Stops `MSG_RING` kicks to this ring.
    pub(crate) fn close_when(&self, round: impl FnMut(Vec<Runnable>) -> Round) {
        let late = self.queue.close_when(round);
        drop(self.lock_kick_ring().take());
        drop(late);
    }

    /// Makes this runtime's ring (`ring_fd`) the target of `MSG_RING` kicks, through a
    /// duplicate of its fd. Without the duplicate (fd limit reached), kicks use the eventfd.
    pub(crate) fn set_kick_ring(&self, ring_fd: RawFd, driver_id: u64) {
        self.driver_id.store(driver_id, SeqCst);
        // SAFETY: F_DUPFD_CLOEXEC takes no pointers; `ring_fd` is the live ring fd.
        let dup = unsafe { libc::fcntl(ring_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup >= 0 {
            // SAFETY: `dup` was just returned by fcntl and is owned by nothing else.
            let dup = unsafe { OwnedFd::from_raw_fd(dup) };
            *self.lock_kick_ring() = Some(Arc::new(dup));
        }
    }

    fn lock_kick_ring(&self) -> std::sync::MutexGuard<'_, Option<Arc<OwnedFd>>> {
        self.kick_ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a task whose future now lives on this runtime.
    pub(crate) fn task_started(&self) {
        self.alive.fetch_add(1, SeqCst);
    }

    /// Counts a task whose future was dropped.
    pub(crate) fn task_ended(&self) {
        self.alive.fetch_sub(1, SeqCst);
    }

    /// Tasks alive on this runtime.
    pub(crate) fn tasks_alive(&self) -> usize {
        self.alive.load(SeqCst)
    }

    /// Moves every remotely woken task into `into`. Runs on the runtime thread.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Runnable>) {
        self.queue.drain_into(into);
    }

    /// Marks the `block_on` future as woken.
    pub(crate) fn wake_main(self: &Arc<Self>) {
        if self.queue.wake_main() {
            self.kick();
        }
    }

    /// Whether the `block_on` future was woken since the last call; clears the flag.
    pub(crate) fn take_main_woken(&self) -> bool {
        self.queue.take_main_woken()
    }

    /// Announces that the runtime is about to block. Returns false (and stays awake) when work
    /// was published meanwhile.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.queue.prepare_sleep()
    }

    /// The runtime is awake again.
    pub(crate) fn finish_sleep(&self) {
        self.queue.finish_sleep();
    }

    /// The eventfd the driver keeps a read armed on (shared: the driver holds it open).
    pub(crate) fn eventfd(&self) -> Arc<OwnedFd> {
        self.eventfd.clone()
    }

    /// Wakes the runtime thread, which may be asleep in `io_uring_enter`.
    fn kick(self: &Arc<Self>) {
        let ring = self.lock_kick_ring().clone();
        if let Some(ring) = ring {
            let target = || KickTarget {
                ring,
                eventfd: self.eventfd.clone(),
            };
            if send_msg_ring(self.driver_id.load(SeqCst), target) {
                return;
            }
        }
        self.write_eventfd();
    }

    /// The kick of last resort: a write to the eventfd the driver keeps a read armed on.
    pub(crate) fn write_eventfd(&self) {
        signal_eventfd(self.eventfd.as_raw_fd());
    }
}

/// Kicks the runtime whose driver is `target_id` with an `IORING_OP_MSG_RING` from the ring of
/// the runtime running on this thread, through the fds `target` makes (only when a kick is
/// sent; the kick keeps them open until it completes). Returns false (the caller writes the
/// eventfd instead) when this thread runs no other runtime or its driver is busy.
fn send_msg_ring(target_id: u64, target: impl FnOnce() -> KickTarget) -> bool {
    current::with(&driver::CURRENT, |driver| {
        if Driver::id(driver) == target_id {
            return false;
        }
        match driver.try_borrow_mut() {
            Ok(mut driver) => driver.send_msg_ring(target()),
            Err(_) => false,
        }
    })
    .unwrap_or(false)
}

/// The waker of a `block_on` future.
pub(crate) struct MainWaker(pub(crate) Arc<Remote>);

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.0.wake_main();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake_main();
    }
}

/// Test-only hooks that widen race windows.
#[cfg(test)]
pub(crate) mod test_hooks {
    use std::{cell::Cell, time::Duration};

    thread_local! {
        static PUSH_DELAY: Cell<Option<Duration>> = const { Cell::new(None) };
    }

    /// Makes this thread sleep for `delay` in every `Remote::push`, after the task's schedule
    /// callback handed it the `Runnable` and before the queue's lock is taken.
    pub(crate) fn delay_pushes(delay: Option<Duration>) {
        PUSH_DELAY.with(|d| d.set(delay));
    }

    pub(super) fn before_push() {
        if let Some(delay) = PUSH_DELAY.with(|d| d.get()) {
            std::thread::sleep(delay);
        }
    }
}
