//! `RecvAhead`: the multishot receive under a stream's plain reads (`read_ahead.rs`), a
//! [`RecvMulti`] on the worker's shared ring with two additions: a byte limit, so that a
//! connection whose reader stops cannot take more than that from the shared ring, and the
//! sequence number of each completion, so the reader can order its data against bytes rescued
//! from abandoned receives.

use std::{cell::Cell, io, os::fd::RawFd};

use io_uring::squeue;
use runtime::op::{Completion, Interest, MultishotOp};

use super::recv_multi::{RecvEvent, RecvMulti, rescue_stream_data};

/// Byte offset of `optlen` in `struct io_uring_sqe` (the union with `file_index`): for a
/// multishot receive, the total bytes after which the kernel ends the request
/// (`io_recv_prep` in the kernel's `io_uring/net.c`; the limit is soft, the completion that
/// reaches it may carry more).
const OPTLEN_OFFSET: usize = 44;

/// A multishot stream receive on the worker's shared ring that ends after `limit` bytes.
#[derive(Debug)]
pub(crate) struct RecvAhead {
    inner: RecvMulti,
    /// Read by `build`: each arming may use its own (see [`RecvAhead::set_limit`]).
    limit: Cell<u32>,
}

impl RecvAhead {
    /// Receives into `inner`'s ring until about `limit` bytes (at least 1) arrived.
    pub(crate) fn new(inner: RecvMulti, limit: u32) -> RecvAhead {
        RecvAhead {
            inner,
            limit: Cell::new(limit.max(1)),
        }
    }

    /// The byte limit of the next arming (at least 1).
    pub(crate) fn set_limit(&self, limit: u32) {
        self.limit.set(limit.max(1));
    }
}

/// `entry` with its `optlen` field set to `value`.
fn with_optlen(entry: squeue::Entry, value: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is a `repr(C)` wrapper of the 64-byte `io_uring_sqe`, all plain
    // integers (the size is checked by `transmute` at compile time), so any byte pattern is a
    // valid value of both types.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[OPTLEN_OFFSET..OPTLEN_OFFSET + 4].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: as above; only the four `optlen` bytes changed.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

// SAFETY: `RecvMulti`'s SQE and completions (see its impl) with one more plain integer field,
// the byte limit, which names no memory.
unsafe impl MultishotOp for RecvAhead {
    /// The completion's sequence number, and what it brought.
    type Item = (u64, io::Result<RecvEvent>);

    fn build(&mut self) -> squeue::Entry {
        with_optlen(self.inner.build(), self.limit.get())
    }

    fn next(&mut self, cqe: Completion) -> Option<Self::Item> {
        Some((cqe.sequence(), self.inner.event(&cqe)))
    }

    fn next_detached(&mut self, cqe: Completion) {
        let event = self.inner.event(&cqe);
        rescue_stream_data(self.inner.socket(), &cqe, event);
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        self.inner.readiness()
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        self.inner.try_nonblocking()
    }

    fn emptied(&self, cqe: &Completion) -> bool {
        self.inner.emptied(cqe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit lands in `optlen` and nothing else changes.
    #[test]
    fn the_limit_is_written_to_optlen_only() {
        let entry = io_uring::opcode::Nop::new().build().user_data(7);
        // SAFETY: as in `with_optlen`.
        let before: [u8; 64] = unsafe { std::mem::transmute(entry.clone()) };
        // SAFETY: as in `with_optlen`.
        let after: [u8; 64] = unsafe { std::mem::transmute(with_optlen(entry, 0x0102_0304)) };
        assert_eq!(
            &after[OPTLEN_OFFSET..OPTLEN_OFFSET + 4],
            &0x0102_0304u32.to_ne_bytes()
        );
        for i in (0..64).filter(|i| !(OPTLEN_OFFSET..OPTLEN_OFFSET + 4).contains(i)) {
            assert_eq!(before[i], after[i], "byte {i} changed");
        }
    }
}
