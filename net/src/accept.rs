//! Accepting connections, shared by `TcpListener` and `UnixListener`: the backoff after
//! descriptor exhaustion, and the stream of accepted fds over multishot accept.
//!
//! # Invariants
//!
//! - Every socket the kernel accepted is owned (an `OwnedFd`, or a direct descriptor's slot)
//!   from its CQE on, so one that nobody takes (the stream was dropped, or the address could
//!   not be decoded) is closed; a slot through the ring.
//! - With a [`DirectTable`], connections are accepted into slots of the ring's file table
//!   (`IORING_FILE_INDEX_ALLOC`): by multishot while more than `MULTISHOT_MIN_FREE` slots are
//!   free, then one request at a time, each issued only while a slot is free. A full table
//!   issues nothing (the connections wait in the backlog): the caller gets
//!   [`runtime::direct::table_full_error`] and accepting backs off as after `EMFILE`. (An
//!   accept that finds no slot would take a connection only for the kernel to close it.)
//! - After `EMFILE`-class errors, accepting waits (10 ms doubling to 1 s, reset by a success),
//!   so a loop that retries on errors does not spin while the condition lasts.
//! - The multishot request is re-armed whenever the kernel ends it without an error that ends
//!   the stream; on kernels without multishot accept (`EINVAL` before any connection) the
//!   stream accepts one connection per request.

use std::{
    cell::Cell,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use futures_core::Stream;
use runtime::{
    direct::DirectTable,
    op::{Multishot, Op},
    time::Sleep,
};

use crate::{
    addr::RawAddr,
    op::{Accept, AcceptMulti},
    socket::Socket,
};

/// Delay before retrying after `EMFILE`-class errors: 10 ms doubling to 1 s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Whether an accept error means "out of descriptors or memory": retrying at once would
    /// fail the same way and spin.
    pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }

    pub(crate) fn failed(&mut self) {
        self.delay = if self.delay.is_zero() {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MAX)
        };
        self.until = Some(Instant::now() + self.delay);
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// One accept on `socket`: first waits out `backoff` if descriptors ran out before, then
/// accepts, and updates `backoff` (reset by a success, grown by an `EMFILE`-class error).
pub(crate) async fn accept_one(
    socket: &Socket,
    backoff: &Cell<Backoff>,
    direct: Option<DirectTable>,
) -> io::Result<(Socket, RawAddr)> {
    if let Some(until) = backoff.get().until() {
        runtime::time::sleep_until(until).await;
    }
    let is_direct = direct.is_some();
    if direct.as_ref().is_some_and(|t| t.free() == 0) {
        // An accept into a full table would take a connection from the backlog only for the
        // kernel to close it (`ENFILE`): leave it queued, and back off as after `EMFILE`.
        let mut b = backoff.get();
        b.failed();
        backoff.set(b);
        return Err(runtime::direct::table_full_error());
    }
    let res = Op::new(Accept::new(socket.clone(), direct)).await;
    let mut b = backoff.get();
    match &res {
        Ok(_) => b.succeeded(),
        Err(e) if Backoff::is_exhaustion(e) => b.failed(),
        Err(_) => {}
    }
    backoff.set(b);
    res.map_err(|e| explain(e, is_direct))
}

/// `ENFILE` from an accept into the file table means the table is full: say how to make room.
fn explain(e: io::Error, direct: bool) -> io::Error {
    if direct && e.raw_os_error() == Some(libc::ENFILE) {
        runtime::direct::table_full_error()
    } else {
        e
    }
}

/// Free slots at or below which a direct-descriptor stream stops using multishot accept: a
/// multishot request accepts every waiting connection in one go, and one that finds the table
/// full is closed by the kernel (`ENFILE` after the accept, `io_accept` in `io_uring/net.c`).
/// One-shot accepts, each issued only while a slot is free, lose none.
const MULTISHOT_MIN_FREE: u32 = 64;

/// Accepted connections, over one multishot accept request (see the module docs).
#[derive(Debug)]
pub(crate) struct AcceptStream {
    socket: Socket,
    /// The file table connections are accepted into, if any.
    direct: Option<DirectTable>,
    mode: Mode,
    backoff: Backoff,
    pause: Option<Sleep>,
    /// Set by an error after which re-arming is pointless.
    ended: bool,
    /// Whether the multishot request ever produced a connection (to tell "unsupported" from
    /// later errors).
    accepted_any: bool,
    /// The kernel refused multishot accept: one request per connection from then on.
    no_multishot: bool,
    /// This stream cancelled its multishot request (the table is filling up): its
    /// `ECANCELED` ends the request, not the stream.
    cancelling: bool,
}

