//! Time: sleeping, timeouts and intervals on the runtime's clock.
//!
//! Timers live in a per-runtime registry (`timers.rs`). The event loop waits until the
//! earliest deadline, then wakes every expired timer. The driver keeps one kernel timer armed
//! for that deadline across waits (an `IORING_OP_TIMEOUT`, or a timerfd on the epoll
//! backend), moved only when an earlier deadline comes, so a loop turn with timers pending
//! costs no more than one without: no timer programmed and cancelled per wait, no extra
//! thread. [`Instant`] is
//! `std::time::Instant` (`CLOCK_MONOTONIC`).

mod interval;
mod sleep;
mod timeout;
mod timers;

pub use std::time::{Duration, Instant};

pub use interval::{Interval, MissedTickBehavior, interval, interval_at};
pub use sleep::{Sleep, sleep, sleep_until};
pub use timeout::{Elapsed, Timeout, timeout, timeout_at};
pub(crate) use timers::Timers;

thread_local! {
    /// The timers of the runtime running on this thread (filled by `executor::context::enter`).
    pub(crate) static CURRENT: crate::current::Slot<std::rc::Rc<std::cell::RefCell<Timers>>> =
        const { crate::current::Slot::new() };
}

/// The timers of the runtime running on this thread: all a `Sleep` needs.
///
/// # Panics
///
/// Panics when no runtime is running on this thread.
pub(crate) fn current_timers() -> std::rc::Rc<std::cell::RefCell<Timers>> {
    crate::current::get(&CURRENT).unwrap_or_else(|| {
        panic!(
            "timers need a runtime: call this from inside `#[runtime::main]`, \
             `#[runtime::test]` or `Runtime::block_on`"
        )
    })
}
