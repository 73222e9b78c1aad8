//! Reaping: one enter, then every CQE routed to its operation, the CQ-overflow flush, and the
//! completions synthesized for skip-success SQEs.
//!
//! # Invariants
//!
//! - No CQE is lost: when the CQ is empty but the kernel flags overflow
//!   (`IORING_SQ_CQ_OVERFLOW`), an enter with `GETEVENTS` moves the overflowed CQEs into the CQ
//!   and reaping continues, within a budget of four CQ sizes per call so one turn stays bounded.
//! - Every routed CQE is stamped with a strictly increasing sequence number before delivery.
//! - The driver is borrowed only to copy CQEs out and to route one CQE; wakers and parked
//!   finishers ([`Action`]) run between borrows, so they may use the driver themselves.
//! - A skip-success operation is reported successful only once every queued SQE has been
//!   consumed and every CQE produced so far routed (CQ empty, no overflow), without a final
//!   CQE for it (see `OpCode::skip_success`). With SQPOLL, "consumed" is the SQ head having
//!   passed the SQE, which the kernel thread publishes only after posting the CQEs of that
//!   batch (see `Ring::sq_consumed`); until then the loop does not block on it.

use std::{cell::RefCell, io, time::Instant};

use super::{
    Action, CANCEL, Driver, Engine, MSG_SENT, MSG_WAKE, WAKE, Wait,
    alarm::{ALARM, ALARM_MASK},
    completion::Completion,
};

/// CQEs copied out of the ring per batch.
pub(crate) const DISPATCH_BATCH: usize = 256;

impl Action {
    /// Runs the action; the driver must not be borrowed.
    pub(crate) fn run(self) {
        match self {
            Action::Nothing => {}
            Action::Wake(waker) => waker.wake(),
            Action::Finish(parked, cqe) => parked.finish(cqe),
        }
    }
}

/// Routes every available CQE of `driver`'s ring, flushing the kernel's overflow list when
/// flagged, then resolves skip-success operations. `cqes` is scratch space, reused between
/// calls so that reaping allocates nothing.
pub(crate) fn dispatch(driver: &RefCell<Driver>, cqes: &mut Vec<(u64, Completion)>) {
    if driver.borrow().is_epoll() {
        super::readiness::dispatch(driver);
        return;
    }
    // Bounded, so that a ring kept full by fast peers still lets the loop run its tasks.
    let cq_entries = driver.borrow().cq_entries;
    let mut budget = cq_entries.saturating_mul(4).max(DISPATCH_BATCH);
    while budget > 0 {
        cqes.clear();
        driver.borrow_mut().reap(cqes, DISPATCH_BATCH.min(budget));
        if cqes.is_empty() {
            let mut driver = driver.borrow_mut();
            if !driver.cq_overflowed() {
                break;
            }
            // Overflowed CQEs move into the CQ only during a GETEVENTS enter.
            if driver.enter(Wait::No).is_err() {
                break;
            }
            continue;
        }
        budget = budget.saturating_sub(cqes.len());
        // The batch was copied out: the CQ head has moved on, the kernel can post more.
        route_all(driver, cqes);
    }
    // Skip-success operations that posted nothing by now have succeeded.
    cqes.clear();
    driver.borrow_mut().resolve_skipped(cqes);
    route_all(driver, cqes);
}

/// Routes CQEs to their operations, running wakers and parked finishers between borrows.
fn route_all(driver: &RefCell<Driver>, cqes: &[(u64, Completion)]) {
    for &(user_data, cqe) in cqes {
        let action = driver.borrow_mut().route(user_data, cqe);
        action.run();
    }
}

impl Driver {
    /// Submits queued SQEs and reaps completions, blocking as `wait` allows (never while CQEs
    /// wait in the CQ). Skipped when there is nothing to submit, reap or flush.
    pub(crate) fn enter(&mut self, mut wait: Wait) -> io::Result<()> {
        if let Engine::Epoll(poller) = &mut self.ring {
            self.stats.enters += 1;
            return poller.poll(wait);
        }
        // Direct descriptors dropped since the last enter are closed with it.
        self.queue_file_closes();
        // SQEs that found the SQ full go first, in order, so none overtakes another.
        self.flush_backlog()?;
        // CQEs already waiting are work to route: blocking would only delay them.
        if self.uring().is_some_and(|ring| !ring.cq_is_empty()) {
            wait = Wait::No;
        }
        if let Wait::Until(deadline) = wait {
            wait = self.arm_alarm(deadline);
        }
        let Engine::Uring(ring) = &mut self.ring else {
            return Ok(());
        };
        // Nothing to submit (or, with SQPOLL, nothing the awake kernel thread would not take
        // by itself), no task work, no overflow: the enter would do nothing.
        if matches!(wait, Wait::No)
            && !ring.must_enter_to_submit()
            && !ring.has_pending_kernel_work()
        {
            if self.urgent_skips > 0 && ring.is_sqpoll() {
                // The loop spins until the SQ thread has taken a skip-success SQE: let that
                // thread run should it share this CPU.
                std::thread::yield_now();
            }
            return Ok(());
        }
        self.stats.enters += 1;
        ring.enter(wait).map(drop)
    }

