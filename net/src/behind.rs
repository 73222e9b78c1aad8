//! Write-behind: small stream writes that return before the kernel has taken their bytes.
//!
//! A `write` or `write_all` of at most [`COPY_MAX`] bytes copies them into a buffer of the
//! socket and returns at once. A skip-success send of that buffer is queued and goes out with
//! the loop's next enter, together with whatever the task queued next (typically its next
//! receive), and the loop may block in that same enter: a request/response loop costs one
//! `io_uring_enter` per message instead of two (one to learn the send succeeded, one to wait
//! for the next receive). The copy is what makes this possible with owned buffers: the caller
//! gets its buffer back at once, and a copy of up to 4 KiB costs far less than an enter.
//!
//! # Invariants
//!
//! - Per socket, at most one staged send is in the kernel's hands (`in_flight`). Bytes written
//!   meanwhile wait in `staged` and go out, in call order, as one send when it finishes; so
//!   `in_flight.is_none()` implies `staged.is_empty()`, and the byte stream keeps the order
//!   of the calls.
//! - Writes that do not stage (larger ones, vectored and zero-copy sends) first wait until
//!   nothing is staged or in flight ([`flush`]), so they keep the order too.
//! - The first failure of a staged send is kept and reported by the next write, flush or
//!   shutdown of the socket; bytes staged after it are dropped (the connection is broken).
//! - A write shutdown asked for while bytes are staged or in flight is done right after the
//!   last of them went out, never before.
//! - The send in flight holds a clone of the socket: dropping the stream never loses staged
//!   bytes, and the fd is closed only after they were sent.
//! - The send in flight is detached lazily (`Detached::start`): nobody waits for its success, so
//!   the loop may block after submitting it. As soon as something depends on it (bytes
//!   staged behind it, a flush), it is expedited: the loop then learns its outcome without
//!   blocking, and sends what waits behind it.
//!
//! # Datagrams
//!
//! A UDP `send_to`/`send` of at most [`COPY_MAX`] bytes is copied and sent the same way, one
//! detached send per datagram (datagrams need no order across each other, and each is whole
//! or not at all). At most [`DATAGRAMS_MAX`] are in flight per socket; beyond that, sends
//! wait as before. A datagram the socket had no room for (`EAGAIN`) is sent again by a
//! request that waits for room; a failure is reported by the socket's next send.

use std::{
    cell::RefMut,
    io,
    net::Shutdown,
    os::fd::{AsRawFd, RawFd},
    task::{Context, Poll, Waker},
};

use io_uring::squeue;
use runtime::op::{Completion, Detached, Interest, OpCode};

use super::socket::Socket;
use crate::{
    op::{MAX_IO, SendMode, nonblocking},
    spares,
};

/// The largest write that is copied and sent behind the caller's back. Measured on the echo
/// benchmark's stream row (16 connections × 64 KiB, `cargo bench -p benches --bench echo`):
/// 16 KiB copies cost about 7% more server CPU per chunk than sending 16 KiB reads from the
/// caller's buffer, while messages up to 4 KiB (every request/response row) still get one enter
/// per message.
pub(crate) const COPY_MAX: usize = 4 * 1024;

/// The most bytes a socket keeps staged behind its send in flight; writes beyond that wait.
const STAGED_MAX: usize = 256 * 1024;

/// The most datagrams a socket has in flight behind its callers' backs.
const DATAGRAMS_MAX: usize = 64;

/// A socket's write-behind state (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Behind {
    /// Datagrams in flight.
    datagrams: usize,
    /// Bytes written while a send is in flight. Their buffers, like those of the sends, come
    /// from and go back to the thread's spares (`spares.rs`), so steady traffic allocates
    /// nothing and an idle socket holds no buffer.
    staged: Vec<u8>,
    in_flight: Option<Detached>,
    error: Option<io::Error>,
    shutdown_pending: bool,
    waiters: Vec<Waker>,
}

