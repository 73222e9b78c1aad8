//! `RecvMsgStream`: the datagrams of a UDP socket, from one multishot `recvmsg` over a
//! provided-buffer ring.
//!
//! Each completion carries one datagram in a buffer the kernel took from the ring when it
//! arrived, its source address and control messages in front of the payload (the kernel's
//! `io_uring_recvmsg_out` layout, parsed in `op/recv_multi.rs`). Datagrams rescued from
//! abandoned receives come first. The request is re-armed as `recv_stream.rs` describes for
//! byte streams (at once after a harmless end, after `ENOBUFS` only once a buffer is free
//! again); unlike a byte stream's, an error of one receive is yielded and the stream goes on,
//! and only a cancel (`ECANCELED`) ends it.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::{
    buf::{BufRing, RxBuf},
    op::Multishot,
};

use crate::{op::RecvMsgMulti, recv_stream::State, socket::Socket, udp::cmsg};

/// A datagram from [`UdpSocket::recv_msg_stream`](crate::UdpSocket::recv_msg_stream).
#[derive(Debug)]
pub struct Datagram {
    pub(crate) payload: RxBuf,
    pub(crate) peer: Option<SocketAddr>,
    /// The length on the wire.
    pub(crate) len: usize,
    pub(crate) truncated: bool,
    pub(crate) control: Vec<u8>,
}

impl Datagram {
    /// The payload (what fit in the buffer).
    pub fn payload(&self) -> &RxBuf {
        &self.payload
    }

    /// The payload, to keep or send on.
    pub fn into_payload(self) -> RxBuf {
        self.payload
    }

    /// The sender.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The datagram's length on the wire (more than the payload when truncated).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the datagram was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the datagram was larger than the ring's buffers and was cut short.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The control messages received with it.
    pub fn control(&self) -> &[u8] {
        &self.control
    }

    /// The GRO segment size, when the kernel coalesced several datagrams (see
    /// [`UdpSocket::set_gro`](crate::UdpSocket::set_gro)).
    pub fn gro_segment_size(&self) -> Option<usize> {
        cmsg::gro_segment_size(&self.control)
    }

    /// The datagrams the sender sent: the payload split at the GRO segment size (one segment
    /// when it was not coalesced).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        cmsg::segments(&self.payload, self.gro_segment_size().unwrap_or(0))
    }
}

/// Received datagrams of a UDP socket, from
/// [`UdpSocket::recv_msg_stream`](crate::UdpSocket::recv_msg_stream). The stream does not end
/// by itself; an error other than running out of buffers is yielded and the stream goes on.
#[must_use = "streams do nothing unless polled"]
pub struct RecvMsgStream {
    ring: BufRing,
    op: Multishot<RecvMsgMulti>,
    socket: Socket,
    state: State,
    /// Re-armings so far (`u32`: beside `state` it costs no room; saturates).
    rearms: u32,
}

impl RecvMsgStream {
    pub(crate) fn new(socket: Socket, ring: &BufRing) -> RecvMsgStream {
        RecvMsgStream {
            ring: ring.clone(),
            op: Multishot::new(RecvMsgMulti::new(socket.clone(), ring.clone())),
            socket,
            state: State::Armed,
            rearms: 0,
        }
    }

    /// The next datagram (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<Datagram>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// How many times the request was re-armed after the kernel ended it.
    pub fn rearms(&self) -> u64 {
        u64::from(self.rearms)
    }
}

impl Stream for RecvMsgStream {
    type Item = io::Result<Datagram>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Datagrams rescued from abandoned receives first.
            if let Some(r) = this.socket.take_rescued_datagram() {
                return Poll::Ready(Some(Ok(Datagram {
                    truncated: r.full_len > r.data.len(),
                    len: r.full_len,
                    payload: RxBuf::from_vec(r.data),
                    peer: r.peer,
                    control: Vec::new(),
                })));
            }
            match this.state {
                State::Ended => return Poll::Ready(None),
                State::WaitingForBuffers => {
                    ready!(this.ring.poll_available(cx));
                    this.op.rearm();
                    this.rearms = this.rearms.saturating_add(1);
                    this.state = State::Armed;
                }
                State::Armed => match ready!(Pin::new(&mut this.op).poll_next(cx)) {
                    Some(Ok(d)) => return Poll::Ready(Some(Ok(d))),
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        this.ring.note_exhausted();
                        this.state = State::WaitingForBuffers;
                    }
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                        this.state = State::Ended;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Some(Err(e)) => {
                        if this.op.is_finished() {
                            this.op.rearm();
                            this.rearms = this.rearms.saturating_add(1);
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        this.op.rearm();
                        this.rearms = this.rearms.saturating_add(1);
                    }
                },
            }
        }
    }
}

impl fmt::Debug for RecvMsgStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvMsgStream")
            .field("state", &self.state)
            .field("rearms", &self.rearms)
            .finish()
    }
}
