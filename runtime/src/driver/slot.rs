//! The driver's record of one in-flight operation, from its SQE to its final CQE.
//!
//! # Invariants
//!
//! - A slot exists from the moment its SQE is queued until its **final** CQE (the first one
//!   without `IORING_CQE_F_MORE`) has been consumed: by the owning future, or by the driver when
//!   the owner is gone. Only then is the slot removed, so its `user_data` can never be reused
//!   while the kernel may still post a CQE for it.
//! - `user_data` = `generation << 32 | slab index`. The generation changes on every insert, so a
//!   stray CQE for a recycled index is recognised and ignored instead of being misdelivered.
//! - CQEs arrive in the order the kernel posts them and are handed out in that order; the final
//!   CQE is always the last one in `cqes`.
//! - `Owner::Parked` holds everything the kernel may still touch (buffers, fds, addresses).
//!   It is released only after the final CQE, and never while the driver is borrowed (see
//!   `driver::Action`).

use std::{collections::VecDeque, task::Waker};

use crate::op::{Completion, OpCode};

/// Resources of an operation whose future was dropped while the kernel still owned them.
pub(crate) trait Parked {
    /// A non-final CQE arrived (multishot item, `SEND_ZC` result). Releases what it carries.
    /// Runs while the driver is borrowed: it must not submit operations.
    fn on_more(&mut self, cqe: Completion);

    /// The final CQE arrived: releases everything. Runs after the driver borrow is released,
    /// so dropping user types here may re-enter the runtime.
    fn finish(self: Box<Self>, cqe: Completion);
}

/// Who consumes the slot's CQEs.
pub(crate) enum Owner {
    /// A live future; it picks CQEs up with `Driver::poll_cqe`.
    Future(Option<Waker>),
    /// The future is gone; the driver feeds CQEs to the parked resources.
    Parked(Box<dyn Parked>),
}

impl<T: OpCode> Parked for T {
    fn on_more(&mut self, cqe: Completion) {
        OpCode::on_more(self, cqe);
    }

    fn finish(self: Box<Self>, cqe: Completion) {
        (*self).complete_detached(cqe);
    }
}

/// One in-flight operation.
pub(crate) struct Slot {
    pub(crate) generation: u32,
    /// For skip-success SQEs: the result to report if no CQE arrives.
    pub(crate) skip_success: Option<i32>,
    pub(crate) owner: Owner,
    /// CQEs the owner has not consumed yet.
    pub(crate) cqes: CqeQueue,
    /// The final CQE has arrived (it is in `cqes` or was handed out).
    pub(crate) finished: bool,
    /// A skip-success request detached lazily: nobody waits for its outcome.
    pub(crate) lazy_skip: bool,
}

impl Slot {
    pub(crate) fn new(generation: u32) -> Slot {
        Slot {
            generation,
            skip_success: None,
            owner: Owner::Future(None),
            cqes: CqeQueue::Empty,
            finished: false,
            lazy_skip: false,
        }
    }
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
}

/// Splits a `user_data` value into (slab index, generation).
pub(crate) fn decode(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

/// Builds the `user_data` of slot `index` at `generation`.
pub(crate) fn encode(index: usize, generation: u32) -> u64 {
    u64::from(generation) << 32 | index as u64
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
    }

    #[test]
    fn user_data_round_trips() {
        let ud = encode(12345, 0xdead_beef);
        assert_eq!(decode(ud), (12345, 0xdead_beef));
    }
}
