//! Fds closed while no epoll engine of theirs was current, reported to every live engine.
//!
//! # Invariants
//!
//! - Every live [`Poller`](super::Poller) owns one [`ClosedFds`], listed in [`LISTS`] from
//!   its creation to its drop; [`LIVE`] is true while the list is non-empty.
//! - [`forget_fd`] appends the fd to every listed engine's list before the file is closed,
//!   so an engine that takes its list before registering a new fd never mistakes a reused
//!   number for the old, already registered, file.

use std::{
    os::fd::RawFd,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

/// One engine's closed fds, and whether there are any (read without the lock).
type List = Arc<(AtomicBool, Mutex<Vec<RawFd>>)>;

/// Every live engine's list.
static LISTS: Mutex<Vec<List>> = Mutex::new(Vec::new());

/// Whether any epoll engine is alive (so closing fds must be reported).
static LIVE: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells every live epoll engine that `fd` is about to be closed (or handed out of the
/// runtime's care): its registration is forgotten, so a later file with the same number is
/// registered afresh. Cheap when no epoll engine exists.
pub(crate) fn forget_fd(fd: RawFd) {
    if !LIVE.load(Ordering::Relaxed) {
        return;
    }
    for list in lock(&LISTS).iter() {
        lock(&list.1).push(fd);
        list.0.store(true, Ordering::Release);
    }
}

/// The fds closed since an engine last looked (see the module docs).
pub(super) struct ClosedFds(List);

impl ClosedFds {
    /// A list that [`forget_fd`] reports to until it is dropped.
    pub(super) fn new() -> ClosedFds {
        let list = List::default();
        lock(&LISTS).push(list.clone());
        LIVE.store(true, Ordering::Relaxed);
        ClosedFds(list)
    }

    /// The fds closed since the last call, if any.
    pub(super) fn take(&self) -> Option<Vec<RawFd>> {
        if !self.0.0.load(Ordering::Acquire) {
            return None;
        }
        self.0.0.store(false, Ordering::Release);
        Some(std::mem::take(&mut *lock(&self.0.1)))
    }
}

impl Drop for ClosedFds {
    fn drop(&mut self) {
        let mut lists = lock(&LISTS);
        lists.retain(|list| !Arc::ptr_eq(list, &self.0));
        LIVE.store(!lists.is_empty(), Ordering::Relaxed);
    }
}
