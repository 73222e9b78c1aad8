//! `ReadAhead`: plain stream reads (`TcpStream::read(buf)`) served by one multishot receive on
//! the worker's shared ring (`BufRing::shared`), so that a connection does not submit a
//! receive request per read: the request stays armed across reads and each arrival is one
//! completion, copied into the caller's buffer by the read that takes it.
//!
//! # Invariants
//!
//! - A handle has at most one receive request on its socket: the multishot while it is armed,
//!   otherwise a plain receive (`stream::receive`) for that read only. The multishot is armed
//!   (again) only by a read that found nothing queued and nothing rescued.
//! - Bytes are handed out in the order the kernel delivered them: queued chunks and bytes
//!   rescued from abandoned receives are merged by the sequence numbers of the completions
//!   that brought them.
//! - An arming takes at most about [`BUFFERS_PER_ARMING`] arrivals' worth of bytes (the
//!   kernel's multishot byte limit, set from the bytes per arrival the previous arming saw,
//!   within [`MIN_LIMIT`]..=[`LIMIT`]) and is re-armed only once its bytes were read, so a
//!   connection whose reader stops holds about that many buffers of the shared ring (each
//!   arrival takes one). The first arming assumes [`FIRST_ESTIMATE`] bytes per arrival.
//! - Dropping a `ReadAhead` (its handle dropped, split, or turned into an adapter) moves its
//!   queued bytes into the socket's rescue queue and cancels the request; bytes that still
//!   arrive for it are rescued as they come (`RecvAhead::next_detached`), so whoever reads
//!   the socket next gets them in order.
//! - A read dropped before it completes loses nothing: the data is in the queue or the
//!   request, which belong to the handle, not to the read.
//!
//! # When reads go around it
//!
//! The multishot costs one extra copy (ring buffer to the caller's buffer), which is cheap for
//! messages and dear for bulk data, where one plain receive moves many kilobytes at once. An
//! arming whose completions mostly filled whole ring buffers marks the stream as bulk: its
//! reads then use plain receives until [`SMALL_STREAK`] reads in a row were small again. The
//! epoll backend, and a runtime without a shared ring, always use plain receives. Dissolving
//! a read-ahead forgets its mode with the rest: the next read tries the multishot again.

use std::{collections::VecDeque, io, pin::Pin, task::Context, task::Poll};

use futures_core::Stream;
use runtime::{
    buf::{BufRing, IoBufMut, RxBuf},
    op::Multishot,
};

use crate::{
    bufs,
    op::{RecvAhead, RecvEvent, RecvMulti},
    socket::{Rescued, Socket},
};

/// Most bytes one arming of the multishot may take before the kernel ends it.
pub(crate) const LIMIT: u32 = 64 * 1024;
/// Fewest bytes an arming may take.
const MIN_LIMIT: u32 = 64;
/// Arrivals (completions, one ring buffer each) an arming is sized for.
const BUFFERS_PER_ARMING: u32 = 16;
/// Bytes per arrival assumed before any were seen.
const FIRST_ESTIMATE: u32 = 64;
/// Small reads in a row that bring a bulk stream back to the multishot.
const SMALL_STREAK: u8 = 8;

/// How a handle's reads receive, once it has a read-ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through the multishot, while it pays.
    Ahead,
    /// Plain receives: the stream carries bulk data; `small` reads in a row were small, and
    /// the last one filled its buffer (`full`: more is likely waiting).
    Bulk { small: u8, full: bool },
}

/// The read-ahead state of one stream handle (see the module docs): nothing until its first
/// read, so it costs every stream one word. Without a shared ring (`BufRing::shared` is
/// `None`: the epoll backend) it stays empty and every read is a plain receive.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    inner: Option<Box<Inner>>,
}

#[derive(Debug)]
struct Inner {
    socket: Socket,
    ring: BufRing,
    op: Multishot<RecvAhead>,
    mode: Mode,
    /// Received bytes not read yet, with the sequence numbers of their completions.
    queue: Queue,
    /// How the request ended, reported once the queue is read: end of stream (`Ok`) or error.
    end: Option<io::Result<()>>,
    /// Completions of the current arming, how many of them filled a whole buffer, and the
    /// bytes they brought.
    completions: u32,
    full: u32,
    bytes: u32,
}

