//! `UnixDatagram`.

use std::{
    io,
    net::Shutdown,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::net::SocketAddr,
    },
    path::Path,
};

use runtime::{
    buf::{IoBuf, IoBufMut},
    op::Op,
};
use socket2::{Domain, Type};

use super::{
    RecvFds, UCred, addr, cred,
    fds::{self, SendFds},
    listener::bound,
};
use crate::{
    addr::RawAddr,
    bufs,
    op::{CancelFd, RecvMsg, SendMsg},
    socket::Socket,
    stream::RescueAware,
    stream::is_cancelled,
    udp::Truncated,
};

/// A Unix datagram socket with owned-buffer I/O.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let (a, b) = net::UnixDatagram::pair().unwrap();
/// let (res, _) = a.send(b"ping".to_vec()).await;
/// res.unwrap();
/// let (res, buf) = b.recv(Vec::with_capacity(64)).await;
/// assert_eq!(&buf[..res.unwrap()], b"ping");
/// # });
/// ```
///
/// Operations take `&self`, as on [`UdpSocket`](crate::UdpSocket): each receive takes one
/// whole datagram. Unlike UDP, Unix datagrams are reliable and ordered, so sends are not
/// written behind: each resolves once the kernel queued its datagram, and sends awaited one
/// after the other arrive in that order. A datagram larger than the receive buffer is an
/// `InvalidData` error carrying [`Truncated`] (its [`peer`](Truncated::peer) is `None`:
/// Unix senders have no IP address), never a silent loss; a datagram delivered to a receive
/// that was dropped is kept and returned by the next one.
#[derive(Debug)]
pub struct UnixDatagram {
    socket: Socket,
}

