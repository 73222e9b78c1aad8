//! `Socket`: a socket fd shared by its user-facing type and every operation in flight on it.
//!
//! # Invariants
//!
//! - Every operation holds a clone of the `Socket` it targets until its final CQE (the clone
//!   lives in the operation's value, which the driver parks if the future is dropped). The fd
//!   is closed when the last clone goes, so it is never closed, or its number reused, while
//!   the kernel may still act on it.
//! - `rescued` holds data that the kernel delivered to receives whose futures were dropped
//!   before their CQE: nothing the kernel delivered is lost. Entries are ordered by the
//!   sequence number of the CQE that delivered them. A stream receive serves rescued bytes
//!   first, and one that completes after an older rescued chunk was queued puts that chunk's
//!   bytes in front of its own, so the byte stream stays in kernel order.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    io,
    mem::ManuallyDrop,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
    rc::Rc,
    task::Waker,
};

use io_uring::types;
use runtime::buf::IoBufMut;
use socket2::{Domain, Protocol, SockRef, Type};

use crate::{addr::RawAddr, bufs, zc::ZcState};

/// Data from an abandoned receive.
#[derive(Debug)]
pub(crate) struct Rescued {
    /// Sequence number of the CQE that delivered it.
    pub(crate) sequence: u64,
    pub(crate) data: Vec<u8>,
    /// The sender, for datagrams.
    pub(crate) peer: Option<SocketAddr>,
    /// For datagrams: the length on the wire (more than `data.len()` if it was truncated).
    pub(crate) full_len: usize,
    /// The sender as the kernel wrote it, for families `peer` cannot hold (Unix datagrams).
    pub(crate) raw_peer: Option<RawAddr>,
}

impl Rescued {
    /// Stream bytes, delivered by the CQE numbered `sequence`.
    pub(crate) fn stream(sequence: u64, data: Vec<u8>) -> Rescued {
        Rescued {
            sequence,
            full_len: data.len(),
            data,
            peer: None,
            raw_peer: None,
        }
    }
}

/// The socket's fd: the runtime is told before it is closed or handed out
/// (`runtime::op::forget_fd`), so the epoll backend never mistakes a later file with the
/// same number for this one.
struct SocketFd(ManuallyDrop<OwnedFd>);

impl SocketFd {
    fn new(fd: OwnedFd) -> SocketFd {
        SocketFd(ManuallyDrop::new(fd))
    }

    /// Hands the fd out of the runtime's care.
    fn into_owned(self) -> OwnedFd {
        runtime::op::forget_fd(self.0.as_raw_fd());
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the fd is taken out exactly once.
        unsafe { ManuallyDrop::take(&mut this.0) }
    }
}

impl std::ops::Deref for SocketFd {
    type Target = OwnedFd;

    fn deref(&self) -> &OwnedFd {
        &self.0
    }
}

impl Drop for SocketFd {
    fn drop(&mut self) {
        runtime::op::forget_fd(self.0.as_raw_fd());
        // SAFETY: dropped once, here; `into_owned` never lets this destructor run.
        unsafe { ManuallyDrop::drop(&mut self.0) }
    }
}

struct Inner {
    fd: SocketFd,
    /// Boxed on first use: rescues are rare, and every byte here is paid by every connection.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per socket instead of 32 while empty"
    )]
    rescued: RefCell<Option<Box<VecDeque<Rescued>>>>,
    /// The task of a receive in flight, woken when data is rescued (see `stream::RescueAware`).
    reader: Cell<Option<Waker>>,
    /// Zero-copy send policy and counters.
    zc: ZcState,
    /// Small writes sent behind the caller's back (`behind.rs`); only while some are, so
    /// an idle socket holds 8 bytes here instead of the whole state.
    behind: RefCell<Option<Box<crate::behind::Behind>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field(
                "rescued",
                &self.rescued.borrow().as_ref().map_or(0, |q| q.len()),
            )
            .finish()
    }
}

/// A shared, reference-counted socket fd.
#[derive(Debug, Clone)]
pub(crate) struct Socket(Rc<Inner>);

impl Socket {
    /// A new close-on-exec socket.
    pub(crate) fn new(domain: Domain, ty: Type, protocol: Protocol) -> io::Result<Socket> {
        let socket = socket2::Socket::new(domain, ty, Some(protocol))?;
        Ok(Socket::from_fd(OwnedFd::from(socket)))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Socket {
        Socket(Rc::new(Inner {
            fd: SocketFd::new(fd),
            rescued: RefCell::new(None),
            reader: Cell::new(None),
            zc: ZcState::default(),
            behind: RefCell::default(),
        }))
    }

    /// The fd as io_uring's SQE field.
    pub(crate) fn uring_fd(&self) -> types::Fd {
        types::Fd(self.0.fd.as_raw_fd())
    }

    /// Socket options and queries, through socket2.
    pub(crate) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(&*self.0.fd)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()
            .local_addr()?
            .as_socket()
            .ok_or_else(not_inet)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()
            .peer_addr()?
            .as_socket()
            .ok_or_else(not_inet)
    }

    /// Takes the fd out, or duplicates it when operations still hold the socket.
    pub(crate) fn into_fd(self) -> io::Result<OwnedFd> {
        match Rc::try_unwrap(self.0) {
            Ok(inner) => Ok(inner.fd.into_owned()),
            Err(shared) => shared.fd.try_clone(),
        }
    }

