//! `spawn`: turning a future into a task on the current runtime.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    rc::{Rc, Weak},
    sync::Arc,
    task::{Context, Poll, Waker},
};

use pin_project_lite::pin_project;

use super::{JoinHandle, Task};
use crate::{
    executor::context::{self, Handle},
    wake::Remote,
};

/// Spawns a future onto the current thread's runtime and returns a handle to await its output.
///
/// The future need not be `Send`: it is polled only on this thread. It starts running on the
/// next turn of the event loop, whether or not the handle is awaited; dropping the handle
/// detaches the task. A panic inside the task is caught and reported through the handle.
///
/// # Panics
///
/// Panics when called outside a runtime.
///
/// # Examples
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let handle = runtime::spawn(async { 1 + 1 });
/// assert_eq!(handle.await.unwrap(), 2);
/// # });
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::current().spawn(future)
}

impl Handle {
    pub(crate) fn spawn<F>(self: &Rc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let remote = self.remote.clone();
        let guard = ActiveGuard::register(self, Waker::noop().clone());
        let index = guard.index;
        let future = TaskFuture {
            inner: future,
            _guard: guard,
        };
        let (task, join) = async_task::spawn_local(future, move |task| schedule(&remote, task));
        self.scheduler.set_waker(index, task.waker());
        if self.scheduler.is_closed() {
            // The runtime is shutting down: the future is dropped unpolled.
            drop(task);
        } else {
            self.scheduler.push(task);
        }
        JoinHandle::new(join)
    }
}

/// Where a woken task goes: the local queue when woken on its runtime's thread while that
/// runtime runs, the remote queue otherwise.
pub(crate) fn schedule(remote: &Arc<Remote>, task: Task) {
    let mut task = Some(task);
    context::with_runtime(remote.id, |handle| {
        if let Some(task) = task.take() {
            handle.scheduler.push(task);
        }
    });
    if let Some(task) = task {
        remote.push(task);
    }
}

/// A panic payload, as `std::panic::catch_unwind` returns it.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

pin_project! {
    /// The future a task runs: the user's future, with panics caught and the task registry
    /// entry removed when it is dropped.
    struct TaskFuture<F> {
        #[pin]
        inner: F,
        _guard: ActiveGuard,
    }
}

impl<F: Future> Future for TaskFuture<F> {
    type Output = Result<F::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_catching_panic(self.project().inner, cx)
    }
}

/// Polls a task's future, turning a panic into `Err(payload)` for its `JoinHandle`.
pub(crate) fn poll_catching_panic<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Panic>> {
    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// Keeps a task in its runtime's registry (and task count) while its future lives.
pub(crate) struct ActiveGuard {
    handle: Weak<Handle>,
    index: usize,
}

impl ActiveGuard {
    /// Registers the task whose waker is `waker`.
    pub(crate) fn register(handle: &Rc<Handle>, waker: Waker) -> ActiveGuard {
        let index = handle.scheduler.active.borrow_mut().insert(waker);
        handle.remote.task_started();
        ActiveGuard {
            handle: Rc::downgrade(handle),
            index,
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.upgrade() {
            handle.remote.task_ended();
            if let Ok(mut active) = handle.scheduler.active.try_borrow_mut() {
                active.try_remove(self.index);
            }
        }
    }
}
