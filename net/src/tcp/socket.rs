//! `TcpSocket`: a TCP socket set up (options, local address) before it connects or listens.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
};

use runtime::op::Op;
use socket2::{Domain, Protocol, Type};

use super::{TcpListener, TcpStream};
use crate::{op::Connect, options, socket::Socket};

/// A TCP socket that has not connected or listened yet, as tokio's `TcpSocket`: set options
/// and bind first, then [`connect`](TcpSocket::connect) to get a [`TcpStream`] or
/// [`listen`](TcpSocket::listen) to get a [`TcpListener`].
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// use net::TcpSocket;
///
/// let socket = TcpSocket::new_v4()?;
/// socket.set_reuseaddr(true)?;
/// socket.set_nodelay(true)?;
/// socket.bind("127.0.0.1:0".parse().unwrap())?;
/// let mut stream = socket.connect("127.0.0.1:8080".parse().unwrap()).await?;
/// let (res, _) = stream.write_all(b"hello\n").await;
/// res?;
/// # std::io::Result::Ok(())
/// # });
/// ```
///
/// Unlike [`TcpListener::bind`], which always sets `SO_REUSEADDR`, a `TcpSocket` has only
/// the options it is given. Options it does not offer are set through
/// `socket2::SockRef::from(&socket)`.
#[derive(Debug)]
pub struct TcpSocket {
    inner: socket2::Socket,
}

impl TcpSocket {
    /// A new IPv4 TCP socket (close-on-exec).
    pub fn new_v4() -> io::Result<TcpSocket> {
        TcpSocket::new(Domain::IPV4)
    }

    /// A new IPv6 TCP socket (close-on-exec). Whether it also reaches IPv4 peers through
    /// mapped addresses is the system's `net.ipv6.bindv6only` setting; set `IPV6_V6ONLY`
    /// through `socket2::SockRef` to choose.
    pub fn new_v6() -> io::Result<TcpSocket> {
        TcpSocket::new(Domain::IPV6)
    }

    fn new(domain: Domain) -> io::Result<TcpSocket> {
        Ok(TcpSocket {
            inner: socket2::Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
        })
    }

    /// Sets `SO_REUSEADDR`: binding succeeds while old connections on the address linger in
    /// `TIME_WAIT` (and, on Linux, while other sockets that set it too are bound there, as
    /// long as none listens).
    pub fn set_reuseaddr(&self, reuseaddr: bool) -> io::Result<()> {
        self.inner.set_reuse_address(reuseaddr)
    }

    /// Whether `SO_REUSEADDR` is set.
    pub fn reuseaddr(&self) -> io::Result<bool> {
        self.inner.reuse_address()
    }

    /// Sets `SO_REUSEPORT`: several sockets (of the same user) that all set it may bind and
    /// listen on one address, and the kernel spreads incoming connections across them.
    pub fn set_reuseport(&self, reuseport: bool) -> io::Result<()> {
        self.inner.set_reuse_port(reuseport)
    }

    /// Whether `SO_REUSEPORT` is set.
    pub fn reuseport(&self) -> io::Result<bool> {
        self.inner.reuse_port()
    }

    /// Sets `SO_SNDBUF` (Linux doubles the value for its bookkeeping, and stops autotuning
    /// the send buffer).
    pub fn set_send_buffer_size(&self, size: u32) -> io::Result<()> {
        self.inner.set_send_buffer_size(size as usize)
    }

    /// `SO_SNDBUF`, as the kernel reports it.
    pub fn send_buffer_size(&self) -> io::Result<u32> {
        self.inner.send_buffer_size().map(saturate)
    }

    /// Sets `SO_RCVBUF` (Linux doubles the value, and stops autotuning the receive buffer).
    /// Set before [`connect`](TcpSocket::connect) or [`listen`](TcpSocket::listen), it also
    /// sizes the window the connection advertises from its first segment (`man 7 tcp`).
    pub fn set_recv_buffer_size(&self, size: u32) -> io::Result<()> {
        self.inner.set_recv_buffer_size(size as usize)
    }

