//! Who waits for one direction of one fd's readiness: the tasks and parked ops a readiness
//! event of that direction wakes.
//!
//! # Invariants
//!
//! - A task is listed at most once (`add_task` skips a task already listed: a task polled
//!   again before its event, by a spurious wake-up or a `select!` loop, keeps one entry), so
//!   a busy fd's list stays short. Its waker is cloned only when it is added.
//! - One waiter, the common case (one task reading a socket), lives inline in the fd's slot,
//!   with no heap block: routing an event then touches only the slot, not a separate list
//!   allocation per fd, which at hundreds of connections missed the cache on every event.
//!   More than one waiter moves to a `Vec`, kept (empty) after a drain for the next ones.

use std::task::Waker;

use super::Ready;

/// One waiter for an fd's readiness.
enum Waiter {
    Task(Waker),
    /// An op in `Poller::parked`, under this key.
    Parked(usize),
}

/// The waiters of one direction of one fd (see the module docs).
#[derive(Default)]
pub(super) struct Waiters(List);

#[derive(Default)]
enum List {
    #[default]
    None,
    One(Waiter),
    Many(Vec<Waiter>),
}

impl Waiters {
    /// Whether no one waits.
    pub(super) fn is_empty(&self) -> bool {
        match &self.0 {
            List::None => true,
            List::One(_) => false,
            List::Many(list) => list.is_empty(),
        }
    }

    /// Adds the task whose waker is `waker`, unless it is listed already.
    pub(super) fn add_task(&mut self, waker: &Waker) {
        let listed = |w: &Waiter| matches!(w, Waiter::Task(old) if old.will_wake(waker));
        let already = match &self.0 {
            List::None => false,
            List::One(first) => listed(first),
            List::Many(list) => list.iter().any(listed),
        };
        if !already {
            self.push(Waiter::Task(waker.clone()));
        }
    }

    /// Adds the parked op under `key`.
    pub(super) fn add_parked(&mut self, key: usize) {
        self.push(Waiter::Parked(key));
    }

    fn push(&mut self, waiter: Waiter) {
        self.0 = match std::mem::take(&mut self.0) {
            List::None => List::One(waiter),
            List::One(first) => List::Many(vec![first, waiter]),
            List::Many(mut list) => {
                list.push(waiter);
                List::Many(list)
            }
        };
    }

    /// Appends every waiter's wake-up to `out`, in the order they were added, and empties
    /// the list.
    pub(super) fn drain_into(&mut self, out: &mut Vec<Ready>) {
        match std::mem::take(&mut self.0) {
            List::None => {}
            List::One(waiter) => out.push(waiter.into()),
            List::Many(mut list) => {
                out.extend(list.drain(..).map(Ready::from));
                self.0 = List::Many(list);
            }
        }
    }
}

impl From<Waiter> for Ready {
    fn from(waiter: Waiter) -> Ready {
        match waiter {
            Waiter::Task(waker) => Ready::Wake(waker),
            Waiter::Parked(key) => Ready::Retry(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drained(waiters: &mut Waiters) -> Vec<Ready> {
        let mut out = Vec::new();
        waiters.drain_into(&mut out);
        out
    }

    #[test]
    fn one_waiter_stays_inline_and_the_slot_stays_small() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut waiters = Waiters::default();
        assert!(waiters.is_empty());
        waiters.add_task(&waker);
        waiters.add_task(&waker);
        assert!(
            matches!(waiters.0, List::One(_)),
            "one task, one inline entry"
        );
        // Three of these sit in every fd's slot: no larger than the `Vec` they replaced.
        assert!(std::mem::size_of::<Waiters>() <= std::mem::size_of::<Vec<Waiter>>());
        let out = drained(&mut waiters);
        assert_eq!(out.len(), 1);
        assert!(waiters.is_empty());
        for ready in out {
            if let Ready::Wake(w) = ready {
                w.wake();
            }
        }
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn many_waiters_drain_in_order_and_each_task_once() {
        let a = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let b = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut waiters = Waiters::default();
        waiters.add_parked(7);
        waiters.add_task(&a);
        waiters.add_task(&b);
        waiters.add_task(&a);
        waiters.add_parked(9);
        let out = drained(&mut waiters);
        assert!(waiters.is_empty());
        let shape: Vec<String> = out
            .iter()
            .map(|r| match r {
                Ready::Wake(w) if w.will_wake(&a) => "a".to_owned(),
                Ready::Wake(w) if w.will_wake(&b) => "b".to_owned(),
                Ready::Wake(_) => "?".to_owned(),
                Ready::Retry(key) => key.to_string(),
            })
            .collect();
        assert_eq!(shape, ["7", "a", "b", "9"]);
        // The emptied list takes new waiters again.
        waiters.add_task(&b);
        assert!(!waiters.is_empty());
        assert_eq!(drained(&mut waiters).len(), 1);
        assert!(drained(&mut waiters).is_empty());
    }
}
