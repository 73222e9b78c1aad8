//! Registered ("fixed") buffers: memory pinned and mapped by the kernel once, so operations
//! that name it by index (`IORING_RECVSEND_FIXED_BUF`) skip per-operation pinning and
//! accounting.
//!
//! # Invariants
//!
//! - A pool's buffers are registered in consecutive slots of its runtime's fixed-buffer table,
//!   `base + i` for buffer `i`, for as long as the pool's shared state lives. Each checked-out
//!   `FixedBuf` holds that state, so the registration outlives every operation using it.
//! - The memory of a buffer is never freed while registered: on drop the slots are cleared
//!   first, and if clearing fails the memory is leaked.
//! - When registration is refused (usually `ENOMEM` under RLIMIT_MEMLOCK), the pool still hands
//!   out ordinary heap buffers and records why in the runtime's capabilities.

use std::{cell::RefCell, fmt, io, rc::Rc, task::Poll};

use super::{IoBuf, IoBufMut};
use crate::{
    driver::{self, Driver, FIXED_BUFFER_SLOTS},
    wait_list::WaitList,
};

/// Where a registered buffer lives: the runtime (ring) and the slot in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedSlot {
    /// Identifies the runtime whose ring holds the registration.
    pub runtime: u64,
    /// The slot in that ring's fixed-buffer table.
    pub index: u16,
}

/// The slot of `buf` in the current thread's ring, if it is registered there. Operations pass
/// it as `buf_index` with `IORING_RECVSEND_FIXED_BUF`; any other buffer (or one registered with
/// another runtime) gets `None` and goes through the ordinary path.
pub fn fixed_index<B: IoBuf>(buf: &B) -> Option<u16> {
    let slot = buf.fixed_slot()?;
    let current = driver::try_current()?;
    (Driver::id(&current) == slot.runtime).then_some(slot.index)
}

struct PoolState {
    /// The driver whose ring holds the registration.
    driver: Rc<RefCell<Driver>>,
    /// First slot of the registration, if the kernel accepted it.
    base: Option<u16>,
    count: usize,
    buf_len: usize,
    /// Buffers not checked out: (index in pool, memory).
    free: RefCell<Vec<(u16, Box<[u8]>)>>,
    /// Tasks waiting in `FixedBufPool::get`.
    waiters: WaitList,
}

/// A set of equal-size buffers registered with the current runtime's ring.
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// use runtime::buf::{FixedBufPool, IoBuf};
/// let pool = FixedBufPool::new(4, 64 * 1024).unwrap();
/// let buf = pool.get().await;
/// assert_eq!(buf.bytes_total(), 64 * 1024);
/// drop(buf); // back to the pool
/// # });
/// ```
#[derive(Clone)]
pub struct FixedBufPool {
    state: Rc<PoolState>,
}

