//! The non-blocking forms of the socket operations, for the epoll backend
//! (`OpCode::try_nonblocking`): one system call each, its result as the `Completion` the
//! kernel would have posted for the op's SQE (`None` when it would block).
//!
//! The fds are non-blocking by then (the backend sets `O_NONBLOCK` when it registers an fd),
//! and every call also passes `MSG_DONTWAIT` where it takes flags; sends carry
//! `MSG_NOSIGNAL`, so a reset peer gives `EPIPE`, never SIGPIPE.

use std::os::fd::RawFd;

use runtime::op::{Completion, cqe_flags};

/// `send(2)` of `len` bytes at `ptr`.
///
/// # Safety
///
/// `ptr..ptr + len` is readable memory.
pub(crate) unsafe fn send(fd: RawFd, ptr: *const u8, len: usize) -> Option<Completion> {
    // SAFETY: forwarded to the caller.
    unsafe { send_with(fd, ptr, len, 0) }
}

/// `send(2)` of `bytes`, for a caller that sends from a slice it holds (write-behind on
/// the epoll backend).
pub(crate) fn send_slice(fd: RawFd, bytes: &[u8]) -> Option<Completion> {
    // SAFETY: `bytes` is a live slice, only read, for the duration of the call.
    unsafe { send(fd, bytes.as_ptr(), bytes.len()) }
}

/// [`send_slice`] made by a caller instead of an op (ops running inline,
/// `runtime::op::runs_inline`), counted as the op it replaces: the bytes the socket took,
/// the failure, or `None` when it had no room (`EAGAIN`). No room tells the engine
/// (`runtime::op::found_empty`), so the send that then waits for room does not try again
/// first.
pub(crate) fn send_slice_inline(fd: RawFd, bytes: &[u8]) -> Option<std::io::Result<usize>> {
    let sent = send_slice(fd, bytes);
    runtime::op::count_inline_op();
    if sent.is_none() {
        runtime::op::found_empty(fd, runtime::op::Interest::Writable);
    }
    sent.map(|completion| completion.into_result().map(|n| n as usize))
}

/// `sendto(2)` of `bytes` as one datagram, to `addr` (or the connected peer), for a caller
/// that sends from a slice it holds (datagrams written behind on the epoll backend).
pub(crate) fn send_to_slice(
    fd: RawFd,
    bytes: &[u8],
    addr: Option<&crate::addr::RawAddr>,
) -> Option<Completion> {
    let (name, len) = addr.map_or((std::ptr::null(), 0), |a| (a.as_ptr(), a.len));
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: `bytes` is a live slice, only read, and `name..name + len` the live address
    // (or null with length 0), for the duration of the call.
    let ret = unsafe { libc::sendto(fd, bytes.as_ptr().cast(), bytes.len(), flags, name, len) };
    Completion::from_syscall(ret)
}

/// `recvfrom(2)` of up to `len` bytes into `ptr`, with `flags` (plus `MSG_DONTWAIT`), the
/// sender written into `addr` (whose length is updated). Returns the call's result: the
/// byte count (a datagram's length on the wire with `MSG_TRUNC`), or -1 with `errno` set.
///
/// # Safety
///
/// `ptr..ptr + len` is writable memory.
pub(crate) unsafe fn recvfrom(
    fd: RawFd,
    ptr: *mut u8,
    len: usize,
    flags: i32,
    addr: &mut crate::addr::RawAddr,
) -> isize {
    let name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
    // SAFETY: `ptr..ptr + len` is writable (the caller's promise); `name` is the live
    // storage of `addr.len` bytes and `addr.len` a live length, for this synchronous call.
    unsafe {
        libc::recvfrom(
            fd,
            ptr.cast(),
            len,
            flags | libc::MSG_DONTWAIT,
            name,
            &mut addr.len,
        )
    }
}

/// `send(2)` with `flags` (plus `MSG_NOSIGNAL | MSG_DONTWAIT`).
///
/// # Safety
///
/// `ptr..ptr + len` is readable memory (until the zero-copy notification, with
/// `MSG_ZEROCOPY`).
pub(crate) unsafe fn send_with(
    fd: RawFd,
    ptr: *const u8,
    len: usize,
    flags: i32,
) -> Option<Completion> {
    let flags = flags | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: forwarded to the caller.
    let ret = unsafe { libc::send(fd, ptr.cast(), len, flags) };
    Completion::from_syscall(ret)
}

