//! `UnixListener` and its `Incoming` stream.

use std::{
    cell::Cell,
    io,
    os::{
        fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::net::SocketAddr,
    },
    path::Path,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::op::Op;
use socket2::{Domain, Type};

use super::{UnixStream, addr};
use crate::{
    accept::{AcceptStream, Backoff, accept_one},
    addr::RawAddr,
    op::CancelFd,
    socket::Socket,
};

/// The `listen(2)` backlog (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// A Unix stream socket listening for connections.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let _ = std::fs::remove_file("/tmp/app.sock"); // a stale file from an earlier run
/// let listener = net::UnixListener::bind("/tmp/app.sock").unwrap();
/// let (stream, _peer) = listener.accept().await.unwrap();
/// # let _ = stream;
/// # });
/// ```
///
/// Binding a path creates a socket file there, which stays when the listener is dropped (as
/// with `std` and tokio): remove it before binding again.
#[derive(Debug)]
pub struct UnixListener {
    socket: Socket,
    /// After descriptor exhaustion, accepts wait until this instant (see `accept`).
    backoff: Cell<Backoff>,
}

impl UnixListener {
    /// Binds to `path` and listens (backlog 1024). A leading NUL byte names the abstract
    /// namespace (`"\0name"`), which needs no file.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path the kernel cannot take (empty, 108 bytes or more, a NUL
    /// inside); `AddrInUse` when the path exists already (remove a stale socket file first);
    /// `NotFound` when its directory does not exist.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let path = path.as_ref();
        let raw = addr::raw_from_path(path)?;
        UnixListener::bind_raw(&raw, &addr::describe(path))
    }

    /// Binds to `addr` (a path or an abstract name) and listens.
    ///
    /// # Errors
    ///
    /// As [`bind`](UnixListener::bind); `InvalidInput` for an unnamed address.
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        let raw = addr::raw_from_addr(addr)?;
        UnixListener::bind_raw(&raw, &addr::describe_addr(addr))
    }

    fn bind_raw(raw: &RawAddr, what: &str) -> io::Result<UnixListener> {
        let socket = bound(Type::STREAM, raw, what)?;
        socket.sock_ref()?.listen(BACKLOG)?;
        Ok(UnixListener::from_socket(socket))
    }

    fn from_socket(socket: Socket) -> UnixListener {
        UnixListener {
            socket,
            backoff: Cell::new(Backoff::default()),
        }
    }

    /// Accepts one connection, with the peer's address (usually unnamed: clients rarely bind).
    ///
    /// After descriptor exhaustion (`EMFILE`, `ENFILE`) the error is returned and the next
    /// `accept` first waits a little, as [`TcpListener::accept`](crate::TcpListener::accept)
    /// does.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (socket, peer) = accept_one(&self.socket, &self.backoff, None).await?;
        let stream = UnixStream::from_socket(socket);
        Ok((stream, addr::to_std(&peer)?))
    }

    /// A stream of accepted connections over one multishot accept request, re-armed whenever
    /// the kernel ends it; see [`TcpListener::incoming`](crate::TcpListener::incoming).
    pub fn incoming(&self) -> Incoming {
        Incoming {
            inner: AcceptStream::new(self.socket.clone(), None),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        addr::local_addr(&self.socket)
    }

    /// Cancels every operation in flight on the listener (pending accepts, `incoming`
    /// streams, which then end), then releases this handle.
    pub async fn close(self) -> io::Result<()> {
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a listening `std` socket.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener::from_socket(Socket::from_fd(OwnedFd::from(listener)))
    }

    /// Converts into a `std` listener (duplicating the fd if operations still hold it).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixListener> {
        Ok(std::os::unix::net::UnixListener::from(
            self.socket.into_fd()?,
        ))
    }
}

/// A new close-on-exec Unix socket of type `ty`, bound to `raw` (`what` names it in errors).
pub(super) fn bound(ty: Type, raw: &RawAddr, what: &str) -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, ty, socket2::Protocol::from(0))?;
    // SAFETY: `raw` is a valid `sockaddr_un` of `raw.len` bytes, read during the call only;
    // the fd is open (owned by `socket`).
    let ret = unsafe { libc::bind(socket.as_raw_fd(), raw.as_ptr(), raw.len) };
    if ret != 0 {
        return Err(addr::explain(io::Error::last_os_error(), "bind", what));
    }
    Ok(socket)
}

crate::socket::fd_traits!(UnixListener, "an open, listening Unix stream socket");

impl IntoRawFd for UnixListener {
    /// The socket's fd, or a duplicate while operations still hold it; if even duplicating
    /// fails (the descriptor table is full), the socket's own fd, which the runtime then
    /// never closes.
    fn into_raw_fd(self) -> RawFd {
        self.socket.into_raw_fd()
    }
}

/// Accepted connections of a [`UnixListener`], from [`incoming`](UnixListener::incoming):
/// one multishot accept request, re-armed when the kernel ends it, errors yielded as items,
/// a pause after descriptor exhaustion, and the end (`None`) once the listener was closed.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Incoming {
    inner: AcceptStream,
}

impl Incoming {
    /// The next connection (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<UnixStream>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Incoming {
    type Item = io::Result<UnixStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(Pin::new(&mut self.get_mut().inner).poll_next(cx));
        Poll::Ready(item.map(|res| res.map(UnixStream::from_socket)))
    }
}
