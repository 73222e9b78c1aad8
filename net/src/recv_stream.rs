//! Receive streams of bytes: `RecvStream` over provided-buffer rings and `ZcrxStream` over a
//! zero-copy receive area (the datagram stream, `RecvMsgStream`, is `recv_msg_stream.rs`).
//!
//! Each is one multishot receive request that keeps posting completions, each carrying a
//! buffer the kernel took from the shared ring only when data arrived. When the kernel ends
//! the request without an error the user must see (the completion queue overflowed, or the
//! ring ran out of buffers: `ENOBUFS`), the stream re-arms it: at once after an overflow, and
//! after `ENOBUFS` only once a buffer is free again, so an exhausted ring pauses the stream
//! (the data waits in the socket, in order) instead of spinning.
//!
//! A byte stream that ends with an error while its request is still armed (a completion the
//! buffer pool rejected as malformed, say) cancels the request at once, as dropping the stream
//! would: the kernel must not go on filling buffers that no one takes. Data that still arrives
//! for the cancelled request is kept for the socket's next receive.
//!
//! Bytes rescued from abandoned receives (a dropped read, or the read-ahead a byte stream
//! replaced, whose request may still deliver) come before the stream's own: taken when it
//! begins, and again before each wait for its request.

use std::{
    collections::VecDeque,
    fmt, io,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::{
    buf::{BufRing, RxBuf},
    op::{Multishot, MultishotOp},
    zcrx::Zcrx,
};

use crate::{
    op::{RecvEvent, RecvMulti, RecvZc},
    socket::{Rescued, Socket},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Armed,
    /// The ring ran dry; re-arm once a buffer is free.
    WaitingForBuffers,
    Ended,
}

/// Where a byte stream's buffers come from, and how it tells that it ran out of them.
trait BufferPool {
    /// The errno a receive ends with when no buffer is left.
    const EXHAUSTED: i32;
    /// An errno that ends the request without mattering to the user (re-arm at once).
    const CARRY_ON: Option<i32>;
    fn note_exhausted(&self);
    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()>;
}

impl BufferPool for BufRing {
    const EXHAUSTED: i32 = libc::ENOBUFS;
    const CARRY_ON: Option<i32> = None;

    fn note_exhausted(&self) {
        BufRing::note_exhausted(self);
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        BufRing::poll_available(self, cx)
    }
}

impl BufferPool for Zcrx {
    const EXHAUSTED: i32 = libc::ENOMEM;
    // ENOSPC: the CQ was full.
    const CARRY_ON: Option<i32> = Some(libc::ENOSPC);

    fn note_exhausted(&self) {
        Zcrx::note_exhausted(self);
    }

    fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        Zcrx::poll_available(self, cx)
    }
}

/// What a byte stream has taken from its request (or the rescue queue) but not handed out.
#[derive(Default)]
struct Ready {
    bufs: VecDeque<RxBuf>,
    /// An error `poll_many` met after buffers it returned: the next poll's.
    error: Option<io::Error>,
}

/// The state machine shared by the byte streams: one multishot request, re-armed after a
/// harmless end, paused while the buffer pool is exhausted, ended by EOF or an error.
struct ByteReceiver<O: MultishotOp, P> {
    pool: P,
    /// For bytes rescued after the stream began (from a read-ahead it replaced, whose
    /// request the kernel had not ended yet): they are older than what comes next.
    socket: Socket,
    /// `None` once the stream ended with an error: the request was dropped, which cancels it.
    op: Option<Multishot<O>>,
    /// Buffers of a bundle (or rescued chunks) not yet handed out, and an error met after
    /// them; boxed, and only while there are some, so an idle stream holds no queue (8 bytes
    /// instead of 40).
    ready: Option<Box<Ready>>,
    state: State,
    /// Re-armings so far (`u32`: beside `state` it costs no room; saturates).
    rearms: u32,
}

