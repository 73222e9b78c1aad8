//! `Sleep`: a future that completes at a deadline.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use super::{Timers, current_timers, timers::TimerKey};

/// Waits until `duration` has elapsed.
///
/// The wait bounds the event loop's `io_uring_enter` call, so it costs no SQE; precision is
/// that of the kernel's high-resolution timers (well under a millisecond on an idle machine).
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(
        Instant::now()
            .checked_add(duration)
            .unwrap_or_else(far_future),
    )
}

/// Waits until `deadline`.
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        timers: current_timers(),
        deadline,
        key: None,
    }
}

/// About 30 years from now: what saturating deadline arithmetic yields.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// The future returned by [`sleep`] and [`sleep_until`]. Dropping it removes its timer.
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    /// The timer wheel of the runtime the sleep was made on: all it needs of the runtime.
    timers: Rc<RefCell<Timers>>,
    deadline: Instant,
    /// The registry entry while the sleep is pending.
    key: Option<TimerKey>,
}

impl Sleep {
    /// The instant at which this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep becomes pending again if the new deadline is in the future.
    pub fn reset(&mut self, deadline: Instant) {
        self.deregister();
        self.deadline = deadline;
    }

    fn deregister(&mut self) {
        if let Some(key) = self.key.take() {
            self.timers.borrow_mut().remove(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.deregister();
            return Poll::Ready(());
        }
        let mut timers = this.timers.borrow_mut();
        let registered = this.key.is_some_and(|key| timers.update(key, cx.waker()));
        if !registered {
            this.key = Some(timers.insert(this.deadline, cx.waker().clone()));
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(mut timers) = self.timers.try_borrow_mut()
        {
            timers.remove(key);
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("registered", &self.key.is_some())
            .finish()
    }
}
