//! `Compat<S>`: a byte stream as `tokio::io::AsyncRead + AsyncWrite` (feature `tokio-io`) and
//! `futures_io::AsyncRead + AsyncWrite` (feature `futures-io`), for the crates built on those
//! traits: `BufReader`/`lines()`, tokio-util codecs, hyper (through hyper-util's `TokioIo`),
//! tokio-rustls.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-io")]
//! fn serve(io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
//!     // A codec, a TLS acceptor, hyper-util's `TokioIo`, ...
//! #   drop(io);
//! }
//!
//! # #[cfg(feature = "tokio-io")]
//! # async fn f() -> std::io::Result<()> {
//! let stream = net::TcpStream::connect("127.0.0.1:8080").await?;
//! serve(stream.compat());
//! # Ok(())
//! # }
//! ```
//!
//! # What it costs: one copy per read, one per write
//!
//! Those traits lend the caller's buffer to one poll only, and the kernel may still be writing
//! into a buffer (or reading from it) long after the poll returned, or after the caller gave up
//! on it. So the adapter owns the buffer of every operation it has in flight:
//!
//! - A read receives into the adapter's buffer (from 4 KiB to 64 KiB, sized to what the caller
//!   asks for; or, with [`compat_with_ring`](crate::TcpStream::compat_with_ring), into a
//!   buffer that the kernel takes from a shared [`BufRing`] only when data arrives) and copies
//!   into the caller's. Bytes the caller has no room for wait for its next read.
//! - A small write (as small as those [`TcpStream::write`](crate::TcpStream::write) writes
//!   behind) is copied and written behind, as that method does: it returns at once.
//! - A larger write, when nothing written earlier is still on its way, is handed to the kernel
//!   straight from the caller's buffer (a non-blocking `send(2)`: no copy); only when the
//!   socket's buffer is full is a copy of up to 64 KiB sent behind.
//!
//! `poll_flush` completes when the kernel has taken every byte; `poll_shutdown`
//! (`poll_close`) flushes, then shuts down the write direction.
//!
//! # Invariants
//!
//! - A caller that stops polling loses nothing: the receive in flight keeps its buffer (the
//!   adapter's) and its data waits there for the next poll. Bytes reported written are in
//!   the kernel or in a send the runtime finishes even if the adapter is dropped
//!   (`behind.rs`).
//! - Dropping the adapter (or [`Compat::into_inner`]) frees no buffer the kernel still uses:
//!   a receive in flight is cancelled and its buffer is freed after its completion, and what
//!   it had received, like the bytes the adapter had received but not handed out, is kept by
//!   the socket for its next reader, in order (`socket.rs`, rescued data).
//! - One read and one write at a time, as for the stream itself: the adapter takes the stream
//!   by value.
//!
//! [`BufRing`]: runtime::buf::BufRing

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::buf::{BufRing, RxBuf};

use crate::{
    RecvStream, behind,
    op::Recv,
    socket::{Rescued, Socket},
    spares,
    stream::{self, RescueAware, is_cancelled, write_behind},
};

/// The smallest receive buffer the adapter uses.
const READ_MIN: usize = 4 * 1024;

/// The largest receive buffer the adapter uses.
const READ_MAX: usize = 64 * 1024;

/// The most bytes of one large write that are copied and sent behind when the socket's
/// buffer is full (what the thread's spare buffers recycle, `spares.rs`).
const WRITE_COPY_MAX: usize = 64 * 1024;

mod sealed {
    pub trait Sealed {}
}

/// A stream type whose [`Compat`] adapter reads: `TcpStream`, `UnixStream` and their read
/// halves.
pub trait CompatRead: sealed::Sealed {}

/// A stream type whose [`Compat`] adapter writes: `TcpStream`, `UnixStream` and their write
/// halves.
pub trait CompatWrite: sealed::Sealed {}

