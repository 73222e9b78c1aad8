//! `TcpStream`.

use std::{
    io,
    net::{Shutdown, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use runtime::{
    buf::{IoBuf, IoBufMut},
    op::Op,
};
use socket2::{Domain, Protocol, Type};

use super::split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
use crate::{
    ZcSent, ZeroCopy, ZeroCopyStats,
    addr::{self, ToSocketAddrs},
    behind,
    op::{CancelFd, Connect, Recv, SendMode, SendZc, send_some},
    read_ahead::ReadAhead,
    socket::Socket,
    stream::RescueAware,
    stream::{self, is_cancelled, stopped},
    zc::{self, Attempt},
};

const SEND_ZC: u8 = io_uring::opcode::SendZc::CODE;

/// A TCP connection with owned-buffer I/O.
///
/// Buffers move into each operation and come back with its result:
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let mut stream = net::TcpStream::connect("127.0.0.1:8080").await.unwrap();
/// let (res, buf) = stream.write_all(b"ping".to_vec()).await;
/// res.unwrap();
/// let (res, buf) = stream.read(buf).await;
/// let n = res.unwrap();
/// println!("{:?}", &buf[..n]);
/// # });
/// ```
///
/// # One read and one write at a time
///
/// Reads (and receive streams) take `&mut self`, and so do writes, as in tokio: a read future
/// that is alive but no longer polled, such as the losing branch of a `select!`, would
/// otherwise still take the next bytes from the kernel while a later read waits for bytes
/// that never come. The compiler rules that out:
///
/// ```compile_fail,E0499
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let mut stream = net::TcpStream::connect("127.0.0.1:8080").await.unwrap();
/// let first = stream.read(Vec::with_capacity(64));
/// let second = stream.read(Vec::with_capacity(64)); // error: `stream` is already borrowed
/// # drop((first, second));
/// # });
/// ```
///
/// To have a read and a write in flight together, split the stream:
/// [`split`](TcpStream::split) borrows it for one task, [`into_split`](TcpStream::into_split)
/// makes halves that can move to different tasks.
///
/// Dropping a `read` before it completes cancels it without losing data: bytes the kernel had
/// already delivered into the abandoned buffer are kept and returned by the next read, in
/// order. To bound a read or write in time and get its buffer back, use
/// [`CancelExt`](runtime::op::CancelExt) (`stream.read(buf).timeout(d)`); the guide
/// `docs/cancellation.md` shows the patterns.
///
/// Socket options by tokio's names ([`set_nodelay`](TcpStream::set_nodelay),
/// [`set_linger`](TcpStream::set_linger), [`set_ttl`](TcpStream::set_ttl),
/// [`set_tcp_keepalive`](TcpStream::set_tcp_keepalive), ...) are methods; any other is set
/// through socket2 on the stream's fd:
///
/// ```no_run
/// # fn f(stream: &net::TcpStream) -> std::io::Result<()> {
/// let sock = socket2::SockRef::from(stream);
/// sock.set_tcp_user_timeout(Some(std::time::Duration::from_secs(30)))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpStream {
    pub(super) socket: Socket,
    /// The multishot receive under `read` (`read_ahead.rs`).
    read_ahead: ReadAhead,
}

impl TcpStream {
    pub(crate) fn from_socket(socket: Socket) -> TcpStream {
        TcpStream {
            socket,
            read_ahead: ReadAhead::new(),
        }
    }

    /// Ends this handle's read-ahead (see `read_ahead.rs`): before another reader (a half, a
    /// receive stream, an adapter) takes bytes from the socket.
    pub(crate) fn release_reads(&mut self) {
        self.read_ahead.dissolve();
    }

    /// Opens a connection to `addr`, trying each resolved address in turn like
    /// `std::net::TcpStream::connect`; returns the last error if none accepts.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed or unresolvable address, `ConnectionRefused` when nothing
    /// listens, and other OS errors as they come.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in addr::resolve(&addr).await? {
            match TcpStream::connect_one(&addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    }

    async fn connect_one(addr: &SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, Protocol::TCP)?;
        let (res, socket) = Op::new(Connect::new(socket, addr)).await;
        res.map(|()| TcpStream::from_socket(socket))
    }

    /// Reads into `buf` (from its start, up to its capacity) and returns how many bytes
    /// arrived; `Ok(0)` means the peer closed its side (or `buf` has no capacity).
    ///
    /// On io_uring, reads of messages are served by one multishot receive into the worker's
    /// shared ring ([`BufRing::shared`](runtime::buf::BufRing::shared)), armed by the first read and kept across reads: a
    /// read takes what already arrived, copied into `buf`, or waits for the next arrival, and
    /// submits nothing. A reader that stops leaves about 16 arrivals there (at most 64 KiB),
    /// the rest waits in the socket. A stream carrying
    /// bulk data (arrivals that fill whole 4 KiB ring buffers) goes back to one receive per
    /// read into `buf`, which saves the copy; after a read that filled `buf` the next first
    /// tries a non-blocking `recv(2)` itself and becomes a request only if that would block
    /// (not under SQPOLL), so a bulk reader does not wait a loop turn per read.
    pub async fn read<B: IoBufMut>(&mut self, mut buf: B) -> (io::Result<usize>, B) {
        let slot = std::slice::from_mut(&mut buf);
        if let Some(res) = self.read_ahead.read(&self.socket, slot).await {
            return (res, buf);
        }
        let offered = buf.bytes_total();
        let (res, buf) = if self.read_ahead.bulk_backlog() {
            stream::read_bulk(&self.socket, buf).await
        } else {
            stream::read(&self.socket, buf).await
        };
        self.read_ahead.note_plain(&res, offered);
        (res, buf)
    }

    /// Receives into `buf` like [`read`](TcpStream::read), but leaves the bytes in the
    /// stream: the next read (or peek) returns them again. `Ok(0)` means the peer closed its
    /// side (or `buf` has no capacity). An `IORING_OP_RECV` with `MSG_PEEK`.
    ///
    /// Bytes a dropped read had taken from the kernel (see the cancellation guide) come
    /// first, as they do for `read`. Peeking writes nothing, so bytes written behind need no
    /// [`flush`](TcpStream::flush) first; a peek that waits for the peer's answer to them
    /// sends them with the loop's next enter, as a read does.
    pub async fn peek<B: IoBufMut>(&mut self, mut buf: B) -> (io::Result<usize>, B) {
        let slot = std::slice::from_mut(&mut buf);
        if let Some(res) = self.read_ahead.peek(&self.socket, slot).await {
            return (res, buf);
        }
        loop {
            if let Some(n) = self.socket.peek_rescued(std::slice::from_mut(&mut buf)) {
                return (Ok(n), buf);
            }
            let op = Recv::peek(self.socket.clone(), buf);
            let ((res, b), _) = RescueAware::new(self.socket.clone(), op).await;
            buf = b;
            match res {
                // Bytes were rescued meanwhile: they are what the next read returns.
                Err(e) if is_cancelled(&e) && self.socket.has_rescued() => continue,
                res => return (res, buf),
            }
        }
    }

    /// Reads until `buf` is full (to its capacity).
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the peer closes first; the bytes read so far are in the returned
    /// buffer. Bounded by [`CancelExt`](runtime::op::CancelExt) and stopped after some bytes
    /// arrived, the scope's error carries their count in
    /// [`Cancelled::transferred`](runtime::op::Cancelled) (they are in the buffer too).
    pub async fn read_exact<B: IoBufMut>(&mut self, buf: B) -> (io::Result<()>, B) {
        stream::read_exact(buf, async |slice| self.read(slice).await).await
    }

    /// Reads into several buffers, filling each from its start in order.
    pub async fn readv<B: IoBufMut>(&mut self, mut bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        if let Some(res) = self.read_ahead.read(&self.socket, &mut bufs).await {
            return (res, bufs);
        }
        let offered = crate::bufs::capacity(&bufs);
        let (res, bufs) = stream::readv(&self.socket, bufs).await;
        self.read_ahead.note_plain(&res, offered);
        (res, bufs)
    }

    /// Writes some of `buf`'s initialized bytes and returns how many.
    ///
    /// Up to 4 KiB are written behind: copied, queued for the kernel and reported written at
    /// once, so the task goes on to its next operation and both reach the kernel in one enter.
    /// They go out in order before anything written later. If sending them fails, the next
    /// write, [`flush`](TcpStream::flush) or [`shutdown`](TcpStream::shutdown) reports it;
    /// `flush` waits until the kernel has taken every byte.
    pub fn write<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> {
        stream::write(&self.socket, buf)
    }

    /// Waits until the kernel has taken every byte written so far (writes of up to 4 KiB
    /// return before that: see [`write`](TcpStream::write)), and reports a failure of those.
    pub async fn flush(&mut self) -> io::Result<()> {
        behind::flush(&self.socket).await
    }

    /// Writes all of `buf`'s initialized bytes.
    ///
    /// Up to 4 KiB are written behind, as [`write`](TcpStream::write) describes: they reach
    /// the kernel with the loop's next enter. Code that then blocks the thread (a `std` read
    /// of the peer, `thread::sleep`) must [`flush`](TcpStream::flush) first.
    ///
    /// A larger write, with nothing written behind still queued, is first tried as a
    /// non-blocking `send(2)` from `buf` (on io_uring not under SQPOLL nor on a direct
    /// descriptor, where the first attempt is a skip-success request); whatever does not fit
    /// is sent by a request that waits for room.
    ///
    /// # Errors
    ///
    /// As the sends report them. Bounded by [`CancelExt`](runtime::op::CancelExt) and stopped
    /// after part of the buffer went out, the scope's error says how many bytes did, in
    /// [`Cancelled::transferred`](runtime::op::Cancelled): resume from that offset.
    pub fn write_all<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<()>, B)> {
        stream::write_all(&self.socket, buf)
    }

    /// `write_all` without writing behind: resolves once the kernel took every byte. The
    /// caller has flushed what was written behind.
    async fn write_all_now<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        stream::write_all_now(&self.socket, buf).await
    }

    /// Writes the initialized bytes of several buffers, in order, with one request; returns how
    /// many bytes went out.
    pub async fn writev<B: IoBuf>(&mut self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        stream::writev(&self.socket, bufs).await
    }

    /// Writes every initialized byte of `bufs`, in order, as [`write_all`](TcpStream::write_all)
    /// does for one buffer: up to 4 KiB in all are written behind (copied, and sent with the
    /// loop's next enter); more go out straight from the buffers with vectored sends
    /// (`sendmsg`), as many as the socket needs. The buffers come back once the kernel took
    /// their bytes. For forwarding a batch of received buffers
    /// ([`RecvStream::next_batch`](crate::RecvStream::next_batch)) without copying them.
    ///
    /// # Errors
    ///
    /// As for `write_all`; bytes before the failure may have been sent.
    #[doc(alias = "write_vectored_all")]
    pub fn writev_all<B: IoBuf>(
        &mut self,
        bufs: Vec<B>,
    ) -> impl Future<Output = (io::Result<()>, Vec<B>)> {
        stream::writev_all(&self.socket, bufs)
    }

    /// Sends with `IORING_OP_SEND_ZC`: the kernel transmits straight from `buf`'s pages, and
    /// the buffer comes back only after the kernel's notification that no packet references it
    /// any more, so it is free to reuse. May send fewer bytes than offered, like
    /// [`write`](TcpStream::write).
    ///
    /// The socket's [`ZeroCopy`] policy decides whether `SEND_ZC` is really used: under the
    /// default `Auto`, the first notification reporting a copy (loopback always copies) or a
    /// socket without zero-copy support switches the socket to ordinary sends; see
    /// [`zero_copy_stats`](TcpStream::zero_copy_stats). Buffers from a registered
    /// [`FixedBufPool`](runtime::buf::FixedBufPool) are sent by index
    /// (`IORING_RECVSEND_FIXED_BUF`).
    ///
    /// # Errors
    ///
    /// As for `write`; under `ZeroCopy::On`, `Unsupported` when the socket or kernel cannot do
    /// zero-copy sends.
    pub async fn send_zc<B: IoBuf>(&mut self, buf: B) -> (io::Result<usize>, B) {
        if let Err(e) = behind::flush(&self.socket).await {
            return (Err(e), buf);
        }
        match zc::attempt(&self.socket, buf, SEND_ZC, |s, b| SendZc::send(s, b, false)).await {
            Attempt::Sent(res, release) => (res, release.await),
            // Copying sends resolve when the kernel took the bytes, as zero-copy ones do.
            Attempt::UseCopy(buf) => send_some(&self.socket, buf, SendMode::FastStream).await,
        }
    }

    /// Sends all of `buf` with zero-copy sends, resubmitting the unsent tail after each
    /// notification until every byte went out. The buffer comes back after the last
    /// notification.
    pub async fn send_zc_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        if let Err(e) = behind::flush(&self.socket).await {
            return (Err(e), buf);
        }
        let len = buf.bytes_init();
        let mut sent = 0;
        let mut buf = buf;
        while sent < len {
            let make = |s, b| SendZc::send(s, b, true);
            match zc::attempt(&self.socket, buf.slice(sent..), SEND_ZC, make).await {
                Attempt::Sent(res, release) => {
                    buf = release.await.into_inner();
                    match res {
                        Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return (Err(stopped(e, sent)), buf),
                    }
                }
                Attempt::UseCopy(rest) => {
                    let (res, rest) = self.write_all_now(rest).await;
                    return (res, rest.into_inner());
                }
            }
        }
        (Ok(()), buf)
    }

    /// Starts a zero-copy send of all of `buf` (`MSG_WAITALL`) and resolves at its result,
    /// without waiting for the notification: the next send can be issued at once. The
    /// returned [`ZcSent`] yields the buffer once the kernel released it. Dropping the
    /// `ZcSent`, or this future at any point, leaves the buffer with the runtime until the
    /// notification arrives.
    pub async fn send_zc_pipelined<B: IoBuf>(&mut self, buf: B) -> (io::Result<usize>, ZcSent<B>) {
        if let Err(e) = behind::flush(&self.socket).await {
            return (Err(e), ZcSent::ready(buf));
        }
        match zc::attempt(&self.socket, buf, SEND_ZC, |s, b| SendZc::send(s, b, true)).await {
            Attempt::Sent(res, release) => (res, release),
            Attempt::UseCopy(buf) => {
                let len = buf.bytes_init();
                let (res, buf) = self.write_all_now(buf).await;
                (res.map(|()| len), ZcSent::ready(buf))
            }
        }
    }

    /// Sets the zero-copy policy (default [`ZeroCopy::Auto`]).
    pub fn set_zero_copy(&self, policy: ZeroCopy) {
        self.socket.zc().set_policy(policy);
    }

    /// The zero-copy policy.
    pub fn zero_copy(&self) -> ZeroCopy {
        self.socket.zc().policy()
    }

    /// Counters of zero-copy sends on this socket, including whether `Auto` switched it to
    /// ordinary sends.
    pub fn zero_copy_stats(&self) -> ZeroCopyStats {
        self.socket.zc().stats()
    }

    /// Shuts down the read half, the write half (the peer reads EOF) or both.
    ///
    /// A connection the kernel already tore down (the peer reset it, or both directions are
    /// closed) gives `Ok(())`, not `NotConnected`: Linux answers `ENOTCONN` once the socket is
    /// in `TCP_CLOSE` (`inet_shutdown` in `net/ipv4/af_inet.c`), and whether a reset arrived
    /// just before the call is a race the caller cannot avoid. tokio does the same
    /// (tokio-rs/tokio#4665). Other errors, such as `EBADF`, are returned.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        stream::shutdown(&self.socket, how)
    }

    /// Sets `SO_SNDBUF` (Linux doubles the value for its bookkeeping; the kernel stops
    /// autotuning the send buffer).
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.min(i32::MAX as usize) as i32;
        (self.socket).set_int_option(libc::SOL_SOCKET, libc::SO_SNDBUF, bytes)
    }

    /// `SO_SNDBUF`, as the kernel reports it.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.socket.sock_ref()?.send_buffer_size()
    }

    /// Sets `SO_RCVBUF` (Linux doubles the value; the kernel stops autotuning the receive
    /// buffer). On loopback the receive window decides which CPU does whose TCP work, so this
    /// changes bulk-transfer cost markedly; measure before choosing.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.min(i32::MAX as usize) as i32;
        (self.socket).set_int_option(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)
    }

    /// `SO_RCVBUF`, as the kernel reports it.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.socket.sock_ref()?.recv_buffer_size()
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        (self.socket).set_int_option(libc::IPPROTO_TCP, libc::TCP_NODELAY, nodelay.into())
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.socket.sock_ref()?.tcp_nodelay()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Splits into a read half and a write half that can live in different tasks (on this
    /// thread), so that a read and a write can be in flight at once. Dropping the write half
    /// shuts down the write direction, as in tokio.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        super::split::into_split(self)
    }

    /// Splits a borrowed stream into a read half and a write half, so that one task can have a
    /// read and a write in flight at once (e.g. in `select!` or a join). Costs no allocation;
    /// dropping the halves does nothing to the connection.
    ///
    /// ```no_run
    /// # runtime::Runtime::new().unwrap().block_on(async {
    /// let mut stream = net::TcpStream::connect("127.0.0.1:8080").await.unwrap();
    /// let (mut rd, mut wr) = stream.split();
    /// let read = rd.read(Vec::with_capacity(4096));
    /// let write = wr.write_all(b"request".to_vec());
    /// # let _ = (read, write);
    /// # });
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        self.release_reads();
        super::split::split(self)
    }

    /// Cancels every operation in flight on the stream (they complete with `ECANCELED`), then
    /// releases this handle; the socket closes once nothing holds it.
    pub async fn close(self) -> io::Result<()> {
        behind::flush(&self.socket).await?;
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a connected `std` stream.
    pub fn from_std(stream: std::net::TcpStream) -> TcpStream {
        TcpStream::from_socket(Socket::from_fd(OwnedFd::from(stream)))
    }

    /// Converts into a `std` stream (duplicating the fd if operations still hold it). A direct
    /// descriptor gets a real fd installed (see [`try_as_fd`](TcpStream::try_as_fd)); its
    /// slot in the ring's table is closed once nothing holds it.
    ///
    /// Bytes written behind (see [`write`](TcpStream::write)) that the kernel has not taken yet
    /// still go out through the runtime: [`flush`](TcpStream::flush) first if the `std` stream
    /// writes too, so that its bytes follow them.
    ///
    /// Reading works the other way round: the `std` stream reads what the kernel still holds,
    /// and bytes the runtime already took for this stream but no read returned (queued by the
    /// read-ahead under [`read`](TcpStream::read), or rescued from a dropped read) are dropped
    /// with it, as is whatever the read-ahead's request, cancelled here, takes before the
    /// cancel lands. Convert before the first read, or when the peer is known to be silent
    /// (the last message was read whole and the peer waits for an answer).
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        Ok(std::net::TcpStream::from(self.socket.into_fd()?))
    }
}

