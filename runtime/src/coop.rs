//! Cooperative budget: how many operations may finish without the ring in one loop turn.
//!
//! Most operations finish through the ring: their task waits, and the loop enters the kernel
//! (submitting everything queued) before it runs them again. Some finish at once instead:
//! served from a queue, or by a non-blocking system call that found data ready (for example
//! `net::UdpSocket`'s receives on a busy socket). A task that keeps finding data ready would
//! then keep its thread, and what it queued for the kernel meanwhile (its sends) would wait.
//! Such operations first ask [`poll_proceed`]: each call takes one unit of the thread's
//! budget for the current loop turn; once it is spent, the task waits for the next turn, so
//! the ring is entered at least once every [`BUDGET`] such operations.
//!
//! # Invariants
//!
//! - The budget is reset to [`BUDGET`] once per loop turn, right after the enter, and every
//!   task that found it spent is woken then (not before: a task re-polled in the same turn
//!   would only find it spent again), ahead of the tasks the enter's completions wake.
//! - The loop runs no further task once the budget is spent, past the first of the turn
//!   (`Scheduler::run`): the tasks not run keep their place in the queue and run first
//!   after the enter. So the budget ends the turn early instead of sending every later task
//!   to the back of the queue, which on the epoll backend (where every operation finishes
//!   without a ring) served some connections many times per round and left others waiting
//!   tens of milliseconds.
//! - While a task waits for the next turn, the loop's enter does not block.
//! - Outside a runtime there is no budget to spend: `poll_proceed` is always ready.

use std::{
    cell::Cell,
    rc::Rc,
    task::{Context, Poll},
};

use crate::{current, wait_list::WaitList};

/// Operations per loop turn (per thread) that may finish without the ring.
pub const BUDGET: u32 = 128;

/// A thread's budget (part of its runtime's handle).
#[derive(Debug)]
pub(crate) struct Coop {
    left: Cell<u32>,
    next_turn: WaitList,
}

impl Default for Coop {
    fn default() -> Self {
        Coop {
            left: Cell::new(BUDGET),
            next_turn: WaitList::default(),
        }
    }
}

impl Coop {
    /// Whether some of this turn's budget is left (the loop runs no more tasks once not).
    pub(crate) fn has_budget(&self) -> bool {
        self.left.get() > 0
    }

    /// Whether a task waits for the next turn (so the enter must not block).
    pub(crate) fn has_waiters(&self) -> bool {
        !self.next_turn.is_empty()
    }

    /// The loop turn ended: a new budget, and the tasks that waited for it run again.
    pub(crate) fn new_turn(&self) {
        self.left.set(BUDGET);
        self.next_turn.wake_all();
    }

    fn poll_proceed(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.left.get() {
            0 => {
                self.next_turn.register(cx.waker());
                Poll::Pending
            }
            n => {
                self.left.set(n - 1);
                Poll::Ready(())
            }
        }
    }
}

/// Takes one unit of this thread's budget for the current loop turn, for an operation about
/// to finish without the ring; `Pending` when it is spent (the task is woken after the next
/// enter). Always ready outside a runtime.
///
/// # Examples
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// // An operation that can finish without waiting asks first.
/// std::future::poll_fn(|cx| runtime::coop::poll_proceed(cx)).await;
/// # });
/// ```
pub fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    current::with(&CURRENT, |coop| coop.poll_proceed(cx)).unwrap_or(Poll::Ready(()))
}

thread_local! {
    /// The budget of the runtime running on this thread (filled by `executor::context::enter`).
    pub(crate) static CURRENT: current::Slot<Rc<Coop>> = const { current::Slot::new() };
}

#[cfg(test)]
mod tests {
    use std::{
        future::poll_fn,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// A task that only ever finds its operations ready still gives the loop a turn once
    /// every `BUDGET` of them, and another task runs in between.
    #[test]
    fn a_task_that_never_waits_gives_the_loop_its_turns() {
        static OTHER_RAN: AtomicU32 = AtomicU32::new(0);
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            crate::spawn(async {
                OTHER_RAN.fetch_add(1, Ordering::Relaxed);
            });
            let mut waits = 0;
            for _ in 0..3 * BUDGET {
                poll_fn(|cx| {
                    let poll = poll_proceed(cx);
                    waits += u32::from(poll.is_pending());
                    poll
                })
                .await;
            }
            assert_eq!(
                waits,
                2,
                "{} ready operations waited {waits} times",
                3 * BUDGET
            );
            assert_eq!(OTHER_RAN.load(Ordering::Relaxed), 1);
        });
    }

    /// Once a task spent the turn's budget, the tasks queued behind it wait for the next
    /// turn in their place: the next one starts with a full budget.
    #[test]
    fn a_spent_budget_ends_the_turn() {
        let rt = crate::Runtime::new().unwrap();
        let left_for_next = rt.block_on(async {
            let spender = crate::spawn(async {
                for _ in 0..BUDGET {
                    poll_fn(poll_proceed).await;
                }
            });
            let next = crate::spawn(async {
                current::with(&CURRENT, |coop| coop.left.get()).unwrap_or(0)
            });
            spender.await.unwrap();
            next.await.unwrap()
        });
        assert_eq!(left_for_next, BUDGET);
    }

    #[test]
    fn outside_a_runtime_there_is_no_budget() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..2 * BUDGET {
            assert!(poll_proceed(&mut cx).is_ready());
        }
    }
}