/// `sendmsg(2)` of the message `hdr` describes, with `flags` (plus `MSG_NOSIGNAL |
/// MSG_DONTWAIT`).
///
/// # Safety
///
/// `hdr` points at a valid `msghdr` whose iovecs, name and control point at readable memory.
pub(crate) unsafe fn sendmsg(
    fd: RawFd,
    hdr: *const libc::msghdr,
    flags: i32,
) -> Option<Completion> {
    let flags = flags | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: forwarded to the caller.
    let ret = unsafe { libc::sendmsg(fd, hdr, flags) };
    Completion::from_syscall(ret)
}

/// `recvmsg(2)` into the message `hdr` describes, with `flags` (plus `MSG_DONTWAIT`).
///
/// # Safety
///
/// `hdr` points at a valid `msghdr` whose iovecs, name and control point at writable memory
/// that nothing else uses during the call.
pub(crate) unsafe fn recvmsg(fd: RawFd, hdr: *mut libc::msghdr, flags: i32) -> Option<Completion> {
    // SAFETY: forwarded to the caller.
    let ret = unsafe { libc::recvmsg(fd, hdr, flags | libc::MSG_DONTWAIT) };
    Completion::from_syscall(ret)
}

/// `accept4(2)` with `SOCK_CLOEXEC`, writing the peer address at `addr` (and its length at
/// `len`) when they are not null. With `more`, a success carries `IORING_CQE_F_MORE`, as a
/// multishot accept's items do.
///
/// # Safety
///
/// `addr`/`len` are null or point at writable address storage and its (initialized) length.
pub(crate) unsafe fn accept(
    fd: RawFd,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    more: bool,
) -> Option<Completion> {
    // SAFETY: forwarded to the caller.
    let ret = unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC) };
    let cqe = Completion::from_syscall(ret as isize)?;
    if more && cqe.result() >= 0 {
        return Some(Completion::new(cqe.result(), cqe_flags::MORE, [0; 2]));
    }
    Some(cqe)
}

/// A non-blocking `connect(2)` to `addr`: the first call starts it (`started` is set while
/// it is in progress); later calls (after the fd became writable) ask again, which reports
/// `EISCONN` once it is established, or the error that ended it.
///
/// # Safety
///
/// `addr` points at `len` readable bytes of socket address.
pub(crate) unsafe fn connect(
    fd: RawFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    started: &mut bool,
) -> Option<Completion> {
    // SAFETY: forwarded to the caller.
    let ret = unsafe { libc::connect(fd, addr, len) };
    if ret == 0 {
        return Some(Completion::new(0, 0, [0; 2]));
    }
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    match errno {
        libc::EINPROGRESS | libc::EALREADY | libc::EINTR => {
            *started = true;
            None
        }
        libc::EISCONN if *started => Some(Completion::new(0, 0, [0; 2])),
        // A Unix socket whose listener's backlog is full: try again when writable.
        libc::EAGAIN => None,
        errno => Some(Completion::new(-errno, 0, [0; 2])),
    }
}

/// What a receive into pool buffers (`BufRing::fill_next`) found.
enum Filled {
    /// `res` of the completion: bytes in the buffers consumed.
    Data(i32),
    /// `EAGAIN`.
    WouldBlock,
    /// The request ends with this `res` (0: end of stream; `-errno`).
    End(i32),
}

/// The pool had no buffer for a receive: like the kernel, which selects a buffer only when
/// data arrives, refuse (`ENOBUFS`) only when there is something to receive.
fn no_buffer(fd: RawFd) -> Filled {
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into a live local.
    let ret = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match Completion::from_syscall(ret) {
        None => Filled::WouldBlock,
        Some(c) if c.result() > 0 => Filled::End(-libc::ENOBUFS),
        Some(c) => Filled::End(c.result()),
    }
}

/// Turns a fill into the completion a multishot receive would have posted.
fn filled(outcome: Filled, bid: Option<u16>) -> Option<Completion> {
    match (outcome, bid) {
        (Filled::Data(res), Some(bid)) => {
            let flags =
                cqe_flags::BUFFER | cqe_flags::MORE | u32::from(bid) << cqe_flags::BUFFER_SHIFT;
            Some(Completion::new(res, flags, [0; 2]))
        }
        (Filled::Data(_), None) | (Filled::WouldBlock, _) => None,
        (Filled::End(res), _) => Some(Completion::new(res, 0, [0; 2])),
    }
}