    /// A wait until `deadline` as the ring does it: without a timeout once the alarm is
    /// armed for it (`alarm.rs`), not at all when the deadline has passed, and with a
    /// timeout when the alarm's SQE found no room in the SQ (it waits in the backlog).
    fn arm_alarm(&mut self, deadline: Instant) -> Wait {
        // Armed for this deadline or an earlier one, and submitted: its CQE ends the wait in
        // time (one already posted made the caller not wait), so the clock need not be read.
        if self.backlog.is_empty()
            && self
                .alarm
                .armed_deadline()
                .is_some_and(|armed| armed <= deadline)
        {
            return Wait::Forever;
        }
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            return Wait::No;
        };
        if let Some(sqe) = self.alarm.sqe_for(deadline, now) {
            self.queue_sqe(sqe);
        }
        if self.backlog.is_empty() {
            Wait::Forever
        } else {
            Wait::Timeout(left)
        }
    }

    /// Whether overflowed CQEs wait in the kernel for a GETEVENTS enter (counted).
    pub(crate) fn cq_overflowed(&mut self) -> bool {
        let overflowed = self.uring().is_some_and(|ring| ring.cq_overflowed());
        if overflowed {
            self.stats.cq_overflows += 1;
        }
        overflowed
    }

    /// Copies up to `max` CQEs out of the ring into `out` as (user_data, completion).
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, Completion)>, max: usize) {
        if let Some(ring) = self.uring() {
            ring.reap(out, max);
        }
    }

    /// Whether any skip-success operation, urgent or lazy, waits to learn its outcome.
    pub(crate) fn has_any_skip_pending(&self) -> bool {
        match &self.ring {
            // Detached ops waiting for readiness are the epoll engine's pending chains.
            Engine::Epoll(poller) => !poller.parked.is_empty(),
            Engine::Uring(_) => !self.skip_pending.is_empty(),
        }
    }

    /// Whether skip-success operations wait to learn their outcome; the loop must not block.
    pub(crate) fn has_skip_pending(&self) -> bool {
        self.urgent_skips > 0
    }

    /// Synthesizes the completions of skip-success operations that are known to have succeeded:
    /// every queued SQE has been consumed and every CQE produced so far has been reaped, and
    /// none was a final CQE for them. Otherwise leaves them pending for a later turn.
    pub(crate) fn resolve_skipped(&mut self, out: &mut Vec<(u64, Completion)>) {
        if self.skip_pending.is_empty() || !self.backlog.is_empty() {
            return;
        }
        let Engine::Uring(ring) = &mut self.ring else {
            return;
        };
        // The order of the checks matters with SQPOLL: the SQ head is read before the CQ
        // tail, so the CQ seen is at least what the kernel thread posted for those SQEs.
        if !ring.sq_consumed() || !ring.cq_is_empty() || ring.cq_overflowed() {
            return;
        }
        // Every pending one is resolved now: those still in the kernel's hands succeeded,
        // those that posted a (failure) CQE were finished by it already.
        self.urgent_skips = 0;
        for key in self.skip_pending.drain(..) {
            let (index, generation) = super::lifecycle::decode(key);
            if let Some(slot) = self.slots.get(index)
                && slot.generation == generation
                && slot.state.in_kernel()
                && let Some(result) = slot.skip_success
            {
                out.push((key, Completion::new(result, 0, [0; 2])));
            }
        }
    }

    /// Delivers one CQE: internal ones (cancels, the wake read, kicks) are handled here,
    /// operations' ones go to their slot. Says what the caller must do next.
    pub(crate) fn route(&mut self, user_data: u64, cqe: Completion) -> Action {
        // Counted and stamped first, whoever it is for: the sequence orders every CQE.
        self.stats.completions += 1;
        let cqe = cqe.with_sequence(self.next_sequence);
        self.next_sequence += 1;
        match user_data {
            CANCEL | MSG_WAKE => Action::Nothing,
            WAKE => {
                self.wake.armed = false;
                self.arm_wake();
                Action::Nothing
            }
            ud if ud & ALARM_MASK == ALARM => {
                self.alarm.completed(ud);
                Action::Nothing
            }
            ud if ud & MSG_SENT == MSG_SENT => {
                self.kick_done((ud & !MSG_SENT) as usize, cqe.result());
                Action::Nothing
            }
            ud => self.complete_slot(ud, cqe),
        }
    }
}
