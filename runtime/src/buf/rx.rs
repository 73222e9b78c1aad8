//! `RxBuf`: received bytes lent by the runtime, returned to their pool when dropped.

use std::{fmt, ops::Deref, rc::Rc};

use super::{IoBuf, ring::BufRing};

/// A memory area another layer manages that lends pieces of itself as `RxBuf`s: the
/// zero-copy receive area (`runtime::zcrx`), the only lender. Buffers know the area only
/// through this trait, so they do not depend on the layer that owns it.
///
/// # Safety
///
/// For a piece `(offset, len)` the lender handed out, until `give_back(offset, len)`:
/// `bytes(offset, len)` returns the same `len` initialized bytes at the same address, in
/// memory that stays mapped while the lender lives and that the kernel does not write.
pub(crate) unsafe trait Lender {
    /// The bytes of a lent piece.
    fn bytes(&self, offset: u64, len: usize) -> &[u8];

    /// The `RxBuf` of a lent piece was dropped: the piece is the lender's again.
    fn give_back(&self, offset: u64, len: usize);
}

/// Bytes a receive delivered. It derefs to the bytes; dropping it gives the buffer back to where
/// it came from (a [`BufRing`], or the zero-copy receive area, as one refill entry), so hold it
/// only as long as needed (holding many is how a slow
/// consumer applies backpressure: the ring runs dry and receives pause).
///
/// It is also an [`IoBuf`], so it can be sent on as is (an echo server writes it back), and
/// [`into_vec`](RxBuf::into_vec) copies it out into an owned vector, returning the buffer at
/// once.
pub struct RxBuf {
    source: Source,
    /// The view, relative to the source's data.
    start: usize,
    len: usize,
}

enum Source {
    /// A buffer of a provided-buffer ring, starting `offset` bytes into it.
    Ring {
        ring: BufRing,
        bid: u16,
        offset: usize,
    },
    /// Bytes that do not live in a ring (e.g. data rescued from an abandoned receive).
    Owned(Vec<u8>),
    /// A piece of a zero-copy receive area, `len` bytes at `offset`, lent by one completion.
    Lent {
        lender: Rc<dyn Lender>,
        offset: u64,
        len: u32,
    },
}

impl RxBuf {
    pub(crate) fn from_ring(ring: BufRing, bid: u16, offset: usize, len: usize) -> RxBuf {
        RxBuf {
            source: Source::Ring { ring, bid, offset },
            start: 0,
            len,
        }
    }

    /// `len` bytes at `offset` of `lender`'s area (`len` fits a CQE's `u32` result).
    pub(crate) fn lent(lender: Rc<dyn Lender>, offset: u64, len: u32) -> RxBuf {
        RxBuf {
            source: Source::Lent {
                lender,
                offset,
                len,
            },
            start: 0,
            len: len as usize,
        }
    }

    /// Whether the bytes sit in a zero-copy receive area (the NIC wrote them there).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.source, Source::Lent { .. })
    }

    /// Wraps owned bytes (for receives that had to copy, so every path yields one type).
    pub fn from_vec(data: Vec<u8>) -> RxBuf {
        let len = data.len();
        RxBuf {
            source: Source::Owned(data),
            start: 0,
            len,
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops `n` bytes from the front of the view.
    ///
    /// # Panics
    ///
    /// Panics if `n` exceeds the length.
    pub fn advance(&mut self, n: usize) {
        assert!(
            n <= self.len,
            "RxBuf::advance({n}) beyond {} bytes",
            self.len
        );
        self.start += n;
        self.len -= n;
    }

    /// Shortens the view to `len` bytes (no effect if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The ring buffer id, for buffers from a ring.
    pub fn buffer_id(&self) -> Option<u16> {
        match &self.source {
            Source::Ring { bid, .. } => Some(*bid),
            Source::Owned(_) | Source::Lent { .. } => None,
        }
    }

    /// Copies the bytes into an owned vector and gives the buffer back at once (owned bytes
    /// viewed whole are moved out, not copied).
    pub fn into_vec(mut self) -> Vec<u8> {
        match &mut self.source {
            Source::Owned(data) if self.start == 0 && self.len == data.len() => {
                std::mem::take(data)
            }
            _ => self.to_vec(),
        }
    }
}

impl Deref for RxBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.source {
            Source::Ring { ring, bid, offset } => {
                ring.inner().bytes(*bid, offset + self.start, self.len)
            }
            Source::Owned(data) => &data[self.start..self.start + self.len],
            Source::Lent { lender, offset, .. } => {
                lender.bytes(offset + self.start as u64, self.len)
            }
        }
    }
}

impl AsRef<[u8]> for RxBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for RxBuf {
    fn drop(&mut self) {
        match &self.source {
            Source::Ring { ring, bid, .. } => ring.inner().give_back(*bid),
            Source::Lent {
                lender,
                offset,
                len,
            } => lender.give_back(*offset, *len as usize),
            Source::Owned(_) => {}
        }
    }
}

impl fmt::Debug for RxBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxBuf")
            .field("len", &self.len)
            .field("buffer_id", &self.buffer_id())
            .finish()
    }
}

// SAFETY: the bytes live in the ring's mapping (or the owned vector's heap allocation, or
// the lender's area, per the `Lender` contract), which this value keeps alive and which does
// not move with it; all `len` bytes are initialized
// (written by the kernel before the completion). The kernel only reads them (sends).
unsafe impl IoBuf for RxBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.deref().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.len
    }
}
