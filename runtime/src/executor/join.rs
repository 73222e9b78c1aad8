//! `JoinHandle` and `JoinError`, with tokio's semantics: awaiting yields
//! `Result<T, JoinError>`, dropping detaches, `abort` cancels.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Mutex, MutexGuard},
    task::{Context, Poll, ready},
};

use super::spawn::Panic;

type Inner<T> = async_task::FallibleTask<Result<T, Panic>>;

/// An owned permission to await a spawned task's output.
///
/// Dropping it detaches the task, which keeps running. Awaiting it yields `Ok(output)`, or a
/// [`JoinError`] when the task panicked or was cancelled (by [`abort`](JoinHandle::abort) or
/// because its runtime shut down).
pub struct JoinHandle<T> {
    state: Mutex<State<T>>,
}

enum State<T> {
    /// The task has not been awaited to completion.
    Running(Inner<T>),
    /// `abort` dropped the task handle, which cancels the task.
    Aborted,
    /// The output was handed out.
    Taken,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: async_task::Task<Result<T, Panic>>) -> Self {
        JoinHandle {
            state: Mutex::new(State::Running(task.fallible())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels the task. Its future is dropped on the runtime's thread (at once if the task is
    /// idle, otherwise when its current poll returns) and awaiting this handle yields a
    /// cancellation error. A task that has already completed keeps its output.
    ///
    /// May be called from any thread.
    pub fn abort(&self) {
        let mut state = self.lock();
        if matches!(&*state, State::Running(task) if !task.is_finished()) {
            // Dropping an async-task handle cancels the task; the future itself is dropped by
            // the executor on the task's own thread.
            let aborted = std::mem::replace(&mut *state, State::Aborted);
            drop(state);
            drop(aborted);
        }
    }

    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        match &*self.lock() {
            State::Running(task) => task.is_finished(),
            State::Aborted | State::Taken => true,
        }
    }
}

impl<T> JoinHandle<T> {
    /// Polls for the output through a shared reference (the state is behind a lock), for
    /// owners that share the handle with an `AbortHandle` (`JoinSet`).
    ///
    /// # Panics
    ///
    /// Panics when polled again after it returned `Ready`.
    pub(crate) fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let mut state = self.lock();
        let task = match &mut *state {
            State::Running(task) => task,
            State::Aborted => {
                *state = State::Taken;
                return Poll::Ready(Err(JoinError::Cancelled));
            }
            State::Taken => panic!("`JoinHandle` polled after it completed"),
        };
        let output = ready!(Pin::new(task).poll(cx));
        *state = State::Taken;
        Poll::Ready(match output {
            Some(Ok(value)) => Ok(value),
            Some(Err(panic)) => Err(JoinError::Panic(panic)),
            None => Err(JoinError::Cancelled),
        })
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_join(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let State::Running(task) = std::mem::replace(state, State::Taken) {
            task.detach();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task produced no output.
pub enum JoinError {
    /// The task panicked; the payload is the panic's value.
    Panic(Box<dyn std::any::Any + Send + 'static>),
    /// The task was aborted, or its runtime shut down before it completed.
    Cancelled,
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panic(_))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// The panic payload, to resume the panic with `std::panic::resume_unwind`.
    ///
    /// # Panics
    ///
    /// Panics if the task was cancelled rather than panicking.
    pub fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        match self {
            JoinError::Panic(payload) => payload,
            JoinError::Cancelled => panic!("`JoinError::into_panic` called on a cancelled task"),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panic(p) => p
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str)),
            JoinError::Cancelled => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panic(_) => match self.panic_message() {
                Some(msg) => write!(f, "task panicked with message {msg:?}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
}
