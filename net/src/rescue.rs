//! Receives that notice rescued data.
//!
//! When a receive is abandoned after the kernel delivered data to it, that data is rescued
//! into the socket (see `socket.rs`). A receive already in flight on the same socket would then
//! wait for *new* data while the answer it needs sits in the rescue queue, possibly forever
//! (a peer that waits for our reply sends nothing more). So a receive registers its task with
//! the socket; when data is rescued it cancels its own request, and on `ECANCELED` the caller
//! serves the rescued data from the buffer the request hands back. If the request won the race
//! and delivered data, its completion already placed older rescued bytes in front.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use runtime::op::{Op, OpCode};

use crate::socket::Socket;

/// Drives `op`, cancelling it if data is rescued meanwhile. Yields the operation's output and
/// whether a cancellation was requested for that reason.
pub(crate) struct RescueAware<T: OpCode> {
    op: Op<T>,
    socket: Socket,
    cancelled: bool,
}

impl<T: OpCode> RescueAware<T> {
    pub(crate) fn new(socket: Socket, op: T) -> RescueAware<T> {
        RescueAware {
            op: Op::new(op),
            socket,
            cancelled: false,
        }
    }
}

impl<T: OpCode> Unpin for RescueAware<T> {}

impl<T: OpCode> Future for RescueAware<T> {
    type Output = (T::Output, bool);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.op).poll(cx) {
            return Poll::Ready((out, this.cancelled));
        }
        if !this.cancelled && this.socket.has_rescued() {
            this.op.cancel();
            this.cancelled = true;
        }
        this.socket.set_reader(cx.waker());
        Poll::Pending
    }
}

impl<T: OpCode> std::fmt::Debug for RescueAware<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RescueAware")
            .field("op", &self.op)
            .field("cancelled", &self.cancelled)
            .finish()
    }
}
