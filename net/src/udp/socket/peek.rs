//! `UdpSocket::peek_from` and `peek_sender`: receives with `MSG_PEEK`, which leave the
//! datagram queued for the next receive.

use std::{io, net::SocketAddr};

use runtime::buf::IoBufMut;

use super::{RecvMeta, Truncated, UdpSocket};
use crate::{bufs, op::RecvMsg, stream::RescueAware, tcp::is_cancelled};

fn no_source() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "datagram without a source address",
    )
}

impl UdpSocket {
    /// Receives the next datagram into `buf` like [`recv_from`](UdpSocket::recv_from), but
    /// leaves it queued: the next receive (or peek) returns it again.
    ///
    /// A datagram a dropped receive had taken from the kernel comes first, as it does for
    /// `recv_from`.
    ///
    /// # Errors
    ///
    /// As for `recv_from`: a datagram larger than `buf`'s capacity is an `InvalidData` error
    /// carrying [`Truncated`] (the buffer holds its first part, and the datagram stays
    /// queued, whole).
    pub async fn peek_from<B: IoBufMut>(&self, buf: B) -> (io::Result<(usize, SocketAddr)>, B) {
        let (res, buf) = self.peek_msg(buf).await;
        let res = res.and_then(|meta| {
            if meta.truncated {
                return Err(Truncated::error(&meta));
            }
            Ok((meta.len, meta.peer.ok_or_else(no_source)?))
        });
        (res, buf)
    }

    /// The sender of the next datagram, which stays queued (`recvmsg` with
    /// `MSG_PEEK | MSG_TRUNC` into no buffer, so no payload is copied).
    pub async fn peek_sender(&self) -> io::Result<SocketAddr> {
        let (res, _) = self.peek_msg(Vec::new()).await;
        res?.peer.ok_or_else(no_source)
    }

    /// Peeks at the next datagram: a rescued one first, else the kernel's.
    async fn peek_msg<B: IoBufMut>(&self, mut buf: B) -> (io::Result<RecvMeta>, B) {
        loop {
            let rescued = self.socket.peek_rescued_datagram(|r| {
                let copied = bufs::scatter(std::slice::from_mut(&mut buf), &r.data);
                RecvMeta {
                    len: copied,
                    datagram_len: r.full_len,
                    peer: r.peer,
                    truncated: r.full_len > copied,
                    control_truncated: false,
                }
            });
            if let Some(meta) = rescued {
                return (Ok(meta), buf);
            }
            let op = RecvMsg::peek(self.socket.clone(), buf);
            let ((res, b, _), _) = RescueAware::new(self.socket.clone(), op).await;
            buf = b;
            match res {
                // A datagram was rescued meanwhile: it is what the next receive returns.
                Err(e) if is_cancelled(&e) && self.socket.has_rescued() => continue,
                res => return (res.map(RecvMeta::from), buf),
            }
        }
    }
}