impl FixedBufPool {
    /// Allocates `count` buffers of `buf_len` bytes and registers them with the current
    /// thread's ring (Linux 5.19 for the sparse table used). If the kernel refuses the
    /// registration (typically `ENOMEM`: registered memory counts against RLIMIT_MEMLOCK), the
    /// pool works with unregistered memory and [`Capabilities::notes`](crate::Capabilities)
    /// says why.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `count` is 0 or above 4096, or `buf_len` is 0 or above 1 GiB.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub fn new(count: usize, buf_len: usize) -> io::Result<FixedBufPool> {
        if count == 0 || count > FIXED_BUFFER_SLOTS || buf_len == 0 || buf_len > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "FixedBufPool::new({count}, {buf_len}): need 1..={FIXED_BUFFER_SLOTS} \
                     buffers of 1 byte..=1 GiB"
                ),
            ));
        }
        let driver = driver::current();
        let mut free: Vec<(u16, Box<[u8]>)> = (0..count)
            .map(|i| (i as u16, vec![0u8; buf_len].into_boxed_slice()))
            .collect();
        let iovecs: Vec<libc::iovec> = free
            .iter_mut()
            .map(|(_, mem)| libc::iovec {
                iov_base: mem.as_mut_ptr().cast(),
                iov_len: mem.len(),
            })
            .collect();
        // SAFETY: the memory behind each iovec is owned by `free`, which moves into the pool
        // state; buffers are only freed after `unregister_buffers` succeeds (see `Drop`).
        let registered = unsafe { driver.borrow_mut().register_buffers(&iovecs) };
        let base = match registered {
            Ok(base) => Some(base),
            Err(e) => {
                driver.borrow_mut().note(format!(
                    "fixed buffers not registered ({count} x {buf_len} bytes): {e}; they work \
                     as ordinary buffers. Registered memory counts against RLIMIT_MEMLOCK: \
                     raise it (`ulimit -l`) to use them"
                ));
                None
            }
        };
        free.reverse(); // hand out index 0 first
        Ok(FixedBufPool {
            state: Rc::new(PoolState {
                driver,
                base,
                count,
                buf_len,
                free: RefCell::new(free),
                waiters: WaitList::default(),
            }),
        })
    }

    /// Whether the kernel accepted the registration.
    pub fn is_registered(&self) -> bool {
        self.state.base.is_some()
    }

    /// Size of each buffer.
    pub fn buf_len(&self) -> usize {
        self.state.buf_len
    }

    /// Number of buffers in the pool.
    pub fn count(&self) -> usize {
        self.state.count
    }

    /// Buffers not checked out.
    pub fn available(&self) -> usize {
        self.state.free.borrow().len()
    }

    /// Checks out a buffer (empty: nothing initialized), if one is free.
    pub fn try_get(&self) -> Option<FixedBuf> {
        let (index, mem) = self.state.free.borrow_mut().pop()?;
        Some(FixedBuf {
            state: self.state.clone(),
            index,
            mem: Some(mem),
            init: 0,
        })
    }

    /// Checks out a buffer, waiting until one is returned if all are in use.
    pub async fn get(&self) -> FixedBuf {
        std::future::poll_fn(|cx| match self.try_get() {
            Some(buf) => Poll::Ready(buf),
            None => {
                self.state.waiters.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for PoolState {
    fn drop(&mut self) {
        let free = std::mem::take(self.free.get_mut());
        if let Some(base) = self.base {
            let cleared = match self.driver.try_borrow_mut() {
                Ok(mut driver) => driver.unregister_buffers(base, self.count),
                Err(_) => false,
            };
            if !cleared {
                // The kernel may still have the pages registered: never free them.
                std::mem::forget(free);
            }
        }
    }
}

impl fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("count", &self.state.count)
            .field("buf_len", &self.state.buf_len)
            .field("registered", &self.state.base.is_some())
            .field("available", &self.available())
            .finish()
    }
}

/// A buffer checked out of a [`FixedBufPool`]; returns to the pool when dropped.
///
/// It is an [`IoBuf`]/[`IoBufMut`] like a `Vec<u8>` with a fixed capacity: its initialized
/// length grows as data is received and can be set with [`set_len`](FixedBuf::set_len) or by
/// writing through [`capacity_mut`](FixedBuf::capacity_mut).
pub struct FixedBuf {
    state: Rc<PoolState>,
    index: u16,
    /// `Some` until the buffer returns to the pool in `drop`.
    mem: Option<Box<[u8]>>,
    init: usize,
}

impl FixedBuf {
    fn mem(&self) -> &[u8] {
        self.mem.as_deref().expect("memory present until drop")
    }

    /// The whole capacity, for filling before a send; then [`set_len`](FixedBuf::set_len).
    pub fn capacity_mut(&mut self) -> &mut [u8] {
        self.mem.as_deref_mut().expect("memory present until drop")
    }

    /// Sets how many bytes count as initialized (sent by a send). Pool memory starts zeroed,
    /// so any length up to the capacity is initialized memory.
    ///
    /// # Panics
    ///
    /// Panics if `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.mem().len(), "FixedBuf::set_len beyond capacity");
        self.init = len;
    }

    /// The initialized bytes.
    pub fn len(&self) -> usize {
        self.init
    }

    /// Whether no byte is initialized.
    pub fn is_empty(&self) -> bool {
        self.init == 0
    }
}

impl std::ops::Deref for FixedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.mem()[..self.init]
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            self.state.free.borrow_mut().push((self.index, mem));
            self.state.waiters.wake_all();
        }
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.init)
            .field("capacity", &self.mem().len())
            .finish()
    }
}

// SAFETY: the memory is a heap allocation owned by the buffer (stable across moves);
// `init <= len` bytes are initialized (all bytes are, in fact: pool memory starts zeroed).
// `fixed_slot` names the registration covering exactly this allocation, which lives as long as
// the pool state this buffer holds.
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.mem().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.init
    }

    fn bytes_total(&self) -> usize {
        self.mem().len()
    }

    fn fixed_slot(&self) -> Option<FixedSlot> {
        self.state.base.map(|base| FixedSlot {
            runtime: Driver::id(&self.state.driver),
            index: base + self.index,
        })
    }
}

// SAFETY: as for `IoBuf`; `set_init` only grows the initialized length within capacity.
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.capacity_mut().as_mut_ptr()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        self.init = self.init.max(pos);
    }
}
