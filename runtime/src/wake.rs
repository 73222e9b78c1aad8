//! Cross-thread wake-ups: the only state of a runtime that other threads touch.
//!
//! `Waker`s must be `Send + Sync`, so a task or the `block_on` future may be woken from any
//! thread. Such a wake pushes the task onto `queue` (or sets `main_woken`), then *kicks* the
//! runtime thread if it may be asleep in `io_uring_enter`: the kick is a write to an eventfd
//! that the driver keeps a read armed on, so the sleeping enter returns with that CQE.
//!
//! # Protocol (no lost wake-ups)
//!
//! - Waker side: publish the work (`queue` + `pending`, or `main_woken`), then
//!   `if sleeping.swap(false) { write(eventfd) }`.
//! - Runtime side, before a blocking enter: `sleeping.store(true)`, then re-check `pending` and
//!   `main_woken`; if either is set, do not block. After the enter: `sleeping.store(false)`.
//!
//! All accesses are `SeqCst`, so either the runtime sees the published work in its re-check, or
//! the waker sees `sleeping == true` and writes the eventfd, whose armed read completes the
//! runtime's wait. At most one eventfd write happens per sleep.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    task::Wake,
};

use async_task::Runnable;

/// The cross-thread half of one runtime.
pub(crate) struct Remote {
    /// Unique per runtime, to tell whether a wake happens on this runtime's own thread.
    pub(crate) id: u64,
    queue: Mutex<Vec<Runnable>>,
    pending: AtomicBool,
    main_woken: AtomicBool,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("id", &self.id)
            .field("pending", &self.pending.load(SeqCst))
            .field("sleeping", &self.sleeping.load(SeqCst))
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
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            main_woken: AtomicBool::new(true),
            sleeping: AtomicBool::new(false),
            // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// Queues a task woken on a thread that is not running this runtime.
    pub(crate) fn push(&self, runnable: Runnable) {
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(runnable);
        self.pending.store(true, SeqCst);
        self.kick();
    }

    /// Moves every remotely woken task into `into`. Runs on the runtime thread.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Runnable>) {
        if self.pending.swap(false, SeqCst) {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            into.extend(queue.drain(..));
        }
    }

    /// Takes every remotely woken task (shutdown path).
    pub(crate) fn take_all(&self) -> Vec<Runnable> {
        self.pending.store(false, SeqCst);
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks the `block_on` future as woken.
    pub(crate) fn wake_main(&self) {
        self.main_woken.store(true, SeqCst);
        self.kick();
    }

    /// Whether the `block_on` future was woken since the last call; clears the flag.
    pub(crate) fn take_main_woken(&self) -> bool {
        self.main_woken.swap(false, SeqCst)
    }

    /// Announces that the runtime is about to block. Returns false (and stays awake) when work
    /// was published meanwhile.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, SeqCst);
        if self.pending.load(SeqCst) || self.main_woken.load(SeqCst) {
            self.sleeping.store(false, SeqCst);
            return false;
        }
        true
    }

    /// The runtime is awake again.
    pub(crate) fn finish_sleep(&self) {
        self.sleeping.store(false, SeqCst);
    }

    /// The eventfd the driver keeps a read armed on.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    fn kick(&self) {
        if self.sleeping.swap(false, SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local to our own eventfd. A failure could only
            // be EAGAIN on counter overflow, which still leaves the eventfd readable.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }
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
