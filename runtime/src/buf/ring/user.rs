//! The epoll backend's side of a `BufRing`: the ring is not registered with any kernel ring,
//! and the receive ops (`MultishotOp::try_nonblocking` of the net crate's multishot receives)
//! play the kernel's part: they take the entries the kernel would select, in ring order, from
//! an emulated head, fill them with one non-blocking system call, and report the completion
//! the kernel would have posted (`IORING_CQE_F_BUFFER` with the first buffer id). Everything
//! else (publishing at the tail once per turn, `take`, `take_bundle`, `RxBuf` returning to the
//! pool on drop, `ENOBUFS` and `poll_available`) is the same code as on io_uring.
//!
//! # Invariants
//!
//! - `head` only moves forward, past entries that a filled completion consumed, and never
//!   past the published tail: the entries between them are exactly the published ones, in
//!   ring order, as for the kernel.

use std::sync::atomic::{AtomicU16, Ordering};

use super::{BufRing, RingEntry};

impl BufRing {
    /// Whether the pool lives in user space (the epoll backend): no kernel selects from it,
    /// [`fill_next`](BufRing::fill_next) does.
    pub fn is_user_space(&self) -> bool {
        self.inner.user_space
    }

    /// For a receive op on the epoll backend: hands `fill` the `iovec`s of up to `max` buffers
    /// the kernel would select next (consecutive published entries in ring order, `buf_len`
    /// bytes each; none when the pool is empty or not in user space), and consumes the first
    /// `used` of them, where `fill` returns `(result, used)`. Returns `fill`'s result and the
    /// first buffer's id (`None` when nothing was consumed): the completion to report is
    /// `result` with `IORING_CQE_F_BUFFER` and that id, as the kernel would post it, so that
    /// [`take`](BufRing::take) / [`take_bundle`](BufRing::take_bundle) lend them out.
    ///
    /// `fill` may write into the buffers it is given (and only those, only during the call):
    /// they belong to the pool's "kernel" side until they are consumed and taken.
    pub fn fill_next<R>(
        &self,
        max: usize,
        fill: impl FnOnce(&mut [libc::iovec]) -> (R, usize),
    ) -> (R, Option<u16>) {
        let inner = &*self.inner;
        let mut iovecs: [libc::iovec; 16] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 16];
        let mut bids = [0u16; 16];
        let mut n = 0;
        if inner.user_space {
            // Nothing published but buffers free (returned since the last loop turn's top-up):
            // publish now rather than fail the receive; no kernel races this pool.
            if inner.published.borrow().is_empty() && !inner.free.borrow().is_empty() {
                inner.top_up();
            }
            let base = inner.ring.as_ptr().cast::<RingEntry>();
            let mask = inner.entries - 1;
            let tail = shared_tail(base).load(Ordering::Acquire);
            let mut at = inner.head.get();
            while at != tail && n < max.min(16) {
                // SAFETY: `at & mask < entries`, inside the ring mapping; entries between
                // the head and the published tail were written by `top_up` and are not
                // rewritten until consumed.
                let bid = unsafe { (*base.add((at & mask) as usize)).bid };
                if bid >= inner.entries {
                    break;
                }
                iovecs[n] = libc::iovec {
                    iov_base: inner.buf_ptr(bid).cast(),
                    iov_len: inner.buf_len,
                };
                bids[n] = bid;
                n += 1;
                at = at.wrapping_add(1);
            }
        }
        let (result, used) = fill(&mut iovecs[..n]);
        let used = used.min(n);
        if used == 0 {
            return (result, None);
        }
        inner.head.set(inner.head.get().wrapping_add(used as u16));
        (result, Some(bids[0]))
    }
}

/// The shared tail: `resv` of entry 0 (see `top_up`).
fn shared_tail<'a>(base: *mut RingEntry) -> &'a AtomicU16 {
    // SAFETY: offset 14 of the page-aligned ring mapping, 2-byte aligned, written only with
    // atomic stores (`top_up`), and the mapping outlives every `BufRing` handle.
    unsafe { AtomicU16::from_ptr(base.cast::<u8>().add(14).cast::<u16>()) }
}
