//! `UdpSocket`.

use std::{
    fmt, io,
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
};

use runtime::{
    buf::{BufRing, IoBuf, IoBufMut},
    op::Op,
};
use socket2::{Domain, Protocol, Type};

use crate::{
    RecvMsgStream, ZeroCopy, ZeroCopyStats,
    addr::{self, ToSocketAddrs},
    behind, bufs,
    op::SendZc,
    op::{CancelFd, RecvMsg, RecvMsgOutput, SendMode, SendMsg, send_some},
    socket::Socket,
    stream::RescueAware,
    tcp::is_cancelled,
    udp::direct::{self, DirectRecv},
    zc::{self, Attempt},
};

mod peek;
mod vectored;

/// A UDP socket with owned-buffer I/O.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let socket = net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let (res, buf) = socket.recv_from(vec![0u8; 1500]).await;
/// let (n, peer) = res.unwrap();
/// let (res, _) = socket.send_to(buf, peer).await;
/// # let _ = (n, res);
/// # });
/// ```
///
/// Unlike [`TcpStream`](crate::TcpStream)'s, its operations take `&self`, as tokio's
/// `UdpSocket` does: each receive takes one whole datagram and each send puts out one, so
/// several in flight at once (from one task or several) cannot split or reorder a message.
/// Which receive gets which datagram is unspecified, and a datagram delivered to a receive
/// that was dropped is kept and returned by the next one. To bound a receive or send in time
/// and get its buffer back, use [`CancelExt`](runtime::op::CancelExt):
/// `socket.recv_from(buf).timeout(d).await`.
///
/// Socket options not offered here are available through `socket2::SockRef::from(&socket)`.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    /// Whether receives first try a non-blocking system call (`direct.rs`).
    direct: DirectRecv,
}