impl UnixDatagram {
    /// Binds a new socket to `path` (a leading NUL byte names the abstract namespace).
    ///
    /// # Errors
    ///
    /// As [`UnixListener::bind`](super::UnixListener::bind): `InvalidInput` for a path the
    /// kernel cannot take, `AddrInUse` when it exists already.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        let path = path.as_ref();
        let raw = addr::raw_from_path(path)?;
        UnixDatagram::bind_raw(&raw, &addr::describe(path))
    }

    /// Binds a new socket to `addr` (a path or an abstract name).
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixDatagram> {
        let raw = addr::raw_from_addr(addr)?;
        UnixDatagram::bind_raw(&raw, &addr::describe_addr(addr))
    }

    fn bind_raw(raw: &RawAddr, what: &str) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            socket: bound(Type::DGRAM, raw, what)?,
        })
    }

    /// A new socket bound to nothing: it can send, and receive replies only if the peer can
    /// name it (it cannot, unless it is connected to, or from a [`pair`](Self::pair)).
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            socket: Socket::new(Domain::UNIX, Type::DGRAM, socket2::Protocol::from(0))?,
        })
    }

    /// A pair of connected, unnamed datagram sockets (`socketpair`).
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a), UnixDatagram::from_std(b)))
    }

    /// Sets the default peer: [`send`](Self::send) goes there, and only its datagrams are
    /// received. (`connect(2)` on a datagram socket only records the peer; it does not block.)
    ///
    /// # Errors
    ///
    /// As [`UnixStream::connect`](super::UnixStream::connect): `NotFound` when no socket
    /// exists at `path`, `InvalidInput` for a path the kernel cannot take.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        let path = path.as_ref();
        self.connect_raw(&addr::raw_from_path(path)?, &addr::describe(path))
    }

    /// Sets the default peer to `addr` (a path or an abstract name).
    pub fn connect_addr(&self, addr: &SocketAddr) -> io::Result<()> {
        self.connect_raw(&addr::raw_from_addr(addr)?, &addr::describe_addr(addr))
    }

    fn connect_raw(&self, raw: &RawAddr, what: &str) -> io::Result<()> {
        // SAFETY: `raw` is a valid `sockaddr_un` of `raw.len` bytes, read during the call only;
        // the fd is open (owned by `self.socket`).
        let ret = unsafe { libc::connect(self.socket.as_raw_fd(), raw.as_ptr(), raw.len) };
        if ret != 0 {
            return Err(addr::explain(io::Error::last_os_error(), "connect", what));
        }
        Ok(())
    }

    /// Sends `buf`'s initialized bytes as one datagram to the socket at `path`.
    ///
    /// # Errors
    ///
    /// `NotFound` when no socket exists at `path`, `InvalidInput` for a path the kernel
    /// cannot take, `ConnectionRefused` when the socket there is not a datagram socket.
    pub async fn send_to<B: IoBuf, P: AsRef<Path>>(
        &self,
        buf: B,
        path: P,
    ) -> (io::Result<usize>, B) {
        self.send_with_fds_to(buf, &[], Some(path.as_ref())).await
    }

    /// Sends one datagram to `addr` (a path or an abstract name).
    pub async fn send_to_addr<B: IoBuf>(
        &self,
        buf: B,
        addr: &SocketAddr,
    ) -> (io::Result<usize>, B) {
        let raw = match addr::raw_from_addr(addr) {
            Ok(raw) => raw,
            Err(e) => return (Err(e), buf),
        };
        self.send_raw(buf, Vec::new(), Some(raw), &addr::describe_addr(addr))
            .await
    }

    /// Sends one datagram to the connected peer.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.send_with_fds_to(buf, &[], None).await
    }

    /// Sends one datagram to the connected peer with the descriptors `fds` (`SCM_RIGHTS`);
    /// a datagram of zero bytes can carry them too. The descriptors are duplicated for the
    /// request, so the caller may close its own at once.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for more than [`MAX_FDS`](super::MAX_FDS) descriptors.
    pub async fn send_with_fds<B: IoBuf>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
    ) -> (io::Result<usize>, B) {
        self.send_with_fds_to(buf, fds, None).await
    }

    /// Sends one datagram with the descriptors `fds` to the socket at `path`.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to) and [`send_with_fds`](Self::send_with_fds).
    pub async fn send_to_with_fds<B: IoBuf, P: AsRef<Path>>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
        path: P,
    ) -> (io::Result<usize>, B) {
        self.send_with_fds_to(buf, fds, Some(path.as_ref())).await
    }

    /// One datagram with `fds`, to `path` or (`None`) the connected peer.
    async fn send_with_fds_to<B: IoBuf>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
        path: Option<&Path>,
    ) -> (io::Result<usize>, B) {
        let (raw, what) = match path.map(|p| (addr::raw_from_path(p), addr::describe(p))) {
            None => (None, String::new()),
            Some((Ok(raw), what)) => (Some(raw), what),
            Some((Err(e), _)) => return (Err(e), buf),
        };
        let dups = match fds::duplicate(fds) {
            Ok(dups) => dups,
            Err(e) => return (Err(e), buf),
        };
        self.send_raw(buf, dups, raw, &what).await
    }

    /// One datagram: first on the skip-success path, then, if the peer's queue was full
    /// (`EAGAIN`), with a request that waits for room.
    async fn send_raw<B: IoBuf>(
        &self,
        buf: B,
        fds: Vec<OwnedFd>,
        raw: Option<RawAddr>,
        what: &str,
    ) -> (io::Result<usize>, B) {
        let socket = self.socket.clone();
        let op = SendFds::new(fds, |c| SendMsg::to_raw(socket, buf, raw, c, true));
        let (res, buf, fds) = Op::new(op).await;
        let (res, buf) = match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let socket = self.socket.clone();
                let op = SendFds::new(fds, |c| SendMsg::to_raw(socket, buf, raw, c, false));
                let (res, buf, _) = Op::new(op).await;
                (res, buf)
            }
            res => (res, buf),
        };
        match res {
            Err(e) if raw.is_some() => (Err(addr::explain(e, "send", what)), buf),
            res => (res, buf),
        }
    }

    /// Receives one datagram into `buf` and returns its length and sender (unnamed when the
    /// sender is not bound).
    ///
    /// # Errors
    ///
    /// A datagram larger than `buf`'s capacity is an `InvalidData` error carrying
    /// [`Truncated`] (the buffer holds the first part).
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> (io::Result<(usize, SocketAddr)>, B) {
        let (res, buf) = self.receive(buf, 0).await;
        let res = res.and_then(|got| {
            let len = got.whole()?;
            Ok((len, addr::to_std(&got.peer)?))
        });
        (res, buf)
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Errors
    ///
    /// As [`recv_from`](Self::recv_from) for datagrams larger than the buffer.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        let (res, buf) = self.receive(buf, 0).await;
        (res.and_then(|got| got.whole()), buf)
    }

    /// Receives one datagram with up to `max_fds` descriptors passed with it. Truncation of
    /// the payload ([`RecvFds::truncated`]) or of the descriptors
    /// ([`RecvFds::fds_truncated`]; those that did not fit were closed) is reported in the
    /// result, not as an error.
    pub async fn recv_with_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> (io::Result<RecvFds>, B) {
        let (res, buf) = self.receive(buf, max_fds).await;
        (res.map(|got| got.fds), buf)
    }

    /// As [`recv_with_fds`](Self::recv_with_fds), with the sender's address.
    pub async fn recv_from_with_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> (io::Result<(RecvFds, SocketAddr)>, B) {
        let (res, buf) = self.receive(buf, max_fds).await;
        let res = res.and_then(|got| {
            let peer = addr::to_std(&got.peer)?;
            Ok((got.fds, peer))
        });
        (res, buf)
    }

    /// Receives one datagram (a rescued one first) with up to `max_fds` descriptors.
    async fn receive<B: IoBufMut>(&self, mut buf: B, max_fds: usize) -> (io::Result<Got>, B) {
        loop {
            if let Some(rescued) = self.socket.take_rescued_datagram() {
                let copied = bufs::scatter(std::slice::from_mut(&mut buf), &rescued.data);
                let mut fds = RecvFds::plain(copied);
                fds.truncated = rescued.full_len > copied;
                let got = Got {
                    fds,
                    peer: rescued.raw_peer.unwrap_or_else(unnamed),
                    datagram_len: rescued.full_len,
                };
                return (Ok(got), buf);
            }
            let op = RecvMsg::unix(self.socket.clone(), buf, fds::control_for(max_fds));
            let ((res, b, control), cancelled) = RescueAware::new(self.socket.clone(), op).await;
            buf = b;
            let out = match res {
                Err(e) if cancelled && is_cancelled(&e) => continue,
                Err(e) => return (Err(e), buf),
                Ok(out) => out,
            };
            // SAFETY: the receive succeeded, so `control` holds the control data it wrote,
            // and nothing else has looked at it.
            let taken = control.map_or_else(Vec::new, |c| unsafe { fds::take_rights(&c) });
            let mut fds = RecvFds::received(out.copied, taken, max_fds, out.flags);
            fds.truncated = out.flags & libc::MSG_TRUNC != 0 || out.len > out.copied;
            let got = Got {
                fds,
                peer: out.addr,
                datagram_len: out.len,
            };
            return (Ok(got), buf);
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        addr::local_addr(&self.socket)
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        addr::peer_addr(&self.socket)
    }

    /// The credentials of the peer process (`SO_PEERCRED`; for sockets from
    /// [`pair`](Self::pair)).
    pub fn peer_cred(&self) -> io::Result<UCred> {
        cred::peer_cred(&self.socket)
    }

    /// Shuts down reading, writing or both (`shutdown(2)`).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.sock_ref()?.shutdown(how)
    }

    /// Cancels every operation in flight on the socket (they complete with `ECANCELED`),
    /// then releases this handle; the socket closes once nothing holds it.
    pub async fn close(self) -> io::Result<()> {
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a `std` socket.
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> UnixDatagram {
        UnixDatagram {
            socket: Socket::from_fd(OwnedFd::from(socket)),
        }
    }

    /// Converts into a `std` socket (duplicating the fd if operations still hold it).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixDatagram> {
        Ok(std::os::unix::net::UnixDatagram::from(
            self.socket.into_fd()?,
        ))
    }
}