impl Behind {
    /// Whether it holds nothing: no send or datagram in flight, nothing staged, no error, no
    /// shutdown or waiter pending. Such a state is dropped (see [`release_if_idle`]).
    fn is_idle(&self) -> bool {
        self.datagrams == 0
            && self.in_flight.is_none()
            && self.staged.capacity() == 0
            && self.error.is_none()
            && !self.shutdown_pending
            && self.waiters.is_empty()
    }
}

thread_local! {
    /// One idle state kept for the thread's next socket that writes, so that a connection
    /// that writes once per message does not allocate its state every time.
    static SPARE: std::cell::Cell<Option<Box<Behind>>> = const { std::cell::Cell::new(None) };
}

/// The write-behind state of `socket`, created (from the thread's spare, if any) when it has
/// none: an idle socket holds only an empty `Option<Box<_>>`.
fn state(socket: &Socket) -> RefMut<'_, Behind> {
    RefMut::map(socket.behind().borrow_mut(), |b| {
        &mut **b.get_or_insert_with(|| SPARE.take().unwrap_or_default())
    })
}

/// The write-behind state of `socket`, if it has one (for checks that must not create it).
fn existing(socket: &Socket) -> Option<RefMut<'_, Behind>> {
    RefMut::filter_map(socket.behind().borrow_mut(), |b| b.as_deref_mut()).ok()
}

/// Drops `socket`'s state if it holds nothing any more, keeping it as the thread's spare.
fn release_if_idle(socket: &Socket) {
    let mut slot = socket.behind().borrow_mut();
    if slot.as_ref().is_some_and(|b| b.is_idle()) {
        let idle = slot.take();
        drop(slot);
        if let Some(old) = SPARE.replace(idle) {
            drop(old);
        }
    }
}

/// Takes the failure of an earlier staged send, if any, as the error of the caller's
/// operation.
pub(crate) fn take_error(socket: &Socket) -> Option<io::Error> {
    let e = existing(socket)?.error.take()?;
    release_if_idle(socket);
    Some(io::Error::new(
        e.kind(),
        format!("an earlier write on this socket failed after it had returned: {e}"),
    ))
}

/// Whether nothing is staged or in flight on `socket` (so a send of the caller's own may
/// start now and keep the stream's order).
pub(crate) fn is_clear(socket: &Socket) -> bool {
    existing(socket).is_none_or(|b| b.in_flight.is_none())
}

/// Copies `bytes` to be sent behind the caller's back. Returns false (and does nothing) when
/// they are too many to copy, or too many are staged already: the caller then waits for
/// [`flush`] and sends them itself.
///
/// Where ops run inline (the epoll backend, `runtime::op::runs_inline`), a send then costs
/// a system call of its own in any case: with nothing in flight, the bytes are sent at once
/// from the caller's slice, and only what the socket had no room for is copied and sent
/// behind (tokio's write, without its wait).
pub(crate) fn try_stage(socket: &Socket, mut bytes: &[u8]) -> bool {
    if bytes.len() > COPY_MAX {
        return false;
    }
    if let Some(mut guard) = existing(socket)
        && guard.in_flight.is_some()
    {
        let behind = &mut *guard;
        if behind.staged.len() + bytes.len() > STAGED_MAX {
            return false;
        }
        if behind.staged.capacity() == 0 {
            behind.staged = spares::take();
        }
        behind.staged.extend_from_slice(bytes);
        // The staged bytes wait for this send's outcome.
        if let Some(in_flight) = &behind.in_flight {
            in_flight.expedite();
        }
        return true;
    }
    // Nothing in flight, so nothing staged: these bytes are next in the stream.
    if runtime::op::runs_inline() {
        match nonblocking::send_slice_inline(socket.as_raw_fd(), bytes) {
            Some(Ok(n)) if n == bytes.len() => return true,
            Some(Ok(n)) => bytes = &bytes[n..],
            // A failure is the socket's, reported by its next operation as if sent behind.
            Some(Err(e)) => {
                failed(socket, e);
                return true;
            }
            // No room (`EAGAIN`): the send behind waits for some, without trying first.
            None => {}
        }
    }
    let mut data = spares::take();
    data.extend_from_slice(bytes);
    start(socket, data, false);
    true
}