/// A byte stream (or half of one) with the poll-based I/O traits of tokio (feature
/// `tokio-io`) and of the futures crates (feature `futures-io`); from `stream.compat()` or
/// `stream.compat_with_ring(&ring)`. See the [module docs](self) for what it costs and
/// guarantees.
pub struct Compat<S> {
    inner: Inner,
    stream: S,
}

/// The adapter's state; dropping it keeps the bytes received but not handed out.
struct Inner {
    socket: Socket,
    reader: Reader,
    shut_down: bool,
}

/// The socket of a stream type that has an adapter.
pub(crate) trait HasSocket {
    fn socket(&self) -> &Socket;

    /// Ends the handle's own reading state (a TCP stream's read-ahead), whose bytes go to the
    /// socket's rescue queue, before the adapter reads the socket itself.
    fn release_reads(&mut self) {}
}

/// The adapter of `stream`, reading into its own buffers.
pub(crate) fn wrap<S: HasSocket>(mut stream: S) -> Compat<S> {
    stream.release_reads();
    let socket = stream.socket().clone();
    let reader = Reader::Owned(Owned::Idle {
        buf: Vec::new(),
        pos: 0,
        end: 0,
    });
    Compat::with_reader(stream, socket, reader)
}

/// The adapter of `stream`, reading from `ring`.
pub(crate) fn wrap_with_ring<S: HasSocket>(mut stream: S, ring: &BufRing) -> Compat<S> {
    stream.release_reads();
    let socket = stream.socket().clone();
    let reader = Reader::Ring {
        ring: ring.clone(),
        stream: None,
        current: None,
    };
    Compat::with_reader(stream, socket, reader)
}

