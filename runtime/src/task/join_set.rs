//! `JoinSet`: a set of spawned tasks, awaited in the order they finish.
//!
//! # How it works
//!
//! - Each task's future is wrapped in `Tracked`, which owns a `DoneGuard` over the entry's
//!   `EntryWaker`: when the future is dropped (it completed, panicked, was aborted, or its worker
//!   shut down), the guard sets `done` and wakes the entry.
//! - An entry is finished when its `JoinHandle` has returned its result *and* `done` is set.
//!   async-task drops a future before it publishes the output, so for a task that completed or
//!   panicked both hold together; an aborted task's handle reports the cancellation at once, and
//!   `done` follows when its worker has dropped the future. Waiting for `done` is what makes
//!   [`JoinSet::shutdown`] return only once every future is gone, as tokio's does.
//! - An entry's waker pushes the entry's slab index onto `Notify::ready` (once until the entry
//!   is polled again: `queued`) and wakes the set's own waker; `join_next` polls only the
//!   entries on that list. A new entry starts queued. An index on the list may be stale (its
//!   entry was removed, or replaced by a new one): polling an entry needlessly is harmless.
//!
//! # Invariants
//!
//! - A `JoinHandle` is never polled again once it returned `Ready`: its result moves into
//!   `Entry::output` and the entry is removed as soon as `done` is set.
//! - `Notify` is locked only for short sections that run no waker code: wakers taken out of
//!   it (or replaced in it) are woken or dropped after the lock is released.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use pin_project_lite::pin_project;
use slab::Slab;

use crate::executor::{JoinError, JoinHandle};

/// A collection of tasks spawned on the runtime, awaited in the order they finish, with
/// tokio's `JoinSet` API.
///
/// [`spawn`](JoinSet::spawn) runs a task on the current worker (its future need not be
/// `Send`); [`spawn_on`](JoinSet::spawn_on) runs it on another worker.
/// [`join_next`](JoinSet::join_next) waits for the next task to finish. Dropping the set aborts
/// every task still in it; [`detach_all`](JoinSet::detach_all) lets them run on instead.
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use runtime::task::JoinSet;
///
/// let mut set = JoinSet::new();
/// for ms in [30u64, 10, 20] {
///     set.spawn(async move {
///         runtime::time::sleep(Duration::from_millis(ms)).await;
///         ms
///     });
/// }
/// let mut order = Vec::new();
/// while let Some(res) = set.join_next().await {
///     order.push(res.unwrap());
/// }
/// assert_eq!(order, [10, 20, 30]);
/// # });
/// ```
pub struct JoinSet<T> {
    entries: Slab<Entry<T>>,
    shared: Arc<Shared>,
}

struct Entry<T> {
    handle: Arc<JoinHandle<T>>,
    state: Arc<EntryWaker>,
    /// `state` as a `Waker`, made once.
    waker: Waker,
    /// What the handle returned, kept until `done` is set.
    output: Option<Result<T, JoinError>>,
}

#[derive(Default)]
struct Shared {
    notify: Mutex<Notify>,
}

#[derive(Default)]
struct Notify {
    /// Entries woken since they were last polled.
    ready: Vec<usize>,
    /// The waker of the task waiting in `join_next`.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Notify> {
        // Nothing that can panic runs under the lock; a poisoned lock still holds valid data.
        self.notify.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One entry's waker, and the flag its task's `DoneGuard` sets.
struct EntryWaker {
    shared: Arc<Shared>,
    index: usize,
    /// On `ready` and not polled since.
    queued: AtomicBool,
    /// The task's future has been dropped.
    done: AtomicBool,
}

impl Wake for EntryWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let waker = {
            let mut notify = self.shared.lock();
            notify.ready.push(self.index);
            notify.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Sets its entry's `done` flag when the task's future is dropped.
struct DoneGuard(Arc<EntryWaker>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.wake_by_ref();
    }
}

pin_project! {
    /// A task's future in a set. Fields drop in order: the future, then the guard.
    struct Tracked<F> {
        #[pin]
        inner: F,
        _done: DoneGuard,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<T: 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            entries: Slab::new(),
            shared: Arc::new(Shared::default()),
        }
    }

    /// Number of tasks in the set, including finished ones not yet returned by
    /// [`join_next`](JoinSet::join_next).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Spawns `task` on the current worker (as [`crate::spawn`]: it need not be `Send`) and
    /// adds it to the set. The returned handle aborts it without removing it from the set.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub fn spawn<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = T> + 'static,
    {
        self.insert(|done| {
            crate::spawn(Tracked {
                inner: task,
                _done: done,
            })
        })
    }

    /// Spawns `task` on worker `worker` (as [`crate::spawn_on`]) and adds it to the set.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime, or if `worker >= worker_count()`.
    pub fn spawn_on<F>(&mut self, worker: usize, task: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        self.insert(|done| {
            crate::spawn_on_with(worker, move || Tracked {
                inner: task,
                _done: done,
            })
        })
    }

    /// Runs the future that `make` creates on worker `worker` (as [`crate::spawn_on_with`]:
    /// the future is created there, so it need not be `Send`) and adds it to the set.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime, or if `worker >= worker_count()`.
    pub fn spawn_on_with<M, F>(&mut self, worker: usize, make: M) -> AbortHandle
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send,
    {
        self.insert(|done| {
            crate::spawn_on_with(worker, move || Tracked {
                inner: make(),
                _done: done,
            })
        })
    }

