//! Direct descriptors: files that live only in a ring's table of registered files, not in the
//! process's descriptor table (io_uring "direct descriptors", `IORING_FILE_INDEX_ALLOC`).
//!
//! A socket accepted into the table (`IORING_OP_ACCEPT` with `IORING_FILE_INDEX_ALLOC`) costs
//! no file descriptor, so a server holds connections past its `RLIMIT_NOFILE`, and each request
//! on it carries `IOSQE_FIXED_FILE` with the slot index instead of an fd. The `net` crate's
//! sockets use this module; see `net::TcpListener::set_direct_descriptors`.
//!
//! # Invariants
//!
//! - A [`DirectFd`] owns one slot of one ring's table. Dropping it queues an `IORING_OP_CLOSE`
//!   of the slot on that ring, submitted with the next enter, so no slot leaks and no fd is
//!   closed outside the ring. If the ring is gone already, closing it released the slot.
//! - A slot index means something only to the ring that allocated it. [`DirectFd::target`]
//!   returns it only on that ring's thread while that ring is the running one, so a request on
//!   another ring can never reach the file in some other slot of the same number. (`DirectFd`
//!   is `!Send`: it cannot move to another thread; [`DirectFd::install`] gives a real fd that
//!   can.)
//! - Installing a real fd (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8) leaves the slot as it is:
//!   both name the same socket, and each is closed by its own owner.
//!
//! The table is sized once per ring ([`Builder::direct_descriptors`](crate::Builder::direct_descriptors)):
//! the kernel cannot resize it and caps it at the soft `RLIMIT_NOFILE` when it is registered.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    io,
    os::fd::{FromRawFd, OwnedFd},
    rc::{Rc, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use io_uring::{opcode, squeue, types};

use crate::{
    driver::{self, Driver, FileTable, Wait},
    op::{Completion, Op, OpCode},
};

/// A slot of the current ring's file table that holds an open file (see the module docs).
pub struct DirectFd {
    index: u32,
    table: Weak<FileTable>,
}

/// The current ring's file table, registering it if that was not done yet (see
/// [`Builder::direct_descriptors`](crate::Builder::direct_descriptors) for its size).
///
/// # Errors
///
/// `Unsupported` with the kernel's reason when the table cannot be registered (kernels before
/// 5.19, a table larger than the soft `RLIMIT_NOFILE`), or when no io_uring runtime runs on
/// this thread. The same reason is in [`Capabilities::notes`](crate::Capabilities::notes).
pub fn enable() -> io::Result<DirectTable> {
    let driver = driver::try_current().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "direct descriptors need an io_uring runtime running on this thread",
        )
    })?;
    let table = driver.borrow_mut().file_table(0)?;
    Ok(DirectTable(Rc::downgrade(&table)))
}

/// A handle on one ring's file table, from [`enable`]: what a request that allocates slots
/// (accept with `IORING_FILE_INDEX_ALLOC`) keeps, to adopt the slots its completions report
/// without borrowing the driver (they may arrive while it is borrowed).
#[derive(Debug, Clone)]
pub struct DirectTable(Weak<FileTable>);

impl DirectTable {
    /// The table's size in slots (0 once its ring is gone).
    pub fn slots(&self) -> u32 {
        self.0.upgrade().map_or(0, |t| t.slots())
    }

    /// Slots not held by a live direct descriptor (0 once its ring is gone).
    pub fn free(&self) -> u32 {
        self.0
            .upgrade()
            .map_or(0, |t| t.slots().saturating_sub(t.in_use()))
    }

    /// Takes ownership of slot `index`, as a completion of a request on this table's ring
    /// reported it (an accept or socket request with `IORING_FILE_INDEX_ALLOC`).
    ///
    /// # Safety
    ///
    /// `index` must name a slot of this table that holds an open file owned by nothing else:
    /// the returned value closes it when dropped.
    pub unsafe fn adopt(&self, index: u32) -> DirectFd {
        if let Some(table) = self.0.upgrade() {
            table.adopt(index);
        }
        DirectFd {
            index,
            table: self.0.clone(),
        }
    }
}

/// The largest table the kernel would register now: the soft `RLIMIT_NOFILE`, at most
/// 1,048,576 (`IORING_MAX_FIXED_FILES`). For
/// [`Builder::direct_descriptors`](crate::Builder::direct_descriptors) when a server wants as
/// many direct descriptors as it may have.
pub fn slots_allowed() -> u32 {
    crate::driver::nofile_soft_limit().min(u64::from(crate::driver::MAX_FILE_SLOTS)) as u32
}

/// The current ring's table as `(slots in use, slots)`, or `None` when none is registered
/// (or no runtime runs on this thread).
pub fn usage() -> Option<(u32, u32)> {
    let driver = driver::try_current()?;
    let driver = driver.borrow();
    let table = driver.registered_files()?;
    Some((table.in_use(), table.slots()))
}

/// The error for a request that found the current ring's table full (`ENFILE` from an accept
/// into an allocated slot), saying how to make room.
pub fn table_full_error() -> io::Error {
    let slots = usage().map_or(0, |(_, slots)| slots);
    io::Error::new(
        io::ErrorKind::QuotaExceeded,
        format!(
            "the ring's table of {slots} direct descriptors is full (ENFILE): close connections, \
             or build the runtime with a larger Builder::direct_descriptors (the kernel caps it \
             at the soft RLIMIT_NOFILE when the table is registered)"
        ),
    )
}

