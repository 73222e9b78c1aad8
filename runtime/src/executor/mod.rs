//! The single-threaded task executor: run queue, task registry, spawning.
//!
//! Tasks are `async_task` raw tasks created with `spawn_local`, so their futures need not be
//! `Send` and are only ever polled and dropped on the runtime's thread (async-task checks this).
//! Their wakers are `Send + Sync`: a wake on the runtime thread pushes onto the local `queue`;
//! a wake anywhere else goes through the runtime's `Remote` queue and eventfd (`wake.rs`).
//!
//! # Invariants
//!
//! - `active` holds a waker for every task whose future has not been dropped yet; a task's
//!   `ActiveGuard` removes its entry when the future is dropped (completion, abort, shutdown).
//!   Shutdown wakes every entry and drops the resulting runnables, and does not finish
//!   before `active` is empty, so no future outlives its runtime (even one that nothing would
//!   ever wake) and none is dropped by another thread (one woken from another thread just
//!   before shutdown is waited for).
//! - A runnable is never run or dropped while `queue` or `active` is borrowed.
//! - After `close`, spawned tasks are dropped at once and their `JoinHandle`s report
//!   cancellation.

pub(crate) mod context;
mod join;
mod spawn;
pub(crate) mod workers;
mod yield_now;

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    task::Waker,
};

use async_task::Runnable;
pub use join::{JoinError, JoinHandle};
use slab::Slab;
pub use spawn::spawn;
pub(crate) use spawn::{ActiveGuard, Panic, poll_catching_panic, schedule};
pub use yield_now::yield_now;

use crate::wake::{Remote, Round};

pub(crate) type Task = Runnable;

/// Run queue and task registry of one runtime.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    queue: RefCell<VecDeque<Task>>,
    active: RefCell<Slab<Waker>>,
    closed: Cell<bool>,
}

impl Scheduler {
    /// Queues a task woken on the runtime thread.
    pub(crate) fn push(&self, task: Task) {
        self.queue.borrow_mut().push_back(task);
    }

    /// Moves tasks woken on other threads into the local queue.
    pub(crate) fn take_remote(&self, remote: &Remote) {
        remote.drain_into(&mut self.queue.borrow_mut());
    }

    /// Whether no task is ready to run.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Runs up to `budget` ready tasks, in the order they were woken, while `proceed` says
    /// so (asked before each but the first: one task runs every turn, so a `block_on`
    /// future that spends the operations' budget each turn cannot starve the rest).
    /// Returns how many ran.
    pub(crate) fn run(&self, budget: usize, proceed: impl Fn() -> bool) -> usize {
        let mut ran = 0;
        while ran < budget && (ran == 0 || proceed()) {
            let Some(task) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            ran += 1;
            task.run();
        }
        ran
    }

    /// Sets the waker of registry entry `index` (once the task exists).
    pub(crate) fn set_waker(&self, index: usize, waker: Waker) {
        if let Some(entry) = self.active.borrow_mut().get_mut(index) {
            *entry = waker;
        }
    }

    /// Number of tasks whose futures are alive.
    pub(crate) fn alive(&self) -> usize {
        self.active.borrow().len()
    }

    /// Stops accepting tasks and drops every task's future, including idle ones, on this
    /// thread. Returns only when no task is registered any more.
    ///
    /// Every round wakes every registered task and drops what the wakes queued, here and in
    /// `remote`. A task that stays registered after a round was already scheduled, and its
    /// `Runnable` is on its way into `remote` from another thread (taken from the schedule
    /// callback, not yet pushed): closing the remote queue now would make that thread drop the
    /// future, off its worker. So the rounds go on until the registry is empty (the remote
    /// queue waits between rounds that found nothing); the push cannot take long, since the
    /// pushing thread holds nothing but the `Runnable`.
    pub(crate) fn close(&self, remote: &Remote) {
        self.closed.set(true);
        remote.close_when(|from_remote| {
            let wakers: Vec<Waker> = self
                .active
                .borrow()
                .iter()
                .map(|(_, w)| w.clone())
                .collect();
            for waker in wakers {
                waker.wake();
            }
            let mut doomed: Vec<Task> = self.queue.borrow_mut().drain(..).collect();
            doomed.extend(from_remote);
            if !doomed.is_empty() {
                // Dropping futures can wake or (refused) spawn others: go round again.
                drop(doomed);
                Round::Progress
            } else if self.active.borrow().is_empty() {
                Round::Done
            } else {
                Round::Waiting
            }
        });
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }
}
