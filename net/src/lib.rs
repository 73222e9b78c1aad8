//! TCP, UDP and Unix domain sockets for the io_uring runtime, with owned-buffer I/O.
//!
//! Every operation is an io_uring request driven by the runtime of the current thread; there is
//! no readiness polling. Buffers move into an operation and come back with its result:
//!
//! ```no_run
//! use net::TcpListener;
//! use runtime::buf::IoBuf; // for `slice`
//!
//! #[runtime::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:8080")?;
//!     loop {
//!         let (mut stream, _) = listener.accept().await?;
//!         runtime::spawn(async move {
//!             let mut buf = vec![0u8; 4096];
//!             loop {
//!                 let (res, b) = stream.read(buf).await;
//!                 let n = match res {
//!                     Ok(0) | Err(_) => return,
//!                     Ok(n) => n,
//!                 };
//!                 let (res, b) = stream.write_all(b.slice(..n)).await;
//!                 buf = b.into_inner();
//!                 if res.is_err() {
//!                     return;
//!                 }
//!             }
//!         });
//!     }
//! }
//! ```
//!
//! # Guarantees
//!
//! - A socket's fd is closed only after every operation on it has received its final
//!   completion, so a racing close can never redirect an operation to a reused fd number.
//! - Dropping a receive before it completes loses no data: what the kernel had already
//!   delivered is returned by the next receive (`TcpStream` keeps stream order).
//! - Sends never raise SIGPIPE: a reset peer gives `BrokenPipe` or `ConnectionReset`.
//! - Malformed or unresolvable addresses are `InvalidInput` errors; host names are resolved on
//!   a helper thread, never on the runtime thread (except by the synchronous `bind` calls).
//! - Descriptors received over Unix sockets (`SCM_RIGHTS`) are `OwnedFd`s, close-on-exec,
//!   and none leaks: surplus ones, and those that reach a dropped receive, are closed.
//! - `TcpStream` reads and writes take `&mut self` (one read and one write in flight at a
//!   time; [`TcpStream::split`] and [`TcpStream::into_split`] give halves for both at once).
//!
//! # Cancellation and buffers
//!
//! Dropping an operation cancels its request and frees its buffer once the kernel is done
//! with it; [`runtime::op::CancelExt`] (`stream.read(buf).timeout(d)`) cancels it instead
//! and hands the buffer back. The guide [`cancellation`] (`docs/cancellation.md`) covers
//! both, what happens to data a cancelled receive took, how a receive sets a `Vec`'s length,
//! and the `select!` and timeout patterns that are correct.

#[doc = include_str!("../../docs/cancellation.md")]
pub mod cancellation {}

mod accept;
mod addr;
mod behind;
mod bufs;
#[cfg(any(feature = "tokio-io", feature = "futures-io"))]
pub mod compat;
mod direct;
mod halves;
mod op;
mod options;
mod read_ahead;
mod recv_msg_stream;
mod recv_stream;
mod socket;
mod spares;
mod stream;
pub mod tcp;
pub mod udp;
pub mod unix;
mod write;
mod zc;

pub use addr::ToSocketAddrs;
pub use recv_msg_stream::{Datagram, RecvMsgStream};
pub use recv_stream::{RecvStream, ZcrxStream, ZeroCopyRecv};
pub use socket2::TcpKeepalive;
pub use tcp::{ListenerOptions, TcpListener, TcpSocket, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
pub use zc::{SwitchReason, ZcSent, ZeroCopy, ZeroCopyStats};
