//! `Slice<B>`: an owned view of part of a buffer.

use std::ops::{Bound, RangeBounds};

use super::{IoBuf, IoBufMut};

/// An owned buffer restricted to `begin..end`, created by [`IoBuf::slice`].
///
/// Operations see only the range: a send transmits the initialized part of it, a receive
/// writes into it. [`into_inner`](Slice::into_inner) gives the whole buffer back. Slicing a
/// `Slice` narrows it instead of nesting.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    pub(crate) fn new(buf: B, range: impl RangeBounds<usize>) -> Slice<B> {
        let (begin, end) = bounds(range, buf.bytes_total());
        Slice { buf, begin, end }
    }

    /// Narrows the view; `range` is relative to this slice.
    ///
    /// # Panics
    ///
    /// Panics if the range is out of this slice's bounds or decreasing.
    pub fn slice(self, range: impl RangeBounds<usize>) -> Slice<B> {
        let (begin, end) = bounds(range, self.end - self.begin);
        Slice {
            buf: self.buf,
            begin: self.begin + begin,
            end: self.begin + end,
        }
    }

    /// Start of the view in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// End of the view in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// Gives the whole buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

fn bounds(range: impl RangeBounds<usize>, len: usize) -> (usize, usize) {
    let begin = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.checked_add(1).expect("slice start overflows"),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&n) => n.checked_add(1).expect("slice end overflows"),
        Bound::Excluded(&n) => n,
        Bound::Unbounded => len,
    };
    assert!(
        begin <= end && end <= len,
        "slice range {begin}..{end} out of bounds for a buffer of {len} bytes"
    );
    (begin, end)
}

// SAFETY: the view is a sub-range of `buf`'s memory, which satisfies the contract; the
// initialized part of the view is the initialized part of `buf` clipped to the range.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: `begin <= bytes_total` of `buf`, so the offset stays inside its allocation.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }

    fn bytes_init(&self) -> usize {
        self.buf.bytes_init().clamp(self.begin, self.end) - self.begin
    }

    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }

    fn fixed_slot(&self) -> Option<super::FixedSlot> {
        // A sub-range of a registered buffer lies inside the same registration.
        self.buf.fixed_slot()
    }
}

// SAFETY: as for `IoBuf`; `set_init` forwards the end of the written range to `buf`, which only
// grows its initialized region. Bytes before `begin` that `buf` does not count as initialized
// are never exposed by the view, but `set_init(begin + pos)` on `buf` would claim them: so the
// forward happens only when `buf` already counts everything up to `begin` as initialized.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: as in `stable_ptr`.
        unsafe { self.buf.stable_mut_ptr().add(self.begin) }
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if self.buf.bytes_init() >= self.begin {
            // SAFETY: bytes `begin..begin + pos` were written (caller), bytes before `begin`
            // were already initialized (checked), and `begin + pos <= end <= bytes_total`.
            unsafe { self.buf.set_init(self.begin + pos) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_flatten_and_clip() {
        let v = b"hello world".to_vec();
        let s = v.slice(6..);
        assert_eq!(s.as_slice(), b"world");
        let s = s.slice(1..3);
        assert_eq!((s.begin(), s.end()), (7, 9));
        assert_eq!(s.as_slice(), b"or");
        assert_eq!(s.into_inner(), b"hello world");
    }

    #[test]
    fn writing_through_a_slice_extends_the_buffer() {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(b"ab");
        let mut s = v.slice(2..6);
        assert_eq!(s.bytes_init(), 0);
        for (i, b) in s.as_mut_uninit().iter_mut().enumerate() {
            b.write(b'0' + i as u8);
        }
        // SAFETY: all four bytes of the view were written.
        unsafe { s.set_init(4) };
        assert_eq!(s.into_inner(), b"ab0123");
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_panics() {
        let _ = vec![0u8; 4].slice(2..9);
    }
}