/// Sends `data` as the socket's send in flight.
fn start(socket: &Socket, data: Vec<u8>, urgent: bool) {
    let op = StagedSend {
        socket: socket.clone(),
        data,
        sent: 0,
        mode: SendMode::FastStream,
    };
    launch(socket, op, urgent);
}

fn launch(socket: &Socket, op: StagedSend, urgent: bool) {
    // `Detached::start` may complete the op at once (the runtime shut down), which updates
    // the state itself: no borrow may be held across it.
    let detached = Detached::start(op);
    if detached.is_running() {
        if urgent {
            detached.expedite();
        }
        state(socket).in_flight = Some(detached);
    }
}

/// Sends `data` behind the caller's back as the socket's send in flight, at once (expedited).
/// For the compat adapter's large writes (`compat.rs`), whose bytes it has already reported
/// written. The caller has seen [`poll_flush`] ready, so nothing is staged or in flight.
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
pub(crate) fn send_owned(socket: &Socket, data: Vec<u8>) {
    debug_assert!(existing(socket).is_none_or(|b| b.in_flight.is_none()));
    if !data.is_empty() {
        start(socket, data, true);
    }
}

/// Resolves when every staged byte was handed to the kernel, with the failure of a staged
/// send if one failed.
pub(crate) async fn flush(socket: &Socket) -> io::Result<()> {
    std::future::poll_fn(|cx| poll_flush(socket, cx)).await
}

/// [`flush`] as a poll: ready once nothing is staged or in flight, with the failure of a
/// staged send if one failed.
pub(crate) fn poll_flush(socket: &Socket, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let behind = existing(socket);
    if let Some(in_flight) = behind.as_ref().and_then(|b| b.in_flight.as_ref()) {
        in_flight.expedite();
        drop(behind);
        // Learn the outcome now if nothing else would share the enter: the caller goes on in
        // this poll instead of the next loop turn (hyper flushes after every response).
        runtime::submit_now();
    } else {
        drop(behind);
    }
    if let Some(mut behind) = existing(socket)
        && let Some(in_flight) = &behind.in_flight
    {
        // It may be a later send, started by the one that finished with the bytes staged
        // behind it: this caller waits for it too.
        in_flight.expedite();
        if !behind.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            behind.waiters.push(cx.waker().clone());
        }
        return Poll::Pending;
    }
    Poll::Ready(match take_error(socket) {
        Some(e) => Err(e),
        None => Ok(()),
    })
}

/// Shuts down the write direction once every staged byte went out (now, if none waits).
/// Returns the failure of an earlier staged send, if any.
pub(crate) fn shutdown_write(socket: &Socket) -> io::Result<()> {
    if let Some(e) = take_error(socket) {
        return Err(e);
    }
    if let Some(mut behind) = existing(socket)
        && let Some(in_flight) = &behind.in_flight
    {
        // The shutdown waits for this send's outcome.
        in_flight.expedite();
        behind.shutdown_pending = true;
        return Ok(());
    }
    shut_write(socket)
}

fn shut_write(socket: &Socket) -> io::Result<()> {
    match socket.shutdown(Shutdown::Write) {
        // The peer reset the connection first: not the caller's fault (tokio-rs/tokio#4665).
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        res => res,
    }
}