/// A multishot stream receive's next completion on the epoll backend: one `recvmsg(2)` into
/// the next pool buffer (with `bundle`, up to 16 consecutive ones). `emptied` says whether
/// the bytes filled less than the buffers offered (the socket is empty now).
pub(crate) fn recv_into_pool(
    fd: RawFd,
    ring: &runtime::buf::BufRing,
    bundle: bool,
    emptied: &mut bool,
) -> Option<Completion> {
    *emptied = false;
    let buf_len = ring.buf_len();
    let (outcome, bid) = ring.fill_next(if bundle { 16 } else { 1 }, |iovs| {
        if iovs.is_empty() {
            return (no_buffer(fd), 0);
        }
        let mut hdr = super::stream::MsgHdr::zeroed();
        hdr.0.msg_iov = iovs.as_mut_ptr();
        hdr.0.msg_iovlen = iovs.len();
        // SAFETY: the header (a live local) points at the pool buffers `fill_next` lends for
        // this call.
        match unsafe { recvmsg(fd, &mut hdr.0, 0) } {
            None => (Filled::WouldBlock, 0),
            Some(c) if c.result() > 0 => {
                let offered = iovs.iter().map(|iov| iov.iov_len).sum();
                *emptied = super::stream::short(&c, offered);
                let used = (c.result() as usize).div_ceil(buf_len);
                (Filled::Data(c.result()), used)
            }
            Some(c) => (Filled::End(c.result()), 0),
        }
    });
    filled(outcome, bid)
}

/// A multishot datagram receive's next completion on the epoll backend: one `recvmsg(2)`
/// into the next pool buffer, laid out as the kernel lays it out (`io_uring_recvmsg_out`,
/// then `name_space` bytes of name, `control_space` of control, then the payload), with the
/// datagram's true length under `MSG_TRUNC`.
pub(crate) fn recvmsg_into_pool(
    fd: RawFd,
    ring: &runtime::buf::BufRing,
    name_space: usize,
    control_space: usize,
) -> Option<Completion> {
    const OUT_HEADER: usize = 16;
    let overhead = OUT_HEADER + name_space + control_space;
    let (outcome, bid) = ring.fill_next(1, |iovs| {
        let Some(iov) = iovs.first() else {
            return (no_buffer(fd), 0);
        };
        if iov.iov_len < overhead {
            return (Filled::End(-libc::EINVAL), 0);
        }
        let base = iov.iov_base.cast::<u8>();
        let mut hdr = super::stream::MsgHdr::zeroed();
        // SAFETY: `base..base + iov_len` is the pool buffer lent for this call, at least
        // `overhead` bytes long, so every pointer below stays inside it.
        let (mut payload, name, control) = unsafe {
            (
                libc::iovec {
                    iov_base: base.add(overhead).cast(),
                    iov_len: iov.iov_len - overhead,
                },
                base.add(OUT_HEADER),
                base.add(OUT_HEADER + name_space),
            )
        };
        hdr.0.msg_name = name.cast();
        hdr.0.msg_namelen = name_space as libc::socklen_t;
        hdr.0.msg_control = control.cast();
        hdr.0.msg_controllen = control_space;
        hdr.0.msg_iov = &mut payload;
        hdr.0.msg_iovlen = 1;
        // SAFETY: the header (a live local) points into the lent pool buffer.
        match unsafe { recvmsg(fd, &mut hdr.0, libc::MSG_TRUNC) } {
            None => (Filled::WouldBlock, 0),
            Some(c) if c.result() >= 0 => {
                let len = c.result() as u32;
                let out = [
                    hdr.0.msg_namelen,
                    hdr.0.msg_controllen as u32,
                    len,
                    hdr.0.msg_flags as u32,
                ];
                // SAFETY: the first 16 bytes of the lent buffer take the header; `u32`s are
                // written unaligned.
                unsafe {
                    for (i, v) in out.iter().enumerate() {
                        base.add(4 * i).cast::<u32>().write_unaligned(*v);
                    }
                }
                let copied = (len as usize).min(payload.iov_len);
                (Filled::Data((overhead + copied) as i32), 1)
            }
            Some(c) => (Filled::End(c.result()), 0),
        }
    });
    filled(outcome, bid)
}
