//! The ring's alarm: one kernel timer kept armed across waits, so that a loop waiting for
//! its next deadline blocks without a timeout.
//!
//! A wait bounded by a timeout (`io_uring_enter` with `IORING_ENTER_EXT_ARG`) starts a kernel
//! high-resolution timer when it blocks and cancels it when it wakes: twice per loop turn for
//! any program with a timer pending, which is every server with an idle timeout. On a
//! virtual machine each of those reprogrammings of the CPU's timer may exit to the
//! hypervisor. The alarm is an `IORING_OP_TIMEOUT` (a pure timer, `count` 0) armed at the
//! earliest deadline the loop has waited for; waits then block until any CQE, the alarm's
//! included, and the kernel's timer is touched only when the deadline moves earlier
//! (`IORING_TIMEOUT_UPDATE`) or the alarm fires. `docs/kernel-notes.md` §10 has the
//! measurement.
//!
//! # Invariants
//!
//! - At most one alarm is in the kernel: `armed` names it (generation and deadline) from the
//!   moment its SQE is queued until its own CQE is routed. A second one is queued only after
//!   the first one's CQE cleared `armed`.
//! - The alarm never fires before the deadline it was armed or moved for: its duration is
//!   measured from a `now` read before the SQE is queued, and the kernel starts its timer
//!   later, when it takes the SQE.
//! - A wait for a deadline at or after the armed one leaves the alarm alone: the loop wakes
//!   at the armed deadline, finds nothing due (a timer cancelled meanwhile, say) and waits
//!   again, arming the alarm for its next deadline. Early wake-ups are harmless.
//! - A move that reaches the kernel after the alarm fired fails (`-ENOENT`, ignored like
//!   every `CANCEL`-tagged CQE); the fired alarm's CQE follows in the same enter and clears
//!   `armed`, so the next wait arms a fresh one.
//! - The timespec is boxed and written only when an SQE that names it is queued: the kernel
//!   copies it when it takes the SQE (`IORING_FEAT_SUBMIT_STABLE`). Two SQEs queued before the
//!   kernel takes the first (the SQ was full) both read the later value, which is the earlier
//!   deadline, measured from a later `now`: still never early.

use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types::Timespec};

use super::{CANCEL, RESERVED_GENERATION};

/// Base of the alarm's `user_data`; the low 30 bits carry its generation. Bit 31 is clear, so
/// no other internal `user_data` (all of which have it set) matches [`ALARM_MASK`].
pub(super) const ALARM: u64 = (RESERVED_GENERATION as u64) << 32 | 1 << 30;
/// The bits that identify an alarm's `user_data`.
pub(super) const ALARM_MASK: u64 = (RESERVED_GENERATION as u64) << 32 | 3 << 30;
/// The generation bits of an alarm's `user_data`.
const GENERATION_BITS: u32 = (1 << 30) - 1;

/// The alarm in the kernel, if any.
#[derive(Debug, Clone, Copy)]
struct Armed {
    generation: u32,
    deadline: Instant,
}

/// The ring's alarm (see the module docs).
#[derive(Debug)]
pub(super) struct Alarm {
    armed: Option<Armed>,
    next_generation: u32,
    /// What the last queued alarm SQE asked for; read by the kernel when it takes the SQE.
    timespec: Box<Timespec>,
}

impl Alarm {
    pub(super) fn new() -> Alarm {
        Alarm {
            armed: None,
            next_generation: 0,
            timespec: Box::new(Timespec::new()),
        }
    }

    /// The SQE that makes the kernel post a CQE no later than `deadline` (and not before
    /// it), or `None` when the armed alarm already does. `now` is the current time.
    pub(super) fn sqe_for(&mut self, deadline: Instant, now: Instant) -> Option<squeue::Entry> {
        // Never zero: the kernel treats a zero timespec as "fire at once", which is right,
        // but a nanosecond says the same without a special case.
        let left = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        match &mut self.armed {
            Some(armed) if armed.deadline <= deadline => None,
            Some(armed) => {
                armed.deadline = deadline;
                *self.timespec = Timespec::from(left);
                let target = ALARM | u64::from(armed.generation);
                Some(
                    opcode::TimeoutUpdate::new(target, &*self.timespec as *const Timespec)
                        .build()
                        .user_data(CANCEL),
                )
            }
            None => {
                let generation = self.next_generation;
                self.next_generation = (generation + 1) & GENERATION_BITS;
                self.armed = Some(Armed {
                    generation,
                    deadline,
                });
                *self.timespec = Timespec::from(left);
                Some(
                    opcode::Timeout::new(&*self.timespec as *const Timespec)
                        .build()
                        .user_data(ALARM | u64::from(generation)),
                )
            }
        }
    }

    /// The alarm tagged `user_data` posted its CQE (it fired, or the ring cancelled it):
    /// it is no longer in the kernel.
    pub(super) fn completed(&mut self, user_data: u64) {
        let generation = (user_data as u32) & GENERATION_BITS;
        if self.armed.is_some_and(|a| a.generation == generation) {
            self.armed = None;
        }
    }

    /// The deadline of the alarm in the kernel, if one is armed.
    pub(super) fn armed_deadline(&self) -> Option<Instant> {
        self.armed.map(|a| a.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_user_data_matches_no_other_internal_user_data() {
        for other in [CANCEL, super::super::WAKE, super::super::MSG_WAKE] {
            assert_ne!(other & ALARM_MASK, ALARM, "{other:#x}");
        }
        assert_ne!((super::super::MSG_SENT | 7) & ALARM_MASK, ALARM);
        assert_eq!((ALARM | u64::from(GENERATION_BITS)) & ALARM_MASK, ALARM);
    }

    #[test]
    fn a_later_deadline_keeps_the_alarm_and_an_earlier_one_moves_it() {
        let mut alarm = Alarm::new();
        let now = Instant::now();
        let first = alarm.sqe_for(now + Duration::from_millis(50), now);
        assert!(first.is_some());
        assert!(
            alarm
                .sqe_for(now + Duration::from_millis(80), now)
                .is_none()
        );
        assert_eq!(
            alarm.armed_deadline(),
            Some(now + Duration::from_millis(50))
        );
        let moved = alarm.sqe_for(now + Duration::from_millis(10), now).unwrap();
        assert_eq!(moved.get_user_data(), CANCEL);
        assert_eq!(
            alarm.armed_deadline(),
            Some(now + Duration::from_millis(10))
        );
        // The fired alarm's CQE clears it; a stale generation does not.
        alarm.completed(ALARM | 5);
        assert!(alarm.armed_deadline().is_some());
        alarm.completed(first.unwrap().get_user_data());
        assert!(alarm.armed_deadline().is_none());
        let again = alarm.sqe_for(now + Duration::from_millis(80), now).unwrap();
        assert_eq!(again.get_user_data(), ALARM | 1);
    }
}