impl<O, P> ByteReceiver<O, P>
where
    O: MultishotOp<Item = io::Result<RecvEvent>>,
    P: BufferPool,
{
    fn new(socket: &Socket, pool: P, op: O) -> Self {
        let mut ready = None;
        // Data rescued from abandoned receives comes first, in order.
        while let Some(data) = socket.take_rescued_chunk() {
            ready
                .get_or_insert_with(Box::<Ready>::default)
                .bufs
                .push_back(RxBuf::from_vec(data));
        }
        ByteReceiver {
            pool,
            socket: socket.clone(),
            op: Some(Multishot::new(op)),
            ready,
            state: State::Armed,
            rearms: 0,
        }
    }

    /// Waits for one buffer; if it came in a bundle, takes with it the rest of the bundle and
    /// every later buffer ready without waiting (at most `max`, and at least one, in all).
    /// An error met after the first buffer is held for the next poll.
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Option<io::Result<Vec<RxBuf>>>> {
        let first = match ready!(self.poll_next(cx)) {
            Some(Ok(buf)) => buf,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => return Poll::Ready(None),
        };
        // A buffer that came alone (message traffic) is all there is, most likely: only the
        // rest of a bundle makes it worth asking for more.
        let Some(ready) = self.ready.as_ref() else {
            return Poll::Ready(Some(Ok(vec![first])));
        };
        let mut bufs = Vec::with_capacity(max.min(1 + ready.bufs.len()));
        bufs.push(first);
        while bufs.len() < max {
            match self.poll_next(cx) {
                Poll::Ready(Some(Ok(buf))) => bufs.push(buf),
                Poll::Ready(Some(Err(e))) => {
                    self.ready.get_or_insert_with(Box::default).error = Some(e);
                    break;
                }
                // The end comes again with the next poll.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(bufs)))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<RxBuf>>> {
        loop {
            if let Some(ready) = self.ready.as_mut() {
                if let Some(buf) = ready.bufs.pop_front() {
                    if ready.bufs.is_empty() && ready.error.is_none() {
                        self.ready = None;
                    }
                    return Poll::Ready(Some(Ok(buf)));
                }
                if let Some(e) = self.ready.take().and_then(|r| r.error) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if let Some(data) = self.socket.take_rescued_chunk() {
                return Poll::Ready(Some(Ok(RxBuf::from_vec(data))));
            }
            let Some(op) = self.op.as_mut() else {
                return Poll::Ready(None);
            };
            match self.state {
                State::Ended => return Poll::Ready(None),
                State::WaitingForBuffers => {
                    ready!(self.pool.poll_available(cx));
                    op.rearm();
                    self.rearms = self.rearms.saturating_add(1);
                    self.state = State::Armed;
                }
                State::Armed => match ready!(Pin::new(&mut *op).poll_next(cx)) {
                    Some(Ok(RecvEvent::One(buf))) => return Poll::Ready(Some(Ok(buf))),
                    Some(Ok(RecvEvent::Many(bufs))) => {
                        self.ready = Some(Box::new(Ready { bufs, error: None }));
                    }
                    Some(Ok(RecvEvent::Eof)) => self.state = State::Ended,
                    Some(Err(e)) if e.raw_os_error() == Some(P::EXHAUSTED) => {
                        self.pool.note_exhausted();
                        self.state = State::WaitingForBuffers;
                    }
                    // The request ended; `None` comes next and re-arms it.
                    Some(Err(e)) if P::CARRY_ON.is_some() && e.raw_os_error() == P::CARRY_ON => {}
                    Some(Err(e)) => {
                        self.state = State::Ended;
                        // An error the kernel ended the request with leaves nothing armed; one
                        // of ours (a malformed completion) may leave it armed: cancel it.
                        if !op.is_finished() {
                            self.op = None;
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => {
                        // Ended without an error the user must see (e.g. CQ overflow).
                        op.rearm();
                        self.rearms = self.rearms.saturating_add(1);
                    }
                },
            }
        }
    }
}

impl<O: MultishotOp, P> Drop for ByteReceiver<O, P> {
    /// Bytes taken from the kernel (or the rescue queue) but not yielded go back to the
    /// socket's rescue queue, in front: they are older than anything rescued after them.
    fn drop(&mut self) {
        if let Some(ready) = self.ready.take() {
            let bytes: Vec<u8> = ready.bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if !bytes.is_empty() {
                self.socket.rescue(Rescued::stream(0, bytes));
            }
        }
    }
}

/// Received bytes of a TCP stream, as [`RxBuf`]s from a [`BufRing`]; from
/// [`TcpStream::recv_stream`](crate::TcpStream::recv_stream). Ends (`None`) at end of file;
/// an error is yielded once, then the stream ends (and its request is cancelled, as below).
/// Streams of many sockets may share one ring, bundled or not, and take their completions in
/// any order.
///
/// It borrows the stream (or its read half) mutably, like a read does: while it lives no
/// read can take bytes from the same byte stream, which would reorder them. To write while
/// receiving, split the stream first ([`TcpStream::split`](crate::TcpStream::split) or
/// [`into_split`](crate::TcpStream::into_split)).
///
/// Dropping it cancels the request; data that still arrives for it is kept and returned by
/// the stream's next receive, and every buffer goes back to the ring.
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a> {
    inner: ByteReceiver<RecvMulti, BufRing>,
    _stream: PhantomData<&'a mut ()>,
}

impl RecvStream<'_> {
    pub(crate) fn new(socket: Socket, ring: &BufRing, bundle: bool) -> Self {
        let op = RecvMulti::new(socket.clone(), ring.clone(), bundle);
        RecvStream {
            inner: ByteReceiver::new(&socket, ring.clone(), op),
            _stream: PhantomData,
        }
    }

    /// A stream that receives with `IORING_RECVSEND_BUNDLE` where the kernel offers it and the
    /// ring is not incremental (bundles over incremental rings are reported broken:
    /// axboe/liburing#1320), a plain one otherwise. A user-space pool (the epoll backend)
    /// fills bundles itself, one `recvmsg` over consecutive buffers.
    pub(crate) fn bundled(socket: Socket, ring: &BufRing) -> Self {
        let bundle = (ring.is_user_space() || runtime::capabilities().recvsend_bundle())
            && !ring.is_incremental();
        RecvStream::new(socket, ring, bundle)
    }

    /// The next received bytes (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<RxBuf>> {
        std::future::poll_fn(|cx| self.inner.poll_next(cx)).await
    }

    /// The next received buffers: waits for one, and takes the others ready without waiting
    /// again, at most `max` (and at least one) in all. A buffer that arrived alone (one
    /// completion, one buffer: message traffic) comes alone; one of a bundle comes with the
    /// rest of it and with whatever completions were already reaped after it. `None` at the
    /// end of the stream; an error met after some buffers is yielded next, as by [`next`].
    ///
    /// For sending a batch with one vectored write
    /// ([`writev_all`](crate::TcpStream::writev_all)), straight from the ring's buffers.
    ///
    /// [`next`]: Self::next
    pub fn next_batch(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Option<io::Result<Vec<RxBuf>>>> + '_ {
        std::future::poll_fn(move |cx| self.inner.poll_batch(cx, max))
    }

    /// How many times the request was re-armed after the kernel ended it.
    pub fn rearms(&self) -> u64 {
        u64::from(self.inner.rearms)
    }
}

impl Stream for RecvStream<'_> {
    type Item = io::Result<RxBuf>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_next(cx)
    }
}

impl fmt::Debug for RecvStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("state", &self.inner.state)
            .field(
                "ready",
                &self.inner.ready.as_ref().map_or(0, |q| q.bufs.len()),
            )
            .field("rearms", &self.inner.rearms)
            .finish()
    }
}

