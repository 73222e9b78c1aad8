//! Signals as futures: [`ctrl_c`] and [`unix::signal`], with tokio's API.
//!
//! The first [`unix::signal`] for a kind installs a process-wide handler for it. The handler
//! does only async-signal-safe things: it adds one to the kind's delivery counter (an atomic)
//! and writes to an eventfd that lives for the rest of the process. Each worker with a waiting
//! [`unix::Signal`] keeps one io_uring read of that eventfd in flight in its ring, so waiting
//! costs no thread and works on any worker. Whichever read completes wakes every waiting
//! `Signal`, on every worker, and each one compares its kind's counter with the value it last
//! saw.
//!
//! # Invariants
//!
//! - A kind's handler is installed once and never removed; its counter only grows.
//! - A `Signal` reports a delivery when its kind's counter differs from the value it saw
//!   last (at creation, then at each report): it sees every delivery after its creation, with
//!   deliveries between two of its `recv` calls coalesced into one, as in tokio.
//! - A `Signal` registers its waker before it looks at its counter the second time, then makes
//!   sure its worker has a read armed; the reads are detached operations owned by no `Signal`
//!   (at most one per ring), and each one that takes the eventfd's count wakes every
//!   registered waiter, so no delivery is lost between a look and a wait.

mod registry;
pub mod unix;

use std::io;

/// Completes at the next Ctrl-C (`SIGINT`) after the future is first polled.
///
/// A thin wrapper of [`unix::signal`]`(SignalKind::interrupt())`: every `ctrl_c` future
/// waiting when Ctrl-C comes completes. The first call replaces the process's `SIGINT`
/// disposition (which would otherwise terminate it) for good, as tokio's `ctrl_c` does.
///
/// # Errors
///
/// Fails if the handler cannot be installed, or if the runtime shuts down while waiting.
///
/// # Panics
///
/// Panics outside a runtime.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// runtime::signal::ctrl_c().await.unwrap();
/// println!("shutting down");
/// # });
/// ```
pub async fn ctrl_c() -> io::Result<()> {
    let mut interrupt = unix::signal(unix::SignalKind::interrupt())?;
    match interrupt.recv().await {
        Some(()) => Ok(()),
        None => Err(io::Error::other(
            "stopped waiting for Ctrl-C: the runtime is shutting down",
        )),
    }
}
