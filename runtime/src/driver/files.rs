//! The ring's table of registered files ("direct descriptors"): sockets that live only in the
//! ring, not in the process's descriptor table, so they do not count against
//! `RLIMIT_NOFILE`.
//!
//! # Invariants
//!
//! - The table is registered at most once per ring, sparse (every slot empty), either when the
//!   ring is built (`Builder::direct_descriptors`) or on first use. The kernel cannot resize a
//!   registered file table, and unregistering it would close every direct descriptor, so its
//!   size is fixed from then on.
//! - The kernel allocates slots (`IORING_FILE_INDEX_ALLOC`) and frees them on
//!   `IORING_OP_CLOSE` with a fixed index; user space never picks one. `in_use` counts the
//!   slots adopted by a `DirectFd` whose close is not in the SQ yet: a request queued after
//!   the count went down is behind the close in the SQ, so it finds the slot free.
//! - A slot's close is queued in `closes` by whoever drops its `DirectFd` (without borrowing
//!   the driver, so a drop may happen anywhere) and turned into an SQE before the next enter.
//!   Every slot an owner adopted is closed, through the ring, exactly once; a table whose ring
//!   is gone needs no close (closing the ring fd released every slot).
//! - After a failed registration `failed` holds the reason, and no later request retries it.

use std::{
    cell::{Cell, RefCell},
    io,
    rc::Rc,
};

use io_uring::{opcode, types};

use super::{CANCEL, Driver};

/// Slots registered on first use when the builder asked for no size: at most this many, and at
/// most the soft `RLIMIT_NOFILE` (the kernel refuses a larger table, `io_sqe_files_register`).
pub(crate) const DEFAULT_FILE_SLOTS: u32 = 4096;

/// Largest table the kernel registers (`IORING_MAX_FIXED_FILES`).
pub(crate) const MAX_FILE_SLOTS: u32 = 1 << 20;

/// One ring's registered file table (see the module docs).
#[derive(Debug)]
pub(crate) struct FileTable {
    slots: u32,
    in_use: Cell<u32>,
    closes: RefCell<Vec<u32>>,
}

impl FileTable {
    /// The number of slots the kernel registered.
    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// Slots held by live direct descriptors.
    pub(crate) fn in_use(&self) -> u32 {
        self.in_use.get()
    }

    /// Counts slot `index`, just produced by the kernel, as owned.
    pub(crate) fn adopt(&self, index: u32) {
        // The kernel never reports a slot outside the table; one that did would still be
        // counted and closed like any other (the close of a bad index just fails).
        let _ = index;
        self.in_use.set(self.in_use.get() + 1);
    }

    /// Queues the close of slot `index`; it is submitted before the ring's next enter. The
    /// slot counts as in use until then, so nothing allocates into the table counting on a
    /// slot that an SQE ahead of the close would not find free yet.
    pub(crate) fn close(&self, index: u32) {
        self.closes.borrow_mut().push(index);
    }
}

/// The state of the ring's file table.
#[derive(Debug, Default)]
pub(crate) struct Files {
    /// Slots to register when the ring is built (0: on first use, `DEFAULT_FILE_SLOTS`).
    pub(crate) wanted: u32,
    pub(crate) table: Option<Rc<FileTable>>,
    /// Why registration failed, once it did.
    pub(crate) failed: Option<String>,
}

/// The soft `RLIMIT_NOFILE`, which caps a file table when it is registered.
pub(crate) fn nofile_soft_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the live, exclusively borrowed `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::from(MAX_FILE_SLOTS);
    }
    limit.rlim_cur
}

impl Driver {
    /// The ring's file table, registering it now (with `slots`, or the configured or default
    /// size when 0) if that was not done yet.
    ///
    /// # Errors
    ///
    /// The reason the kernel refused the table (the same error on every later call).
    pub(crate) fn file_table(&mut self, slots: u32) -> io::Result<Rc<FileTable>> {
        if let Some(table) = &self.files.table {
            return Ok(table.clone());
        }
        if let Some(reason) = &self.files.failed {
            return Err(io::Error::new(io::ErrorKind::Unsupported, reason.clone()));
        }
        let explicit = if slots > 0 { slots } else { self.files.wanted };
        let slots = if explicit > 0 {
            explicit.min(MAX_FILE_SLOTS)
        } else {
            DEFAULT_FILE_SLOTS.min(nofile_soft_limit().clamp(1, u64::from(MAX_FILE_SLOTS)) as u32)
        };
        let Some(ring) = self.uring() else {
            let reason = "direct descriptors off: registered files are io_uring's, and this \
                          runtime runs on the epoll backend; sockets use ordinary descriptors";
            self.note(reason.to_owned());
            self.files.failed = Some(reason.to_owned());
            return Err(io::Error::new(io::ErrorKind::Unsupported, reason));
        };
        match ring.register_file_table(slots) {
            Ok(()) => {
                let table = Rc::new(FileTable {
                    slots,
                    in_use: Cell::new(0),
                    closes: RefCell::new(Vec::new()),
                });
                self.files.table = Some(table.clone());
                Ok(table)
            }
            Err(e) => {
                let limit = nofile_soft_limit();
                let reason = if e.raw_os_error() == Some(libc::EMFILE) {
                    format!(
                        "direct descriptors off: the kernel refused a table of {slots} registered \
                         files (EMFILE): a table may not be larger than the soft RLIMIT_NOFILE \
                         ({limit}) when it is registered; raise the limit before building the \
                         runtime (it may be lowered afterwards) or ask for fewer slots with \
                         Builder::direct_descriptors"
                    )
                } else {
                    format!(
                        "direct descriptors off: the kernel refused a table of {slots} registered \
                         files ({e}); sockets use ordinary descriptors"
                    )
                };
                self.note(reason.clone());
                self.files.failed = Some(reason.clone());
                Err(io::Error::new(io::ErrorKind::Unsupported, reason))
            }
        }
    }

    /// The ring's file table, if one is registered.
    pub(crate) fn registered_files(&self) -> Option<&Rc<FileTable>> {
        self.files.table.as_ref()
    }

    /// Queues an `IORING_OP_CLOSE` for every slot whose owner let go since the last enter.
    /// Their CQEs carry nothing to act on (a close of an allocated slot cannot fail).
    pub(super) fn queue_file_closes(&mut self) {
        let closes = match &self.files.table {
            Some(table) if !table.closes.borrow().is_empty() => table.closes.take(),
            _ => return,
        };
        if let Some(table) = &self.files.table {
            let in_use = table.in_use.get().saturating_sub(closes.len() as u32);
            table.in_use.set(in_use);
        }
        for index in closes {
            let sqe = opcode::Close::new(types::Fixed(index))
                .build()
                .user_data(CANCEL);
            self.queue_sqe(sqe);
        }
    }
}
