//! `BufRingBuilder`: a provided-buffer ring's sizes, checked, and its registration with the
//! current thread's driver (the only part of the runtime a ring needs).
//!
//! A ring is registered under a free group id; when the kernel refuses incremental
//! consumption (`EINVAL` before Linux 6.12) it is registered again without it and the
//! runtime's capabilities say so. The ring then tops itself up before every enter through
//! the driver's refill list (`driver/register.rs`).

use std::{
    cell::{Cell, RefCell},
    io,
    rc::Rc,
};

use super::{
    super::published::Published, BufRing, BufRingStats, IOU_PBUF_RING_INC, Incremental, RingEntry,
    RingInner,
};
use crate::{
    driver::{self, Refill},
    mmap::Mapping,
    wait_list::WaitList,
};

/// Configures a [`BufRing`].
#[derive(Debug, Clone)]
pub struct BufRingBuilder {
    pub(super) entries: u32,
    pub(super) buf_len: usize,
    pub(super) incremental: bool,
}

impl BufRingBuilder {
    /// Ring entries, also the number of buffers (a power of two, 1..=32768; default 256).
    pub fn entries(&mut self, entries: u32) -> &mut Self {
        self.entries = entries;
        self
    }

    /// Size of each buffer (1 byte..=16 MiB; default 4096).
    pub fn buf_len(&mut self, buf_len: usize) -> &mut Self {
        self.buf_len = buf_len;
        self
    }

    /// Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12): a receive smaller than a
    /// buffer uses only part of it and the next receive continues in the same buffer, so
    /// large buffers do not waste memory on small messages. Where the kernel rejects it, the
    /// ring is built without it and [`Capabilities::notes`](crate::Capabilities) says so.
    /// Not for datagram `recvmsg` streams: the message header may not fit in what is left of a
    /// buffer (liburing issue #1433).
    ///
    /// A completion does not say where in its buffer its data starts: that follows from the
    /// completions before it for the same buffer, so they must be taken in the order the kernel
    /// posted them. One stream per incremental ring guarantees that; streams of several sockets
    /// take their completions in the order their tasks run, so give each socket its own
    /// incremental ring, or share a ring without this option (any order works there).
    /// Default off.
    pub fn incremental(&mut self, on: bool) -> &mut Self {
        self.incremental = on;
        self
    }

    /// Allocates and registers the ring with the current thread's runtime.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for sizes out of range; the kernel's error (e.g. `ENOMEM`) if
    /// registration fails.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub fn build(&self) -> io::Result<BufRing> {
        let entries = self.entries;
        if entries == 0 || entries > 32768 || !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("BufRing entries must be a power of two in 1..=32768, got {entries}"),
            ));
        }
        if self.buf_len == 0 || self.buf_len > 16 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("BufRing buf_len must be 1..=16 MiB, got {}", self.buf_len),
            ));
        }
        let driver = driver::current();
        let ring = Mapping::new(entries as usize * std::mem::size_of::<RingEntry>())?;
        let bufs = Mapping::new(entries as usize * self.buf_len)?;
        let mut incremental = self.incremental;
        let user_space = driver.borrow().is_epoll();
        if user_space && incremental {
            incremental = false;
            driver.borrow_mut().note(
                "incremental buffer consumption is io_uring's (IOU_PBUF_RING_INC); on the epoll \
                 backend buffer rings consume whole buffers"
                    .to_owned(),
            );
        }
        let register = |flags| {
            // SAFETY: `ring` is page-aligned memory of `entries` entries and, like every
            // buffer in `bufs`, lives in the `RingInner` built below, which unregisters the
            // group before unmapping (or leaks the mappings if that fails).
            unsafe {
                driver
                    .borrow_mut()
                    .register_buf_ring(ring.as_ptr() as u64, entries as u16, flags)
            }
        };
        // The epoll backend's pool is not registered: its receives select from it.
        let bgid = if user_space {
            u16::MAX
        } else {
            match register(if incremental { IOU_PBUF_RING_INC } else { 0 }) {
                Ok(bgid) => bgid,
                Err(e) if incremental && e.raw_os_error() == Some(libc::EINVAL) => {
                    incremental = false;
                    driver.borrow_mut().note(format!(
                        "incremental buffer consumption (IOU_PBUF_RING_INC, Linux 6.12) rejected \
                         ({e}); buffer rings consume whole buffers"
                    ));
                    register(0)?
                }
                Err(e) => return Err(e),
            }
        };
        let inner = Rc::new(RingInner {
            driver: driver.clone(),
            bgid,
            entries: entries as u16,
            buf_len: self.buf_len,
            ring,
            bufs,
            incremental,
            user_space,
            head: Cell::new(0),
            tail: Cell::new(0),
            published: RefCell::new(Published::new(entries as u16)),
            // Pop order 0, 1, 2...: the lowest ids (and pages) are used first.
            free: RefCell::new((0..entries as u16).rev().collect()),
            inc: RefCell::new(vec![Incremental::default(); entries as usize]),
            wanted_this_turn: Cell::new(0),
            peak: Cell::new(0),
            waiters: WaitList::default(),
            stats: Cell::new(BufRingStats::default()),
        });
        inner.top_up();
        let refill: Rc<dyn Refill> = inner.clone();
        driver.borrow_mut().add_refill(Rc::downgrade(&refill));
        Ok(BufRing { inner })
    }
}