/// Received bytes of a TCP stream in the runtime's zero-copy receive area, from
/// [`TcpStream::recv_zc_stream`](crate::TcpStream::recv_zc_stream): one multishot
/// `IORING_OP_RECV_ZC`. Re-armed when the CQ was full (`ENOSPC`), and after the area ran out
/// (`ENOMEM`) once buffers come back. Ends at end of file. Borrows the stream mutably, as
/// [`RecvStream`] does.
#[must_use = "streams do nothing unless polled"]
pub struct ZcrxStream<'a> {
    inner: ByteReceiver<RecvZc, Zcrx>,
    _stream: PhantomData<&'a mut ()>,
}

impl ZcrxStream<'_> {
    pub(crate) fn new(socket: Socket, zcrx: Zcrx) -> Self {
        let op = RecvZc::new(socket.clone(), zcrx.clone());
        ZcrxStream {
            inner: ByteReceiver::new(&socket, zcrx, op),
            _stream: PhantomData,
        }
    }

    /// The next received bytes (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<RxBuf>> {
        std::future::poll_fn(|cx| self.inner.poll_next(cx)).await
    }

    /// The next received buffers: waits for one, and takes the others ready without waiting
    /// again, at most `max` (and at least one) in all. A buffer that arrived alone (one
    /// completion, one buffer: message traffic) comes alone; one of a bundle comes with the
    /// rest of it and with whatever completions were already reaped after it. `None` at the
    /// end of the stream; an error met after some buffers is yielded next, as by [`next`].
    ///
    /// For sending a batch with one vectored write
    /// ([`writev_all`](crate::TcpStream::writev_all)), straight from the ring's buffers.
    ///
    /// [`next`]: Self::next
    pub fn next_batch(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Option<io::Result<Vec<RxBuf>>>> + '_ {
        std::future::poll_fn(move |cx| self.inner.poll_batch(cx, max))
    }

    /// How many times the request was re-armed after the kernel ended it.
    pub fn rearms(&self) -> u64 {
        u64::from(self.inner.rearms)
    }
}

impl Stream for ZcrxStream<'_> {
    type Item = io::Result<RxBuf>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_next(cx)
    }
}

impl fmt::Debug for ZcrxStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZcrxStream")
            .field("state", &self.inner.state)
            .field("rearms", &self.inner.rearms)
            .finish()
    }
}

/// Received bytes of a TCP stream through whichever zero-copy path this thread's runtime has:
/// its zero-copy receive area when an ifq is registered, a provided-buffer ring otherwise.
/// From [`TcpStream::recv_zero_copy`](crate::TcpStream::recv_zero_copy). Both yield the same
/// [`RxBuf`] type.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub enum ZeroCopyRecv<'a> {
    /// Through the ZCRX area.
    Zcrx(ZcrxStream<'a>),
    /// Through a provided-buffer ring.
    Ring(RecvStream<'a>),
}

impl ZeroCopyRecv<'_> {
    /// Whether the hardware zero-copy path is in use.
    pub fn is_zcrx(&self) -> bool {
        matches!(self, ZeroCopyRecv::Zcrx(_))
    }

    /// The next received bytes (an inherent shortcut for `StreamExt::next`).
    pub async fn next(&mut self) -> Option<io::Result<RxBuf>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for ZeroCopyRecv<'_> {
    type Item = io::Result<RxBuf>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            ZeroCopyRecv::Zcrx(s) => Pin::new(s).poll_next(cx),
            ZeroCopyRecv::Ring(s) => Pin::new(s).poll_next(cx),
        }
    }
}
