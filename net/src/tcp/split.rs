//! Owned halves of a `TcpStream`, for a reader task and a writer task.

use std::{
    fmt, io,
    net::{Shutdown, SocketAddr},
    os::fd::AsRawFd,
};

use runtime::buf::{IoBuf, IoBufMut};

use super::TcpStream;

/// The read half of a [`TcpStream`], from [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    stream: TcpStream,
}

/// The write half of a [`TcpStream`], from [`TcpStream::into_split`]. Dropping it shuts down
/// the write direction (the peer reads EOF), unless it is reunited first.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: TcpStream,
    shutdown_on_drop: bool,
}

pub(super) fn split(stream: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let writer = TcpStream::from_socket(stream.socket.clone());
    (
        OwnedReadHalf { stream },
        OwnedWriteHalf {
            stream: writer,
            shutdown_on_drop: true,
        },
    )
}

impl OwnedReadHalf {
    /// See [`TcpStream::read`].
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        self.stream.read(buf).await
    }

    /// See [`TcpStream::read_exact`].
    pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> (io::Result<()>, B) {
        self.stream.read_exact(buf).await
    }

    /// See [`TcpStream::readv`].
    pub async fn readv<B: IoBufMut>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.stream.readv(bufs).await
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Joins the halves back into the stream.
    ///
    /// # Errors
    ///
    /// Fails, handing both halves back, if they come from different streams.
    pub fn reunite(self, write: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
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
    /// See [`TcpStream::write`].
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.stream.write(buf).await
    }

    /// See [`TcpStream::write_all`].
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        self.stream.write_all(buf).await
    }

    /// See [`TcpStream::writev`].
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.stream.writev(bufs).await
    }

    /// Shuts down the write direction now (the peer reads EOF). As for
    /// [`TcpStream::shutdown`], a connection the peer already reset gives `Ok(())`.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
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
