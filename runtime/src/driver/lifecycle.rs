//! One operation's life in the driver, from its SQE to its final CQE: the [`Lifecycle`] enum
//! and the op-table calls that move it from state to state.
//!
//! # States
//!
//! ```text
//!            submit
//!              │
//!              ▼        CQE with F_MORE         poll took the last queued CQE
//!   ┌──── Waiting(waker) ─────────────▶ Ready(cqes) ◀──────────┐
//!   │          │  ▲                      │   │                  │
//!   │    final │  └──────────────────────┘   │ final CQE        │
//!   │      CQE ▼      poll emptied queue     ▼                  │
//!   │      Finished(cqes) ◀──────────────────┘                  │
//!   │          │ poll took the final CQE: slot removed          │
//!   │ owner    ▼                                                │
//!   │ dropped  (gone)                                           │
//!   └────▶ Parked(resources) ── final CQE: slot removed, `Action::Finish`
//!              │
//!              └── shutdown gave up (`leak_unfinished`) ──▶ Leaked
//! ```
//!
//! # Invariants
//!
//! - A slot exists from the moment its SQE is queued until its **final** CQE (the first one
//!   without `IORING_CQE_F_MORE`) has been consumed: by the owning future, or by the driver when
//!   the owner is gone. Only then is the slot removed, so its `user_data` can never be reused
//!   while the kernel may still post a CQE for it.
//! - `user_data` = `generation << 32 | slab index`. The generation changes on every insert, so a
//!   stray CQE for a recycled index is recognised and ignored instead of being misdelivered.
//! - CQEs are handed out in the order the kernel posted them; in `Finished` the final CQE is
//!   the last one queued, and nothing is queued after it (later CQEs are strays).
//! - `Ready` and `Finished` never hold a waker: routing a CQE takes the waker out and wakes it,
//!   and the owner registers a new one when a poll finds nothing queued (`Waiting`).
//! - `Parked` holds everything the kernel may still touch (buffers, fds, addresses). It is
//!   released only after the final CQE, and never while the driver is borrowed (see
//!   [`Action`]); `Leaked` resources were forgotten, never freed.

use std::{
    collections::VecDeque,
    task::{Context, Poll, Waker},
};

use io_uring::{opcode, squeue};

use super::{Action, CANCEL, Driver, RESERVED_GENERATION, completion::Completion};

/// Resources of an operation whose owner let go of them while the kernel still used them.
///
/// Implemented by the op layer above the driver (`runtime::op`), which knows how each op
/// releases what a CQE carries; the driver only stores them and calls these at the right time.
pub(crate) trait Parked {
    /// A non-final CQE arrived (multishot item, `SEND_ZC` result). Releases what it carries.
    /// Runs while the driver is borrowed: it must not submit operations.
    fn on_more(&mut self, cqe: Completion);

    /// The final CQE arrived: releases everything. Runs after the driver borrow is released,
    /// so dropping user types here may re-enter the runtime.
    fn finish(self: Box<Self>, cqe: Completion);
}

/// Where one operation stands (see the module docs for the transitions).
pub(crate) enum Lifecycle {
    /// In the kernel's hands, owned by a live future; it holds the waker of its last poll.
    Waiting(Option<Waker>),
    /// Non-final CQEs the live owner has not taken yet; more will follow.
    Ready(CqeQueue),
    /// The final CQE has arrived (it is last in the queue); the owner has not taken it yet.
    Finished(CqeQueue),
    /// The owner let go: the driver feeds CQEs to these resources until the final one.
    Parked(Box<dyn Parked>),
    /// Shutdown gave up on it: its resources were leaked, later CQEs are ignored.
    Leaked,
}

impl Lifecycle {
    /// Whether the kernel may still post a CQE for this operation.
    pub(crate) fn in_kernel(&self) -> bool {
        matches!(
            self,
            Lifecycle::Waiting(_) | Lifecycle::Ready(_) | Lifecycle::Parked(_)
        )
    }
}

