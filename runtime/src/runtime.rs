//! `Runtime`: the event loop and the shutdown sequence.
//!
//! # One loop turn
//!
//! 1. Poll the `block_on` future if it was woken.
//! 2. Run up to `task_budget` ready tasks (tasks woken on other threads are pulled in first),
//!    fewer once the operations' budget (`coop.rs`) is spent.
//! 3. Enter the ring once: submit every queued SQE and reap completions with `GETEVENTS`.
//!    The enter blocks only when nothing is ready, bounded by the earliest timer; otherwise it
//!    returns at once, and it is skipped entirely when there is nothing to submit or reap.
//! 4. Route every CQE to its operation (waking its task), flushing CQ overflow if flagged.
//! 5. Wake expired timers.
//!
//! # Shutdown (dropping the runtime)
//!
//! 1. Every task's future is dropped (idle tasks are woken first so none is missed); their
//!    in-flight operations park their resources in the driver and are cancelled.
//! 2. Timers are cleared, the shared receive ring is released (receives still in flight keep
//!    their own references), and operations left to run on their own that finish inside an
//!    enter (sends written behind) get a few non-blocking turns to finish what they chain to.
//! 3. Every remaining operation is cancelled, and completions are drained until each has
//!    received its final CQE, for at most `shutdown_timeout`. Resources of operations the
//!    kernel did not finish by then are leaked rather than freed.
//! 4. The ring is closed when the last reference to the handle goes.

use std::{
    future::Future,
    pin::pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use crate::{
    Capabilities,
    driver::{self, Wait},
    executor::context::{self, Handle},
    executor::workers::Workers,
    op::Completion,
    wake::MainWaker,
};

/// A single-threaded io_uring runtime: one ring, one task queue, one thread.
///
/// A runtime is `!Send`: it runs on the thread that built it. Use [`Runtime::block_on`] (or
/// `#[runtime::main]`) to run a future; tasks spawned with [`spawn`](crate::spawn) run while
/// `block_on` does. Dropping the runtime cancels every task and operation and waits (bounded)
/// for the kernel to release their resources.
#[derive(Debug)]
pub struct Runtime {
    handle: Rc<Handle>,
    /// Workers 1.. (none for a single-worker runtime).
    pub(crate) workers: Option<Workers>,
}

/// Counters describing a runtime's state, from [`Runtime::metrics`] or [`crate::metrics`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Operations whose final CQE has not arrived: the kernel may still use their resources.
    pub ops_in_flight: usize,
    /// Of those, operations whose future was dropped; their resources are parked in the driver.
    pub ops_parked: usize,
    /// Tasks whose futures are alive.
    pub tasks_alive: usize,
    /// Registered timers.
    pub timers: usize,
    /// Operations submitted since the runtime started.
    pub ops_submitted: u64,
    /// CQEs processed.
    pub completions: u64,
    /// Socket system calls a caller made itself in place of an operation
    /// ([`op::count_inline_op`](crate::op::count_inline_op)): on the epoll backend every
    /// write sent at once, also counted in `ops_submitted` and `completions` as the op it
    /// replaces; on io_uring a large write or a bulk stream's read tried at once, and a busy
    /// UDP socket's receive tries, which are no SQEs and not counted there.
    pub inline_calls: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// SQEs that found the SQ full and waited in the backlog for a later turn.
    pub sqes_backlogged: u64,
    /// CQEs that matched no operation (never expected; counted for diagnosis).
    pub stray_completions: u64,
    /// Operations whose resources were leaked because the kernel did not finish them before
    /// shutdown's deadline.
    pub ops_leaked: u64,
    /// Times the CQ was found overflowed (CQEs waiting in the kernel) and flushed.
    pub cq_overflows: u64,
    /// Wake-ups sent to other workers' rings with `IORING_OP_MSG_RING`.
    pub msg_ring_kicks: u64,
    /// Of those, the ones that failed and fell back to an eventfd write.
    pub msg_ring_fallbacks: u64,
}

impl Runtime {
    /// Builds a runtime with the default [`Builder`](crate::Builder) settings.
    pub fn new() -> std::io::Result<Runtime> {
        crate::Builder::new().build()
    }