/// The send in flight finished: recycles its buffer and sends what was staged meanwhile, or
/// tells waiters that everything went out.
fn finished(socket: &Socket, data: Vec<u8>) {
    spares::give(data);
    let mut behind = state(socket);
    if !behind.staged.is_empty() {
        let next = std::mem::take(&mut behind.staged);
        let urgent = !behind.waiters.is_empty() || behind.shutdown_pending;
        behind.in_flight = None;
        drop(behind);
        start(socket, next, urgent);
        return;
    }
    behind.in_flight = None;
    let waiters = std::mem::take(&mut behind.waiters);
    let shutdown = std::mem::take(&mut behind.shutdown_pending);
    drop(behind);
    if shutdown && socket.is_direct() {
        // This runs while the driver routes completions: a direct descriptor's shutdown is a
        // request of its own, left to finish by itself rather than waited for here.
        crate::op::Shutdown::detach(socket.clone(), Shutdown::Write);
    } else if shutdown && let Err(e) = shut_write(socket) {
        state(socket).error.get_or_insert(e);
    }
    release_if_idle(socket);
    waiters.into_iter().for_each(Waker::wake);
}

/// The send in flight failed: the error waits for the next operation, and nothing staged
/// after it is sent.
fn failed(socket: &Socket, error: io::Error) {
    let mut behind = state(socket);
    behind.error.get_or_insert(error);
    spares::give(std::mem::take(&mut behind.staged));
    behind.in_flight = None;
    behind.shutdown_pending = false;
    let waiters = std::mem::take(&mut behind.waiters);
    drop(behind);
    waiters.into_iter().for_each(Waker::wake);
}

/// A send of staged bytes, owning them; detached, so `complete_detached` carries on.
#[derive(Debug)]
struct StagedSend {
    socket: Socket,
    data: Vec<u8>,
    /// Bytes of `data` sent by earlier attempts.
    sent: usize,
    mode: SendMode,
}

impl StagedSend {
    fn len(&self) -> usize {
        (self.data.len() - self.sent).min(MAX_IO)
    }
}

// SAFETY: the SQE points into `data`'s heap allocation (stable across moves of `self`, never
// resized while the op is in flight) at `sent..sent + len`, and at the fd kept open by
// `socket`; both are owned by `self`. The fast mode carries `IOSQE_CQE_SKIP_SUCCESS` and
// `MSG_DONTWAIT | MSG_WAITALL`, so it completes or fails inside the submitting enter, and its
// success means all `len` bytes went out, as `skip_success` requires.
unsafe impl OpCode for StagedSend {
    type Output = ();

    fn build(&mut self) -> squeue::Entry {
        // SAFETY: `sent < data.len()` (a finished send is never resubmitted), so the pointer
        // stays inside the allocation.
        let ptr = unsafe { self.data.as_ptr().add(self.sent) };
        self.mode
            .send_sqe(self.socket.uring_fd(), ptr, self.len() as u32)
    }

    fn skip_success(&self) -> Option<i32> {
        self.mode.is_fast().then(|| self.len() as i32)
    }

    fn complete(self, cqe: Completion) {
        self.complete_detached(cqe);
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        Some((self.socket.as_raw_fd(), Interest::Writable))
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        // SAFETY: `sent < data.len()`, so `sent..sent + len` lies inside `data`, owned by
        // `self`.
        unsafe {
            let ptr = self.data.as_ptr().add(self.sent);
            crate::op::nonblocking::send(self.socket.as_raw_fd(), ptr, self.len())
        }
    }

