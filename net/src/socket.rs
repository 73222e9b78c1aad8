//! `Socket`: a socket fd shared by its user-facing type and every operation in flight on it.
//!
//! # Invariants
//!
//! - Every operation holds a clone of the `Socket` it targets until its final CQE (the clone
//!   lives in the operation's value, which the driver parks if the future is dropped). The fd
//!   is closed when the last clone goes, so it is never closed, or its number reused, while
//!   the kernel may still act on it.
//! - The socket is named by an fd of the process or by a slot of its ring's file table (a
//!   direct descriptor, `runtime::direct`); every request builds its SQE from
//!   [`Socket::uring_fd`] through [`on_target!`], which sets `IOSQE_FIXED_FILE` for the latter.
//!   A direct descriptor's slot is closed through the ring when the last clone goes.
//! - `rescued` holds data that the kernel delivered to receives whose futures were dropped
//!   before their CQE: nothing the kernel delivered is lost. Entries are ordered by the
//!   sequence number of the CQE that delivered them. A stream receive serves rescued bytes
//!   first, and one that completes after an older rescued chunk was queued puts that chunk's
//!   bytes in front of its own, so the byte stream stays in kernel order.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
    rc::Rc,
    task::Waker,
};

use io_uring::types;
use runtime::{buf::IoBufMut, direct::DirectFd};
use socket2::{Domain, Protocol, SockRef, Type};

use crate::{
    addr::RawAddr,
    bufs,
    direct::{self, Fd, FdOwned, FdRef, SockGuard},
    zc::ZcState,
};

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

/// The io_uring target of a request on a socket: an fd, or a fixed-file index (which makes the
/// opcode builder set `IOSQE_FIXED_FILE`). Build SQEs with [`on_target!`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

/// Builds an SQE for a socket's [`Target`]: `$build` is written once, with `$fd` bound to a
/// `types::Fd` or a `types::Fixed` (the io-uring opcode builders take either).
macro_rules! on_target {
    ($target:expr, $fd:ident => $build:expr) => {
        match $target {
            $crate::socket::Target::Fd($fd) => $build,
            $crate::socket::Target::Fixed($fd) => $build,
        }
    };
}
pub(crate) use on_target;

struct Inner {
    fd: Fd,
    /// Boxed on first use: rescues are rare, and every byte here is paid by every connection.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per socket instead of 32 while empty"
    )]
    rescued: Cell<Option<Box<VecDeque<Rescued>>>>,
    /// The task of a receive in flight, woken when data is rescued (see `stream::RescueAware`).
    reader: Cell<Option<Waker>>,
    /// Zero-copy send policy and counters.
    zc: ZcState,
    /// Small writes sent behind the caller's back (`behind.rs`); only while some are, so
    /// an idle socket holds 8 bytes here instead of the whole state.
    behind: RefCell<Option<Box<crate::behind::Behind>>>,
    /// The last stream receive took all the socket had (`Socket::receive_drained`).
    drained: Cell<bool>,
}

impl Inner {
    /// Runs `f` on the rescued queue, taken out of its cell for the call (`f` must not reach
    /// the queue again; none of the callers do).
    fn with_rescued<R>(&self, f: impl FnOnce(&mut Option<Box<VecDeque<Rescued>>>) -> R) -> R {
        let mut queue = self.rescued.take();
        let r = f(&mut queue);
        self.rescued.set(queue);
        r
    }

