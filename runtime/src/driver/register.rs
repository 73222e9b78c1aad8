//! Registrations the ring holds for the layers above it: fixed buffers, provided-buffer
//! rings, and values that must outlive the ring (a zero-copy receive area).
//!
//! Buffer pools (`runtime::buf`) and zero-copy receive (`runtime::zcrx`) register through
//! these calls only; they never see the ring itself, nor anything of the executor.
//!
//! # Invariants
//!
//! - `fixed_slots[i]` is true exactly while fixed-buffer slot `i` holds a registered buffer;
//!   a slot is reused only after `unregister_buffers` cleared it in the kernel.
//! - `buf_groups` lists the provided-buffer group ids registered now; an id is handed out again
//!   only after `unregister_buf_ring` succeeded.
//! - A registration's memory may be freed only after its unregistration returned true; when
//!   it fails, the owner leaks the memory (the kernel still references it).
//! - Values given to `keep_until_closed` are dropped after the ring fd is closed.
//! - A [`Refill`] is held weakly: a pool that is dropped leaves the list at the next
//!   [`refill`] pass, and refilling never borrows the driver while a pool runs.

use std::{
    any::Any,
    cell::RefCell,
    io,
    rc::{Rc, Weak},
};

use super::{Driver, FIXED_BUFFER_SLOTS};

/// Something that hands the kernel buffers before each enter (a provided-buffer ring topping
/// up its free entries). It must not use the driver.
pub(crate) trait Refill {
    /// Publishes free buffers to the kernel.
    fn refill(&self);
}

/// Runs every registered [`Refill`], once per loop turn before the enter (one tail store per
/// ring), and forgets those that were dropped.
pub(crate) fn refill(driver: &RefCell<Driver>) {
    let mut i = 0;
    loop {
        // Short borrows: refilling runs no user code, but keep the driver free anyway.
        let pool = match driver.borrow().refills.get(i) {
            Some(weak) => weak.upgrade(),
            None => break,
        };
        match pool {
            Some(pool) => {
                pool.refill();
                i += 1;
            }
            None => {
                driver.borrow_mut().refills.swap_remove(i);
            }
        }
    }
}

impl Driver {
    /// Registers buffers as consecutive fixed-buffer slots; returns the first slot's index.
    ///
    /// # Safety
    ///
    /// The memory each `iovec` describes must stay valid until `unregister_buffers` clears the
    /// slots (or the ring closes), and no operation may use a slot after it was cleared.
    pub(crate) unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> io::Result<u16> {
        if self.fixed_slots.is_empty() {
            self.ring_for("fixed buffers (FixedBufPool)")?
                .register_buffer_table(FIXED_BUFFER_SLOTS as u32)?;
            self.fixed_slots = vec![false; FIXED_BUFFER_SLOTS];
        }
        let n = iovecs.len();
        let base = FIXED_BUFFER_SLOTS
            .checked_sub(n)
            .and_then(|last| {
                (0..=last).find(|&b| self.fixed_slots[b..b + n].iter().all(|used| !used))
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "no {n} consecutive free slots left in the ring's table of \
                         {FIXED_BUFFER_SLOTS} fixed buffers"
                    ),
                )
            })?;
        // SAFETY: forwarded to the caller; the slots were free.
        unsafe {
            self.ring_for("fixed buffers (FixedBufPool)")?
                .update_buffers(base as u32, iovecs)?
        };
        self.fixed_slots[base..base + n].fill(true);
        Ok(base as u16)
    }

    /// Clears fixed-buffer slots `base..base + n`. Returns whether it worked: only then may
    /// their memory be freed (otherwise the kernel still has it registered).
    #[must_use]
    pub(crate) fn unregister_buffers(&mut self, base: u16, n: usize) -> bool {
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            n
        ];
        let Some(ring) = self.uring() else {
            return false;
        };
        // SAFETY: empty iovecs describe no memory; they only clear the slots.
        if unsafe { ring.update_buffers(u32::from(base), &empty) }.is_ok() {
            let base = usize::from(base);
            self.fixed_slots[base..base + n].fill(false);
            true
        } else {
            false
        }
    }

    /// Registers a provided-buffer ring under a free group id and returns the id.
    ///
    /// # Safety
    ///
    /// As `Ring::register_buf_ring`: the ring memory and every buffer it names stay valid until
    /// `unregister_buf_ring(id)` succeeds.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring_addr: u64,
        entries: u16,
        flags: u16,
    ) -> io::Result<u16> {
        let bgid = (0..u16::MAX)
            .find(|id| !self.buf_groups.contains(id))
            .ok_or_else(|| io::Error::other("no free provided-buffer group id"))?;
        // SAFETY: forwarded to the caller.
        unsafe {
            self.ring_for("provided-buffer rings")?
                .register_buf_ring(ring_addr, entries, bgid, flags)?
        };
        self.buf_groups.push(bgid);
        Ok(bgid)
    }

    /// Unregisters group `bgid`; only on success may its memory be freed.
    #[must_use]
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) -> bool {
        if self
            .uring()
            .is_some_and(|ring| ring.unregister_buf_ring(bgid).is_ok())
        {
            self.buf_groups.retain(|&g| g != bgid);
            true
        } else {
            false
        }
    }

    /// The ring fd, for registrations made with raw syscalls; -1 on the epoll engine,
    /// which has no ring (the builder registers nothing there).
    pub(crate) fn ring_fd(&self) -> std::os::fd::RawFd {
        match &self.ring {
            super::Engine::Uring(ring) => ring.raw_fd(),
            super::Engine::Epoll(_) => -1,
        }
    }

    /// The ring, for a registration that only io_uring offers: on the epoll engine, an
    /// `Unsupported` error naming `feature`.
    pub(super) fn ring_for(&mut self, feature: &str) -> io::Result<&mut super::ring::Ring> {
        self.uring()
            .ok_or_else(|| super::epoll::unsupported(feature))
    }

    /// Whether the probe reported opcode `code` supported.
    pub(crate) fn supports_opcode(&self, code: u8) -> bool {
        self.opcodes[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    /// Records why something asked of the driver is not in use (a registration the kernel
    /// refused), for the runtime's capabilities.
    pub(crate) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// What [`note`](Driver::note) recorded.
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Runs `pool.refill()` before every enter, for as long as `pool` lives.
    pub(crate) fn add_refill(&mut self, pool: Weak<dyn Refill>) {
        self.refills.push(pool);
    }

    /// A value that identifies this driver among the live ones (its address: the driver does
    /// not move while shared, and cannot be freed while a holder of its `Rc` compares it).
    pub(crate) fn id(driver: &Rc<RefCell<Driver>>) -> u64 {
        Rc::as_ptr(driver) as u64
    }

    /// Keeps `value` alive until the ring is closed: for memory the kernel may use for as long
    /// as the ring exists (a zero-copy receive area), whoever else lets go of it first.
    pub(crate) fn keep_until_closed(&mut self, value: Rc<dyn Any>) {
        self.keep_alive.push(value);
    }
}
