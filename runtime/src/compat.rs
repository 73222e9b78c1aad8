//! hyper 1.x on this runtime (feature `hyper`): [`HyperExecutor`] spawns what hyper runs in
//! the background (HTTP/2 streams, client connections) on the current worker, and
//! [`HyperTimer`] gives hyper its timeouts (header read timeout, HTTP/2 keep-alive) from this
//! runtime's timers.
//!
//! ```ignore
//! // hyper-util's `TokioIo` carries a `net::compat::Compat` stream (feature `tokio-io` of `net`).
//! let io = hyper_util::rt::TokioIo::new(stream.compat());
//! hyper::server::conn::http1::Builder::new()
//!     .timer(runtime::compat::HyperTimer::default())
//!     .serve_connection(io, service)
//!     .await?;
//! ```
//!
//! The futures hyper hands to the executor need not be `Send`: they run on the thread that
//! spawned them, like every task here.

use std::{
    fmt,
    future::Future,
    mem::ManuallyDrop,
    pin::Pin,
    task::{Context, Poll},
    thread::{self, ThreadId},
    time::{Duration, Instant},
};

use crate::time::Sleep;

/// `hyper::rt::Executor`: spawns each future on the current worker ([`spawn`](crate::spawn))
/// and detaches it.
///
/// # Panics
///
/// `execute` panics when called outside a runtime, as [`spawn`](crate::spawn) does.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperExecutor;

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        drop(crate::spawn(fut));
    }
}

/// `hyper::rt::Timer`: sleeps on this runtime's timers.
///
/// hyper requires its sleeps to be `Send + Sync`, but this runtime's timers belong to one
/// thread. A [`HyperSleep`] therefore remembers the thread that made it and touches its timer
/// only there; hyper polls it in the connection's task, which never leaves its thread.
///
/// # Panics
///
/// `sleep` and `sleep_until` panic when called outside a runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep::new(crate::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep::new(crate::time::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(mut ours) if ours.on_owner() => ours.sleep.reset(new_deadline),
            _ => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A [`HyperTimer`] sleep: a [`Sleep`] that is `Send + Sync` because only the thread that made
/// it touches it.
///
/// # Invariant
///
/// `sleep` (which holds the runtime's thread-local handle) is polled, reset and dropped only on
/// `owner`. Polled on another thread, it panics; dropped there, it leaks its timer entry,
/// which then fires once, harmlessly, on its own thread.
pub struct HyperSleep {
    sleep: ManuallyDrop<Sleep>,
    owner: ThreadId,
}

impl HyperSleep {
    fn new(sleep: Sleep) -> HyperSleep {
        HyperSleep {
            sleep: ManuallyDrop::new(sleep),
            owner: thread::current().id(),
        }
    }

    fn on_owner(&self) -> bool {
        thread::current().id() == self.owner
    }
}

// SAFETY: `sleep` is touched only on `owner` (see the invariant): `poll` and `reset` check the
// thread first, and `drop` leaks it elsewhere. Moving the value to another thread moves only
// bytes; nothing of the handle is read or written there.
unsafe impl Send for HyperSleep {}

// SAFETY: no method reads `sleep` through a shared reference; `&HyperSleep` gives access to
// `owner` only, which is `Sync`.
unsafe impl Sync for HyperSleep {}

impl Future for HyperSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        assert!(
            this.on_owner(),
            "a runtime::compat::HyperSleep was polled on another thread than the runtime \
             worker that made it: give hyper a HyperTimer only on this runtime's workers"
        );
        Pin::new(&mut *this.sleep).poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

impl Drop for HyperSleep {
    fn drop(&mut self) {
        if self.on_owner() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.sleep) };
        }
    }
}

impl fmt::Debug for HyperSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("HyperSleep");
        if self.on_owner() {
            s.field("deadline", &self.sleep.deadline());
        }
        s.finish_non_exhaustive()
    }
}