/// A received datagram: what `recv_with_fds` returns, its sender and its length on the wire.
struct Got {
    fds: RecvFds,
    peer: RawAddr,
    datagram_len: usize,
}

impl Got {
    /// The length of a datagram that fit the buffer, or the `Truncated` error.
    fn whole(&self) -> io::Result<usize> {
        if !self.fds.truncated {
            return Ok(self.fds.len);
        }
        let truncated = Truncated {
            len: self.datagram_len,
            capacity: self.fds.len,
            peer: None,
        };
        Err(io::Error::new(io::ErrorKind::InvalidData, truncated))
    }
}

/// The address of an unbound sender.
fn unnamed() -> RawAddr {
    let mut raw = RawAddr::empty();
    raw.len = 0;
    raw
}

impl AsRawFd for UnixDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for UnixDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl IntoRawFd for UnixDatagram {
    /// The socket's fd, or a duplicate while operations still hold it; if even duplicating
    /// fails (the descriptor table is full), the socket's own fd, which the runtime then
    /// never closes.
    fn into_raw_fd(self) -> RawFd {
        self.socket.into_raw_fd()
    }
}

impl FromRawFd for UnixDatagram {
    /// # Safety
    ///
    /// `fd` must be an open Unix datagram socket owned by nothing else.
    unsafe fn from_raw_fd(fd: RawFd) -> UnixDatagram {
        UnixDatagram {
            // SAFETY: the caller transfers ownership of an open socket fd.
            socket: unsafe { crate::socket::socket_from_raw(fd) },
        }
    }
}
