//! `TcpListener`.

use std::{cell::Cell, io, net::SocketAddr, os::fd::OwnedFd};

use runtime::op::Op;
use socket2::{Domain, Protocol, Type};

use super::{Incoming, TcpStream};
use crate::{
    accept::{Backoff, accept_one},
    addr::{self, ToSocketAddrs},
    op::CancelFd,
    socket::Socket,
};

/// Options for [`TcpListener::bind_with`].
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    reuse_port: bool,
    backlog: i32,
    nodelay: bool,
    send_buffer_size: Option<usize>,
    recv_buffer_size: Option<usize>,
    direct_descriptors: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions::new()
    }
}

impl ListenerOptions {
    /// Defaults: `SO_REUSEADDR` on (always), `SO_REUSEPORT` off, backlog 1024, `TCP_NODELAY`
    /// off.
    pub fn new() -> ListenerOptions {
        ListenerOptions {
            reuse_port: false,
            backlog: 1024,
            nodelay: false,
            send_buffer_size: None,
            recv_buffer_size: None,
            direct_descriptors: false,
        }
    }

    /// Sets `SO_REUSEPORT`, so several sockets (one per thread) can listen on one port and the
    /// kernel spreads connections across them.
    pub fn reuse_port(&mut self, on: bool) -> &mut Self {
        self.reuse_port = on;
        self
    }

    /// The `listen(2)` backlog (capped by `net.core.somaxconn`).
    pub fn backlog(&mut self, backlog: u32) -> &mut Self {
        self.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// Sets `TCP_NODELAY` on the listener; accepted connections inherit it.
    pub fn nodelay(&mut self, on: bool) -> &mut Self {
        self.nodelay = on;
        self
    }

    /// Sets `SO_SNDBUF` on the listener; accepted connections inherit it (and the kernel no
    /// longer autotunes their send buffer). Linux doubles the value for its bookkeeping.
    pub fn send_buffer_size(&mut self, bytes: usize) -> &mut Self {
        self.send_buffer_size = Some(bytes);
        self
    }

    /// Accepts connections as direct descriptors (default off): see
    /// [`TcpListener::set_direct_descriptors`].
    pub fn direct_descriptors(&mut self, on: bool) -> &mut Self {
        self.direct_descriptors = on;
        self
    }

    /// Sets `SO_RCVBUF` on the listener before `listen`, so accepted connections inherit it
    /// and advertise the matching window from their first segment (`man 7 tcp`).
    pub fn recv_buffer_size(&mut self, bytes: usize) -> &mut Self {
        self.recv_buffer_size = Some(bytes);
        self
    }
}

/// A TCP socket listening for connections.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// use futures_core::Stream;
/// let listener = net::TcpListener::bind("127.0.0.1:8080").unwrap();
/// let (stream, peer) = listener.accept().await.unwrap();
/// # let _ = (stream, peer);
/// # });
/// ```
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
    /// After descriptor exhaustion, accepts wait until this instant (see `accept`).
    backoff: Cell<Backoff>,
    /// Accept into the ring's file table (`set_direct_descriptors`).
    direct: Cell<bool>,
}

