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
//! - [`spawn`], [`JoinHandle`], [`yield_now`]: tasks.
//! - [`time`]: sleep, timeout, interval.
//! - [`op`]: the operation layer sockets and other I/O types are built on.
//! - [`capabilities`], [`metrics`]: what the kernel offered, and counters.

pub mod buf;
mod builder;
mod capabilities;
pub mod channel;
mod context;
pub mod coop;
mod driver;
mod executor;
mod mmap;
pub mod op;
mod runtime;
pub mod signal;
pub mod time;
mod wait_list;
mod wake;
mod workers;
pub mod zcrx;

pub use builder::Builder;
pub use capabilities::Capabilities;
pub use driver::RingMode;
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
pub use runtime::{Metrics, Runtime, capabilities, metrics};
pub use workers::{
    on_each_worker, shutdown_requested, spawn_on, spawn_on_with, worker_count, worker_id,
};
