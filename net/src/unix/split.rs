//! Halves of a `UnixStream`: owned ones for a reader task and a writer task
//! ([`UnixStream::into_split`]), and borrowed ones for reading and writing concurrently inside
//! one task ([`UnixStream::split`]).
//!
//! As for TCP (`tcp/split.rs`), each half wraps its own `UnixStream` handle on the shared
//! socket, so its methods are the stream's own: one read and one write can be in flight at
//! the same time, never two reads.

use std::{
    fmt, io,
    marker::PhantomData,
    net::Shutdown,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::net::SocketAddr,
    },
};

use runtime::buf::{BufRing, IoBuf, IoBufMut};

use super::{RecvFds, UCred, UnixStream};
use crate::RecvStream;

/// The read half of a [`UnixStream`], from [`UnixStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    stream: UnixStream,
}

/// The write half of a [`UnixStream`], from [`UnixStream::into_split`]. Dropping it shuts
/// down the write direction (the peer reads EOF), unless it is reunited first.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: UnixStream,
    shutdown_on_drop: bool,
}

/// The read half of a borrowed [`UnixStream`], from [`UnixStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    stream: UnixStream,
    _borrow: PhantomData<&'a mut UnixStream>,
}

/// The write half of a borrowed [`UnixStream`], from [`UnixStream::split`]. Dropping it
/// does nothing to the connection.
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: UnixStream,
    _borrow: PhantomData<&'a mut UnixStream>,
}

/// Another handle on `stream`'s socket (no fd is duplicated).
fn handle(stream: &UnixStream) -> UnixStream {
    UnixStream::from_socket(stream.socket.clone())
}

pub(super) fn into_split(stream: UnixStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let writer = handle(&stream);
    (
        OwnedReadHalf { stream },
        OwnedWriteHalf {
            stream: writer,
            shutdown_on_drop: true,
        },
    )
}

pub(super) fn split(stream: &mut UnixStream) -> (ReadHalf<'_>, WriteHalf<'_>) {
    (
        ReadHalf {
            stream: handle(stream),
            _borrow: PhantomData,
        },
        WriteHalf {
            stream: handle(stream),
            _borrow: PhantomData,
        },
    )
}

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

    /// Joins the halves back into the stream.
    ///
    /// # Errors
    ///
    /// Fails, handing both halves back, if they come from different streams.
    pub fn reunite(self, write: OwnedWriteHalf) -> Result<UnixStream, ReuniteError> {
        if self.stream.as_raw_fd() == write.stream.as_raw_fd() {
            let mut write = write;
            write.shutdown_on_drop = false;
            Ok(self.stream)
        } else {
            Err(ReuniteError(self, write))
        }
    }
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

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // The socket may already be shut down or reset; nothing useful to report then.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }
}

/// The halves given to [`OwnedReadHalf::reunite`] came from different streams.
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Debug for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same stream")
    }
}

impl std::error::Error for ReuniteError {}

#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
mod compat {
    use super::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
    use crate::{
        compat::{HasSocket, compat_methods},
        socket::Socket,
    };

    impl OwnedReadHalf {
        compat_methods!(read);
    }

    impl ReadHalf<'_> {
        compat_methods!(read);
    }

    impl OwnedWriteHalf {
        compat_methods!(write);
    }

    impl WriteHalf<'_> {
        compat_methods!(write);
    }

    impl HasSocket for OwnedReadHalf {
        fn socket(&self) -> &Socket {
            &self.stream.socket
        }
    }

    impl HasSocket for ReadHalf<'_> {
        fn socket(&self) -> &Socket {
            &self.stream.socket
        }
    }

    impl HasSocket for OwnedWriteHalf {
        fn socket(&self) -> &Socket {
            &self.stream.socket
        }
    }

    impl HasSocket for WriteHalf<'_> {
        fn socket(&self) -> &Socket {
            &self.stream.socket
        }
    }
}
