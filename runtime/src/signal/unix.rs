//! Unix signals as streams: [`signal`] returns a [`Signal`] that yields once per delivery (or
//! per burst of deliveries) of one [`SignalKind`], with tokio's `tokio::signal::unix` API.
//!
//! ```no_run
//! use runtime::signal::unix::{SignalKind, signal};
//!
//! # runtime::Runtime::new().unwrap().block_on(async {
//! let mut hangup = signal(SignalKind::hangup()).unwrap();
//! while hangup.recv().await.is_some() {
//!     println!("SIGHUP: reloading the configuration");
//! }
//! # });
//! ```

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use super::registry;

/// Which signal to listen for: one of the named constructors, or any number with
/// [`from_raw`](SignalKind::from_raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalKind(libc::c_int);

impl SignalKind {
    /// The signal numbered `signum`, e.g. a real-time signal `libc::SIGRTMIN() + 1`.
    /// [`signal`] rejects numbers that cannot be handled.
    pub const fn from_raw(signum: libc::c_int) -> SignalKind {
        SignalKind(signum)
    }

    /// The signal's number.
    pub const fn as_raw_value(&self) -> libc::c_int {
        self.0
    }

    /// `SIGALRM`: a timer set with `alarm(2)` expired.
    pub const fn alarm() -> SignalKind {
        SignalKind(libc::SIGALRM)
    }

    /// `SIGCHLD`: a child process stopped or exited.
    pub const fn child() -> SignalKind {
        SignalKind(libc::SIGCHLD)
    }

    /// `SIGHUP`: the terminal hung up; daemons take it as "reload the configuration".
    pub const fn hangup() -> SignalKind {
        SignalKind(libc::SIGHUP)
    }

    /// `SIGINT`: Ctrl-C in the terminal.
    pub const fn interrupt() -> SignalKind {
        SignalKind(libc::SIGINT)
    }

    /// `SIGIO`: I/O is possible on a file set up with `O_ASYNC`.
    pub const fn io() -> SignalKind {
        SignalKind(libc::SIGIO)
    }

    /// `SIGPIPE`: a write to a pipe or socket whose reader is gone. The `net` crate's sockets
    /// never raise it (they send with `MSG_NOSIGNAL`).
    pub const fn pipe() -> SignalKind {
        SignalKind(libc::SIGPIPE)
    }

    /// `SIGQUIT`: Ctrl-\ in the terminal.
    pub const fn quit() -> SignalKind {
        SignalKind(libc::SIGQUIT)
    }

    /// `SIGTERM`: a polite request to exit (what `kill` and service managers send).
    pub const fn terminate() -> SignalKind {
        SignalKind(libc::SIGTERM)
    }

    /// `SIGUSR1`: application-defined.
    pub const fn user_defined1() -> SignalKind {
        SignalKind(libc::SIGUSR1)
    }

    /// `SIGUSR2`: application-defined.
    pub const fn user_defined2() -> SignalKind {
        SignalKind(libc::SIGUSR2)
    }

    /// `SIGWINCH`: the terminal's window size changed.
    pub const fn window_change() -> SignalKind {
        SignalKind(libc::SIGWINCH)
    }

    /// The signal's name (`SIGTERM`), or its number for others (`signal 40`).
    fn name(self) -> String {
        let name = match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGIO => "SIGIO",
            n => return format!("signal {n}"),
        };
        format!("{name} ({})", self.0)
    }

    /// The signal's index in the registry, or why it cannot be handled.
    fn check(self) -> io::Result<usize> {
        let n = self.0;
        let refuse = |why: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} cannot be listened for: {why}", self.name()),
            ))
        };
        match n {
            libc::SIGKILL | libc::SIGSTOP => refuse(
                "the kernel never lets a process catch it; handle SIGTERM (or SIGTSTP) instead",
            ),
            libc::SIGSEGV | libc::SIGILL | libc::SIGFPE | libc::SIGBUS => refuse(
                "it reports a fault of the instruction the thread is running, which must be \
                 handled synchronously (a handler returning to the faulting instruction \
                 faults again); let the default action end the process",
            ),
            _ if n < 1 || n > libc::SIGRTMAX() || n as usize >= registry::SIGNALS => {
                refuse("it is not a signal number of Linux (1 to SIGRTMAX, 64)")
            }
            _ if n > libc::SIGSYS && n < libc::SIGRTMIN() => refuse(
                "the C library reserves it for its threads (real-time signals start at \
                 libc::SIGRTMIN())",
            ),
            _ => Ok(n as usize),
        }
    }
}

