//! `Interval`: ticks at a fixed period.

use std::{
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use super::{Sleep, sleep::far_future, sleep_until};

/// Ticks every `period`, the first tick completing immediately.
///
/// # Panics
///
/// Panics if `period` is zero, or when called outside a runtime.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let mut ticks = runtime::time::interval(Duration::from_millis(5));
/// ticks.tick().await; // immediately
/// ticks.tick().await; // 5 ms later
/// # });
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks every `period`, the first tick at `start`.
///
/// # Panics
///
/// Panics if `period` is zero, or when called outside a runtime.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        period > Duration::ZERO,
        "`interval` period must be non-zero"
    );
    Interval {
        delay: sleep_until(start),
        period,
        missed_tick_behavior: MissedTickBehavior::default(),
    }
}

/// What an [`Interval`] does when ticks were missed because the task was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTickBehavior {
    /// Fire the missed ticks back to back until caught up (the default).
    #[default]
    Burst,
    /// Restart the schedule: the next tick is one period after the late one.
    Delay,
    /// Skip missed ticks: the next tick is the next multiple of the period from the start.
    Skip,
}

impl MissedTickBehavior {
    fn next_timeout(self, timeout: Instant, now: Instant, period: Duration) -> Instant {
        match self {
            MissedTickBehavior::Burst => timeout + period,
            MissedTickBehavior::Delay => now + period,
            MissedTickBehavior::Skip => {
                let behind = now.duration_since(timeout).as_nanos();
                let into_period = (behind % period.as_nanos()) as u64;
                now + period - Duration::from_nanos(into_period)
            }
        }
    }
}

/// A stream of ticks, returned by [`interval`] and [`interval_at`].
#[derive(Debug)]
pub struct Interval {
    delay: Sleep,
    period: Duration,
    missed_tick_behavior: MissedTickBehavior,
}

impl Interval {
    /// Completes at the next tick and returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        ready!(Pin::new(&mut self.delay).poll(cx));
        let timeout = self.delay.deadline();
        let now = Instant::now();
        // Ticks less than 5 ms late count as on time, as in tokio.
        let next = if now.saturating_duration_since(timeout) > Duration::from_millis(5) {
            self.missed_tick_behavior
                .next_timeout(timeout, now, self.period)
        } else {
            timeout.checked_add(self.period).unwrap_or_else(far_future)
        };
        self.delay.reset(next);
        Poll::Ready(timeout)
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.delay.reset(Instant::now() + self.period);
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The current missed-tick behaviour.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed_tick_behavior
    }

    /// Sets what happens when ticks are missed.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed_tick_behavior = behavior;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_tick_policies() {
        let start = Instant::now();
        let period = Duration::from_millis(10);
        let now = start + Duration::from_millis(25);
        assert_eq!(
            MissedTickBehavior::Burst.next_timeout(start, now, period),
            start + period
        );
        assert_eq!(
            MissedTickBehavior::Delay.next_timeout(start, now, period),
            now + period
        );
        assert_eq!(
            MissedTickBehavior::Skip.next_timeout(start, now, period),
            start + Duration::from_millis(30)
        );
    }
}