    pub(crate) fn from_handle(handle: Rc<Handle>) -> Runtime {
        Runtime {
            handle,
            workers: None,
        }
    }

    /// Shuts down gracefully: [`shutdown_requested`](crate::shutdown_requested) resolves on
    /// every worker (accept loops stop accepting), tasks get up to `grace` to finish on their
    /// own, then whatever remains is cancelled and every worker drains its ring, as when the
    /// runtime is dropped.
    pub fn shutdown_graceful(self, grace: Duration) {
        let group = self.handle.group.clone();
        group.drain();
        self.block_on(async {
            self.handle.announce_drain();
            let deadline = Instant::now() + grace;
            while group.tasks_alive() > 0 && Instant::now() < deadline {
                crate::time::sleep(Duration::from_millis(2)).await;
            }
        });
        drop(self);
    }

    /// Runs `future` to completion on this thread, driving spawned tasks, I/O and timers
    /// meanwhile.
    ///
    /// # Panics
    ///
    /// Panics if called from inside another `block_on` on the same thread, and resumes a panic
    /// of `future` itself. Tasks that panic do not take the runtime down: their `JoinHandle`
    /// reports the panic.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !context::is_entered(),
            "cannot call `block_on` from inside a runtime: the thread is already running one \
             (use `runtime::spawn` or `.await` instead)"
        );
        let _entered = context::enter(self.handle.clone());
        let handle = &*self.handle;
        let waker = Waker::from(Arc::new(MainWaker(handle.remote.clone())));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        let mut cqes = Vec::with_capacity(DISPATCH_BATCH);
        handle.remote.wake_main();
        loop {
            if handle.remote.take_main_woken()
                && let Poll::Ready(output) = future.as_mut().poll(&mut cx)
            {
                // SQEs queued by the last poll (a `MSG_RING` kick of another worker, say)
                // must not wait for a next turn that may never come.
                let _ = handle.driver.borrow_mut().enter(Wait::No);
                return output;
            }
            // The operations' budget spent, the turn ends: the rest keep their place.
            handle
                .scheduler
                .run(handle.task_budget, || handle.coop.has_budget());
            handle.turn(&mut cqes);
        }
    }

    /// What the kernel offered this runtime's ring.
    pub fn capabilities(&self) -> Capabilities {
        self.handle.capabilities()
    }

    /// A snapshot of this runtime's counters.
    pub fn metrics(&self) -> Metrics {
        self.handle.metrics()
    }
}

/// CQEs copied out of the ring per batch.
const DISPATCH_BATCH: usize = driver::DISPATCH_BATCH;

impl Handle {
    /// Steps 3–5 of a loop turn: one enter, CQE routing, timers. Tasks woken on other threads
    /// are pulled into the run queue first, so they count against blocking.
    fn turn(&self, cqes: &mut Vec<(u64, Completion)>) {
        self.scheduler.take_remote(&self.remote);
        self.top_up();
        let wait = if self.scheduler.is_idle()
            && !self.coop.has_waiters()
            && !self.driver.borrow().has_skip_pending()
        {
            // The engine reads the clock only when it must move its alarm: a deadline that
            // has passed makes it not wait at all.
            match self.timers.borrow().next_deadline() {
                None => Wait::Forever,
                Some(deadline) => Wait::Until(deadline),
            }
        } else {
            Wait::No
        };
        let sleeping = !matches!(wait, Wait::No) && self.remote.prepare_sleep();
        let result = self
            .driver
            .borrow_mut()
            .enter(if sleeping { wait } else { Wait::No });
        if sleeping {
            self.remote.finish_sleep();
        }
        if let Err(e) = result {
            // Only a broken ring (or epoll instance) gets here (closed fd, bad memory);
            // nothing can progress.
            panic!(
                "the event loop's wait (io_uring_enter, or epoll_wait on the epoll backend) \
                 failed: {e}; the runtime's ring is unusable"
            );
        }
        // Tasks that found the budget spent run ahead of those the completions wake.
        self.coop.new_turn();
        self.dispatch(cqes);
        self.fire_timers();
    }