impl DirectFd {
    /// The slot index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The SQE target for this slot (`IOSQE_FIXED_FILE` with the index), or `None` when the
    /// ring that owns the slot is not the one running on this thread (it was dropped, or
    /// another runtime runs now): the index means nothing there.
    pub fn target(&self) -> Option<types::Fixed> {
        let table = self.table.upgrade()?;
        let current = driver::try_current()?;
        let current = current.try_borrow().ok()?;
        let same = current
            .registered_files()
            .is_some_and(|t| Rc::ptr_eq(t, &table));
        same.then_some(types::Fixed(self.index))
    }

    /// A real, close-on-exec file descriptor for the same socket (`IORING_OP_FIXED_FD_INSTALL`,
    /// Linux 6.8). The slot stays owned by `self`. Blocks the thread until the ring has done
    /// it (the request completes inline, within one enter), running no tasks meanwhile.
    ///
    /// # Errors
    ///
    /// `EMFILE` when the process is out of descriptors, `Unsupported` before Linux 6.8 or off
    /// the slot's ring, each with a message saying so.
    pub fn install(&self) -> io::Result<OwnedFd> {
        let Some(target) = self.target() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this direct descriptor belongs to a ring that is not running on this thread \
                 (its runtime was dropped, or another one runs now): no fd can be installed",
            ));
        };
        let driver = driver::current();
        if !driver
            .borrow()
            .supports_opcode(opcode::FixedFdInstall::CODE)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "installing a real fd for a direct descriptor needs IORING_OP_FIXED_FD_INSTALL \
                 (Linux 6.8); accept connections without direct descriptors on this kernel",
            ));
        }
        drive_now(&driver, FixedFdInstall { index: target.0 }).map_err(|e| {
            let msg = if e.raw_os_error() == Some(libc::EMFILE) {
                "installing a real fd for a direct descriptor failed: the process is out of \
                 descriptors (EMFILE, RLIMIT_NOFILE); close some or raise the limit"
                    .to_owned()
            } else {
                format!("installing a real fd for a direct descriptor failed: {e}")
            };
            io::Error::new(e.kind(), msg)
        })
    }
}

impl Drop for DirectFd {
    fn drop(&mut self) {
        // No driver borrow: this may run anywhere, even while the driver is borrowed.
        if let Some(table) = self.table.upgrade() {
            table.close(self.index);
        }
    }
}

impl fmt::Debug for DirectFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectFd")
            .field("index", &self.index)
            .field("ring_alive", &(self.table.strong_count() > 0))
            .finish()
    }
}

/// `IORING_OP_FIXED_FD_INSTALL` (Linux 6.8): a new close-on-exec fd for a fixed file.
#[derive(Debug)]
struct FixedFdInstall {
    index: u32,
}

// SAFETY: the SQE points at no memory; the slot stays open, owned by the `DirectFd` that the
// caller of `install` borrows for the whole (synchronous) request.
unsafe impl OpCode for FixedFdInstall {
    type Output = io::Result<OwnedFd>;

    fn build(&mut self) -> squeue::Entry {
        opcode::FixedFdInstall::new(types::Fixed(self.index), 0).build()
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        let fd = cqe.into_result()?;
        // SAFETY: a successful install returns a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// Runs `op` to completion now, on this thread's ring, for synchronous calls that need one
/// quick request on a direct descriptor (`shutdown`, installing an fd): submits it and enters
/// the ring until its final CQE, routing every other CQE as the loop would (their tasks are
/// woken, not run). The thread is blocked meanwhile, so `op` should be one that completes
/// inline (no waiting on a peer).
///
/// # Errors
///
/// The op's own error; `Unsupported` when no runtime runs on this thread; the enter's error
/// when the ring is unusable.
pub fn run_now<T, R>(op: T) -> io::Result<R>
where
    T: OpCode<Output = io::Result<R>>,
{
    let driver = driver::try_current().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "a request on a direct descriptor needs its io_uring runtime running on this thread",
        )
    })?;
    drive_now(&driver, op)
}

/// [`run_now`] on `driver`.
fn drive_now<T, R>(driver: &Rc<RefCell<Driver>>, op: T) -> io::Result<R>
where
    T: OpCode<Output = io::Result<R>>,
{
    let mut op = Op::new(op);
    let mut cx = Context::from_waker(Waker::noop());
    let mut cqes = Vec::new();
    loop {
        if let Poll::Ready(out) = std::pin::Pin::new(&mut op).poll(&mut cx) {
            return out;
        }
        // Bounded waits: whatever else is in flight, this loop looks at its op again soon.
        let wait = Wait::Timeout(Duration::from_millis(10));
        let entered = driver.borrow_mut().enter(wait);
        // An unusable ring fails every op: give up on this one (dropping it parks it, so a
        // final CQE that still comes finds its resources).
        entered?;
        driver::dispatch(driver, &mut cqes);
    }
}
