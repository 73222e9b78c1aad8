//! Unix domain sockets: [`UnixListener`], [`UnixStream`] and [`UnixDatagram`], with tokio's
//! names and this crate's owned-buffer I/O, plus descriptor passing (`SCM_RIGHTS`).
//!
//! # Invariants
//!
//! - The byte-stream I/O of `UnixStream` is `TcpStream`'s own (`stream.rs`, `behind.rs`):
//!   reads keep kernel order across dropped receives, and up to 4 KiB per write are written
//!   behind, reported by the next write, `flush` or `shutdown`.
//! - Every address handed to the kernel was checked first: a path of 1 to 107 bytes without
//!   NUL, or an abstract name (`"\0name"`) of up to 107 bytes; anything else is
//!   `InvalidInput` with a message that says what to change (`addr.rs`).
//! - Every descriptor the kernel passes to this process is owned (`OwnedFd`, close-on-exec)
//!   from the moment its completion is decoded; none is leaked when the caller has no room
//!   for it or dropped the receive (`fds.rs`). Descriptors being sent are duplicated and owned
//!   by the request until its final completion.
//! - Unix datagrams are reliable and ordered, so `UnixDatagram` sends are not written
//!   behind: each resolves once the kernel queued its datagram.
//!
//! ```no_run
//! use net::UnixListener;
//! use runtime::buf::IoBuf;
//!
//! #[runtime::main]
//! async fn main() -> std::io::Result<()> {
//!     let _ = std::fs::remove_file("/tmp/echo.sock");
//!     let listener = UnixListener::bind("/tmp/echo.sock")?;
//!     let mut incoming = listener.incoming();
//!     while let Some(stream) = incoming.next().await {
//!         let mut stream = stream?;
//!         runtime::spawn(async move {
//!             let mut buf = Vec::with_capacity(4096);
//!             loop {
//!                 let (res, b) = stream.read(buf).await;
//!                 let n = match res { Ok(0) | Err(_) => return, Ok(n) => n };
//!                 let (res, b) = stream.write_all(b.slice(..n)).await;
//!                 buf = b.into_inner();
//!                 if res.is_err() { return; }
//!             }
//!         });
//!     }
//!     Ok(())
//! }
//! ```

mod addr;
mod cred;
mod datagram;
mod fds;
mod listener;
mod split;
mod stream;

pub use cred::UCred;
pub use datagram::UnixDatagram;
pub(crate) use fds::take_rights;
pub use fds::{MAX_FDS, RecvFds};
pub use listener::{Incoming, UnixListener};
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use stream::UnixStream;
