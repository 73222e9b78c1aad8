//! Halves of a `TcpStream`: owned ones for a reader task and a writer task
//! ([`TcpStream::into_split`]), and borrowed ones for reading and writing concurrently inside
//! one task ([`TcpStream::split`]).
//!
//! The half types, `split`/`into_split` and `reunite` are the shape both streams share
//! (`halves!`, `net/src/halves.rs`, with the invariants); this module gives the halves the
//! stream's own methods, forwarded.

use std::{
    io,
    net::{Shutdown, SocketAddr},
};

use runtime::buf::{BufRing, IoBuf, IoBufMut};

use super::TcpStream;
use crate::{RecvStream, ZcSent, ZcrxStream, ZeroCopy, ZeroCopyRecv, ZeroCopyStats};

crate::halves::halves!(TcpStream);

/// The methods every half has.
macro_rules! common_methods {
    () => {
        /// Counters of zero-copy sends on the socket; see [`TcpStream::zero_copy_stats`].
        pub fn zero_copy_stats(&self) -> ZeroCopyStats {
            self.stream.zero_copy_stats()
        }

        /// The remote address.
        pub fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.stream.peer_addr()
        }

        /// The local address.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.stream.local_addr()
        }
    };
}

/// The receive methods of a read half, forwarded to the stream's. They return the stream's
/// futures themselves (not `async fn` wrappers, which would hold a second copy of the
/// arguments in every caller's future).
macro_rules! read_methods {
    () => {
        /// See [`TcpStream::read`].
        pub fn read<B: IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.read(buf)
        }

        /// See [`TcpStream::peek`].
        pub fn peek<B: IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.peek(buf)
        }

        /// See [`TcpStream::read_exact`].
        pub fn read_exact<B: IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<()>, B)> {
            self.stream.read_exact(buf)
        }

        /// See [`TcpStream::readv`].
        pub fn readv<B: IoBufMut>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> {
            self.stream.readv(bufs)
        }

        /// See [`TcpStream::recv_stream`].
        pub fn recv_stream(&mut self, ring: &BufRing) -> RecvStream<'_> {
            self.stream.recv_stream(ring)
        }

        /// See [`TcpStream::recv_stream_unbundled`].
        pub fn recv_stream_unbundled(&mut self, ring: &BufRing) -> RecvStream<'_> {
            self.stream.recv_stream_unbundled(ring)
        }

        /// See [`TcpStream::recv_zc_stream`].
        ///
        /// # Errors
        ///
        /// As for [`TcpStream::recv_zc_stream`].
        pub fn recv_zc_stream(&mut self) -> io::Result<ZcrxStream<'_>> {
            self.stream.recv_zc_stream()
        }

        /// See [`TcpStream::recv_zero_copy`].
        pub fn recv_zero_copy(&mut self, ring: &BufRing) -> ZeroCopyRecv<'_> {
            self.stream.recv_zero_copy(ring)
        }

        common_methods!();
    };
}

/// The send methods of a write half, forwarded to the stream's.
macro_rules! write_methods {
    () => {
        /// See [`TcpStream::write`].
        pub fn write<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.write(buf)
        }

        /// See [`TcpStream::write_all`].
        pub fn write_all<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<()>, B)> {
            self.stream.write_all(buf)
        }

        /// See [`TcpStream::flush`].
        pub fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
            self.stream.flush()
        }

        /// See [`TcpStream::writev`].
        pub fn writev<B: IoBuf>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<usize>, Vec<B>)> {
            self.stream.writev(bufs)
        }

        /// See [`TcpStream::writev_all`].
        pub fn writev_all<B: IoBuf>(
            &mut self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (io::Result<()>, Vec<B>)> {
            self.stream.writev_all(bufs)
        }

        /// See [`TcpStream::send_zc`].
        pub fn send_zc<B: IoBuf>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<usize>, B)> {
            self.stream.send_zc(buf)
        }

        /// See [`TcpStream::send_zc_all`].
        pub fn send_zc_all<B: IoBuf>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<()>, B)> {
            self.stream.send_zc_all(buf)
        }

        /// See [`TcpStream::send_zc_pipelined`].
        pub fn send_zc_pipelined<B: IoBuf>(
            &mut self,
            buf: B,
        ) -> impl Future<Output = (io::Result<usize>, ZcSent<B>)> {
            self.stream.send_zc_pipelined(buf)
        }

        /// Sets the socket's zero-copy policy; see [`TcpStream::set_zero_copy`].
        pub fn set_zero_copy(&self, policy: ZeroCopy) {
            self.stream.set_zero_copy(policy);
        }

        /// Shuts down the write direction now (the peer reads EOF). As for
        /// [`TcpStream::shutdown`], a connection the peer already reset gives `Ok(())`.
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
