//! `UnixStream`.

use std::{
    io,
    net::Shutdown,
    os::{
        fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd},
        unix::net::SocketAddr,
    },
    path::Path,
};

use runtime::{
    buf::{BufRing, IoBuf, IoBufMut},
    op::Op,
};
use socket2::{Domain, Type};

use super::{
    RecvFds, UCred, addr, cred,
    fds::{self, SendFds},
    split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf},
};
use crate::{
    RecvStream, ZeroCopy, ZeroCopyStats,
    addr::RawAddr,
    behind,
    op::{CancelFd, Connect, RecvMsg, SendMode, SendMsg, SendZc, send_some},
    socket::Socket,
    stream::RescueAware,
    stream::{self, is_cancelled},
    zc::{self, Attempt},
};

/// A Unix stream socket connection with owned-buffer I/O, like
/// [`TcpStream`](crate::TcpStream): the same reads (rescued bytes kept in order), the same
/// writes (up to 4 KiB written behind; [`flush`](UnixStream::flush) waits for them), `split`
/// and `into_split`, receive streams over a [`BufRing`], plus descriptor passing
/// ([`send_with_fds`](UnixStream::send_with_fds), [`recv_with_fds`](UnixStream::recv_with_fds))
/// and the peer's credentials ([`peer_cred`](UnixStream::peer_cred)).
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let mut stream = net::UnixStream::connect("/tmp/app.sock").await.unwrap();
/// let (res, buf) = stream.write_all(b"ping".to_vec()).await;
/// res.unwrap();
/// let (res, buf) = stream.read(buf).await;
/// let n = res.unwrap();
/// println!("{:?}", &buf[..n]);
/// # });
/// ```
///
/// Reads and writes take `&mut self`, for the reasons given at
/// [`TcpStream`](crate::TcpStream): split the stream to have one of each in flight.
#[derive(Debug)]
pub struct UnixStream {
    pub(super) socket: Socket,
}

impl UnixStream {
    pub(super) fn from_socket(socket: Socket) -> UnixStream {
        UnixStream { socket }
    }