impl From<libc::c_int> for SignalKind {
    fn from(signum: libc::c_int) -> SignalKind {
        SignalKind::from_raw(signum)
    }
}

impl From<SignalKind> for libc::c_int {
    fn from(kind: SignalKind) -> libc::c_int {
        kind.0
    }
}

/// Starts listening for `kind`: the returned [`Signal`] sees every delivery from now on.
///
/// The first call for a kind installs a handler for it in the whole process, replacing the
/// signal's previous disposition (for `SIGINT`, `SIGTERM` and most others: terminating the
/// process) for good, as tokio does: a process that listens for `SIGTERM` must exit on its
/// own when it arrives. Deliveries that no `Signal` is listening for are dropped.
///
/// # Errors
///
/// `InvalidInput` for the signals that cannot be handled this way (`SIGKILL`, `SIGSTOP`,
/// `SIGSEGV`, `SIGILL`, `SIGFPE`, `SIGBUS`, numbers Linux does not have, and those the C
/// library reserves), with a message that says why; and the OS error if the eventfd or the
/// handler cannot be set up.
pub fn signal(kind: SignalKind) -> io::Result<Signal> {
    let index = kind.check()?;
    registry::install(index, &kind.name())?;
    Ok(Signal {
        kind,
        index,
        seen: registry::deliveries(index),
        waiter: registry::add_waiter(),
    })
}

/// A stream of deliveries of one signal ([`signal`] creates it).
///
/// [`recv`](Signal::recv) completes once for each delivery after the `Signal` was created;
/// deliveries that come while nobody calls `recv` are coalesced into one, as in tokio. Every
/// `Signal` of a kind, on any worker, sees each delivery.
///
/// Polling it needs a runtime: the wait is an io_uring read of the signal eventfd in the
/// polling worker's ring (one per worker, whatever the number of `Signal`s waiting there). It
/// is `Send`, and a [`futures_core::Stream`] of `()`.
pub struct Signal {
    kind: SignalKind,
    index: usize,
    /// The kind's delivery count at creation or at the last report.
    seen: u64,
    /// This `Signal`'s entry in the registry's waiters.
    waiter: usize,
}

impl Signal {
    /// Waits for the next delivery. Returns `Some(())`; the `Option` is there for tokio's
    /// signature (whose `None` means its driver is gone, which cannot happen here).
    ///
    /// Cancel-safe: a delivery is never lost by dropping the future; the next `recv` reports it.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub async fn recv(&mut self) -> Option<()> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next delivery (see [`recv`](Signal::recv)).
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.take_delivery() {
            return Poll::Ready(Some(()));
        }
        registry::set_waker(self.waiter, Some(cx.waker()));
        // A delivery between the check above and the registration woke nobody: look again.
        if self.take_delivery() {
            registry::set_waker(self.waiter, None);
            return Poll::Ready(Some(()));
        }
        // Woken by `wake_all` when this worker's (or any worker's) read takes the count.
        registry::arm();
        Poll::Pending
    }

    /// Whether a delivery happened since the last report, marking it seen.
    fn take_delivery(&mut self) -> bool {
        let now = registry::deliveries(self.index);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        registry::remove_waiter(self.waiter);
    }
}

impl futures_core::Stream for Signal {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.get_mut().poll_recv(cx)
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("kind", &self.kind)
            .field("seen", &self.seen)
            .finish()
    }
}
