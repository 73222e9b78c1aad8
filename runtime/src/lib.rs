//! A thread-per-core, completion-based async runtime for Linux, built on io_uring.
//!
//! Each runtime owns one io_uring and one single-threaded task queue on one thread. Futures are
//! driven by completions: an operation is an SQE, and its CQE wakes the task that awaits it.
//! There is no readiness (epoll) loop underneath.
//!
//! ```
//! use std::time::Duration;
//!
//! #[runtime::main]
//! async fn main() {
//!     let task = runtime::spawn(async {
//!         runtime::time::sleep(Duration::from_millis(1)).await;
//!         "done"
//!     });
//!     assert_eq!(task.await.unwrap(), "done");
//! }
//! ```
//!
//! # Soundness invariants (overview)
//!
//! - Memory and fds the kernel may touch are owned by the operation (see [`op::OpCode`]) and
//!   freed only after the operation's final CQE, even when its future is dropped early or the
//!   runtime shuts down; if the kernel does not finish in bounded time, they are leaked.
//! - A CQE is delivered only to the operation that submitted it (`user_data` carries a slot
//!   index and a generation), and an operation may receive many CQEs (multishot, zero-copy).
//! - The runtime, its tasks and its operations stay on one thread; only wakers cross threads,
//!   through a queue and an eventfd read kept armed in the ring.
//! - No SQE is ever dropped (a full SQ is flushed or backlogged) and no CQE is ever lost
//!   (overflow is flushed with a `GETEVENTS` enter).
//!
//! # Crate layout
//!
//! - [`Builder`], [`Runtime`], [`RingMode`]: creating and running a runtime.
//! - [`spawn`], [`JoinHandle`], [`yield_now`]: tasks; [`task`]: the same under tokio's module
//!   names, and [`task::JoinSet`].
//! - [`select!`]: wait on several futures, take the first (tokio's macro).
//! - [`sync`]: channels, locks, semaphores (tokio's `sync` module); [`channel`]: MPMC channels.
//! - [`signal`]: `ctrl_c` and Unix signals as streams.
//! - [`time`]: sleep, timeout, interval.
//! - [`op`]: the operation layer sockets and other I/O types are built on.
//! - [`capabilities`], [`metrics`]: what the kernel offered, and counters.
//! - `compat` (feature `hyper`): hyper 1.x's executor and timer on this runtime.
//!
//! # Layers
//!
//! No layer imports from a layer above it, and no module imports one that imports it back
//! (`tests/layers.rs` checks the cycles and the driver's imports):
//!
//! 1. The driver (`driver/`): the ring, the op table with one `Lifecycle` per operation,
//!    submit, reap, CQ-overflow flush, cancellation, the shutdown drain, cross-ring kicks,
//!    ring setup and the probe. It runs without a `Runtime` (its tests do).
//! 2. Operations ([`op`]), buffers ([`buf`]), zero-copy receive ([`zcrx`]), timers
//!    ([`time`]) and the cooperative budget ([`coop`]): each holds the one piece of the
//!    running runtime it needs (an operation or a pool its driver, a sleep its timers), found
//!    through that layer's own thread-local slot.
//! 3. The executor (`executor/`: tasks, the per-thread context, the worker group) and the
//!    cross-thread wake-ups (`wake/`).
//! 4. [`Runtime`] (the event loop) and [`Builder`], which assemble the layers.

mod backend;
pub mod buf;
mod builder;
mod capabilities;
pub mod channel;
#[cfg(feature = "hyper")]
pub mod compat;
pub mod coop;
mod current;
pub mod direct;
mod driver;
mod executor;
mod mmap;
pub mod op;
mod runtime;
pub mod signal;
pub mod sync;
pub mod task;
pub mod time;
mod wait_list;
mod wake;
pub mod zcrx;

pub use backend::{BACKEND_ENV, Backend};
pub use builder::Builder;
pub use capabilities::Capabilities;
pub use driver::RingMode;
pub use executor::workers::{
    on_each_worker, shutdown_requested, spawn_on, spawn_on_with, worker_count, worker_id,
};
pub use executor::{JoinError, JoinHandle, spawn, yield_now};
/// Runs an `async fn main` on a new runtime: `#[runtime::main]` or
/// `#[runtime::main(entries = 1024)]`.
///
/// Accepted arguments: `threads = N` or `threads = "auto"` ([`Builder::worker_threads`]; the
/// function runs on worker 0; the default is one worker), `entries = N` ([`Builder::entries`]), `cq_entries = N`
/// ([`Builder::cq_entries`]), `crate = "path"` (where this crate is, when renamed). If the runtime
/// cannot be built, the error is printed and the process exits with status 1.
///
/// ```compile_fail
/// #[runtime::main]
/// fn main() {} // error: the function must be `async`
/// ```
///
/// ```compile_fail
/// #[runtime::main(bogus = 1)]
/// async fn main() {} // error: unknown argument
/// ```
pub use macros::main;
/// Runs an `async fn` test on a new runtime: `#[runtime::test]`, with the same arguments as
/// [`main`]. A runtime that cannot be built fails the test with its error.
pub use macros::test;
pub use runtime::{Metrics, Runtime, capabilities, metrics, submit_now};

/// Waits on several futures at once and runs the branch of the first to complete, dropping the
/// others: tokio's `select!`, re-exported unchanged (it needs no tokio runtime).
///
/// The syntax is tokio's: `pattern = future, if guard => handler,` per branch, an optional
/// `else => handler` taken when every branch is disabled (by its guard, or because its
/// pattern did not match), and `biased;` as the first line to poll the branches in order
/// instead of from a random start (tokio's thread-local generator; the default, for fairness).
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
///
/// let (tx, mut rx) = runtime::sync::mpsc::channel::<u32>(4);
/// runtime::spawn(async move { tx.send(7).await.unwrap() });
/// let got = runtime::select! {
///     Some(v) = rx.recv() => v,
///     _ = runtime::time::sleep(Duration::from_secs(5)) => 0,
/// };
/// assert_eq!(got, 7);
/// # });
/// ```
///
/// # What happens to an operation in a losing branch
///
/// It is dropped, and dropping a runtime operation cancels it (see
/// "Dropping an operation" in `docs/cancellation.md` of this repository):
///
/// - If it was already submitted, an `IORING_OP_ASYNC_CANCEL` is queued for it and its
///   buffer is parked in the driver until the kernel's final completion, then freed: **the
///   buffer does not come back**, so the next operation needs a new one.
/// - A receive (`read`, `recv_from`, ...) that the kernel completed before the cancel took
///   effect does not lose its bytes: they are rescued into the socket and served, in order,
///   by the next read on it (UDP: the datagram is returned whole by the next receive).
/// - A TCP write or UDP send of up to 4 KiB had already finished when it was created
///   (written behind), so dropping it cancels nothing. A larger write may have sent part of its
///   bytes, and you do not learn how many.
///
/// To keep the buffer (and learn how much a write moved), bound a single operation with
/// [`op::CancelExt`] (`.timeout(d)`, `.cancel_on(fut)`) instead of racing it in `select!`.
/// A branch future created outside a loop and selected on by reference (`&mut fut`) is not
/// dropped when it loses; it goes on in the next iteration.
pub use tokio::select;