/// A received datagram did not fit the buffer. The buffer holds its first
/// [`capacity`](Truncated::capacity) bytes; the rest was discarded by the kernel.
///
/// Returned inside an `io::Error` of kind `InvalidData`; get it back with
/// `err.get_ref().and_then(|e| e.downcast_ref::<Truncated>())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// The datagram's length on the wire.
    pub len: usize,
    /// The buffer's capacity, which is what it now holds.
    pub capacity: usize,
    /// The sender, when known.
    pub peer: Option<SocketAddr>,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagram of {} bytes truncated to the {}-byte buffer",
            self.len, self.capacity
        )?;
        if let Some(peer) = self.peer {
            write!(f, " (from {peer})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Truncated {}

impl Truncated {
    /// The truncation `meta` reports, as an `InvalidData` error.
    fn error(meta: &RecvMeta) -> io::Error {
        let truncated = Truncated {
            len: meta.datagram_len,
            capacity: meta.len,
            peer: meta.peer,
        };
        io::Error::new(io::ErrorKind::InvalidData, truncated)
    }
}

/// What [`UdpSocket::recv_msg`] received besides the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes placed in the buffer.
    pub len: usize,
    /// The datagram's length on the wire; more than `len` when truncated.
    pub datagram_len: usize,
    /// The sender.
    pub peer: Option<SocketAddr>,
    /// Whether the payload was truncated (`MSG_TRUNC`).
    pub truncated: bool,
    /// Whether control messages were truncated (`MSG_CTRUNC`): the control buffer was small.
    pub control_truncated: bool,
}

impl From<RecvMsgOutput> for RecvMeta {
    fn from(out: RecvMsgOutput) -> RecvMeta {
        RecvMeta {
            len: out.copied,
            datagram_len: out.len,
            peer: out.peer,
            truncated: out.flags & libc::MSG_TRUNC != 0 || out.len > out.copied,
            control_truncated: out.flags & libc::MSG_CTRUNC != 0,
        }
    }
}

impl UdpSocket {
    fn from_socket(socket: Socket) -> UdpSocket {
        UdpSocket {
            socket,
            direct: DirectRecv::default(),
        }
    }

    /// Binds to `addr` (host names are resolved on the calling thread). Every resolved
    /// address is tried in turn.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        let mut last = None;
        for addr in addr::resolve_blocking(&addr)? {
            let bound = Socket::new(Domain::for_address(addr), Type::DGRAM, Protocol::UDP)
                .and_then(|socket| {
                    socket.sock_ref()?.bind(&addr.into())?;
                    Ok(socket)
                });
            match bound {
                Ok(socket) => return Ok(UdpSocket::from_socket(socket)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve_blocking returns at least one address"))
    }

    /// Sets the default peer: `send` goes there, and only its datagrams are received.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let mut last = None;
        for addr in addr::resolve(&addr).await? {
            // connect(2) on a datagram socket only records the peer; it does not block.
            match self.socket.sock_ref()?.connect(&addr.into()) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    }

    /// Sends `buf`'s initialized bytes as one datagram to `addr` (the first address it resolves
    /// to).
    ///
    /// A datagram of up to 4 KiB is sent behind: copied, queued for the kernel and reported
    /// sent at once, so the task goes on to its next receive and both reach the kernel in one
    /// enter. If the kernel then refuses it, the socket's next send reports the error.
    pub async fn send_to<B: IoBuf, A: ToSocketAddrs>(
        &self,
        buf: B,
        addr: A,
    ) -> (io::Result<usize>, B) {
        let addr = match addr::resolve_first(&addr).await {
            Ok(addr) => addr,
            Err(e) => return (Err(e), buf),
        };
        match self.send_behind(&buf, Some(addr)) {
            Err(e) => return (Err(e), buf),
            Ok(true) => return (Ok(buf.bytes_init()), buf),
            Ok(false) => {}
        }
        let (res, buf, _) = self.send_msg(buf, Some(addr), None).await;
        (res, buf)
    }

    /// Reports the failure of an earlier datagram sent behind, or sends `buf` behind the
    /// caller's back when it is small enough (`Ok(true)`; see [`send_to`](UdpSocket::send_to)).
    fn send_behind<B: IoBuf>(&self, buf: &B, addr: Option<SocketAddr>) -> io::Result<bool> {
        if let Some(e) = behind::take_error(&self.socket) {
            return Err(e);
        }
        Ok(behind::try_send_datagram(
            &self.socket,
            buf.as_slice(),
            addr,
        ))
    }

    /// Receives one datagram into `buf` and returns its length and sender.
    ///
    /// On a busy socket, where the next datagram is usually queued already, a receive first
    /// tries a non-blocking `recvfrom(2)` and so needs no loop turn of its own: many datagrams
    /// (and the replies sent behind meanwhile) share one `io_uring_enter`. On a quiet socket
    /// such tries back off, and receives go through the ring.
    ///
    /// # Errors
    ///
    /// A datagram larger than `buf`'s capacity is an `InvalidData` error carrying
    /// [`Truncated`] (the buffer holds the first part), never a silent loss of bytes.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (io::Result<(usize, SocketAddr)>, B) {
        let (res, buf, _) = self.recv_msg_inner(buf, None).await;
        let res = res.and_then(|meta| {
            let peer = meta.peer.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "datagram without a source address",
                )
            })?;
            Ok((meta.len, peer))
        });
        (res, buf)
    }

    /// Sends `buf`'s initialized bytes to the connected peer. Written behind as
    /// [`send_to`](UdpSocket::send_to) is.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        match self.send_behind(&buf, None) {
            Err(e) => return (Err(e), buf),
            Ok(true) => return (Ok(buf.bytes_init()), buf),
            Ok(false) => {}
        }
        send_some(&self.socket, buf, SendMode::FastDatagram).await
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from) for datagrams larger than the buffer.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        let (res, buf, _) = self.recv_msg_inner(buf, None).await;
        (res.map(|meta| meta.len), buf)
    }

    /// Sends one datagram with optional destination and control messages (e.g.
    /// [`cmsg::udp_segment`](super::cmsg::udp_segment) for GSO). Returns the control buffer.
    pub async fn send_msg<B: IoBuf>(
        &self,
        buf: B,
        addr: Option<SocketAddr>,
        control: Option<Vec<u8>>,
    ) -> (io::Result<usize>, B, Option<Vec<u8>>) {
        let op = SendMsg::new(self.socket.clone(), buf, addr.as_ref(), control, true);
        let (res, buf, control) = Op::new(op).await;
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let op = SendMsg::new(self.socket.clone(), buf, addr.as_ref(), control, false);
                Op::new(op).await
            }
            res => (res, buf, control),
        }
    }

    /// Receives one datagram with its control messages into `control` (its capacity is the
    /// room offered; see [`cmsg::space`](super::cmsg::space)). Truncation is reported in the
    /// metadata rather than as an error.
    pub async fn recv_msg<B: IoBufMut>(
        &self,
        buf: B,
        control: Vec<u8>,
    ) -> (io::Result<RecvMeta>, B, Vec<u8>) {
        let (res, buf, control) = self.receive(buf, Some(control), Ok).await;
        (res, buf, control.unwrap_or_default())
    }

    async fn recv_msg_inner<B: IoBufMut>(
        &self,
        buf: B,
        control: Option<Vec<u8>>,
    ) -> (io::Result<RecvMeta>, B, Option<Vec<u8>>) {
        self.receive(buf, control, |meta| {
            if meta.truncated {
                Err(Truncated::error(&meta))
            } else {
                Ok(meta)
            }
        })
        .await
    }

    /// Accounts for a direct receive try that `found` a datagram (or an error) or not: it is
    /// an inline call (`Metrics::inline_calls`; on epoll, `inline`, also the op it replaced),
    /// and on epoll a miss tells the engine the socket is empty, so the op that follows waits
    /// without a second try; on io_uring it feeds the back-off.
    fn tried_directly(&self, inline: bool, found: bool) {
        runtime::op::count_inline_op();
        match (inline, found) {
            (true, true) => {}
            (true, false) => {
                runtime::op::found_empty(self.socket.as_raw_fd(), runtime::op::Interest::Readable)
            }
            (false, true) => self.direct.found(),
            (false, false) => self.direct.missed(),
        }
    }

    /// Receives one datagram (a rescued one first), then lets `finish` judge the metadata.
    async fn receive<B: IoBufMut>(
        &self,
        mut buf: B,
        mut control: Option<Vec<u8>>,
        finish: impl Fn(RecvMeta) -> io::Result<RecvMeta>,
    ) -> (io::Result<RecvMeta>, B, Option<Vec<u8>>) {
        // On epoll every receive tries its system call first anyway: made here, it skips
        // the op's machinery when a datagram is queued (the busy socket's common case).
        let inline = runtime::op::runs_inline();
        loop {
            let direct = inline || self.direct.should_try();
            if direct {
                // The loop gets its turn at least every `coop::BUDGET` direct receives.
                std::future::poll_fn(runtime::coop::poll_proceed).await;
            }
            if let Some(meta) = self.rescued(&mut buf) {
                if let Some(control) = &mut control {
                    control.clear();
                }
                return (finish(meta), buf, control);
            }
            if direct && control.is_none() {
                // Without control data the try needs no op at all: one `recvfrom(2)`.
                let tried = direct::recv_from_now(self.socket.as_raw_fd(), &mut buf);
                self.tried_directly(inline, tried.is_some());
                if let Some(res) = tried {
                    return (res.and_then(&finish), buf, None);
                }
            }
            let with_control = control.is_some();
            let mut op = RecvMsg::new(self.socket.clone(), buf, control);
            if direct && with_control {
                match op.try_now() {
                    Ok((res, buf, control)) => {
                        self.tried_directly(inline, true);
                        return (
                            res.and_then(|out| finish(RecvMeta::from(out))),
                            buf,
                            control,
                        );
                    }
                    Err(back) => {
                        self.tried_directly(inline, false);
                        op = back;
                    }
                }
            }
            let ((res, b, c), cancelled) = RescueAware::new(self.socket.clone(), op).await;
            buf = b;
            control = c;
            let res = match res {
                Err(e) if cancelled && is_cancelled(&e) => continue,
                Err(e) => Err(e),
                Ok(out) => finish(RecvMeta::from(out)),
            };
            return (res, buf, control);
        }
    }

    /// A datagram an abandoned receive got from the kernel, copied into `buf`.
    fn rescued<B: IoBufMut>(&self, buf: &mut B) -> Option<RecvMeta> {
        let rescued = self.socket.take_rescued_datagram()?;
        let copied = bufs::scatter(std::slice::from_mut(buf), &rescued.data);
        Some(RecvMeta {
            len: copied,
            datagram_len: rescued.full_len,
            peer: rescued.peer,
            truncated: rescued.full_len > copied,
            control_truncated: false,
        })
    }

    /// Sends one datagram to the connected peer with `IORING_OP_SEND_ZC`; the buffer comes
    /// back after the kernel's notification. The socket's [`ZeroCopy`] policy applies as for
    /// [`TcpStream::send_zc`](crate::TcpStream::send_zc).
    pub async fn send_zc<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        let send_zc = io_uring::opcode::SendZc::CODE;
        match zc::attempt(&self.socket, buf, send_zc, |s, b| SendZc::send(s, b, false)).await {
            Attempt::Sent(res, release) => (res, release.await),
            // Copying sends resolve when the kernel took the datagram, as zero-copy ones do.
            Attempt::UseCopy(buf) => send_some(&self.socket, buf, SendMode::FastDatagram).await,
        }
    }

    /// Sends one datagram to `addr` with `IORING_OP_SENDMSG_ZC`; the buffer comes back after
    /// the kernel's notification. The socket's [`ZeroCopy`] policy applies.
    pub async fn send_to_zc<B: IoBuf, A: ToSocketAddrs>(
        &self,
        buf: B,
        addr: A,
    ) -> (io::Result<usize>, B) {
        let addr = match addr::resolve_first(&addr).await {
            Ok(addr) => addr,
            Err(e) => return (Err(e), buf),
        };
        let sendmsg_zc = io_uring::opcode::SendMsgZc::CODE;
        let make = |s, b| SendZc::send_to(s, b, &addr);
        match zc::attempt(&self.socket, buf, sendmsg_zc, make).await {
            Attempt::Sent(res, release) => (res, release.await),
            Attempt::UseCopy(buf) => {
                let (res, buf, _) = self.send_msg(buf, Some(addr), None).await;
                (res, buf)
            }
        }
    }

    /// Sets the zero-copy policy (default [`ZeroCopy::Auto`]).
    pub fn set_zero_copy(&self, policy: ZeroCopy) {
        self.socket.zc().set_policy(policy);
    }

    /// Counters of zero-copy sends on this socket.
    pub fn zero_copy_stats(&self) -> ZeroCopyStats {
        self.socket.zc().stats()
    }

    /// Received datagrams as a stream over one multishot `recvmsg` (Linux 6.0), each in a
    /// buffer taken from `ring` when it arrives, with its source address, its true length
    /// (truncation is flagged, never silent) and, with [`set_gro`](UdpSocket::set_gro), the
    /// GRO segment size. Each buffer carries a 112-byte header in front of the payload, so
    /// datagrams of up to `ring.buf_len() - 112` bytes fit whole.
    pub fn recv_msg_stream(&self, ring: &BufRing) -> RecvMsgStream {
        RecvMsgStream::new(self.socket.clone(), ring)
    }

    /// Asks the kernel to coalesce same-size datagrams from one sender into one receive
    /// (`UDP_GRO`, Linux 5.0); read the segment size with
    /// [`cmsg::gro_segment_size`](super::cmsg::gro_segment_size).
    pub fn set_gro(&self, on: bool) -> io::Result<()> {
        self.socket
            .set_int_option(super::cmsg::SOL_UDP, super::cmsg::UDP_GRO, on.into())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.socket.sock_ref()?.set_broadcast(on)
    }

    /// Cancels every operation in flight on the socket (they complete with `ECANCELED`), then
    /// releases this handle; the socket closes once nothing holds it.
    pub async fn close(self) -> io::Result<()> {
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a bound `std` socket.
    pub fn from_std(socket: std::net::UdpSocket) -> UdpSocket {
        UdpSocket::from_socket(Socket::from_fd(OwnedFd::from(socket)))
    }

    /// Converts into a `std` socket (duplicating the fd if operations still hold it).
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        Ok(std::net::UdpSocket::from(self.socket.into_fd()?))
    }
}

crate::socket::fd_traits!(UdpSocket, "an open UDP socket");