    /// How many rescued chunks or datagrams wait.
    fn rescued_len(&self) -> usize {
        self.with_rescued(|queue| queue.as_ref().map_or(0, |q| q.len()))
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd)
            .field("rescued", &self.rescued_len())
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
        Socket::from_inner(Fd::real(fd))
    }

    /// A socket that lives in the current ring's file table only (`runtime::direct`).
    pub(crate) fn from_direct(slot: DirectFd) -> Socket {
        Socket::from_inner(Fd::direct(slot))
    }

    fn from_inner(fd: Fd) -> Socket {
        Socket(Rc::new(Inner {
            fd,
            rescued: Cell::new(None),
            reader: Cell::new(None),
            zc: ZcState::default(),
            behind: RefCell::default(),
            drained: Cell::new(false),
        }))
    }

    /// The socket as io_uring's SQE target: its fd, or its fixed-file index when it is a direct
    /// descriptor. A direct descriptor used off its ring (the runtime that accepted it is gone
    /// or not the one running) gets fd -1, so the request fails with `EBADF` instead of
    /// reaching whatever that ring's slot holds.
    pub(crate) fn uring_fd(&self) -> Target {
        match self.0.fd.get() {
            FdRef::Real(fd) => Target::Fd(types::Fd(fd.as_raw_fd())),
            FdRef::Direct(d) => match d.slot.target() {
                Some(fixed) => Target::Fixed(fixed),
                None => Target::Fd(types::Fd(-1)),
            },
        }
    }

    /// Whether both name the same socket (clones of one `Socket`).
    pub(crate) fn same(&self, other: &Socket) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Whether the socket is a direct descriptor (lives in its ring's file table).
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.0.fd.get(), FdRef::Direct(_))
    }

    /// A real fd for the socket: its own, or for a direct descriptor one installed now (once;
    /// later calls reuse it), see `runtime::direct::DirectFd::install`.
    pub(crate) fn real_fd(&self) -> io::Result<BorrowedFd<'_>> {
        match self.0.fd.get() {
            FdRef::Real(fd) => Ok(fd),
            FdRef::Direct(d) => {
                if d.installed.get().is_none() {
                    let fd = d.slot.install()?;
                    let _ = d.installed.set(fd);
                }
                Ok(d.installed.get().expect("installed just above").as_fd())
            }
        }
    }

    /// Socket options and queries, through socket2. A direct descriptor without an installed
    /// fd gets a temporary one for the call (`IORING_OP_FIXED_FD_INSTALL`), closed when the
    /// returned value is dropped, so options cost it no descriptor beyond the call.
    pub(crate) fn sock_ref(&self) -> io::Result<SockGuard<'_>> {
        match self.0.fd.get() {
            FdRef::Real(fd) => Ok(SockGuard::borrowed(fd)),
            FdRef::Direct(d) => match d.installed.get() {
                Some(fd) => Ok(SockGuard::borrowed(fd.as_fd())),
                None => Ok(SockGuard::Temporary(socket2::Socket::from(
                    d.slot.install()?,
                ))),
            },
        }
    }

    /// Sets an integer socket option. A direct descriptor sets it through the ring
    /// (`SOCKET_URING_OP_SETSOCKOPT`, Linux 6.7: no fd needed), or on kernels without that
    /// command through a temporarily installed fd (see [`sock_ref`](Socket::sock_ref)).
    pub(crate) fn set_int_option(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        if let FdRef::Direct(_) = self.0.fd.get() {
            match crate::op::SetSockOpt::run_now(self.clone(), level, name, value) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {}
                done => return done,
            }
        }
        let s = self.sock_ref()?;
        // SAFETY: setsockopt reads one `c_int` from the live local `value`.
        let ret = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Shuts down one or both directions: `shutdown(2)` on an fd, `IORING_OP_SHUTDOWN` with
    /// the fixed index on a direct descriptor (completed before this returns).
    pub(crate) fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self.0.fd.get() {
            FdRef::Real(fd) => SockRef::from(&fd).shutdown(how),
            FdRef::Direct(_) => crate::op::Shutdown::run_now(self.clone(), how),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()?
            .local_addr()?
            .as_socket()
            .ok_or_else(not_inet)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()?
            .peer_addr()?
            .as_socket()
            .ok_or_else(not_inet)
    }

    /// Takes the fd out, or duplicates it when operations still hold the socket. A direct
    /// descriptor gets a real fd installed (and its slot closed once nothing holds it).
    pub(crate) fn into_fd(self) -> io::Result<OwnedFd> {
        match Rc::try_unwrap(self.0) {
            Ok(inner) => match inner.fd.into_owned() {
                FdOwned::Real(fd) => Ok(fd),
                FdOwned::Direct(d) => match d.installed.into_inner() {
                    Some(fd) => Ok(fd),
                    None => d.slot.install(),
                },
            },
            Err(shared) => match shared.fd.get() {
                FdRef::Real(fd) => fd.try_clone_to_owned(),
                FdRef::Direct(d) => match d.installed.get() {
                    Some(fd) => fd.try_clone(),
                    None => d.slot.install(),
                },
            },
        }
    }

    /// Takes the fd out as a raw number, duplicating it when operations still hold the
    /// socket. If even that fails (the descriptor table is full), the socket's own fd is
    /// released to the caller without closing it: the runtime never closes it, and the
    /// little state that held it is leaked.
    ///
    /// A direct descriptor gets a real fd installed; when that fails (the process is out of
    /// descriptors) the result is -1, on which every call fails with `EBADF`.
    pub(crate) fn into_raw_fd(self) -> RawFd {
        if self.is_direct() {
            return self.into_fd().map_or(-1, IntoRawFd::into_raw_fd);
        }
        match Rc::try_unwrap(self.0) {
            Ok(inner) => match inner.fd.into_owned() {
                FdOwned::Real(fd) => fd.into_raw_fd(),
                FdOwned::Direct(_) => unreachable!("direct descriptors returned above"),
            },
            Err(shared) => {
                let FdRef::Real(own) = shared.fd.get() else {
                    unreachable!("direct descriptors returned above")
                };
                match own.try_clone_to_owned() {
                    Ok(fd) => fd.into_raw_fd(),
                    Err(_) => {
                        let raw = own.as_raw_fd();
                        // Out of the runtime's care, as `Fd::into_owned` would do.
                        runtime::op::forget_fd(raw);
                        std::mem::forget(shared);
                        raw
                    }
                }
            }
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

    /// Whether the last stream receive took all the socket had: it filled less than it
    /// offered, the rule tokio clears readiness by. The next receive then most likely finds
    /// nothing yet (in request/response traffic the peer has not even seen the answer), so
    /// on io_uring it asks to wait for data before its first try
    /// (`IORING_RECVSEND_POLL_FIRST`) instead of a try that can only fail with `EAGAIN`.
    /// Never wrong, only slower when it guesses wrong: the kernel polls the socket as it
    /// arms the wait, and data already there completes the receive at once.
    pub(crate) fn receive_drained(&self) -> bool {
        self.0.drained.get()
    }

    /// A stream receive completed with `received` of the `offered` bytes (see
    /// [`Socket::receive_drained`]).
    pub(crate) fn note_receive(&self, received: usize, offered: usize) {
        self.0.drained.set(received > 0 && received < offered);
    }

    /// A receive the caller made itself found the socket empty (`EAGAIN`).
    pub(crate) fn note_empty(&self) {
        self.0.drained.set(true);
    }

    /// Keeps data an abandoned receive got from the kernel.
    pub(crate) fn rescue(&self, rescued: Rescued) {
        self.0.with_rescued(|queue| {
            let queue = queue.get_or_insert_default();
            let at = queue
                .iter()
                .rposition(|r| r.sequence < rescued.sequence)
                .map_or(0, |i| i + 1);
            queue.insert(at, rescued);
        });
        // A receive in flight would wait for data that is already here: let it know.
        if let Some(reader) = self.0.reader.take() {
            reader.wake();
        }
    }

    /// The sequence number of the oldest rescued chunk, if any.
    pub(crate) fn rescued_sequence(&self) -> Option<u64> {
        self.0
            .with_rescued(|queue| Some(queue.as_ref()?.front()?.sequence))
    }

    /// Whether rescued data waits to be read.
    pub(crate) fn has_rescued(&self) -> bool {
        self.0.rescued_len() > 0
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
        self.0.with_rescued(|queue| {
            let queue = queue.as_mut()?;
            let front = queue.front_mut()?;
            let n = bufs::scatter(bufs, &front.data);
            if n == front.data.len() {
                queue.pop_front();
            } else {
                front.data.drain(..n);
            }
            Some(n)
        })
    }

    /// Serves a stream peek from rescued bytes, if any: copies the oldest chunk (as much as
    /// fits) into the buffers and keeps it queued. Returns the bytes copied, or `None` with
    /// nothing rescued.
    pub(crate) fn peek_rescued<B: IoBufMut>(&self, bufs: &mut [B]) -> Option<usize> {
        self.0
            .with_rescued(|queue| Some(bufs::scatter(bufs, &queue.as_ref()?.front()?.data)))
    }

    /// Looks at the oldest rescued datagram without taking it.
    pub(crate) fn peek_rescued_datagram<R>(&self, f: impl FnOnce(&Rescued) -> R) -> Option<R> {
        self.0.with_rescued(|queue| queue.as_ref()?.front().map(f))
    }

    /// A stream receive with CQE `sequence` completed with `n` bytes in `bufs`: if rescued
    /// bytes are older, they go in front. Returns the number of bytes now in `bufs`.
    pub(crate) fn merge_older<B: IoBufMut>(
        &self,
        sequence: u64,
        bufs: &mut [B],
        n: usize,
    ) -> usize {
        self.0.with_rescued(|queue| {
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
        })
    }

    /// The oldest rescued chunk of stream data, whole.
    pub(crate) fn take_rescued_chunk(&self) -> Option<Vec<u8>> {
        self.take_rescued_datagram().map(|r| r.data)
    }

    /// The oldest rescued datagram.
    pub(crate) fn take_rescued_datagram(&self) -> Option<Rescued> {
        self.0.with_rescued(|queue| {
            let rescued = queue.as_mut()?.pop_front();
            if queue.as_ref().is_some_and(|q| q.is_empty()) {
                *queue = None;
            }
            rescued
        })
    }
}

/// The socket's fd for system calls made here (readiness backends, syscall-first receives).
/// A direct descriptor has none unless one was installed (`real_fd`): then it is -1, so such a
/// call fails with `EBADF` instead of installing fds behind the caller's back.
impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self.0.fd.get() {
            FdRef::Real(fd) => fd.as_raw_fd(),
            FdRef::Direct(d) => d.installed.get().map_or(-1, AsRawFd::as_raw_fd),
        }
    }
}