    fn insert(&mut self, spawn: impl FnOnce(DoneGuard) -> JoinHandle<T>) -> AbortHandle {
        let slot = self.entries.vacant_entry();
        let index = slot.key();
        let state = Arc::new(EntryWaker {
            shared: self.shared.clone(),
            index,
            queued: AtomicBool::new(true),
            done: AtomicBool::new(false),
        });
        let handle = Arc::new(spawn(DoneGuard(state.clone())));
        slot.insert(Entry {
            handle: handle.clone(),
            waker: Waker::from(state.clone()),
            state,
            output: None,
        });
        // Polled once by the next `join_next`, which registers the entry's waker.
        self.shared.lock().ready.push(index);
        AbortHandle { task: handle }
    }

    /// Waits for the next task to finish and returns its result: `Ok(output)`, or a
    /// [`JoinError`] if it panicked or was aborted. Returns `None` when the set is empty.
    ///
    /// Cancel-safe: dropping the future loses no result, and the next call returns it.
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// Polls for the next finished task: `Ready(None)` when the set is empty, `Pending` (with
    /// `cx`'s waker registered) while no task has finished.
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        if self.entries.is_empty() {
            return Poll::Ready(None);
        }
        let replaced = {
            let mut notify = self.shared.lock();
            match &notify.waker {
                Some(waker) if waker.will_wake(cx.waker()) => None,
                _ => notify.waker.replace(cx.waker().clone()),
            }
        };
        // Dropped after the lock: a waker's destructor may run any code.
        drop(replaced);
        match self.next_finished() {
            Some(res) => Poll::Ready(Some(res)),
            None => Poll::Pending,
        }
    }

    /// Returns the result of a task that has already finished, without waiting: `None` when no
    /// task has finished yet (or the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        if self.entries.is_empty() {
            return None;
        }
        self.next_finished()
    }

    /// Polls the woken entries until one is finished.
    fn next_finished(&mut self) -> Option<Result<T, JoinError>> {
        let ready = std::mem::take(&mut self.shared.lock().ready);
        let mut ready = ready.into_iter();
        while let Some(index) = ready.next() {
            if let Some(res) = self.poll_entry(index) {
                let rest: Vec<usize> = ready.collect();
                if !rest.is_empty() {
                    self.shared.lock().ready.extend(rest);
                }
                return Some(res);
            }
        }
        None
    }

    fn poll_entry(&mut self, index: usize) -> Option<Result<T, JoinError>> {
        let entry = self.entries.get_mut(index)?;
        // Cleared before looking: a wake from now on queues the entry again.
        entry.state.queued.store(false, Ordering::Release);
        if entry.output.is_none()
            && let Poll::Ready(res) = entry
                .handle
                .poll_join(&mut Context::from_waker(&entry.waker))
        {
            entry.output = Some(res);
        }
        if entry.output.is_some() && entry.state.done.load(Ordering::Acquire) {
            return self.entries.remove(index).output;
        }
        None
    }

    /// Aborts every task in the set. They stay in it: [`join_next`](JoinSet::join_next)
    /// returns each one's result, a cancellation error unless it had already finished.
    pub fn abort_all(&mut self) {
        for (_, entry) in &self.entries {
            entry.handle.abort();
        }
    }

    /// Removes every task from the set without aborting it: they run on, detached.
    pub fn detach_all(&mut self) {
        self.entries.clear();
        self.shared.lock().ready.clear();
    }

    /// Aborts every task and waits until each one's future has been dropped, leaving the set
    /// empty.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }

    /// Waits for every task and returns their outputs, in the order they finished.
    ///
    /// # Panics
    ///
    /// Resumes the panic of a task that panicked (the other tasks are aborted when the set is
    /// dropped), and panics if a task was aborted, as tokio's `join_all` does. Use
    /// [`join_next`](JoinSet::join_next) to handle those cases.
    pub async fn join_all(mut self) -> Vec<T> {
        let mut outputs = Vec::with_capacity(self.len());
        while let Some(res) = self.join_next().await {
            match res {
                Ok(output) => outputs.push(output),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("`JoinSet::join_all`: {e}"),
            }
        }
        outputs
    }
}

impl<T: 'static> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        for (_, entry) in &self.entries {
            entry.handle.abort();
        }
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.entries.len())
            .finish()
    }
}

/// Aborts one task of a [`JoinSet`] ([`JoinSet::spawn`] returns it), like tokio's
/// `AbortHandle`. Aborting does not remove the task from its set: `join_next` reports it as
/// cancelled (unless it had already finished).
///
/// Unlike tokio's, it is not `Send`: it stays on the thread of the set it came from.
#[derive(Clone)]
pub struct AbortHandle {
    task: Arc<dyn Abort>,
}

/// What an `AbortHandle` needs of a `JoinHandle<T>`, whatever `T`.
trait Abort {
    fn abort(&self);
    fn is_finished(&self) -> bool;
}

impl<T> Abort for JoinHandle<T> {
    fn abort(&self) {
        JoinHandle::abort(self);
    }

    fn is_finished(&self) -> bool {
        JoinHandle::is_finished(self)
    }
}

impl AbortHandle {
    /// Cancels the task, as [`JoinHandle::abort`]. A task that already finished keeps its
    /// output.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (completed, panicked or been aborted).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
