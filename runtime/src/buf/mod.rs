//! Owned buffers for completion-based I/O.
//!
//! An io_uring operation reads from or writes into memory while the program goes on, so the
//! operation must own that memory until the kernel is done: buffers are passed **by value** and
//! handed back with the result, `let (res, buf) = stream.read(buf).await;`.
//!
//! [`IoBuf`] is a buffer the kernel may read (sends), [`IoBufMut`] one it may write (receives).
//! [`Slice`] restricts an owned buffer to a range: `stream.write(buf.slice(..n))`.
//!
//! # The contract, in one place
//!
//! Implementations promise that the memory they expose
//! - stays at the same address for as long as the value lives, even when the value is moved
//!   (heap memory or `'static` memory, never memory inline in the value), and
//! - is not accessed through any other path while an operation owns the buffer (the buffer is
//!   moved into the operation, so safe code cannot reach it).
//!
//! Consequently `[u8; N]` arrays are not buffers (moving one moves its bytes), but
//! `Box<[u8; N]>` is.

mod fixed;
mod io_buf;
mod published;
pub(crate) mod ring;
mod rx;
mod slice;

pub use fixed::{FixedBuf, FixedBufPool, FixedSlot, fixed_index};
pub use io_buf::{IoBuf, IoBufMut};
pub use ring::{BufRing, BufRingBuilder, BufRingStats};
pub(crate) use rx::Lender;
pub use rx::RxBuf;
pub use slice::Slice;
