//! The timer registry: deadlines ordered in a `BTreeMap`, read by the event loop to bound its
//! wait and to wake expired sleepers.
//!
//! # Invariants
//!
//! - Keys are `(deadline, id)` with a fresh `id` per registration, so equal deadlines coexist
//!   and a `Sleep` removes exactly its own entry.
//! - An entry is removed either by its `Sleep` (dropped, reset or completed) or by the loop when
//!   it expires; waking happens after the entry is removed and outside any borrow.

use std::{collections::BTreeMap, task::Waker, time::Instant};

/// A registered timer's key.
pub(crate) type TimerKey = (Instant, u64);

#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeMap<TimerKey, Waker>,
    next_id: u64,
}

impl Timers {
    /// Registers `waker` to be woken at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let key = (deadline, self.next_id);
        self.next_id += 1;
        self.entries.insert(key, waker);
        key
    }

    /// Replaces the waker of a registered timer; returns false when the entry is gone
    /// (expired and already woken).
    pub(crate) fn update(&mut self, key: TimerKey, waker: &Waker) -> bool {
        match self.entries.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, key: TimerKey) {
        self.entries.remove(&key);
    }

    /// The earliest deadline, if any timer is registered.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    /// Removes and returns the waker of one timer whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Waker> {
        let entry = self.entries.first_entry()?;
        if entry.key().0 <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// Removes every timer (shutdown). The wakers are returned to be dropped outside borrows.
    pub(crate) fn take_all(&mut self) -> BTreeMap<TimerKey, Waker> {
        std::mem::take(&mut self.entries)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{task::Waker, time::Duration};

    use super::*;

    #[test]
    fn expires_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.insert(now + Duration::from_millis(20), Waker::noop().clone());
        let early = t.insert(now + Duration::from_millis(10), Waker::noop().clone());
        t.insert(now + Duration::from_millis(10), Waker::noop().clone());
        assert_eq!(t.next_deadline(), Some(early.0));
        assert!(t.pop_expired(now).is_none());
        assert!(t.pop_expired(now + Duration::from_millis(10)).is_some());
        assert!(t.pop_expired(now + Duration::from_millis(10)).is_some());
        assert!(t.pop_expired(now + Duration::from_millis(10)).is_none());
        assert_eq!(t.len(), 1);
        assert!(!t.update(early, Waker::noop()));
    }
}
