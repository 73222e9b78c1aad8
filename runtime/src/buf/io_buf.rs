//! `IoBuf` and `IoBufMut`, and their implementations for the standard owned buffer types.

use super::Slice;

/// A buffer the kernel may read from, owned by the operation while it runs.
///
/// # Safety
///
/// Implementors guarantee, for every value `b`:
///
/// 1. `b.stable_ptr()` points to `b.bytes_total()` bytes of memory owned by `b` (or `'static`),
///    of which the first `b.bytes_init()` are initialized, and `bytes_init() <= bytes_total()`.
/// 2. The pointer and the memory behind it remain valid and unchanged in address when `b` is
///    moved, and until `b` is dropped: the memory is on the heap or `'static`, never inline.
/// 3. Calling the methods has no side effects and returns the same values as long as `b` is not
///    mutated through `&mut` (the runtime calls them more than once).
/// 4. If `fixed_slot` returns `Some(slot)`, the `bytes_total()` bytes at `stable_ptr()` lie
///    inside the buffer registered in `slot.index` of the ring of runtime `slot.runtime`, and
///    stay registered while `b` lives.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Pointer to the start of the buffer.
    fn stable_ptr(&self) -> *const u8;

    /// Number of initialized bytes (what a send transmits).
    fn bytes_init(&self) -> usize;

    /// Total capacity in bytes (what a receive may fill).
    fn bytes_total(&self) -> usize;

    /// The initialized bytes.
    fn as_slice(&self) -> &[u8] {
        // SAFETY: rule 1 of the trait: `bytes_init` bytes at `stable_ptr` are initialized and
        // owned by `self`, which the returned borrow keeps alive.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.bytes_init()) }
    }

    /// For buffers registered with a ring ([`FixedBuf`](super::FixedBuf)): which runtime and
    /// slot. Operations use it through [`fixed_index`](super::fixed_index); ordinary buffers
    /// return `None` (the default).
    fn fixed_slot(&self) -> Option<super::FixedSlot> {
        None
    }

    /// An owned view of `range` of the buffer (bounds are checked against `bytes_total`).
    ///
    /// # Panics
    ///
    /// Panics if the range is out of bounds or decreasing.
    fn slice(self, range: impl std::ops::RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        Slice::new(self, range)
    }
}

/// A buffer the kernel may write into, owned by the operation while it runs.
///
/// # Safety
///
/// All of [`IoBuf`]'s rules, plus:
///
/// 1. `stable_mut_ptr()` returns the same address as `stable_ptr()`, valid for writes of
///    `bytes_total()` bytes.
/// 2. `set_init(n)` with `n <= bytes_total()` makes the first `max(n, bytes_init())` bytes count
///    as initialized (it never shrinks the initialized region).
pub unsafe trait IoBufMut: IoBuf {
    /// Pointer to the start of the buffer, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `pos` bytes are initialized.
    ///
    /// # Safety
    ///
    /// The caller guarantees that the first `pos` bytes have been written and that
    /// `pos <= bytes_total()`.
    unsafe fn set_init(&mut self, pos: usize);

    /// The whole capacity, initialized or not, for writing.
    fn as_mut_uninit(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let len = self.bytes_total();
        // SAFETY: rule 1: `bytes_total` bytes at `stable_mut_ptr` are owned by `self` and
        // writable; `MaybeUninit` makes no claim about their contents.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr().cast(), len) }
    }
}

// SAFETY: a `Vec`'s buffer is a heap allocation that does not move with the `Vec`; `len` bytes
// are initialized out of `capacity`.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for `IoBuf`; `set_len` only grows within capacity and only over written bytes.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees `pos <= capacity` and that the bytes are written.
            unsafe { self.set_len(pos) };
        }
    }
}

// SAFETY: a `String`'s buffer is a heap allocation that does not move with the `String`; the
// kernel only reads it (no `IoBufMut`, which could break UTF-8).
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: a boxed slice is a heap allocation, fully initialized.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf`; a boxed slice is always fully initialized, so `set_init` is a no-op.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: a boxed array is a heap allocation, fully initialized; unlike a bare array, moving
// the box does not move the bytes.
unsafe impl<const N: usize> IoBuf for Box<[u8; N]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        N
    }

    fn bytes_total(&self) -> usize {
        N
    }
}

// SAFETY: as for `IoBuf`; always fully initialized.
unsafe impl<const N: usize> IoBufMut for Box<[u8; N]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: `'static` memory never moves or goes away; the kernel only reads it.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `&'static [u8]`.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: `Bytes` is an immutable, reference-counted heap (or static) buffer whose address does
// not change when the handle moves.
#[cfg(feature = "bytes")]
unsafe impl IoBuf for bytes::Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: `BytesMut` owns a unique heap region that does not move with the handle; `len` bytes
// of `capacity` are initialized.
#[cfg(feature = "bytes")]
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for `IoBuf`; `set_len` only grows within capacity over written bytes.
#[cfg(feature = "bytes")]
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees `pos <= capacity` and that the bytes are written.
            unsafe { self.set_len(pos) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_reports_len_and_capacity() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"abc");
        assert_eq!((v.bytes_init(), v.bytes_total()), (3, v.capacity()));
        v.as_mut_uninit()[3].write(b'd');
        // SAFETY: byte 3 was just written and 4 <= capacity.
        unsafe { v.set_init(4) };
        assert_eq!(v, b"abcd");
        // SAFETY: never shrinks.
        unsafe { v.set_init(1) };
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn static_and_boxed_buffers() {
        let s: &'static str = "hello";
        assert_eq!(s.as_slice(), b"hello");
        let b: Box<[u8; 4]> = Box::new(*b"wxyz");
        assert_eq!(b.as_slice(), b"wxyz");
        let boxed: Box<[u8]> = vec![1, 2, 3].into_boxed_slice();
        assert_eq!(boxed.bytes_total(), 3);
    }
}