impl TcpListener {
    /// Binds to `addr` and listens, with `SO_REUSEADDR` set and a backlog of 1024.
    ///
    /// Host names are resolved with the system resolver (this blocks the calling thread;
    /// binding normally happens once at start-up). Every resolved address is tried in turn.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed or unresolvable address; the OS error otherwise (e.g.
    /// `AddrInUse`).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        TcpListener::bind_with(addr, &ListenerOptions::new())
    }

    /// Binds and listens with explicit options (`SO_REUSEPORT`, backlog, `TCP_NODELAY`).
    pub fn bind_with<A: ToSocketAddrs>(
        addr: A,
        options: &ListenerOptions,
    ) -> io::Result<TcpListener> {
        let mut last = None;
        for addr in addr::resolve_blocking(&addr)? {
            match TcpListener::bind_one(&addr, options) {
                Ok(listener) => return Ok(listener),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve_blocking returns at least one address"))
    }

    fn bind_one(addr: &SocketAddr, options: &ListenerOptions) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, Protocol::TCP)?;
        let s = socket.sock_ref()?;
        s.set_reuse_address(true)?;
        if options.reuse_port {
            s.set_reuse_port(true)?;
        }
        if options.nodelay {
            s.set_tcp_nodelay(true)?;
        }
        if let Some(bytes) = options.send_buffer_size {
            s.set_send_buffer_size(bytes)?;
        }
        if let Some(bytes) = options.recv_buffer_size {
            s.set_recv_buffer_size(bytes)?;
        }
        s.bind(&(*addr).into())?;
        s.listen(options.backlog)?;
        drop(s);
        let listener = TcpListener::from_socket(socket);
        listener.set_direct_descriptors(options.direct_descriptors);
        Ok(listener)
    }

    pub(super) fn from_socket(socket: Socket) -> TcpListener {
        TcpListener {
            socket,
            backoff: Cell::new(Backoff::default()),
            direct: Cell::new(false),
        }
    }

    /// Accepts connections as direct descriptors (default off): sockets that live only in the
    /// accepting worker's io_uring file table (`IORING_FILE_INDEX_ALLOC`, Linux 5.19), not in
    /// the process's descriptor table, so a server holds connections past `RLIMIT_NOFILE`.
    /// Every request on them carries `IOSQE_FIXED_FILE`, and they are closed through the ring.
    /// Applies to later [`accept`](TcpListener::accept) calls and [`incoming`](TcpListener::incoming)
    /// streams.
    ///
    /// The table has a fixed size per worker ring
    /// ([`runtime::Builder::direct_descriptors`]); when it is full, accepting fails with an
    /// error that says so (and `incoming` backs off as after `EMFILE`). Where no table can be
    /// registered (kernels before 5.19, or the kernel refused its size) connections get
    /// ordinary fds and [`runtime::Capabilities::notes`] says why.
    ///
    /// A direct [`TcpStream`] works like any other. What needs a real fd gets one installed
    /// on demand (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8): socket options and addresses (a
    /// temporary fd, closed after the call), `as_raw_fd`/`as_fd` (kept until the stream
    /// closes) and `into_std`. Options set on the listener (`ListenerOptions::nodelay`, buffer
    /// sizes) are inherited without any. Like every `TcpStream` it stays on its worker's thread
    /// (`!Send`); `into_std` gives a real fd that may move.
    pub fn set_direct_descriptors(&self, on: bool) {
        self.direct.set(on);
    }

    /// The table to accept into: `None` unless direct descriptors were asked for and the
    /// current ring has (or now registers) a table.
    fn direct_table(&self) -> Option<runtime::direct::DirectTable> {
        if !self.direct.get() {
            return None;
        }
        crate::direct::table()
    }

    /// Accepts one connection.
    ///
    /// When descriptors run out (`EMFILE`, `ENFILE`) the error is returned, and the next
    /// `accept` first waits a little (10 ms, doubling up to 1 s, reset by a success), so a loop
    /// that retries on errors does not spin the CPU while the condition lasts.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (socket, peer) = accept_one(&self.socket, &self.backoff, self.direct_table()).await?;
        // An undecodable address drops (closes) the socket.
        let peer = peer.socket_addr()?;
        Ok((TcpStream::from_socket(socket), peer))
    }

    /// A stream of accepted connections, backed by one multishot accept request (Linux 5.19)
    /// that is re-armed whenever the kernel ends it. See [`Incoming`].
    ///
    /// The stream holds its own reference to the socket, so it may outlive `&self` (e.g. move
    /// into a task).
    pub fn incoming(&self) -> Incoming {
        Incoming::new(self.socket.clone(), self.direct_table())
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Cancels every operation in flight on the listener (pending accepts, `incoming` streams,
    /// which then yield an `ECANCELED` error), then releases this handle. The socket closes
    /// once the last stream holding it is dropped.
    pub async fn close(self) -> io::Result<()> {
        Op::new(CancelFd::new(self.socket.clone())).await.map(drop)
    }

    /// Adopts a listening `std` socket.
    pub fn from_std(listener: std::net::TcpListener) -> TcpListener {
        TcpListener::from_socket(Socket::from_fd(OwnedFd::from(listener)))
    }

    /// Converts into a `std` listener (duplicating the fd if operations still hold it).
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        Ok(std::net::TcpListener::from(self.socket.into_fd()?))
    }
}

crate::socket::fd_traits!(TcpListener, "an open, listening TCP socket");
