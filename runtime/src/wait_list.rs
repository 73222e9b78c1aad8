//! `WaitList`: the tasks of one thread waiting for a resource (a free buffer, a shutdown
//! signal), all woken when it becomes available.
//!
//! # Invariants
//!
//! - Wakers are woken after the list's borrow has ended, so a woken waker that runs code (or
//!   registers again) never finds the list borrowed.

use std::{cell::RefCell, task::Waker};

/// Wakers waiting for one resource on this thread.
#[derive(Debug, Default)]
pub(crate) struct WaitList(RefCell<Vec<Waker>>);

impl WaitList {
    /// Registers `waker` to be woken by the next [`wake_all`](WaitList::wake_all).
    pub(crate) fn register(&self, waker: &Waker) {
        self.0.borrow_mut().push(waker.clone());
    }

    /// Whether no waker is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Wakes every registered waker and empties the list.
    pub(crate) fn wake_all(&self) {
        // The common case, nobody waiting, touches nothing else (it runs for every buffer
        // returned to a ring and every loop turn).
        if self.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut *self.0.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }
}
