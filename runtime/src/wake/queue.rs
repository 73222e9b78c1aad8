//! The cross-thread wake-up protocol of one runtime, apart from how a kick is delivered: a
//! queue that other threads push woken tasks into, the flags that tell the runtime thread
//! whether it may sleep, and the shutdown handshake. Generic over what is queued so that the
//! model-checked tests below (`RUSTFLAGS="--cfg runtime_loom"`) run exactly this code with loom's
//! primitives in place of std's.
//!
//! # Invariants
//!
//! - No lost wake-up. Pusher: publish the item (`queue` + `pending`, or `main_woken`), then
//!   take `sleeping` (true to false): if it was set, the pusher must kick. Runtime, before a
//!   blocking enter: `sleeping.store(true)`, then re-check `pending` and `main_woken` and stay
//!   awake if either is set; after the enter: `sleeping.store(false)`. Both sides put a
//!   `SeqCst` fence between their store and their load, so either the runtime's re-check sees
//!   the item or the pusher sees `sleeping` and kicks, and at most one kick happens per sleep.
//! - Flags are taken with `compare_exchange(true, false)`, never `swap`: the same effect on a
//!   bool, no write when the flag is clear, and loom models it exactly (its `swap` on a racing
//!   store produces histories no hardware can, tokio-rs/loom#254).
//! - Nothing pushed is lost or handed back silently: until [`WakeQueue::close`], every item
//!   pushed is queued for the runtime thread; after it, `push` returns the item to its caller.
//! - [`WakeQueue::close_when`] closes the queue only after its caller reported that nothing
//!   it owns is left, taking every item pushed meanwhile first; so an item that exists while
//!   the caller still counts something as registered reaches the runtime thread, not the
//!   pusher.

#[cfg(runtime_loom)]
use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering::SeqCst, fence},
};
#[cfg(not(runtime_loom))]
use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering::SeqCst, fence},
};

/// What one shutdown round achieved (see [`WakeQueue::close_when`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// Nothing the caller owns is left: the queue may close.
    Done,
    /// Something was dropped (which may wake or queue more): go again at once.
    Progress,
    /// Nothing to drop, yet something is still registered: an item is on its way from another
    /// thread; wait for it.
    Waiting,
}

/// Items woken on other threads, waiting for the runtime thread (see the module docs).
pub(crate) struct WakeQueue<T> {
    queue: Mutex<Vec<T>>,
    pending: AtomicBool,
    main_woken: AtomicBool,
    sleeping: AtomicBool,
    closed: AtomicBool,
}

/// What [`WakeQueue::push`] tells its caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed<T> {
    /// Queued; the runtime thread is awake or will see it before sleeping.
    Queued,
    /// Queued, and the runtime thread may be asleep: the caller must kick it.
    Kick,
    /// The queue is closed: the item comes back.
    Closed(T),
}

impl<T> WakeQueue<T> {
    pub(crate) fn new() -> WakeQueue<T> {
        WakeQueue {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            // The first loop turn polls the `block_on` future.
            main_woken: AtomicBool::new(true),
            sleeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        #[cfg(runtime_loom)]
        return self.queue.lock().unwrap();
        #[cfg(not(runtime_loom))]
        return self.queue.lock().unwrap_or_else(|p| p.into_inner());
    }

    /// Queues `item` for the runtime thread (any thread).
    pub(crate) fn push(&self, item: T) -> Pushed<T> {
        let mut queue = self.lock();
        if self.closed.load(SeqCst) {
            return Pushed::Closed(item);
        }
        queue.push(item);
        drop(queue);
        self.pending.store(true, SeqCst);
        self.claim_kick()
    }

    /// Marks the `block_on` future as woken (any thread). Returns whether to kick.
    pub(crate) fn wake_main(&self) -> bool {
        self.main_woken.store(true, SeqCst);
        matches!(self.claim_kick(), Pushed::Kick)
    }

    fn claim_kick(&self) -> Pushed<T> {
        // Orders the publish before the look at `sleeping` (see the module docs).
        fence(SeqCst);
        if take(&self.sleeping) {
            Pushed::Kick
        } else {
            Pushed::Queued
        }
    }

    /// Whether the `block_on` future was woken since the last call; clears the flag.
    pub(crate) fn take_main_woken(&self) -> bool {
        take(&self.main_woken)
    }

    /// Moves every queued item into `into` (runtime thread).
    pub(crate) fn drain_into(&self, into: &mut impl Extend<T>) {
        if take(&self.pending) {
            into.extend(self.lock().drain(..));
        }
    }

    /// Announces that the runtime thread is about to block. Returns false (and stays awake)
    /// when something was published meanwhile.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, SeqCst);
        // Orders the announcement before the re-check (see the module docs).
        fence(SeqCst);
        if self.pending.load(SeqCst) || self.main_woken.load(SeqCst) {
            self.sleeping.store(false, SeqCst);
            return false;
        }
        true
    }

    /// The runtime thread is awake again.
    pub(crate) fn finish_sleep(&self) {
        self.sleeping.store(false, SeqCst);
    }

