//! Scoped thread-local slots: "the driver (or timers, or budget) of the runtime running on
//! this thread", one slot per layer.
//!
//! Each layer keeps its own slot next to its code (`driver::current`, `time`'s timers,
//! `coop`'s budget, `zcrx`'s queue), so that code needing one piece of the running runtime
//! imports that piece's module only, never a context object that imports every layer. The
//! runtime fills every slot when it enters a thread (`executor::context::enter`) and restores them when
//! it leaves.
//!
//! # Invariants
//!
//! - A slot is borrowed only inside the short `get`/`with`/`replace` calls below; no user
//!   code runs meanwhile.
//! - [`Restore`] puts the previous value back on drop and drops the replaced one only after
//!   the slot's borrow ended, because dropping the last reference to a runtime's piece runs
//!   destructors that may look at the slot again.

use std::{cell::RefCell, thread::LocalKey};

/// One layer's thread-local slot.
#[derive(Debug)]
pub(crate) struct Slot<T>(RefCell<Option<T>>);

impl<T: Clone> Slot<T> {
    /// An empty slot, for `thread_local!`.
    pub(crate) const fn new() -> Slot<T> {
        Slot(RefCell::new(None))
    }
}

/// A clone of what `key` holds on this thread, if anything (and the thread-local is alive).
pub(crate) fn get<T: Clone + 'static>(key: &'static LocalKey<Slot<T>>) -> Option<T> {
    with(key, T::clone)
}

/// Runs `f` on what `key` holds on this thread, if anything.
pub(crate) fn with<T: 'static, R>(
    key: &'static LocalKey<Slot<T>>,
    f: impl FnOnce(&T) -> R,
) -> Option<R> {
    key.try_with(|slot| slot.0.try_borrow().ok().and_then(|v| v.as_ref().map(f)))
        .ok()
        .flatten()
}

/// Puts `value` in `key`'s slot until the returned guard is dropped.
pub(crate) fn set<T: 'static>(key: &'static LocalKey<Slot<T>>, value: Option<T>) -> Restore<T> {
    let previous = key.with(|slot| slot.0.replace(value));
    Restore { key, previous }
}

/// Restores a slot's previous value on drop (see [`set`]).
pub(crate) struct Restore<T: 'static> {
    key: &'static LocalKey<Slot<T>>,
    previous: Option<T>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // Failure means the thread-local is being destroyed: nothing is current any more.
        let replaced = self.key.try_with(|slot| slot.0.replace(previous));
        // Dropped here, after the slot's borrow ended.
        drop(replaced);
    }
}

impl<T: 'static> std::fmt::Debug for Restore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restore").finish_non_exhaustive()
    }
}
