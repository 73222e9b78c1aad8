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

    /// The uninitialized tail of the buffer, `bytes_init()..bytes_total()`, for writing.
    ///
    /// Write bytes into it, then call [`set_init`](IoBufMut::set_init) with
    /// `bytes_init() + written` to make them part of the buffer. The initialized bytes are not
    /// in the slice, so safe code cannot turn them back into uninitialized memory:
    ///
    /// ```
    /// use std::mem::MaybeUninit;
    ///
    /// use runtime::buf::{IoBuf, IoBufMut};
    ///
    /// let mut v = Vec::with_capacity(8);
    /// v.extend_from_slice(b"ab");
    /// let capacity = v.capacity();
    /// let tail = v.as_mut_uninit();
    /// assert_eq!(tail.len(), capacity - 2);
    /// tail[0] = MaybeUninit::uninit(); // byte 2: not part of `v`, nothing is lost
    /// tail[1].write(b'!');
    /// assert_eq!(v, b"ab"); // bytes 0 and 1 are untouched
    /// ```
    ///
    /// Reaching the initialized bytes as `MaybeUninit` takes
    /// [`as_mut_capacity`](IoBufMut::as_mut_capacity), which is `unsafe`:
    ///
    /// ```compile_fail,E0133
    /// use std::mem::MaybeUninit;
    ///
    /// use runtime::buf::IoBufMut;
    ///
    /// let mut v = b"ab".to_vec();
    /// v.as_mut_capacity()[0] = MaybeUninit::uninit(); // error: needs an `unsafe` block
    /// let _ = v[0];
    /// ```
    fn as_mut_uninit(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let init = self.bytes_init();
        let len = self.bytes_total() - init;
        // SAFETY: rule 1 of `IoBuf`: `bytes_init() <= bytes_total()` and `bytes_total` bytes
        // at `stable_mut_ptr` are owned by `self` and writable (rule 1 here), so the range
        // `init..bytes_total` is inside the buffer. It holds no initialized byte of the buffer,
        // so whatever is written there cannot de-initialize what `bytes_init` counts.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr().add(init).cast(), len) }
    }

    /// The whole capacity, `0..bytes_total()`, initialized part included, for writing.
    ///
    /// For code that overwrites a buffer from its start (a receive copying data in, for
    /// example); [`as_mut_uninit`](IoBufMut::as_mut_uninit) is the safe way to append.
    ///
    /// # Safety
    ///
    /// The caller must not de-initialize any of the first `bytes_init()` bytes: each element
    /// below `bytes_init()` that it writes must be an initialized value (`MaybeUninit::new`,
    /// `write`), never `MaybeUninit::uninit()` or a copy of uninitialized memory. Those bytes
    /// stay counted as initialized (`set_init` never shrinks the count) and are read as `u8`
    /// afterwards.
    unsafe fn as_mut_capacity(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let len = self.bytes_total();
        // SAFETY: rule 1: `bytes_total` bytes at `stable_mut_ptr` are owned by `self` and
        // writable; `MaybeUninit` makes no claim about their contents, and the caller keeps
        // the initialized ones initialized.
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

// SAFETY: `'static` memory never moves or goes away; the kernel only reads it. This is the type
// of a byte-string literal, so `stream.write_all(b"ping\n")` needs no conversion.
unsafe impl<const N: usize> IoBuf for &'static [u8; N] {
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
        v.as_mut_uninit()[0].write(b'd');
        // SAFETY: byte 3 (the tail's first) was just written and 4 <= capacity.
        unsafe { v.set_init(4) };
        assert_eq!(v, b"abcd");
        // SAFETY: never shrinks.
        unsafe { v.set_init(1) };
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn the_safe_tail_starts_at_the_initialized_length() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"abc");
        let capacity = v.capacity();
        let base = v.as_ptr() as usize;
        let tail = v.as_mut_uninit();
        assert_eq!(tail.len(), capacity - 3);
        assert_eq!(tail.as_ptr() as usize, base + 3);
        tail[0] = std::mem::MaybeUninit::uninit();
        assert_eq!(v, b"abc");

        let mut full: Box<[u8]> = vec![7; 4].into_boxed_slice();
        assert!(full.as_mut_uninit().is_empty());

        let mut s = b"hello".to_vec().slice(2..5);
        assert_eq!(s.as_mut_uninit().len(), 0);
        let mut s = Vec::<u8>::with_capacity(8).slice(..4);
        assert_eq!(s.as_mut_uninit().len(), 4);
    }

    #[test]
    fn the_whole_capacity_is_reachable_unsafely() {
        let mut v = Vec::with_capacity(4);
        v.extend_from_slice(b"xy");
        let capacity = v.capacity();
        // SAFETY: only initialized values are written.
        let whole = unsafe { v.as_mut_capacity() };
        assert_eq!(whole.len(), capacity);
        whole[0].write(b'a');
        assert_eq!(v, b"ay");
    }

    #[test]
    fn static_and_boxed_buffers() {
        let s: &'static str = "hello";
        assert_eq!(s.as_slice(), b"hello");
        let b: Box<[u8; 4]> = Box::new(*b"wxyz");
        assert_eq!(b.as_slice(), b"wxyz");
        let boxed: Box<[u8]> = vec![1, 2, 3].into_boxed_slice();
        assert_eq!(boxed.bytes_total(), 3);
        let literal = b"ping\n";
        assert_eq!(literal.as_slice(), b"ping\n");
        assert_eq!((literal.bytes_init(), literal.bytes_total()), (5, 5));
        assert_eq!(literal.slice(1..3).as_slice(), b"in");
    }
}