    /// Takes the fd out as a raw number, duplicating it when operations still hold the
    /// socket. If even that fails (the descriptor table is full), the socket's own fd is
    /// released to the caller without closing it: the runtime never closes it, and the
    /// little state that held it is leaked.
    pub(crate) fn into_raw_fd(self) -> RawFd {
        match Rc::try_unwrap(self.0) {
            Ok(inner) => inner.fd.into_owned().into_raw_fd(),
            Err(shared) => match shared.fd.try_clone() {
                Ok(fd) => fd.into_raw_fd(),
                Err(_) => {
                    let raw = shared.fd.as_raw_fd();
                    runtime::op::forget_fd(raw);
                    std::mem::forget(shared);
                    raw
                }
            },
        }
    }

    /// The write-behind state (`behind.rs`).
    pub(crate) fn behind(&self) -> &RefCell<Option<Box<crate::behind::Behind>>> {
        &self.0.behind
    }

    /// The zero-copy policy and counters.
    pub(crate) fn zc(&self) -> &ZcState {
        &self.0.zc
    }

    /// Keeps data an abandoned receive got from the kernel.
    pub(crate) fn rescue(&self, rescued: Rescued) {
        let mut queue = self.0.rescued.borrow_mut();
        let queue = queue.get_or_insert_default();
        let at = queue
            .iter()
            .rposition(|r| r.sequence < rescued.sequence)
            .map_or(0, |i| i + 1);
        queue.insert(at, rescued);
        // A receive in flight would wait for data that is already here: let it know.
        if let Some(reader) = self.0.reader.take() {
            reader.wake();
        }
    }

    /// Whether rescued data waits to be read.
    pub(crate) fn has_rescued(&self) -> bool {
        self.0
            .rescued
            .borrow()
            .as_ref()
            .is_some_and(|q| !q.is_empty())
    }

    /// Registers the task of a receive in flight, to be woken by `rescue`.
    pub(crate) fn set_reader(&self, waker: &Waker) {
        let current = self.0.reader.take();
        self.0.reader.set(match current {
            Some(w) if w.will_wake(waker) => Some(w),
            _ => Some(waker.clone()),
        });
    }

    /// Serves a stream read from rescued bytes, if any: fills the buffers from the oldest
    /// chunk and keeps the rest. Returns the bytes copied, or `None` with nothing rescued.
    pub(crate) fn read_rescued<B: IoBufMut>(&self, bufs: &mut [B]) -> Option<usize> {
        let mut queue = self.0.rescued.borrow_mut();
        let queue = queue.as_mut()?;
        let front = queue.front_mut()?;
        let n = bufs::scatter(bufs, &front.data);
        if n == front.data.len() {
            queue.pop_front();
        } else {
            front.data.drain(..n);
        }
        Some(n)
    }

    /// Serves a stream peek from rescued bytes, if any: copies the oldest chunk (as much as
    /// fits) into the buffers and keeps it queued. Returns the bytes copied, or `None` with
    /// nothing rescued.
    pub(crate) fn peek_rescued<B: IoBufMut>(&self, bufs: &mut [B]) -> Option<usize> {
        let queue = self.0.rescued.borrow();
        Some(bufs::scatter(bufs, &queue.as_ref()?.front()?.data))
    }

    /// Looks at the oldest rescued datagram without taking it.
    pub(crate) fn peek_rescued_datagram<R>(&self, f: impl FnOnce(&Rescued) -> R) -> Option<R> {
        self.0.rescued.borrow().as_ref()?.front().map(f)
    }

    /// A stream receive with CQE `sequence` completed with `n` bytes in `bufs`: if rescued
    /// bytes are older, they go in front. Returns the number of bytes now in `bufs`.
    pub(crate) fn merge_older<B: IoBufMut>(
        &self,
        sequence: u64,
        bufs: &mut [B],
        n: usize,
    ) -> usize {
        let mut queue = self.0.rescued.borrow_mut();
        let Some(queue) = queue.as_mut() else {
            return n;
        };
        if queue.front().is_none_or(|r| r.sequence > sequence) {
            return n;
        }
        let mut combined = Vec::new();
        while let Some(r) = queue.front()
            && r.sequence < sequence
        {
            combined.extend_from_slice(&queue.pop_front().expect("front exists").data);
        }
        combined.extend_from_slice(&bufs::gather(bufs, n));
        let copied = bufs::scatter(bufs, &combined);
        if copied < combined.len() {
            queue.push_front(Rescued::stream(sequence, combined.split_off(copied)));
        }
        copied
    }

    /// The oldest rescued chunk of stream data, whole.
    pub(crate) fn take_rescued_chunk(&self) -> Option<Vec<u8>> {
        self.take_rescued_datagram().map(|r| r.data)
    }

    /// The oldest rescued datagram.
    pub(crate) fn take_rescued_datagram(&self) -> Option<Rescued> {
        let mut queue = self.0.rescued.borrow_mut();
        let rescued = queue.as_mut()?.pop_front();
        if queue.as_ref().is_some_and(|q| q.is_empty()) {
            *queue = None;
        }
        rescued
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

/// Adopts a raw fd.
///
/// # Safety
///
/// `fd` must be an open socket owned by nothing else.
pub(crate) unsafe fn socket_from_raw(fd: RawFd) -> Socket {
    // SAFETY: the caller transfers ownership of an open fd.
    Socket::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn not_inet() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the socket has no IPv4 or IPv6 address",
    )
}
