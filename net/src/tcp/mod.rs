//! TCP: listeners, streams, and owned halves of streams.

mod direct;
mod incoming;
mod listener;
mod receive;
mod socket;
mod split;
mod stream;

pub(crate) use crate::stream::is_cancelled;
pub use incoming::Incoming;
pub use listener::{ListenerOptions, TcpListener};
pub use socket::TcpSocket;
pub use split::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, WriteHalf};
pub use stream::TcpStream;
