//! Cross-ring kicks: waking another thread's ring with `IORING_OP_MSG_RING` (Linux 5.18),
//! falling back to a write to that ring's wake-up eventfd.
//!
//! # Invariants
//!
//! - A kick names its target ring by fd number, resolved only when this ring's next enter
//!   submits it. The [`KickTarget`] it holds keeps that fd (a duplicate of the target's ring
//!   fd, never the ring fd itself) open until the kick's CQE, so the number cannot be closed
//!   and reused by another file in between; the same goes for the fallback eventfd.
//! - Kicks in flight live in `Driver::msg_targets`, declared after the ring: on drop the ring
//!   (and any kick SQE still in its SQ) is gone before the fds the kicks name are closed.
//! - A kick whose CQE reports failure (target ring closed, refused) falls back to the eventfd
//!   write, so a wake-up is never lost.
//!
//! Who kicks whom is the executor's business (`wake::Remote`); the driver only carries the
//! message and knows nothing of the target's queues.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::Arc,
};

use io_uring::{opcode, types};

use super::{Driver, MSG_SENT, MSG_WAKE};

/// The fds a kick needs: the target ring (a duplicate) and the target's wake-up eventfd.
#[derive(Debug, Clone)]
pub(crate) struct KickTarget {
    /// A duplicate of the target's ring fd: `MSG_RING` names it.
    pub(crate) ring: Arc<OwnedFd>,
    /// The eventfd the target keeps a read armed on: the fallback.
    pub(crate) eventfd: Arc<OwnedFd>,
}

impl KickTarget {
    /// The kick of last resort: a write to the eventfd the target keeps a read armed on.
    pub(crate) fn write_eventfd(&self) {
        signal_eventfd(self.eventfd.as_raw_fd());
    }
}

/// Adds 1 to the counter of eventfd `fd`, completing a read armed on it. Async-signal-safe (a
/// single `write(2)`), so signal handlers use it too.
pub(crate) fn signal_eventfd(fd: std::os::fd::RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to `fd`. A failure is harmless: EAGAIN on
    // counter overflow still leaves the eventfd readable, and a closed fd has no reader.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>());
    }
}

impl Driver {
    /// Queues an `IORING_OP_MSG_RING` that posts a wake-up CQE into `target`'s ring; `target`
    /// stays open until the kick's CQE. Returns false when the kernel lacks it or the driver is
    /// shutting down: the caller then writes the eventfd itself.
    pub(crate) fn send_msg_ring(&mut self, target: KickTarget) -> bool {
        if !self.msg_ring || self.closed || self.msg_targets.len() >= (1 << 30) {
            return false;
        }
        let fd = target.ring.as_raw_fd();
        let index = self.msg_targets.insert(target);
        let sqe = opcode::MsgRingData::new(types::Fd(fd), 0, MSG_WAKE, None)
            .build()
            .user_data(MSG_SENT | index as u64);
        self.stats.msg_ring_kicks += 1;
        self.queue_sqe(sqe);
        true
    }

    /// The CQE of our own kick `index` arrived with `result`: release its fds, and fall back
    /// to the eventfd if it failed.
    pub(super) fn kick_done(&mut self, index: usize, result: i32) {
        if let Some(kick) = self.msg_targets.try_remove(index)
            && result < 0
        {
            // The target ring is gone or refused: kick it the other way.
            self.stats.msg_ring_fallbacks += 1;
            kick.write_eventfd();
        }
    }
}