/// What [`ReadAhead::poll_fill`] found.
enum Filled {
    /// Bytes (queued or rescued) or the end wait to be taken.
    Ready,
    /// The caller must use a plain receive for this read.
    Plain,
}

impl ReadAhead {
    pub(crate) const fn new() -> ReadAhead {
        ReadAhead { inner: None }
    }

    /// Reads into `bufs` (from their start, in order) with the multishot; `None` when this read
    /// must be a plain receive (`Some(Ok(0))` is the end of the stream).
    pub(crate) async fn read<B: IoBufMut>(
        &mut self,
        socket: &Socket,
        bufs: &mut [B],
    ) -> Option<io::Result<usize>> {
        if bufs::capacity(bufs) == 0 || self.inner.as_ref().is_some_and(|i| i.mode != Mode::Ahead) {
            return None;
        }
        match std::future::poll_fn(|cx| self.poll_fill(socket, cx)).await {
            Ok(Filled::Ready) => Some(self.take(socket, bufs)),
            Ok(Filled::Plain) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Like [`read`](ReadAhead::read) but leaves the bytes queued; `None` when the peek must
    /// go to the kernel (no request of this handle is armed then).
    pub(crate) async fn peek<B: IoBufMut>(
        &mut self,
        socket: &Socket,
        bufs: &mut [B],
    ) -> Option<io::Result<usize>> {
        if bufs::capacity(bufs) == 0 || !self.inner.as_ref().is_some_and(|i| i.op.is_armed()) {
            return self.queued(socket, bufs);
        }
        match std::future::poll_fn(|cx| self.poll_fill(socket, cx)).await {
            Ok(Filled::Ready) => self.queued(socket, bufs),
            Ok(Filled::Plain) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// A plain receive of this handle returned `res` into `offered` bytes of room: counts
    /// small reads of a bulk stream (see the module docs).
    pub(crate) fn note_plain(&mut self, res: &io::Result<usize>, offered: usize) {
        if let Some(inner) = self.inner.as_mut()
            && let Mode::Bulk { small, full } = &mut inner.mode
            && let Ok(n) = *res
        {
            *full = n > 0 && n >= offered;
            let threshold = inner.ring.buf_len() / 2;
            *small = if n > 0 && n < threshold.min(offered) {
                *small + 1
            } else {
                0
            };
            if *small >= SMALL_STREAK {
                inner.mode = Mode::Ahead;
            }
        }
    }

    /// Whether this handle's reads are plain receives of a bulk stream whose last one filled
    /// its buffer: the next is likely to find data at once (`stream::read_bulk`).
    pub(crate) fn bulk_backlog(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| matches!(i.mode, Mode::Bulk { full: true, .. }))
    }

    /// Ends the read-ahead: queued bytes go to the socket's rescue queue and the request is
    /// cancelled (see the module docs). The next read arms a new one.
    pub(crate) fn dissolve(&mut self) {
        if let Some(inner) = self.inner.take() {
            (*inner).dissolve();
        }
    }

    /// Waits until bytes or the request's end can be taken; `Filled::Plain` when the
    /// multishot cannot serve this read.
    fn poll_fill(&mut self, socket: &Socket, cx: &mut Context<'_>) -> Poll<io::Result<Filled>> {
        let mut entered = false;
        loop {
            if socket.has_rescued() {
                return Poll::Ready(Ok(Filled::Ready));
            }
            let inner = match &mut self.inner {
                Some(inner) => inner,
                None => match Inner::new(socket) {
                    Some(inner) => self.inner.insert(inner),
                    None => return Poll::Ready(Ok(Filled::Plain)),
                },
            };
            if !inner.queue.is_empty() || inner.end.is_some() {
                return Poll::Ready(Ok(Filled::Ready));
            }
            if inner.op.is_finished() {
                if inner.is_bulk() {
                    inner.reset_counts();
                    inner.mode = Mode::Bulk {
                        small: 0,
                        full: true,
                    };
                    return Poll::Ready(Ok(Filled::Plain));
                }
                // An empty ring would refuse the request at once: this read waits in the
                // kernel instead, and a later one re-arms once buffers are back.
                if !inner.ring.has_available() {
                    return Poll::Ready(Ok(Filled::Plain));
                }
                inner.rearm();
            }
            match Pin::new(&mut inner.op).poll_next(cx) {
                Poll::Pending if runtime::op::cancel::reason().is_some() => {
                    // A fired cancel scope (`CancelExt`): what arrives by the next enter is
                    // still this read's, as it would be for a request that completed before
                    // its cancel; after that the read ends. The request keeps receiving for
                    // the next read, so nothing is lost.
                    if !entered && runtime::submit_now() {
                        entered = true;
                        continue;
                    }
                    return Poll::Ready(Err(io::Error::from_raw_os_error(libc::ECANCELED)));
                }
                Poll::Pending => {
                    // Bytes rescued meanwhile (from an abandoned receive) are older than
                    // anything this request brings: wake up for them.
                    socket.set_reader(cx.waker());
                    return Poll::Pending;
                }
                Poll::Ready(Some((sequence, event))) => inner.receive(sequence, event),
                // Ended (the byte limit, or a completion-queue overflow): re-armed above.
                Poll::Ready(None) => {}
            }
        }
    }

    /// Takes up to the buffers' room: rescued and queued chunks in sequence order, or, with
    /// neither, the request's end (`Ok(0)` or its error).
    fn take<B: IoBufMut>(&mut self, socket: &Socket, bufs: &mut [B]) -> io::Result<usize> {
        let room = bufs::capacity(bufs);
        let mut filled = 0;
        while filled < room {
            let rescued = socket.rescued_sequence();
            let queued = self
                .inner
                .as_ref()
                .and_then(|i| i.queue.front())
                .map(|c| c.0);
            match (rescued, queued) {
                (Some(r), q) if q.is_none_or(|q| r < q) => {
                    // Rescued bytes come one chunk per read, as `stream::receive` serves them.
                    if filled > 0 {
                        break;
                    }
                    return Ok(socket.read_rescued(bufs).unwrap_or(0));
                }
                (_, Some(_)) => {
                    let queue = &mut self.inner.as_mut().expect("queued").queue;
                    let (_, chunk) = queue.front_mut().expect("queued");
                    let n = bufs::scatter_at(bufs, filled, chunk);
                    filled += n;
                    chunk.advance(n);
                    if chunk.is_empty() {
                        queue.pop_front();
                    }
                }
                // Nothing queued (rescued bytes are taken by the first arm).
                _ => break,
            }
        }
        if filled > 0 {
            return Ok(filled);
        }
        match self.inner.as_mut().and_then(|i| i.end.take()) {
            Some(end) => end.map(|()| 0),
            None => Ok(0),
        }
    }

    /// Copies queued (or older rescued) bytes without taking them; `None` with nothing queued.
    fn queued<B: IoBufMut>(&self, socket: &Socket, bufs: &mut [B]) -> Option<io::Result<usize>> {
        let queue = self.inner.as_ref().map(|i| &i.queue);
        let queued = queue.and_then(|q| q.front()).map(|c| c.0);
        match (socket.rescued_sequence(), queued) {
            (Some(r), q) if q.is_none_or(|q| r < q) => socket.peek_rescued(bufs).map(Ok),
            (_, Some(_)) => {
                let mut filled = 0;
                for (_, chunk) in queue.into_iter().flat_map(Queue::iter) {
                    let n = bufs::scatter_at(bufs, filled, chunk);
                    filled += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Some(Ok(filled))
            }
            // The end of the stream is what a peek sees there; an error stays for the read.
            _ => match self.inner.as_ref().and_then(|i| i.end.as_ref()) {
                Some(Ok(())) => Some(Ok(0)),
                _ => None,
            },
        }
    }
}

impl Default for ReadAhead {
    fn default() -> ReadAhead {
        ReadAhead::new()
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.dissolve();
    }
}

impl Inner {
    /// A read-ahead on the worker's shared ring, if it has one.
    fn new(socket: &Socket) -> Option<Box<Inner>> {
        let ring = BufRing::shared()?;
        let op = RecvMulti::new(socket.clone(), ring.clone(), false);
        let op = RecvAhead::new(op, limit_for(FIRST_ESTIMATE));
        Some(Box::new(Inner {
            socket: socket.clone(),
            ring,
            op: Multishot::new(op),
            mode: Mode::Ahead,
            queue: Queue::default(),
            end: None,
            completions: 0,
            full: 0,
            bytes: 0,
        }))
    }

    /// Queues what one completion brought.
    fn receive(&mut self, sequence: u64, event: io::Result<RecvEvent>) {
        match event {
            Ok(RecvEvent::One(buf)) => self.push(sequence, buf),
            Ok(RecvEvent::Many(bufs)) => bufs.into_iter().for_each(|b| self.push(sequence, b)),
            Ok(RecvEvent::Eof) => self.end = Some(Ok(())),
            // The ring ran dry: the request ended, the data waits in the socket, and the
            // next top-up publishes more buffers (the demand counts this refusal).
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.ring.note_exhausted(),
            Err(e) => {
                // A completion the ring rejected leaves the request armed: end it.
                self.op.cancel();
                self.end = Some(Err(e));
            }
        }
    }

    fn push(&mut self, sequence: u64, buf: RxBuf) {
        self.completions += 1;
        self.bytes = self.bytes.saturating_add(buf.len() as u32);
        if buf.len() == self.ring.buf_len() {
            self.full += 1;
        }
        self.queue.push_back((sequence, buf));
    }

    /// Whether the ended arming carried bulk data: at least four completions, three in four
    /// of them whole buffers.
    fn is_bulk(&self) -> bool {
        self.completions >= 4 && self.full * 4 >= self.completions * 3
    }

    /// Arms the ended request again, sized from what the ended arming brought per arrival.
    fn rearm(&mut self) {
        if let Some(op) = self.op.data()
            && self.completions > 0
        {
            op.set_limit(limit_for(self.bytes / self.completions));
        }
        self.op.rearm();
        self.reset_counts();
    }

    fn reset_counts(&mut self) {
        self.completions = 0;
        self.full = 0;
        self.bytes = 0;
    }

    /// See [`ReadAhead::dissolve`]. Dropping the request (after this) cancels it.
    fn dissolve(self) {
        for (sequence, buf) in self.queue.into_iter() {
            self.socket.rescue(Rescued::stream(sequence, buf.to_vec()));
        }
    }
}

/// A read-ahead's queued chunks, oldest first. The oldest lives inline: a completion is taken
/// only once the queue is empty and the read-ahead receives without bundles, so one chunk is
/// queued at a time (`rest` holds the further buffers of a bundle, should one come), and it
/// is read from the read-ahead's own allocation instead of a second one (on 512 connections
/// that second allocation's cache miss was a third of the echo task's poll; `perf annotate`).
/// Invariant: `head` is `None` only while `rest` is empty.
#[derive(Debug, Default)]
struct Queue {
    head: Option<(u64, RxBuf)>,
    rest: VecDeque<(u64, RxBuf)>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push_back(&mut self, chunk: (u64, RxBuf)) {
        if self.head.is_none() {
            self.head = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    fn front(&self) -> Option<&(u64, RxBuf)> {
        self.head.as_ref()
    }

    fn front_mut(&mut self) -> Option<&mut (u64, RxBuf)> {
        self.head.as_mut()
    }

    fn pop_front(&mut self) -> Option<(u64, RxBuf)> {
        let front = self.head.take();
        self.head = self.rest.pop_front();
        front
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, RxBuf)> {
        self.head.iter().chain(self.rest.iter())
    }

    fn into_iter(self) -> impl Iterator<Item = (u64, RxBuf)> {
        self.head.into_iter().chain(self.rest)
    }
}

/// The byte limit of an arming for arrivals of about `per_arrival` bytes.
fn limit_for(per_arrival: u32) -> u32 {
    per_arrival
        .saturating_mul(BUFFERS_PER_ARMING)
        .clamp(MIN_LIMIT, LIMIT)
}

#[cfg(test)]
mod tests {
    use super::ReadAhead;

    /// Every stream handle holds one, read or not: it is one word until the first read.
    #[test]
    fn an_unused_read_ahead_is_one_word() {
        assert_eq!(
            std::mem::size_of::<ReadAhead>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<crate::TcpStream>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
