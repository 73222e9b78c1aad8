//! Channels between tasks, on one worker or across workers.
//!
//! These are the `async-channel` crate's channels, re-exported: multi-producer,
//! multi-consumer, bounded (backpressure: `send` waits when full) or unbounded, usable from
//! any thread. A well-kept crate does this better than code written here would: its queue is
//! lock-free (`concurrent-queue`) and its wake-ups (`event-listener`) are the product of years
//! of scrutiny. The runtime adds nothing but the wake path: a receiver woken from another
//! worker is kicked with `IORING_OP_MSG_RING` (or its eventfd), so no wake-up is lost while its
//! worker sleeps in `io_uring_enter`.
//!
//! ```
//! # let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
//! # rt.block_on(async {
//! let (tx, rx) = runtime::channel::bounded::<u64>(64);
//! let producer = runtime::spawn_on(1, async move {
//!     for i in 0..100 {
//!         tx.send(i).await.unwrap();
//!     }
//! });
//! let mut sum = 0;
//! while let Ok(v) = rx.recv().await {
//!     sum += v;
//! }
//! producer.await.unwrap();
//! assert_eq!(sum, 4950);
//! # });
//! ```

pub use async_channel::{
    Receiver, RecvError, SendError, Sender, TryRecvError, TrySendError, bounded, unbounded,
};