    /// [`submit_now`] on this runtime.
    fn submit_now(&self) -> bool {
        if !self.scheduler.is_idle() || self.driver.try_borrow_mut().is_err() {
            return false;
        }
        // Buffer pools are topped up before every enter, this one too: a task that goes on
        // without yielding would otherwise drain them.
        self.top_up();
        let Ok(mut driver) = self.driver.try_borrow_mut() else {
            return false;
        };
        if driver.enter(Wait::No).is_err() {
            return false;
        }
        drop(driver);
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut cqes) => {
                self.dispatch(&mut cqes);
                true
            }
            Err(_) => false,
        })
    }

    /// Tops up the buffer pools before an enter: provided-buffer rings, the ifq's refill queue.
    fn top_up(&self) {
        driver::refill(&self.driver);
        if let Some(zcrx) = &self.zcrx {
            zcrx.publish();
        }
    }

    /// Routes every available CQE (the driver's reap loop, `driver/dispatch.rs`).
    fn dispatch(&self, cqes: &mut Vec<(u64, Completion)>) {
        driver::dispatch(&self.driver, cqes);
    }

    fn fire_timers(&self) {
        // No timer, no clock read: a loop turn that serves only I/O costs no `clock_gettime`.
        if self.timers.borrow().len() == 0 {
            return;
        }
        let now = Instant::now();
        loop {
            let expired = self.timers.borrow_mut().pop_expired(now);
            match expired {
                Some(waker) => waker.wake(),
                None => break,
            }
        }
    }

    /// What the ring offers, with the notes the driver recorded since (refused
    /// registrations).
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.capabilities.borrow().clone();
        for note in self.driver.borrow().notes() {
            capabilities.note(note.clone());
        }
        capabilities
    }

    fn metrics(&self) -> Metrics {
        let (stats, in_flight, parked) = self.driver.borrow().stats();
        Metrics {
            ops_in_flight: in_flight,
            ops_parked: parked,
            tasks_alive: self.scheduler.alive(),
            timers: self.timers.borrow().len(),
            ops_submitted: stats.submitted,
            completions: stats.completions,
            inline_calls: stats.inline_calls,
            enters: stats.enters,
            sqes_backlogged: stats.backlogged,
            stray_completions: stats.stray_completions,
            ops_leaked: stats.leaked,
            cq_overflows: stats.cq_overflows,
            msg_ring_kicks: stats.msg_ring_kicks,
            msg_ring_fallbacks: stats.msg_ring_fallbacks,
        }
    }

    /// The shutdown sequence (see the module docs).
    fn shutdown(&self) {
        self.scheduler.close(&self.remote);
        let timers = self.timers.borrow_mut().take_all();
        drop(timers);
        // Receives still in flight hold their own clones until their final completions.
        self.shared_ring.clear();

        // Operations still in flight: the driver's drain (`driver/shutdown.rs`).
        driver::drain(&self.driver, self.shutdown_timeout);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The other workers first: their tasks may wake tasks here while shutting down.
        if let Some(workers) = self.workers.take() {
            workers.shut_down();
        }
        let _entered = context::enter(self.handle.clone());
        self.handle.shutdown();
    }
}

/// What the kernel offered the current thread's runtime.
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn capabilities() -> Capabilities {
    context::current().capabilities()
}

/// A snapshot of the current thread's runtime counters.
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn metrics() -> Metrics {
    context::current().metrics()
}

/// Submits what this thread's tasks queued, now rather than at the end of the loop turn, when
/// no other task is ready to run on this thread: one `io_uring_enter` that does not wait,
/// then every completion it produced is routed (waking their tasks), and skip-success sends it
/// consumed are settled. Returns whether it entered.
///
/// For a task that must learn a send's outcome before it can go on (a flush of sends written
/// behind, `net`'s write-behind): without this it would wait one loop turn for the enter, and
/// be polled again after it; with it, the outcome is known when this returns. With other tasks
/// ready it does nothing, so their SQEs still share the loop's one enter.
///
/// Outside a runtime, or when called while the runtime is reaping, it does nothing and
/// returns false.
pub fn submit_now() -> bool {
    context::try_current().is_some_and(|handle| handle.submit_now())
}

thread_local! {
    /// Reap scratch space for [`submit_now`], so that it allocates nothing after first use.
    static SCRATCH: std::cell::RefCell<Vec<(u64, Completion)>> = const { std::cell::RefCell::new(Vec::new()) };
}
