//! The epoll engine's alarm: a timerfd kept armed across waits, so that a loop waiting for
//! its next deadline calls `epoll_wait` without a timeout (the ring's alarm, `../alarm.rs`,
//! says why that matters).
//!
//! # Invariants
//!
//! - The timerfd is created with the engine (so the engine's fds are the same all its life),
//!   registered under [`ALARM_KEY`] (edge-triggered: every expiry raises an event), and
//!   closed with it. When it cannot be created or registered, waits fall back to
//!   `epoll_wait`'s timeout.
//! - `armed` is the deadline the timerfd is set for, cleared when its event is routed. A wait
//!   for a deadline at or after it leaves the timerfd alone (the loop wakes early and waits
//!   again); an earlier one sets it again (`timerfd_settime` replaces the old expiry).
//! - The timerfd never expires before the deadline: its relative expiry is measured from a
//!   `now` read before it is set.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use super::Wait;

/// `epoll_event.u64` of the alarm's timerfd (no fd number is this large).
pub(super) const ALARM_KEY: u64 = u64::MAX - 1;

/// The timerfd and the deadline it is set for.
#[derive(Debug)]
pub(super) struct Alarm {
    /// `None` when making it failed: waits use `epoll_wait`'s timeout instead.
    timer: Option<OwnedFd>,
    armed: Option<Instant>,
}

impl Alarm {
    /// `epoll_wait`'s timeout in milliseconds for `wait`: none (-1) for a deadline the
    /// timerfd is set for. Without a timerfd, the deadline rounded up to a millisecond: a
    /// timer never fires early, and the loop's timer wheel wakes whatever is due when the
    /// wait returns.
    pub(super) fn epoll_timeout(&mut self, wait: Wait) -> i32 {
        match wait {
            Wait::No => 0,
            Wait::Forever => -1,
            Wait::Timeout(d) => millis_up(d),
            // Set for this deadline or an earlier one: its event ends the wait in time (at
            // once when it has passed), without reading the clock.
            Wait::Until(deadline) if self.armed.is_some_and(|armed| armed <= deadline) => -1,
            Wait::Until(deadline) => {
                let now = Instant::now();
                if deadline <= now {
                    0
                } else if self.arm(deadline, now) {
                    -1
                } else {
                    millis_up(deadline - now)
                }
            }
        }
    }

    /// The alarm of the epoll instance `epoll`: a timerfd registered with it, or, when the
    /// kernel refuses one (out of fds, say), none.
    pub(super) fn new(epoll: RawFd) -> Alarm {
        Alarm {
            timer: make_timer(epoll).ok(),
            armed: None,
        }
    }

    /// Sets the timerfd to expire at `deadline` unless it already expires by then. Returns
    /// false when there is no timerfd to set (the caller bounds its wait instead).
    pub(super) fn arm(&mut self, deadline: Instant, now: Instant) -> bool {
        if self.armed.is_some_and(|armed| armed <= deadline) {
            return true;
        }
        let Some(timer) = &self.timer else {
            return false;
        };
        let timer = timer.as_raw_fd();
        // Never zero: a zero expiry disarms a timerfd.
        let left = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `timer` is the open timerfd `self` owns; `spec` is a live local the kernel
        // only reads, and the old value is not asked for.
        if unsafe { libc::timerfd_settime(timer, 0, &spec, std::ptr::null_mut()) } < 0 {
            return false;
        }
        self.armed = Some(deadline);
        true
    }

    /// The timerfd's event was routed: it expired. Resets its count so the next expiry
    /// raises a new edge.
    pub(super) fn fired(&mut self) {
        self.armed = None;
        if let Some(timer) = &self.timer {
            let mut count = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live local from the non-blocking timerfd
            // `self` owns; `EAGAIN` (set again since it fired) is harmless.
            unsafe { libc::read(timer.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
    }

    /// The deadline the timerfd is set for, if any.
    #[cfg(test)]
    pub(super) fn armed_deadline(&self) -> Option<Instant> {
        self.armed
    }
}

/// `d` in whole milliseconds, rounded up (at most `i32::MAX`).
fn millis_up(d: Duration) -> i32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128) as i32
}

/// A non-blocking monotonic timerfd, registered with `epoll` under [`ALARM_KEY`].
fn make_timer(epoll: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: takes no pointers; the result is checked.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by timerfd_create and is owned by nothing else.
    let timer = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: ALARM_KEY,
    };
    // SAFETY: both fds are open; `event` is a live local the kernel only reads.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timerfd_wakes_epoll_at_the_earliest_deadline_asked() {
        // SAFETY: epoll_create1 takes no pointers; the fd is checked and then owned.
        let epoll = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
        assert!(epoll.as_raw_fd() >= 0);
        let mut alarm = Alarm::new(epoll.as_raw_fd());
        let start = Instant::now();
        assert!(alarm.arm(start + Duration::from_secs(5), start));
        // Later: kept. Earlier: moved.
        assert!(alarm.arm(start + Duration::from_secs(9), start));
        assert_eq!(alarm.armed_deadline(), Some(start + Duration::from_secs(5)));
        assert!(alarm.arm(start + Duration::from_millis(20), start));
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: room for one event in a live local.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut event, 1, 3000) };
        assert_eq!(n, 1, "the timerfd never fired");
        let key = event.u64;
        assert_eq!(key, ALARM_KEY);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(20),
            "fired early: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "fired late: {elapsed:?}");
        alarm.fired();
        assert_eq!(alarm.armed_deadline(), None);
    }
}