    /// Shutdown (runtime thread): calls `round` with every item queued so far, again and
    /// again, until it returns [`Round::Done`]; waits (yielding, then sleeping briefly) after
    /// a [`Round::Waiting`]. Then closes the queue (later pushes get their item back) and
    /// returns what was pushed after the last round: only items that `round` did not count.
    pub(crate) fn close_when(&self, mut round: impl FnMut(Vec<T>) -> Round) -> Vec<T> {
        let mut idle_rounds = 0u32;
        loop {
            self.pending.store(false, SeqCst);
            let items = std::mem::take(&mut *self.lock());
            match round(items) {
                Round::Done => break,
                Round::Progress => idle_rounds = 0,
                Round::Waiting => {
                    idle_rounds += 1;
                    backoff(idle_rounds);
                }
            }
        }
        let mut queue = self.lock();
        self.closed.store(true, SeqCst);
        self.pending.store(false, SeqCst);
        std::mem::take(&mut *queue)
    }
}

/// Clears `flag`; returns whether it was set.
fn take(flag: &AtomicBool) -> bool {
    flag.compare_exchange(true, false, SeqCst, SeqCst).is_ok()
}

/// Waits a little for another thread to finish a push.
fn backoff(idle_rounds: u32) {
    #[cfg(runtime_loom)]
    {
        let _ = idle_rounds;
        loom::thread::yield_now();
    }
    #[cfg(not(runtime_loom))]
    if idle_rounds < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Model-checked: `RUSTFLAGS="--cfg runtime_loom" cargo test -p runtime --lib --release loom`. loom runs
/// each closure under every interleaving of its threads that the memory model allows.
#[cfg(all(test, runtime_loom))]
mod loom_tests {
    use loom::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering::SeqCst},
        },
        thread,
    };

    use super::{Pushed, Round, WakeQueue};

    /// A task woken on another thread while the runtime decides whether to sleep: if it sleeps,
    /// the waker kicks it, and the task is queued for it either way.
    #[test]
    fn loom_no_wake_up_is_lost() {
        loom::model(|| {
            let queue = Arc::new(WakeQueue::<u32>::new());
            assert!(queue.take_main_woken());
            let kicked = Arc::new(AtomicBool::new(false));
            let waker = {
                let (queue, kicked) = (queue.clone(), kicked.clone());
                thread::spawn(move || {
                    if matches!(queue.push(7), Pushed::Kick) {
                        kicked.store(true, SeqCst);
                    }
                })
            };
            let mut got = Vec::new();
            queue.drain_into(&mut got);
            let slept = got.is_empty() && queue.prepare_sleep();
            waker.join().unwrap();
            if slept {
                assert!(
                    kicked.load(SeqCst),
                    "the runtime sleeps and nobody kicks it"
                );
                queue.finish_sleep();
            }
            queue.drain_into(&mut got);
            assert_eq!(got, vec![7], "the woken task was lost");
        });
    }

    /// The same for the `block_on` future's wake-ups.
    #[test]
    fn loom_no_main_wake_up_is_lost() {
        loom::model(|| {
            let queue = Arc::new(WakeQueue::<u32>::new());
            assert!(queue.take_main_woken());
            let waker = {
                let queue = queue.clone();
                thread::spawn(move || queue.wake_main())
            };
            let slept = !queue.take_main_woken() && queue.prepare_sleep();
            let kicked = waker.join().unwrap();
            if slept {
                assert!(kicked, "the runtime sleeps and nobody kicks it");
                queue.finish_sleep();
                assert!(queue.take_main_woken());
            }
        });
    }

    /// A queued item: `registered` for a task whose future lives on the runtime (it must be
    /// dropped there), not for a `spawn_on` task whose future was never made.
    #[derive(Debug)]
    struct Task {
        registered: bool,
    }

    /// Shutdown racing wakes from two other threads: one of a task that ran on the runtime
    /// (registered), one of a task that never did. The registered one always reaches the
    /// runtime thread, never back to its waker; nothing is lost.
    #[test]
    fn loom_shutdown_never_hands_a_registered_task_back() {
        loom::model(|| {
            let queue = Arc::new(WakeQueue::<Task>::new());
            let wakers: Vec<_> = [true, false]
                .into_iter()
                .map(|registered| {
                    let queue = queue.clone();
                    thread::spawn(move || match queue.push(Task { registered }) {
                        Pushed::Closed(task) => {
                            assert!(!task.registered, "a registered task was handed back");
                            1
                        }
                        Pushed::Queued | Pushed::Kick => 0,
                    })
                })
                .collect();
            // The runtime thread: one task is registered until its runnable arrives.
            let mut registered = 1;
            let mut dropped_here = 0;
            let late = queue.close_when(|tasks| {
                if tasks.is_empty() {
                    return if registered == 0 {
                        Round::Done
                    } else {
                        Round::Waiting
                    };
                }
                for task in tasks {
                    registered -= usize::from(task.registered);
                    dropped_here += 1;
                }
                Round::Progress
            });
            assert!(late.iter().all(|t| !t.registered));
            dropped_here += late.len();
            let handed_back: usize = wakers.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(registered, 0);
            assert_eq!(dropped_here + handed_back, 2, "a task was lost");
        });
    }
}