#[derive(Debug)]
enum Mode {
    Multishot(Multishot<AcceptMulti>),
    /// One `Accept` at a time (kernels before 5.19, or a nearly full file table).
    Single(Option<Op<Accept>>),
}

impl AcceptStream {
    /// Accepts into new fds, or with `direct` into slots of that file table.
    pub(crate) fn new(socket: Socket, direct: Option<DirectTable>) -> AcceptStream {
        AcceptStream {
            mode: Mode::Multishot(Multishot::new(AcceptMulti::new(
                socket.clone(),
                direct.clone(),
            ))),
            socket,
            direct,
            backoff: Backoff::default(),
            pause: None,
            ended: false,
            accepted_any: false,
            no_multishot: false,
            cancelling: false,
        }
    }

    /// Classifies an error: ends the stream, pauses re-arming, or neither.
    fn on_error(&mut self, e: &io::Error) {
        if Backoff::is_exhaustion(e) {
            self.pause();
        } else if !matches!(
            e.raw_os_error(),
            Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO | libc::EPERM)
        ) {
            // ECANCELED (closed), EINVAL (not listening), EBADF...: nothing to re-arm for.
            self.ended = true;
        }
    }

    fn pause(&mut self) {
        self.backoff.failed();
        if let Some(until) = self.backoff.until() {
            self.pause = Some(runtime::time::sleep_until(until));
        }
    }

    /// For a direct-descriptor stream with no request in flight: picks multishot or one-shot
    /// accepts by the free slots, or says the table is full (then nothing is issued, so the
    /// waiting connections stay queued in the listener's backlog).
    fn choose_direct_mode(&mut self) -> Result<(), io::Error> {
        let Some(table) = &self.direct else {
            return Ok(());
        };
        let idle = match &self.mode {
            Mode::Multishot(m) => !m.is_armed(),
            Mode::Single(op) => op.is_none(),
        };
        if !idle {
            return Ok(());
        }
        let free = table.free();
        if free == 0 {
            return Err(runtime::direct::table_full_error());
        }
        let multishot = free > MULTISHOT_MIN_FREE && !self.no_multishot;
        match (&self.mode, multishot) {
            (Mode::Multishot(_), false) => self.mode = Mode::Single(None),
            (Mode::Single(_), true) => {
                self.mode = Mode::Multishot(Multishot::new(AcceptMulti::new(
                    self.socket.clone(),
                    Some(table.clone()),
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Stream for AcceptStream {
    type Item = io::Result<Socket>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(pause) = &mut this.pause {
                ready!(Pin::new(pause).poll(cx));
                this.pause = None;
            }
            if let Err(full) = this.choose_direct_mode() {
                // Backs off like `EMFILE`: the table frees up only as connections close.
                this.pause();
                return Poll::Ready(Some(Err(full)));
            }
            let item = match &mut this.mode {
                Mode::Multishot(accept) => match ready!(Pin::new(&mut *accept).poll_next(cx)) {
                    Some(item) => {
                        if this
                            .direct
                            .as_ref()
                            .is_some_and(|t| t.free() <= MULTISHOT_MIN_FREE)
                            && accept.is_armed()
                            && !this.cancelling
                        {
                            // Few slots left: end the multishot request before a burst of
                            // connections overruns the table (see MULTISHOT_MIN_FREE).
                            accept.cancel();
                            this.cancelling = true;
                        }
                        item
                    }
                    None => {
                        // The kernel ended the request: re-arm it.
                        this.cancelling = false;
                        accept.rearm();
                        continue;
                    }
                },
                Mode::Single(op) => {
                    let accept = op.get_or_insert_with(|| {
                        Op::new(Accept::new(this.socket.clone(), this.direct.clone()))
                    });
                    let result = ready!(Pin::new(accept).poll(cx));
                    *op = None;
                    result.map(|(socket, _peer)| socket)
                }
            };
            match item {
                Ok(socket) => {
                    this.accepted_any = true;
                    this.backoff.succeeded();
                    return Poll::Ready(Some(Ok(socket)));
                }
                Err(e) if this.cancelling && e.raw_os_error() == Some(libc::ECANCELED) => {
                    // Our own cancel ended the request; the next turn picks the mode.
                    this.cancelling = false;
                    if let Mode::Multishot(accept) = &mut this.mode {
                        accept.rearm();
                    }
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && !this.accepted_any
                        && matches!(this.mode, Mode::Multishot(_)) =>
                {
                    // A kernel without multishot accept rejects the flag: accept one by one.
                    this.no_multishot = true;
                    this.mode = Mode::Single(None);
                }
                Err(e) => {
                    this.cancelling = false;
                    this.on_error(&e);
                    return Poll::Ready(Some(Err(explain(e, this.direct.is_some()))));
                }
            }
        }
    }
}
