//! Synchronisation between tasks: channels, locks, semaphores, notifications.
//!
//! Everything here is re-exported from the `tokio` crate's `sync` module, built with tokio's
//! `sync` feature alone: no tokio runtime, reactor or timer is compiled in or started. These
//! primitives depend on nothing but wakers, so they work on this runtime as they do on
//! tokio's, on one worker or across workers (a task woken from another worker is kicked
//! through its ring). A well-kept implementation does this better than code written here
//! would; the docs of each item are tokio's.
//!
//! | item | from | what |
//! |---|---|---|
//! | [`oneshot`] | `tokio::sync::oneshot` | one value, one sender, one receiver |
//! | [`mpsc`] | `tokio::sync::mpsc` | many senders, one receiver; `channel(n)` bounded (backpressure), `unbounded_channel()` |
//! | [`broadcast`] | `tokio::sync::broadcast` | many senders, many receivers, each receiver sees every value (slow ones lag) |
//! | [`watch`] | `tokio::sync::watch` | one value, many receivers notified of changes |
//! | [`Mutex`], [`RwLock`] | `tokio::sync` | locks whose guards may be held across `.await` |
//! | [`Semaphore`] | `tokio::sync` | a count of permits |
//! | [`Notify`] | `tokio::sync` | wake one or all waiting tasks |
//! | [`Barrier`] | `tokio::sync` | wait until `n` tasks arrive |
//! | [`OnceCell`] | `tokio::sync` | a value initialised once, asynchronously |
//!
//! tokio's cooperative budget is inactive outside a tokio runtime, so these never yield on
//! their own: a loop that only receives from a channel that is always ready should call
//! [`yield_now`](crate::yield_now) now and then to let other tasks run.
//!
//! [`crate::channel`] (the `async-channel` crate) stays available for a multi-producer,
//! *multi-consumer* queue.
//!
//! ```
//! # runtime::Runtime::new().unwrap().block_on(async {
//! use runtime::sync::{mpsc, oneshot};
//!
//! let (tx, mut rx) = mpsc::channel::<(u32, oneshot::Sender<u32>)>(8);
//! runtime::spawn(async move {
//!     while let Some((n, reply)) = rx.recv().await {
//!         let _ = reply.send(n * 2);
//!     }
//! });
//! let (reply, answer) = oneshot::channel();
//! tx.send((21, reply)).await.unwrap();
//! assert_eq!(answer.await.unwrap(), 42);
//! # });
//! ```

pub use tokio::sync::{
    AcquireError, Barrier, BarrierWaitResult, MappedMutexGuard, Mutex, MutexGuard, Notify,
    OnceCell, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, OwnedSemaphorePermit,
    RwLock, RwLockReadGuard, RwLockWriteGuard, Semaphore, SemaphorePermit, SetError,
    TryAcquireError, TryLockError, broadcast, mpsc, oneshot, watch,
};
