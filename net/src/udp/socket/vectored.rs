//! `UdpSocket::send_vectored`, `send_to_vectored` and `recv_vectored`: one datagram gathered
//! from, or scattered over, several owned buffers (`sendmsg`/`recvmsg` with an `iovec` array).

use std::{io, net::SocketAddr};

use runtime::{
    buf::{IoBuf, IoBufMut},
    op::Op,
};

use super::{RecvMeta, Truncated, UdpSocket};
use crate::{
    addr::{self, ToSocketAddrs},
    behind, bufs,
    op::{RecvMsgVectored, SendMsgVectored},
    stream::RescueAware,
    tcp::is_cancelled,
};

impl UdpSocket {
    /// Sends the initialized bytes of `bufs`, in order, as one datagram to the connected peer;
    /// returns its length.
    ///
    /// It is not written behind (unlike [`send`](UdpSocket::send)): it resolves once the
    /// kernel took the datagram, and the buffers come back then.
    ///
    /// # Errors
    ///
    /// `NotConnected` without [`connect`](UdpSocket::connect); the failure of an earlier
    /// datagram written behind; `EMSGSIZE` for more than 1024 buffers or a datagram too large.
    pub async fn send_vectored<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.send_msg_vectored(bufs, None).await
    }

    /// Sends the initialized bytes of `bufs`, in order, as one datagram to `addr` (the first
    /// address it resolves to); returns its length. Not written behind, like
    /// [`send_vectored`](UdpSocket::send_vectored).
    pub async fn send_to_vectored<B: IoBuf, A: ToSocketAddrs>(
        &self,
        bufs: Vec<B>,
        addr: A,
    ) -> (io::Result<usize>, Vec<B>) {
        match addr::resolve_first(&addr).await {
            Ok(addr) => self.send_msg_vectored(bufs, Some(addr)).await,
            Err(e) => (Err(e), bufs),
        }
    }

    async fn send_msg_vectored<B: IoBuf>(
        &self,
        bufs: Vec<B>,
        addr: Option<SocketAddr>,
    ) -> (io::Result<usize>, Vec<B>) {
        if let Some(e) = behind::take_error(&self.socket) {
            return (Err(e), bufs);
        }
        let op = SendMsgVectored::new(self.socket.clone(), bufs, addr.as_ref(), true);
        match Op::new(op).await {
            (Err(e), bufs) if e.kind() == io::ErrorKind::WouldBlock => {
                // No room in the socket: once more, waiting for room.
                let op = SendMsgVectored::new(self.socket.clone(), bufs, addr.as_ref(), false);
                Op::new(op).await
            }
            res => res,
        }
    }

    /// Receives one datagram, filling the buffers in order (each from its start, up to its
    /// capacity), and returns its length and sender.
    ///
    /// # Errors
    ///
    /// A datagram larger than the buffers' total capacity is an `InvalidData` error carrying
    /// [`Truncated`] (the buffers hold its first part), as for
    /// [`recv_from`](UdpSocket::recv_from).
    pub async fn recv_vectored<B: IoBufMut>(
        &self,
        mut bufs: Vec<B>,
    ) -> (io::Result<(usize, SocketAddr)>, Vec<B>) {
        let meta = loop {
            if let Some(rescued) = self.socket.take_rescued_datagram() {
                let copied = bufs::scatter(&mut bufs, &rescued.data);
                break RecvMeta {
                    len: copied,
                    datagram_len: rescued.full_len,
                    peer: rescued.peer,
                    truncated: rescued.full_len > copied,
                    control_truncated: false,
                };
            }
            let op = RecvMsgVectored::new(self.socket.clone(), bufs);
            let ((res, b), cancelled) = RescueAware::new(self.socket.clone(), op).await;
            bufs = b;
            match res {
                // Cancelled because a datagram was rescued: serve it.
                Err(e) if cancelled && is_cancelled(&e) => continue,
                Err(e) => return (Err(e), bufs),
                Ok(out) => break RecvMeta::from(out),
            }
        };
        let res = if meta.truncated {
            Err(Truncated::error(&meta))
        } else {
            meta.peer.map(|peer| (meta.len, peer)).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "datagram without a source address",
                )
            })
        };
        (res, bufs)
    }
}