impl Socket {
    /// `AsFd` for the public types: the socket's fd, installing one for a direct descriptor
    /// (see [`real_fd`](Socket::real_fd)); if that fails, a placeholder (`O_PATH` on
    /// `/dev/null`, opened before the first direct socket was made) on which every socket call
    /// fails (`EBADF`).
    pub(crate) fn as_fd_installing(&self) -> BorrowedFd<'_> {
        match self.real_fd() {
            Ok(fd) => fd,
            Err(_) => direct::placeholder().expect("opened before any direct descriptor exists"),
        }
    }
}

/// Like [`AsRawFd`]: a direct descriptor without an installed fd lends the placeholder.
impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self.0.fd.get() {
            FdRef::Real(fd) => fd,
            FdRef::Direct(d) => match d.installed.get() {
                Some(fd) => fd.as_fd(),
                None => direct::placeholder().expect("opened before any direct descriptor exists"),
            },
        }
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

/// Implements `AsRawFd`, `AsFd` and `FromRawFd` for `$ty`, a socket type with a `socket:
/// Socket` field and a `from_socket(Socket)` constructor; `$what` completes the safety
/// contract "`fd` must be ... owned by nothing else".
macro_rules! fd_traits {
    ($ty:ident, $what:literal) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.socket.as_raw_fd()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.socket.as_fd()
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            #[doc = concat!("# Safety\n\n`fd` must be ", $what, " owned by nothing else.")]
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: the caller transfers ownership of an open socket fd.
                $ty::from_socket(unsafe { crate::socket::socket_from_raw(fd) })
            }
        }
    };
}
pub(crate) use fd_traits;
