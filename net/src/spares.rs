//! Spare send buffers, recycled per thread.
//!
//! Write-behind (`behind.rs`) copies small writes into a `Vec<u8>` that the kernel sends from.
//! Once the send is done the vector is kept here, emptied, for the next write of any socket on
//! the same thread: steady traffic allocates nothing, and a socket that is idle holds no send
//! buffer at all (its memory follows the load, not the number of connections).
//!
//! # Invariants
//!
//! - Every vector here is empty and owned by nobody else (the kernel is done with it).
//! - The pool holds at most [`SPARES_MAX`] vectors and [`POOLED_BYTES_MAX`] bytes of capacity;
//!   a vector that does not fit, or has more than [`SPARE_CAPACITY_MAX`] bytes of capacity, is
//!   freed, so a burst of large writes cannot pin memory.

use std::cell::RefCell;

/// The most spare vectors a thread keeps.
const SPARES_MAX: usize = 64;

/// The most capacity, in bytes, a thread keeps in spare vectors.
const POOLED_BYTES_MAX: usize = 256 * 1024;

/// The largest vector kept: bigger ones (bytes staged behind a slow send) are freed.
const SPARE_CAPACITY_MAX: usize = 64 * 1024;

#[derive(Default)]
struct Pool {
    spares: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { spares: Vec::new(), bytes: 0 })
    };
}

/// An empty vector: a recycled one when the thread has one, else a new (unallocated) one.
pub(crate) fn take() -> Vec<u8> {
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let spare = pool.spares.pop()?;
        pool.bytes -= spare.capacity();
        Some(spare)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Keeps `buf`'s allocation for a later [`take`] on this thread, if there is room.
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > SPARE_CAPACITY_MAX {
        return;
    }
    buf.clear();
    // During thread teardown the pool may be gone: the vector is simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.spares.len() < SPARES_MAX && pool.bytes + buf.capacity() <= POOLED_BYTES_MAX {
            pool.bytes += buf.capacity();
            pool.spares.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_the_last_given_allocation() {
        let mut buf = Vec::with_capacity(100);
        buf.extend_from_slice(b"stale");
        let ptr = buf.as_ptr();
        give(buf);
        let again = take();
        assert!(again.is_empty(), "a recycled vector must come back empty");
        assert_eq!(again.as_ptr(), ptr);
        assert!(take().capacity() == 0, "the pool held one vector");
    }

    #[test]
    fn keeps_no_more_than_its_byte_bound() {
        let each = SPARE_CAPACITY_MAX;
        for _ in 0..POOLED_BYTES_MAX / each {
            give(Vec::with_capacity(each));
        }
        give(Vec::with_capacity(64));
        for _ in 0..POOLED_BYTES_MAX / each {
            assert_eq!(take().capacity(), each);
        }
        assert_eq!(
            take().capacity(),
            0,
            "the last vector did not fit and was freed"
        );
    }

    #[test]
    fn frees_oversized_vectors() {
        give(Vec::with_capacity(SPARE_CAPACITY_MAX + 1));
        assert_eq!(take().capacity(), 0);
    }

    #[test]
    fn keeps_no_more_than_its_count_bound() {
        for _ in 0..SPARES_MAX + 10 {
            give(Vec::with_capacity(8));
        }
        let kept = std::iter::from_fn(|| Some(take()).filter(|v| v.capacity() > 0)).count();
        assert_eq!(kept, SPARES_MAX);
    }
}
