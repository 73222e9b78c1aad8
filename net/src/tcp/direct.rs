//! `TcpStream`'s direct-descriptor side: connecting from a slot of the ring's file table, and
//! what tells a direct stream apart (see `TcpListener::set_direct_descriptors`).

use std::{io, os::fd::BorrowedFd};

use runtime::op::Op;

use super::TcpStream;
use crate::{
    addr::{self, ToSocketAddrs},
    op::{Connect, SocketDirect},
};

impl TcpStream {
    /// Like [`connect`](TcpStream::connect), but the socket is a direct descriptor from the
    /// start (`IORING_OP_SOCKET` into the worker's file table, Linux 5.19; see
    /// [`TcpListener::set_direct_descriptors`](super::TcpListener::set_direct_descriptors)):
    /// it costs the process no fd. Where no table can be registered it is an ordinary
    /// socket; a full table fails with an error saying how to raise it.
    pub async fn connect_direct<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let Some(table) = crate::direct::table() else {
            return TcpStream::connect(addr).await;
        };
        let mut last = None;
        for addr in addr::resolve(&addr).await? {
            let domain = if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let op = SocketDirect::new(domain, libc::SOCK_STREAM, libc::IPPROTO_TCP, table.clone());
            let socket = Op::new(op).await.map_err(|e| {
                if e.raw_os_error() == Some(libc::ENFILE) {
                    runtime::direct::table_full_error()
                } else {
                    e
                }
            })?;
            let (res, socket) = Op::new(Connect::new(socket, &addr)).await;
            match res {
                Ok(()) => return Ok(TcpStream::from_socket(socket)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    }

    /// Whether the stream is a direct descriptor: it lives only in its worker's io_uring file
    /// table (see [`TcpListener::set_direct_descriptors`](super::TcpListener::set_direct_descriptors)).
    pub fn is_direct(&self) -> bool {
        self.socket.is_direct()
    }

    /// The stream's fd, as [`as_fd`](std::os::fd::AsFd::as_fd) gives it, but with the error
    /// when there is none: a direct descriptor gets a real fd installed on first call
    /// (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8), kept until the stream closes, and that
    /// fails when the process is out of descriptors (`EMFILE`).
    pub fn try_as_fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.socket.real_fd()
    }
}