impl<S> Compat<S> {
    fn with_reader(stream: S, socket: Socket, reader: Reader) -> Compat<S> {
        Compat {
            inner: Inner {
                socket,
                reader,
                shut_down: false,
            },
            stream,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably. Reading from it while the adapter holds received bytes would take
    /// bytes from after them: use [`into_inner`](Compat::into_inner) to go back to the
    /// stream's own reads.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the stream back. Bytes the adapter had received but not handed out, and those of
    /// a receive in flight, are kept: the stream's next read returns them first. Bytes written
    /// through the adapter still go out (flush the stream to wait for them).
    pub fn into_inner(self) -> S {
        let Compat { inner, stream } = self;
        drop(inner);
        stream
    }
}

impl Inner {
    /// Received bytes waiting for the caller, copied out (up to `room` bytes) by `put`; a
    /// receive when none wait. `Ok(0)`: end of file (or `room` is 0).
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if room == 0 {
            return Poll::Ready(Ok(0));
        }
        self.reader.poll_read(&self.socket, cx, room, put)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        if bytes.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if write_behind(&self.socket, bytes)? {
            return Poll::Ready(Ok(bytes.len()));
        }
        // Large, or too much staged already: wait until nothing is on its way, so these bytes
        // go out after those.
        ready!(behind::poll_flush(&self.socket, cx))?;
        let chunk = &bytes[..bytes.len().min(WRITE_COPY_MAX)];
        // A direct descriptor has no fd to send(2) on: its bytes always go behind.
        while !self.socket.is_direct() {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            match self.socket.sock_ref()?.send_with_flags(chunk, flags) {
                // Straight from the caller's buffer.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // The socket's buffer is full: copy the chunk and send it behind, waiting for room.
        let mut data = spares::take();
        data.extend_from_slice(chunk);
        behind::send_owned(&self.socket, data);
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        behind::poll_flush(&self.socket, cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        if !self.shut_down {
            stream::shutdown(&self.socket, std::net::Shutdown::Write)?;
            self.shut_down = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Received but not handed out: the socket's next reader gets them first. Sequence 0
        // puts them before any data rescued later (from the receive in flight, cancelled when
        // the reader is dropped next), whose completions come after.
        if let Some(bytes) = self.reader.leftover() {
            self.socket.rescue(Rescued::stream(0, bytes.to_vec()));
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compat")
            .field("stream", &self.stream)
            .field("reader", &self.inner.reader)
            .finish()
    }
}

/// Where reads come from.
enum Reader {
    /// Receives into the adapter's own buffer.
    Owned(Owned),
    /// A multishot receive with buffers from a ring, started at the first read.
    Ring {
        ring: BufRing,
        stream: Option<RecvStream<'static>>,
        /// The buffer being handed out.
        current: Option<RxBuf>,
    },
}

/// The adapter's own receive buffer and its receive.
enum Owned {
    /// `buf[pos..end]` waits for the caller.
    Idle {
        buf: Vec<u8>,
        pos: usize,
        end: usize,
    },
    /// A receive owning the buffer.
    InFlight(RescueAware<Recv<Vec<u8>>>),
    /// Only while a state is being replaced.
    Moving,
}

impl Reader {
    fn poll_read(
        &mut self,
        socket: &Socket,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        match self {
            Reader::Owned(owned) => owned.poll_read(socket, cx, room, put),
            Reader::Ring {
                ring,
                stream,
                current,
            } => loop {
                if let Some(rx) = current {
                    let n = rx.len().min(room);
                    put(&rx[..n]);
                    rx.advance(n);
                    if rx.is_empty() {
                        // Back to the ring now: an idle connection holds no buffer.
                        *current = None;
                    }
                    return Poll::Ready(Ok(n));
                }
                // Bytes rescued from earlier readers are older than anything the receive
                // gets: served first, one chunk at a time, so that none waits in the
                // receive's own queue (which dropping the adapter would lose).
                if let Some(chunk) = socket.take_rescued_chunk() {
                    *current = Some(RxBuf::from_vec(chunk));
                    continue;
                }
                let stream =
                    stream.get_or_insert_with(|| RecvStream::new(socket.clone(), ring, false));
                match ready!(Pin::new(stream).poll_next(cx)) {
                    Some(Ok(rx)) if rx.is_empty() => {}
                    Some(Ok(rx)) => *current = Some(rx),
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Ok(0)),
                }
            },
        }
    }

    /// Received bytes not handed out yet.
    fn leftover(&self) -> Option<&[u8]> {
        let bytes = match self {
            Reader::Owned(Owned::Idle { buf, pos, end }) => &buf[*pos..*end],
            Reader::Ring {
                current: Some(rx), ..
            } => &rx[..],
            _ => return None,
        };
        (!bytes.is_empty()).then_some(bytes)
    }
}

impl Owned {
    fn poll_read(
        &mut self,
        socket: &Socket,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            match std::mem::replace(self, Owned::Moving) {
                Owned::Idle { buf, pos, end } if pos < end => {
                    let n = (end - pos).min(room);
                    put(&buf[pos..pos + n]);
                    *self = Owned::Idle {
                        buf,
                        pos: pos + n,
                        end,
                    };
                    return Poll::Ready(Ok(n));
                }
                Owned::Idle { mut buf, .. } => {
                    buf.clear();
                    let want = room.clamp(READ_MIN, READ_MAX);
                    if buf.capacity() < want {
                        buf = Vec::with_capacity(want);
                    }
                    // Bytes rescued from abandoned receives come first.
                    if let Some(n) = socket.read_rescued(std::slice::from_mut(&mut buf)) {
                        *self = Owned::Idle {
                            buf,
                            pos: 0,
                            end: n,
                        };
                        continue;
                    }
                    let recv = Recv::new(socket.clone(), buf);
                    *self = Owned::InFlight(RescueAware::new(socket.clone(), recv));
                }
                Owned::InFlight(mut op) => {
                    let ((res, buf), cancelled) = match Pin::new(&mut op).poll(cx) {
                        Poll::Ready(out) => out,
                        Poll::Pending => {
                            *self = Owned::InFlight(op);
                            return Poll::Pending;
                        }
                    };
                    let end = *res.as_ref().unwrap_or(&0);
                    *self = Owned::Idle { buf, pos: 0, end };
                    match res {
                        Ok(0) => return Poll::Ready(Ok(0)),
                        Ok(_) => {}
                        // Cancelled because bytes were rescued meanwhile: serve those.
                        Err(e) if cancelled && is_cancelled(&e) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Owned::Moving => {
                    return Poll::Ready(Err(io::Error::other(
                        "a compat read was interrupted by a panic: drop the stream",
                    )));
                }
            }
        }
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = self.leftover().map_or(0, <[u8]>::len);
        match self {
            Reader::Owned(Owned::InFlight(_)) => f.write_str("Receiving"),
            Reader::Owned(_) => write!(f, "Idle {{ waiting: {waiting} }}"),
            Reader::Ring { stream, .. } => f
                .debug_struct("Ring")
                .field("armed", &stream.is_some())
                .field("waiting", &waiting)
                .finish(),
        }
    }
}

/// `compat` (and for read sides `compat_with_ring`) as inherent methods of a stream type.
macro_rules! compat_methods {
    (read) => {
        /// This stream as `tokio::io::AsyncRead + AsyncWrite` (feature `tokio-io`) and
        /// `futures_io::AsyncRead + AsyncWrite` (feature `futures-io`); see
        /// [`Compat`](crate::compat::Compat) for the cost (one copy per read and per write).
        pub fn compat(self) -> crate::compat::Compat<Self> {
            crate::compat::wrap(self)
        }

        /// Like [`compat`](Self::compat), but reads take their buffers from `ring`, and only
        /// when data arrives (one multishot receive, as
        /// [`recv_stream`](crate::TcpStream::recv_stream)): an idle connection holds no
        /// receive buffer, so many idle keep-alive connections can share one ring.
        pub fn compat_with_ring(self, ring: &runtime::buf::BufRing) -> crate::compat::Compat<Self> {
            crate::compat::wrap_with_ring(self, ring)
        }
    };
    (write) => {
        /// This write half as `tokio::io::AsyncWrite` (feature `tokio-io`) and
        /// `futures_io::AsyncWrite` (feature `futures-io`); see
        /// [`Compat`](crate::compat::Compat) for the cost (one copy per write).
        pub fn compat(self) -> crate::compat::Compat<Self> {
            crate::compat::wrap(self)
        }
    };
}
pub(crate) use compat_methods;

/// Marks the stream types with adapters.
macro_rules! streams {
    ($($ty:ty: $($side:ident),+;)+) => {
        $(
            impl sealed::Sealed for $ty {}
            $(impl $side for $ty {})+
        )+
    };
}

streams! {
    crate::TcpStream: CompatRead, CompatWrite;
    crate::tcp::OwnedReadHalf: CompatRead;
    crate::tcp::ReadHalf<'_>: CompatRead;
    crate::tcp::OwnedWriteHalf: CompatWrite;
    crate::tcp::WriteHalf<'_>: CompatWrite;
    crate::UnixStream: CompatRead, CompatWrite;
    crate::unix::OwnedReadHalf: CompatRead;
    crate::unix::ReadHalf<'_>: CompatRead;
    crate::unix::OwnedWriteHalf: CompatWrite;
    crate::unix::WriteHalf<'_>: CompatWrite;
}

#[cfg(feature = "tokio-io")]
impl<S: CompatRead + Unpin> tokio::io::AsyncRead for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        // Copied into the unfilled part, which needs no zeroing first.
        ready!(
            self.get_mut()
                .inner
                .poll_read_with(cx, room, |b| buf.put_slice(b))
        )?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "tokio-io")]
impl<S: CompatWrite + Unpin> tokio::io::AsyncWrite for Compat<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_shutdown(cx)
    }
}

#[cfg(feature = "futures-io")]
impl<S: CompatRead + Unpin> futures_io::AsyncRead for Compat<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let room = buf.len();
        self.get_mut()
            .inner
            .poll_read_with(cx, room, |b| buf[..b.len()].copy_from_slice(b))
    }
}

#[cfg(feature = "futures-io")]
impl<S: CompatWrite + Unpin> futures_io::AsyncWrite for Compat<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_shutdown(cx)
    }
}