    /// Connects to the socket at `path` (a leading NUL byte names the abstract namespace:
    /// `"\0name"`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path the kernel cannot take (empty, 108 bytes or more, a NUL
    /// inside), `NotFound` when no socket exists at `path`, `ConnectionRefused` when nobody
    /// listens on it; the messages say what to check.
    pub async fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let raw = addr::raw_from_path(path)?;
        UnixStream::connect_raw(raw, &addr::describe(path)).await
    }

    /// Connects to `addr` (a path or an abstract name).
    ///
    /// # Errors
    ///
    /// As [`connect`](UnixStream::connect); `InvalidInput` for an unnamed address.
    pub async fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        let raw = addr::raw_from_addr(addr)?;
        UnixStream::connect_raw(raw, &addr::describe_addr(addr)).await
    }

    async fn connect_raw(raw: RawAddr, what: &str) -> io::Result<UnixStream> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, socket2::Protocol::from(0))?;
        let (res, socket) = Op::new(Connect::raw(socket, raw)).await;
        match res {
            Ok(()) => Ok(UnixStream::from_socket(socket)),
            Err(e) => Err(addr::explain(e, "connect", what)),
        }
    }

    /// A pair of connected, unnamed streams (`socketpair`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a), UnixStream::from_std(b)))
    }

    /// Reads into `buf` (from its start, up to its capacity) and returns how many bytes
    /// arrived; `Ok(0)` means the peer closed its side (or `buf` has no capacity).
    /// Descriptors the peer passed with these bytes are discarded by the kernel; use
    /// [`recv_with_fds`](UnixStream::recv_with_fds) to take them.
    pub async fn read<B: IoBufMut>(&mut self, buf: B) -> (io::Result<usize>, B) {
        stream::read(&self.socket, buf).await
    }

    /// Reads until `buf` is full (to its capacity). See
    /// [`TcpStream::read_exact`](crate::TcpStream::read_exact).
    pub async fn read_exact<B: IoBufMut>(&mut self, buf: B) -> (io::Result<()>, B) {
        stream::read_exact(buf, async |slice| stream::read(&self.socket, slice).await).await
    }

    /// Reads into several buffers, filling each from its start in order.
    pub async fn readv<B: IoBufMut>(&mut self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        stream::readv(&self.socket, bufs).await
    }

    /// Writes some of `buf`'s initialized bytes and returns how many; up to 4 KiB are
    /// written behind, as [`TcpStream::write`](crate::TcpStream::write) describes.
    pub fn write<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> {
        stream::write(&self.socket, buf)
    }

    /// Writes all of `buf`'s initialized bytes; see
    /// [`TcpStream::write_all`](crate::TcpStream::write_all).
    pub fn write_all<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<()>, B)> {
        stream::write_all(&self.socket, buf)
    }

    /// Waits until the kernel has taken every byte written so far, and reports a failure of
    /// those written behind.
    pub async fn flush(&mut self) -> io::Result<()> {
        behind::flush(&self.socket).await
    }

    /// Writes the initialized bytes of several buffers, in order, with one request.
    pub async fn writev<B: IoBuf>(&mut self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        stream::writev(&self.socket, bufs).await
    }

    /// Writes every initialized byte of `bufs`, in order, as [`write_all`](UnixStream::write_all)
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

    /// Sends all of `buf`'s initialized bytes with the descriptors `fds` attached to the
    /// first of them (`SCM_RIGHTS`); the peer takes them with
    /// [`recv_with_fds`](UnixStream::recv_with_fds). Returns the number of bytes sent (all).
    ///
    /// The descriptors are duplicated for the request, so the caller may close its own as
    /// soon as this returns, or drop this future at any point.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for descriptors without data (a stream carries them only with at least
    /// one byte) or more than [`MAX_FDS`](super::MAX_FDS); the OS error otherwise.
    pub async fn send_with_fds<B: IoBuf>(
        &mut self,
        buf: B,
        fds: &[BorrowedFd<'_>],
    ) -> (io::Result<usize>, B) {
        let len = buf.bytes_init();
        if len == 0 && !fds.is_empty() {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix stream passes descriptors only together with data: send at least one \
                 byte with them",
            );
            return (Err(e), buf);
        }
        let dups = match fds::duplicate(fds) {
            Ok(dups) => dups,
            Err(e) => return (Err(e), buf),
        };
        if let Err(e) = behind::flush(&self.socket).await {
            return (Err(e), buf);
        }
        // Not the skip-success path: a stream may take fewer bytes than offered, which that
        // path would report as all of them.
        let socket = self.socket.clone();
        let op = SendFds::new(dups, |control| {
            SendMsg::to_raw(socket, buf, None, control, false)
        });
        let (res, buf, _) = Op::new(op).await;
        match res {
            Ok(n) => {
                let (res, buf) = stream::write_rest(&self.socket, buf, n, len).await;
                (res.map(|()| len), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    /// Receives bytes into `buf` (from its start) together with up to `max_fds` descriptors
    /// the peer passed with them.
    ///
    /// Descriptors beyond `max_fds` (or beyond the room the kernel found) are closed and
    /// flagged in [`RecvFds::fds_truncated`]. If this future is dropped before it completes,
    /// descriptors that still arrive for it are closed and its bytes are kept for the next
    /// receive, as for [`read`](UnixStream::read); bytes served from that rescue come
    /// without descriptors.
    pub async fn recv_with_fds<B: IoBufMut>(
        &mut self,
        buf: B,
        max_fds: usize,
    ) -> (io::Result<RecvFds>, B) {
        let mut buf = buf;
        loop {
            if let Some(n) = self.socket.read_rescued(std::slice::from_mut(&mut buf)) {
                return (Ok(RecvFds::plain(n)), buf);
            }
            let op = RecvMsg::stream(self.socket.clone(), buf, fds::control_for(max_fds));
            let ((res, b, control), cancelled) = RescueAware::new(self.socket.clone(), op).await;
            buf = b;
            let out = match res {
                // Cancelled because data was rescued: serve it.
                Err(e) if cancelled && is_cancelled(&e) => continue,
                Err(e) => return (Err(e), buf),
                Ok(out) => out,
            };
            // SAFETY: the receive succeeded, so `control` holds the control data it wrote,
            // and nothing else has looked at it.
            let fds = control.map_or_else(Vec::new, |c| unsafe { fds::take_rights(&c) });
            let n =
                self.socket
                    .merge_older(out.sequence, std::slice::from_mut(&mut buf), out.copied);
            return (Ok(RecvFds::received(n, fds, max_fds, out.flags)), buf);
        }
    }

    /// Sends with `IORING_OP_SEND_ZC` under the socket's [`ZeroCopy`] policy, as
    /// [`TcpStream::send_zc`](crate::TcpStream::send_zc) does. Unix sockets have no zero-copy
    /// send (the kernel answers `EOPNOTSUPP`), so under the default `Auto` this is an ordinary
    /// send after the first attempt.
    ///
    /// # Errors
    ///
    /// Under `ZeroCopy::On`, `Unsupported`, with a message naming the fix.
    pub async fn send_zc<B: IoBuf>(&mut self, buf: B) -> (io::Result<usize>, B) {
        if let Err(e) = behind::flush(&self.socket).await {
            return (Err(e), buf);
        }
        let code = io_uring::opcode::SendZc::CODE;
        match zc::attempt(&self.socket, buf, code, |s, b| SendZc::send(s, b, false)).await {
            Attempt::Sent(res, release) => (res, release.await),
            Attempt::UseCopy(buf) => send_some(&self.socket, buf, SendMode::FastStream).await,
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

    /// Counters of zero-copy sends on this socket.
    pub fn zero_copy_stats(&self) -> ZeroCopyStats {
        self.socket.zc().stats()
    }

    /// Received bytes as a stream of [`RxBuf`](runtime::buf::RxBuf)s taken from `ring` only
    /// when data arrives, over one multishot receive, bundled where the kernel offers it; see
    /// [`TcpStream::recv_stream`](crate::TcpStream::recv_stream).
    pub fn recv_stream(&mut self, ring: &BufRing) -> RecvStream<'_> {
        RecvStream::bundled(self.socket.clone(), ring)
    }

    /// Like [`recv_stream`](UnixStream::recv_stream), with one buffer per completion; see
    /// [`TcpStream::recv_stream_unbundled`](crate::TcpStream::recv_stream_unbundled).
    pub fn recv_stream_unbundled(&mut self, ring: &BufRing) -> RecvStream<'_> {
        RecvStream::new(self.socket.clone(), ring, false)
    }

    /// Shuts down the read half, the write half (after the bytes written behind; the peer
    /// reads EOF) or both. A connection already torn down gives `Ok(())`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        stream::shutdown(&self.socket, how)
    }

    /// The credentials of the peer process (`SO_PEERCRED`), recorded when the connection was
    /// made.
    pub fn peer_cred(&self) -> io::Result<UCred> {
        cred::peer_cred(&self.socket)
    }

    /// The local address (unnamed for a connecting socket or one from [`pair`](Self::pair)).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        addr::local_addr(&self.socket)
    }

    /// The peer's address (the listener's path, for a connected client).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        addr::peer_addr(&self.socket)
    }

    /// Splits into halves that can live in different tasks; dropping the write half shuts
    /// down the write direction. See [`TcpStream::into_split`](crate::TcpStream::into_split).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        super::split::into_split(self)
    }

    /// Splits a borrowed stream into a read half and a write half for one task. See
    /// [`TcpStream::split`](crate::TcpStream::split).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        super::split::split(self)
    }

    /// Cancels every operation in flight on the stream, then releases this handle; the
    /// socket closes once nothing holds it.
    pub async fn close(self) -> io::Result<()> {
        behind::flush(&self.socket).await?;
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a connected `std` stream.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> UnixStream {
        UnixStream::from_socket(Socket::from_fd(OwnedFd::from(stream)))
    }

    /// Converts into a `std` stream (duplicating the fd if operations still hold it).
    /// [`flush`](UnixStream::flush) first if the `std` stream writes too.
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixStream> {
        Ok(std::os::unix::net::UnixStream::from(self.socket.into_fd()?))
    }
}

crate::socket::fd_traits!(UnixStream, "an open, connected Unix stream socket");

impl IntoRawFd for UnixStream {
    /// The socket's fd, or a duplicate while operations still hold it (a send written behind,
    /// a dropped receive awaiting its completion); if even duplicating fails (the descriptor
    /// table is full), the socket's own fd, which the runtime then never closes.
    /// [`flush`](UnixStream::flush) first so that nothing written is left behind.
    fn into_raw_fd(self) -> RawFd {
        self.socket.into_raw_fd()
    }
}

#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
mod compat {
    use super::UnixStream;
    use crate::{
        compat::{HasSocket, compat_methods},
        socket::Socket,
    };

    impl UnixStream {
        compat_methods!(read);
    }

    impl HasSocket for UnixStream {
        fn socket(&self) -> &Socket {
            &self.socket
        }
    }
}
