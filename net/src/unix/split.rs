//! Halves of a `UnixStream`: owned ones for a reader task and a writer task
//! ([`UnixStream::into_split`]), and borrowed ones for reading and writing concurrently inside
//! one task ([`UnixStream::split`]).
//!
//! As for TCP, the half types, `split`/`into_split` and `reunite` come from `halves!`
//! (`net/src/halves.rs`, with the invariants); this module gives the halves the stream's
//! own methods, forwarded.

use std::{
    io,
    net::Shutdown,
    os::{fd::BorrowedFd, unix::net::SocketAddr},
};

use runtime::buf::{BufRing, IoBuf, IoBufMut};

use super::{RecvFds, UCred, UnixStream};
use crate::RecvStream;

crate::halves::halves!(UnixStream);

/// The methods every half has.
macro_rules! common_methods {
    () => {
        /// The local address.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.stream.local_addr()
        }

        /// The peer's address.
        pub fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.stream.peer_addr()
        }

        /// See [`UnixStream::peer_cred`].
        pub fn peer_cred(&self) -> io::Result<UCred> {
            self.stream.peer_cred()
        }
    };
}

/// The receive methods of a read half, forwarded to the stream's.
macro_rules! read_methods {
    () => {
        /// See [`UnixStream::read`].
        pub fn read<B: IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.read(buf)
        }

        /// See [`UnixStream::read_exact`].
        pub fn read_exact<B: IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<()>, B)> {
            self.stream.read_exact(buf)
        }

        /// See [`UnixStream::readv`].
        pub fn readv<B: IoBufMut>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> {
            self.stream.readv(bufs)
        }

        /// See [`UnixStream::recv_with_fds`].
        pub async fn recv_with_fds<B: IoBufMut>(
            &mut self,
            buf: B,
            max_fds: usize,
        ) -> (io::Result<RecvFds>, B) {
            self.stream.recv_with_fds(buf, max_fds).await
        }

        /// See [`UnixStream::recv_stream`].
        pub fn recv_stream(&mut self, ring: &BufRing) -> RecvStream<'_> {
            self.stream.recv_stream(ring)
        }

        /// See [`UnixStream::recv_stream_unbundled`].
        pub fn recv_stream_unbundled(&mut self, ring: &BufRing) -> RecvStream<'_> {
            self.stream.recv_stream_unbundled(ring)
        }

        common_methods!();
    };
}

/// The send methods of a write half, forwarded to the stream's.
macro_rules! write_methods {
    () => {
        /// See [`UnixStream::write`].
        pub fn write<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.write(buf)
        }

        /// See [`UnixStream::write_all`].
        pub fn write_all<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<()>, B)> {
            self.stream.write_all(buf)
        }

        /// See [`UnixStream::flush`].
        pub fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
            self.stream.flush()
        }

        /// See [`UnixStream::writev`].
        pub fn writev<B: IoBuf>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> {
            self.stream.writev(bufs)
        }

        /// See [`UnixStream::writev_all`].
        pub fn writev_all<B: IoBuf>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<()>, Vec<B>)> {
            self.stream.writev_all(bufs)
        }

        /// See [`UnixStream::send_with_fds`].
        pub async fn send_with_fds<B: IoBuf>(
            &mut self,
            buf: B,
            fds: &[BorrowedFd<'_>],
        ) -> (io::Result<usize>, B) {
            self.stream.send_with_fds(buf, fds).await
        }

        /// Shuts down the write direction now (the peer reads EOF), after the bytes written
        /// behind.
        pub fn shutdown(&self) -> io::Result<()> {
            self.stream.shutdown(Shutdown::Write)
        }

        common_methods!();
    };
}

impl OwnedReadHalf {
    read_methods!();
}

impl OwnedWriteHalf {
    write_methods!();
}

impl ReadHalf<'_> {
    read_methods!();
}

impl WriteHalf<'_> {
    write_methods!();
}