/// A direct descriptor gets a real fd installed on first call (see
/// [`TcpStream::try_as_fd`]); when that fails (`EMFILE`) this returns -1.
impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.real_fd().map_or(-1, |fd| fd.as_raw_fd())
    }
}

/// A direct descriptor gets a real fd installed on first call (see
/// [`TcpStream::try_as_fd`]); when that fails (`EMFILE`) this lends a placeholder (`O_PATH` on
/// `/dev/null`) on which socket calls fail with `EBADF`: use `try_as_fd` to get the error.
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd_installing()
    }
}

impl FromRawFd for TcpStream {
    /// # Safety
    ///
    /// `fd` must be an open, connected TCP socket owned by nothing else.
    unsafe fn from_raw_fd(fd: RawFd) -> TcpStream {
        // SAFETY: the caller transfers ownership of an open socket fd.
        TcpStream::from_socket(unsafe { crate::socket::socket_from_raw(fd) })
    }
}

#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
mod compat {
    use super::TcpStream;
    use crate::{
        compat::{HasSocket, compat_methods},
        socket::Socket,
    };

    impl TcpStream {
        compat_methods!(read);
    }

    impl HasSocket for TcpStream {
        fn socket(&self) -> &Socket {
            &self.socket
        }

        fn release_reads(&mut self) {
            TcpStream::release_reads(self);
        }
    }
}
