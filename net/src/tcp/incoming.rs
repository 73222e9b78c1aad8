//! `Incoming`: accepted connections as a stream, over multishot accept.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::direct::DirectTable;

use super::TcpStream;
use crate::{accept::AcceptStream, socket::Socket};

/// Accepted connections of a [`TcpListener`](super::TcpListener), from
/// [`incoming`](super::TcpListener::incoming).
///
/// Backed by one multishot accept request (Linux 5.19): the kernel posts a completion per
/// connection without a new submission. When the kernel ends the request (it does after errors
/// and when the completion queue overflows), the stream re-arms it transparently. Errors are
/// yielded as items; after descriptor exhaustion (`EMFILE`, `ENFILE`) re-arming waits (10 ms,
/// doubling up to 1 s) so the stream does not spin the CPU. The stream ends (`None`) after the
/// listener was closed (`ECANCELED`) or stopped listening; on kernels without multishot accept
/// it falls back to one accept request per connection.
///
/// With [`TcpListener::set_direct_descriptors`](super::TcpListener::set_direct_descriptors)
/// the connections are direct descriptors; a full table yields an error (`QuotaExceeded`, the
/// kernel's `ENFILE`) that says how to raise it, and re-arming backs off as after `EMFILE`.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct Incoming {
    inner: AcceptStream,
}

impl Incoming {
    pub(super) fn new(socket: Socket, direct: Option<DirectTable>) -> Incoming {
        Incoming {
            inner: AcceptStream::new(socket, direct),
        }
    }

    /// The next connection (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<TcpStream>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Incoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(Pin::new(&mut self.get_mut().inner).poll_next(cx));
        Poll::Ready(item.map(|res| res.map(TcpStream::from_socket)))
    }
}