/// What becomes of an operation whose owner lets go of it (`Driver::park`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detach {
    /// Its future was dropped: cancel the request.
    Cancel,
    /// Handed over to finish on its own (`Op::detach`), with nobody waiting for it.
    RunLazily,
}

/// One entry of the op table.
pub(crate) struct Slot {
    pub(crate) generation: u32,
    pub(crate) state: Lifecycle,
    /// For skip-success SQEs: the result to report if no CQE arrives.
    pub(crate) skip_success: Option<i32>,
    /// A skip-success request detached lazily: nobody waits for its outcome.
    pub(crate) lazy_skip: bool,
}

/// A queue of CQEs that does not allocate for the common single-CQE operation.
pub(crate) enum CqeQueue {
    Empty,
    One(Completion),
    Many(VecDeque<Completion>),
}

impl CqeQueue {
    pub(crate) fn push(&mut self, cqe: Completion) {
        match std::mem::replace(self, CqeQueue::Empty) {
            CqeQueue::Empty => *self = CqeQueue::One(cqe),
            CqeQueue::One(first) => {
                let mut many = VecDeque::with_capacity(4);
                many.push_back(first);
                many.push_back(cqe);
                *self = CqeQueue::Many(many);
            }
            CqeQueue::Many(mut many) => {
                many.push_back(cqe);
                *self = CqeQueue::Many(many);
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Completion> {
        match self {
            CqeQueue::Empty => None,
            CqeQueue::One(cqe) => {
                let cqe = *cqe;
                *self = CqeQueue::Empty;
                Some(cqe)
            }
            CqeQueue::Many(many) => many.pop_front(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            CqeQueue::Empty => true,
            CqeQueue::One(_) => false,
            CqeQueue::Many(many) => many.is_empty(),
        }
    }
}

/// Splits a `user_data` value into (slab index, generation).
pub(crate) fn decode(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

/// Builds the `user_data` of slot `index` at `generation`.
pub(crate) fn encode(index: usize, generation: u32) -> u64 {
    u64::from(generation) << 32 | index as u64
}

/// The fewest slots the op table grows by.
const SLOT_GROWTH_MIN: usize = 64;

impl Driver {
    /// Queues an operation's SQE and returns its `user_data` key, or `None` after shutdown.
    /// `skip_success` is the result to report if the (skip-success) SQE posts no CQE.
    pub(crate) fn submit(&mut self, sqe: squeue::Entry, skip_success: Option<i32>) -> Option<u64> {
        if self.closed {
            return None;
        }
        Some(self.insert(sqe, skip_success, Lifecycle::Waiting(None)))
    }

    /// Queues an operation that nobody will poll, its resources parked at once: what
    /// [`submit`](Driver::submit) then [`detach_lazy`](Driver::detach_lazy) do, with one slot
    /// lookup (a write-behind send per message takes this path). After shutdown the
    /// resources come back, for the caller to finish with `ECANCELED`.
    pub(crate) fn submit_detached(
        &mut self,
        sqe: squeue::Entry,
        skip_success: Option<i32>,
        parked: Box<dyn Parked>,
    ) -> Result<u64, Box<dyn Parked>> {
        if self.closed {
            return Err(parked);
        }
        self.parked += 1;
        Ok(self.insert(sqe, skip_success, Lifecycle::Parked(parked)))
    }

    /// Takes a slot for a new operation in `state` (`Waiting`, or `Parked` when detached at
    /// once: a skip-success one is then lazy) and queues its SQE.
    fn insert(&mut self, sqe: squeue::Entry, skip_success: Option<i32>, state: Lifecycle) -> u64 {
        let generation = self.next_generation;
        self.next_generation = match generation.wrapping_add(1) {
            RESERVED_GENERATION => 0,
            g => g,
        };
        if self.slots.len() == self.slots.capacity() {
            // Grow by an eighth (at least 64 slots), not by doubling: with 10,000 connections
            // each holding a receive, a doubled table would carry up to 10,000 unused slots,
            // which is memory every idle connection pays for. The moves cost 8 per slot over
            // the table's growth, once.
            self.slots
                .reserve_exact((self.slots.capacity() / 8).max(SLOT_GROWTH_MIN));
        }
        let lazy_skip = skip_success.is_some() && matches!(state, Lifecycle::Parked(_));
        let entry = self.slots.vacant_entry();
        let key = encode(entry.key(), generation);
        entry.insert(Slot {
            generation,
            state,
            skip_success,
            lazy_skip,
        });
        if skip_success.is_some() {
            self.skip_pending.push(key);
            if !lazy_skip {
                self.urgent_skips += 1;
            }
        }
        self.in_flight += 1;
        self.stats.submitted += 1;
        self.queue_sqe(sqe.user_data(key));
        key
    }

    /// Hands the owner its next CQE, or registers its waker. The final CQE removes the slot.
    pub(crate) fn poll_cqe(&mut self, key: u64, cx: &mut Context<'_>) -> Poll<Completion> {
        let (index, generation) = decode(key);
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => unreachable!("an operation polled its slot after the slot was released"),
        };
        match &mut slot.state {
            Lifecycle::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Lifecycle::Ready(cqes) => {
                let cqe = cqes.pop();
                if cqes.is_empty() {
                    slot.state = Lifecycle::Waiting(None);
                }
                match cqe {
                    Some(cqe) => Poll::Ready(cqe),
                    // Never queued empty; recover by waiting like any other poll.
                    None => self.poll_cqe(key, cx),
                }
            }
            Lifecycle::Finished(cqes) => match cqes.pop() {
                Some(cqe) => {
                    if !cqe.has_more() {
                        self.slots.remove(index);
                    }
                    Poll::Ready(cqe)
                }
                None => unreachable!("a finished slot is removed with its final CQE"),
            },
            Lifecycle::Parked(_) | Lifecycle::Leaked => {
                unreachable!("an operation polled its slot after letting go of it")
            }
        }
    }

    /// The owner of `key` is gone: park its resources until the final CQE and cancel it.
    ///
    /// Returns the resources and the final CQE when that CQE had already arrived; the caller
    /// releases them after ending the borrow.
    pub(crate) fn detach(
        &mut self,
        key: u64,
        parked: Box<dyn Parked>,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        self.park(key, parked, Detach::Cancel)
    }

    /// The owner of `key` hands it over to run to its end without a future: its resources are
    /// parked until the final CQE, as for [`detach`](Driver::detach), but nothing is cancelled.
    /// A pending skip-success request detached this way stops holding the loop awake (no task
    /// waits for its outcome; it is learnt after a later enter) until
    /// [`expedite`](Driver::expedite) says someone waits again.
    pub(crate) fn detach_lazy(
        &mut self,
        key: u64,
        parked: Box<dyn Parked>,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        self.park(key, parked, Detach::RunLazily)
    }

    fn park(
        &mut self,
        key: u64,
        mut parked: Box<dyn Parked>,
        how: Detach,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        let (index, generation) = decode(key);
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => unreachable!("an operation detached from its slot after the slot was released"),
        };
        let state = std::mem::replace(&mut slot.state, Lifecycle::Leaked);
        match state {
            Lifecycle::Waiting(_) => {}
            // CQEs the owner never took: what they carry is released now.
            Lifecycle::Ready(mut cqes) => {
                while let Some(cqe) = cqes.pop() {
                    parked.on_more(cqe);
                }
            }
            Lifecycle::Finished(mut cqes) => {
                while let Some(cqe) = cqes.pop() {
                    if cqe.has_more() {
                        parked.on_more(cqe);
                    } else {
                        self.slots.remove(index);
                        return Some((parked, cqe));
                    }
                }
                unreachable!("a finished slot queues its final CQE")
            }
            Lifecycle::Parked(_) | Lifecycle::Leaked => {
                unreachable!("an operation let go of its slot twice")
            }
        }
        if self.gave_up {
            // Shutdown gave up waiting for this operation (`leak_unfinished` already stopped
            // counting it as in flight): the kernel may still use it.
            self.slots.remove(index);
            self.stats.leaked += 1;
            std::mem::forget(parked);
            return None;
        }
        // Detached during the shutdown drain too: park it like any other, so that its final
        // CQE releases it and counts it out (shutdown ends as soon as the kernel released all).
        if how == Detach::RunLazily && slot.skip_success.is_some() && !slot.lazy_skip {
            slot.lazy_skip = true;
            self.urgent_skips -= 1;
        }
        slot.state = Lifecycle::Parked(parked);
        self.parked += 1;
        if how == Detach::Cancel {
            self.queue_sqe(opcode::AsyncCancel::new(key).build().user_data(CANCEL));
        }
        None
    }

    /// Someone now waits for the outcome of the lazy skip-success request `key` (see
    /// [`detach_lazy`](Driver::detach_lazy)): the loop must not block before it is known.
    pub(crate) fn expedite(&mut self, key: u64) {
        let (index, generation) = decode(key);
        if let Some(slot) = self.slots.get_mut(index)
            && slot.generation == generation
            && slot.lazy_skip
            && slot.state.in_kernel()
        {
            slot.lazy_skip = false;
            self.urgent_skips += 1;
        }
    }

    /// Queues a cancellation of `key`'s request, which stays owned by its future.
    pub(crate) fn cancel(&mut self, key: u64) {
        let (index, generation) = decode(key);
        if self
            .slots
            .get(index)
            .is_some_and(|s| s.generation == generation && s.state.in_kernel())
        {
            self.queue_sqe(opcode::AsyncCancel::new(key).build().user_data(CANCEL));
        }
    }

    /// Delivers one operation's CQE to its slot and says what the caller must do next.
    pub(super) fn complete_slot(&mut self, user_data: u64, cqe: Completion) -> Action {
        let (index, generation) = decode(user_data);
        let Some(slot) = self
            .slots
            .get_mut(index)
            .filter(|s| s.generation == generation)
        else {
            // Not ours.
            self.stats.stray_completions += 1;
            return Action::Nothing;
        };
        let is_final = !cqe.has_more();
        match &mut slot.state {
            Lifecycle::Waiting(waker) => {
                let waker = waker.take();
                slot.state = if is_final {
                    self.in_flight -= 1;
                    Lifecycle::Finished(CqeQueue::One(cqe))
                } else {
                    Lifecycle::Ready(CqeQueue::One(cqe))
                };
                waker.map_or(Action::Nothing, Action::Wake)
            }
            Lifecycle::Ready(cqes) => {
                cqes.push(cqe);
                if is_final {
                    let cqes = std::mem::replace(cqes, CqeQueue::Empty);
                    slot.state = Lifecycle::Finished(cqes);
                    self.in_flight -= 1;
                }
                Action::Nothing
            }
            Lifecycle::Parked(parked) if !is_final => {
                parked.on_more(cqe);
                Action::Nothing
            }
            Lifecycle::Parked(_) => {
                let slot = self.slots.remove(index);
                self.in_flight -= 1;
                self.parked -= 1;
                match slot.state {
                    Lifecycle::Parked(parked) => Action::Finish(parked, cqe),
                    _ => unreachable!("state matched as parked just above"),
                }
            }
            // A CQE after the final one (a correct kernel never posts it), or for an
            // operation shutdown gave up on.
            Lifecycle::Finished(_) | Lifecycle::Leaked => {
                self.stats.stray_completions += 1;
                Action::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cqe(result: i32) -> Completion {
        Completion::new(result, 0, [0; 2])
    }

    #[test]
    fn queue_keeps_order_across_growth() {
        let mut q = CqeQueue::Empty;
        assert!(q.pop().is_none());
        for i in 0..10 {
            q.push(cqe(i));
        }
        for i in 0..10 {
            assert_eq!(q.pop().map(|c| c.result()), Some(i));
        }
        assert!(q.pop().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn user_data_round_trips() {
        let ud = encode(12345, 0xdead_beef);
        assert_eq!(decode(ud), (12345, 0xdead_beef));
    }
}