    /// `SO_RCVBUF`, as the kernel reports it.
    pub fn recv_buffer_size(&self) -> io::Result<u32> {
        self.inner.recv_buffer_size().map(saturate)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm); a listener's accepted connections
    /// inherit it.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_tcp_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.tcp_nodelay()
    }

    /// The type-of-service byte of outgoing packets (`IP_TOS`; the traffic class,
    /// `IPV6_TCLASS`, on an IPv6 socket).
    pub fn tos(&self) -> io::Result<u32> {
        options::tos(socket2::SockRef::from(self))
    }

    /// Sets the type-of-service byte (`IP_TOS`; on an IPv6 socket also `IPV6_TCLASS`).
    pub fn set_tos(&self, tos: u32) -> io::Result<()> {
        options::set_tos(socket2::SockRef::from(self), tos)
    }

    /// The network interface the socket is bound to (`SO_BINDTODEVICE`), if any.
    pub fn device(&self) -> io::Result<Option<Vec<u8>>> {
        self.inner.device()
    }

    /// Binds the socket to a network interface by name (`b"eth0"`), so it sends and receives
    /// only through it (`SO_BINDTODEVICE`); `None` or an empty name removes the binding.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` (`EPERM`) when changing an existing binding without
    /// `CAP_NET_RAW`; `ENODEV` for an unknown interface.
    pub fn bind_device(&self, interface: Option<&[u8]>) -> io::Result<()> {
        self.inner.bind_device(interface)
    }

    /// The local address, once bound (`0.0.0.0:0` or `[::]:0` before).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the socket has no IPv4 or IPv6 address",
            )
        })
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Binds the socket to `addr` (port 0: the kernel picks a free port).
    ///
    /// # Errors
    ///
    /// `AddrInUse` when another socket holds the address (set
    /// [`set_reuseaddr`](TcpSocket::set_reuseaddr) or
    /// [`set_reuseport`](TcpSocket::set_reuseport) on both to share it), `AddrNotAvailable`
    /// for an address that is not local, the kernel's `EAFNOSUPPORT` for an address of the
    /// other family.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        self.inner.bind(&addr.into())
    }

    /// Connects to `addr` with `IORING_OP_CONNECT`, as [`TcpStream::connect`] does, and
    /// returns the stream. Dropping the future cancels the attempt and closes the socket.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` when nothing listens; `AddrNotAvailable` when the socket is bound
    /// to an address and port that already have a connection to `addr`; other OS errors as
    /// they come.
    pub async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::from_fd(OwnedFd::from(self.inner));
        let (res, socket) = Op::new(Connect::new(socket, &addr)).await;
        res.map(|()| TcpStream::from_socket(socket))
    }

    /// Listens for connections, with a queue of `backlog` pending ones (capped by
    /// `net.core.somaxconn`). Binds to a free port first if the socket is not bound.
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        self.inner.listen(backlog.min(i32::MAX as u32) as i32)?;
        Ok(TcpListener::from_socket(Socket::from_fd(OwnedFd::from(
            self.inner,
        ))))
    }

    /// Adopts a `std` stream that has not connected yet, to set options on it and connect
    /// with the runtime, as tokio's `TcpSocket::from_std_stream`.
    pub fn from_std_stream(stream: std::net::TcpStream) -> TcpSocket {
        TcpSocket {
            inner: socket2::Socket::from(stream),
        }
    }
}

crate::options::tcp_options!(TcpSocket);

/// A byte count from the kernel as `u32` (it never exceeds `i32::MAX`).
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl AsRawFd for TcpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl AsFd for TcpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl IntoRawFd for TcpSocket {
    fn into_raw_fd(self) -> RawFd {
        self.inner.into_raw_fd()
    }
}

impl FromRawFd for TcpSocket {
    /// # Safety
    ///
    /// `fd` must be an open TCP socket owned by nothing else.
    unsafe fn from_raw_fd(fd: RawFd) -> TcpSocket {
        TcpSocket {
            // SAFETY: the caller transfers ownership of an open socket fd.
            inner: unsafe { socket2::Socket::from_raw_fd(fd) },
        }
    }
}