    fn complete_detached(mut self, cqe: Completion) {
        let socket = self.socket.clone();
        match cqe.into_result() {
            Ok(n) => {
                self.sent += n as usize;
                if n == 0 && self.len() > 0 {
                    failed(&socket, io::ErrorKind::WriteZero.into());
                } else if self.sent >= self.data.len() {
                    finished(&socket, self.data);
                } else {
                    // A short send: the rest waits for room, still ahead of anything staged.
                    self.mode = SendMode::Wait { all: true };
                    launch(&socket, self, true);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.mode = SendMode::Wait { all: true };
                launch(&socket, self, true);
            }
            Err(e) => failed(&socket, e),
        }
    }
}

/// Copies `bytes` to be sent as one datagram (to `addr`, or the connected peer) behind the
/// caller's back. Returns false (and does nothing) when they are too many, or too many
/// datagrams are in flight: the caller sends it itself.
pub(crate) fn try_send_datagram(
    socket: &Socket,
    bytes: &[u8],
    addr: Option<std::net::SocketAddr>,
) -> bool {
    if bytes.len() > COPY_MAX {
        return false;
    }
    // Where ops run inline (see `try_stage`), the datagram goes out at once from the slice;
    // only one the socket had no room for is copied and sent behind.
    if runtime::op::runs_inline() {
        let raw = addr.as_ref().map(crate::addr::RawAddr::from_socket_addr);
        let sent = nonblocking::send_to_slice(socket.as_raw_fd(), bytes, raw.as_ref());
        runtime::op::count_inline_op();
        match sent {
            None => {}
            Some(cqe) => {
                if let Err(e) = cqe.into_result() {
                    state(socket).error.get_or_insert(e);
                }
                return true;
            }
        }
    }
    let mut behind = state(socket);
    if behind.datagrams >= DATAGRAMS_MAX {
        return false;
    }
    behind.datagrams += 1;
    drop(behind);
    let mut data = spares::take();
    data.extend_from_slice(bytes);
    let op = DatagramBehind {
        socket: socket.clone(),
        send: crate::op::SendMsg::new(socket.clone(), data, addr.as_ref(), None, true),
        addr,
    };
    // Completes at once when the runtime has shut down, which counts it out itself.
    drop(Detached::start(op));
    true
}

/// A datagram sent behind its caller's back; detached, so `complete_detached` carries on.
#[derive(Debug)]
struct DatagramBehind {
    socket: Socket,
    send: crate::op::SendMsg<Vec<u8>>,
    addr: Option<std::net::SocketAddr>,
}

// SAFETY: every SQE field comes from `send`, which upholds the `OpCode` rules for the memory it
// owns (moved with `self`, heap-stable), including the skip-success contract of its fast mode.
unsafe impl OpCode for DatagramBehind {
    type Output = ();

    fn build(&mut self) -> squeue::Entry {
        self.send.build()
    }

    fn skip_success(&self) -> Option<i32> {
        self.send.skip_success()
    }

    fn complete(self, cqe: Completion) {
        self.complete_detached(cqe);
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        self.send.readiness()
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        self.send.try_nonblocking()
    }

    fn complete_detached(self, cqe: Completion) {
        let DatagramBehind { socket, send, addr } = self;
        let (res, data, _) = send.complete(cqe);
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // No room in the socket: once more, waiting for room.
                let op = DatagramBehind {
                    socket: socket.clone(),
                    send: crate::op::SendMsg::new(socket, data, addr.as_ref(), None, false),
                    addr,
                };
                drop(Detached::start(op));
                return;
            }
            Err(e) => {
                state(&socket).error.get_or_insert(e);
            }
            Ok(_) => {}
        }
        state(&socket).datagrams -= 1;
        release_if_idle(&socket);
        spares::give(data);
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, os::fd::OwnedFd};

    use super::*;

    /// Once its bytes went out, a socket holds no write-behind state (memory per idle
    /// connection), and the next write finds the thread's spare.
    #[test]
    fn a_socket_whose_writes_went_out_holds_no_state() {
        let rt = runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            let socket = Socket::from_fd(OwnedFd::from(a));
            assert!(socket.behind().borrow().is_none());
            // On epoll a write with room in the socket goes out in the call (`runs_inline`),
            // so no state is made at all.
            let staged = runtime::capabilities().backend() == runtime::Backend::IoUring;
            for round in 0..3u8 {
                assert!(try_stage(&socket, &[round; 5]));
                assert_eq!(socket.behind().borrow().is_some(), staged, "round {round}");
                flush(&socket).await.unwrap();
                assert!(socket.behind().borrow().is_none(), "round {round}");
                let mut got = [0; 5];
                b.read_exact(&mut got).unwrap();
                assert_eq!(got, [round; 5]);
            }
            // A failure keeps the state until it is reported.
            drop(b);
            assert!(try_stage(&socket, b"lost"));
            assert!(flush(&socket).await.is_err());
            assert!(socket.behind().borrow().is_none());
        });
    }
}
