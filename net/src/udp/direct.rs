//! `DirectRecv`: when a UDP receive first tries a non-blocking system call, without the ring
//! (`recvfrom(2)` into the caller's buffer, [`recv_from_now`], or the op's own `recvmsg(2)`
//! when control data is asked for).
//!
//! On a busy socket (many peers sending to one socket, as a VPN or DNS server sees) the next
//! datagram is usually queued already when the task asks for it. Through the ring, every
//! datagram costs a loop turn: the task waits for the enter that submits its receive. A
//! non-blocking call takes it at once instead, and the replies the task writes behind
//! meanwhile wait in the submission queue, so many datagrams share one enter. On a quiet
//! socket the call would find nothing (`EAGAIN`) and cost a system call for nothing, so tries
//! back off: the receives that follow a miss go through the ring.
//!
//! # Invariants
//!
//! - On the epoll backend (`runtime::op::runs_inline`) every receive tries directly, since
//!   its op would make that same system call first; a miss there tells the engine the socket
//!   is empty (`runtime::op::found_empty`), so the op waits without a second try, and
//!   `DirectRecv` is not consulted.
//! - On io_uring a receive tries directly only when `skip` is 0. A miss doubles how
//!   many receives then go through the ring before the next try (1, 3, 7, ... up to
//!   [`SKIP_MAX`]); finding a datagram (or an error) resets it, so a busy socket keeps
//!   receiving directly.
//! - Every direct try first takes a unit of the thread's cooperative budget
//!   (`runtime::coop`), so the loop still enters the ring at least every
//!   `runtime::coop::BUDGET` direct receives, and other tasks run in between.

use std::{cell::Cell, io, os::fd::RawFd};

use runtime::buf::IoBufMut;

use super::RecvMeta;
use crate::{
    addr::RawAddr,
    bufs,
    op::{MAX_IO, nonblocking},
};

/// The most receives that go through the ring between two direct tries.
const SKIP_MAX: u8 = 63;

/// Per socket: whether the next receive tries directly (see the module docs).
#[derive(Debug, Default)]
pub(super) struct DirectRecv {
    /// Receives left to go through the ring before the next direct try.
    skip: Cell<u8>,
    /// How many misses in a row (the exponent of the back-off).
    misses: Cell<u8>,
}

impl DirectRecv {
    /// Whether this receive tries directly; counts it down otherwise. Only asked on
    /// io_uring (on epoll every receive tries, see the module docs).
    pub(super) fn should_try(&self) -> bool {
        match self.skip.get() {
            0 => true,
            n => {
                self.skip.set(n - 1);
                false
            }
        }
    }

    /// The direct try found a datagram (or an error): the next receive tries again.
    pub(super) fn found(&self) {
        self.misses.set(0);
        self.skip.set(0);
    }

    /// The direct try found nothing: back off.
    pub(super) fn missed(&self) {
        let misses = self.misses.get().saturating_add(1).min(6);
        self.misses.set(misses);
        self.skip
            .set(((1u16 << misses) - 1).min(u16::from(SKIP_MAX)) as u8);
    }
}

/// One non-blocking `recvfrom(2)` of a datagram into `buf`, with its sender: a direct try
/// that asks for no control data, so it needs no op and no `msghdr`. `None` for `EAGAIN`.
/// The datagram's length on the wire is reported (`MSG_TRUNC`), as the op's would be.
pub(super) fn recv_from_now<B: IoBufMut>(fd: RawFd, buf: &mut B) -> Option<io::Result<RecvMeta>> {
    let mut addr = RawAddr::empty();
    let capacity = buf.bytes_total().min(MAX_IO);
    // SAFETY: `stable_mut_ptr` points at `capacity` writable bytes of `buf` (at most its
    // total), which outlive this synchronous call.
    let n = unsafe {
        nonblocking::recvfrom(
            fd,
            buf.stable_mut_ptr(),
            capacity,
            libc::MSG_TRUNC,
            &mut addr,
        )
    };
    let Ok(len) = usize::try_from(n) else {
        let e = io::Error::last_os_error();
        return (e.kind() != io::ErrorKind::WouldBlock).then_some(Err(e));
    };
    let copied = len.min(capacity);
    bufs::set_init_across(std::slice::from_mut(buf), copied);
    Some(Ok(RecvMeta {
        len: copied,
        datagram_len: len,
        peer: addr.socket_addr().ok(),
        truncated: len > copied,
        control_truncated: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tries(direct: &DirectRecv, receives: usize) -> usize {
        (0..receives).filter(|_| direct.should_try()).count()
    }

    #[test]
    fn a_quiet_socket_backs_off_to_one_try_in_sixty_four() {
        let direct = DirectRecv::default();
        let mut pattern = Vec::new();
        for _ in 0..8 {
            // The receives between two tries go through the ring.
            let through_ring = (0..).take_while(|_| !direct.should_try()).count();
            pattern.push(through_ring);
            direct.missed();
        }
        assert_eq!(pattern, [0, 1, 3, 7, 15, 31, 63, 63]);
        // Now one receive in 64 tries, and misses.
        while !direct.should_try() {}
        direct.missed();
        let missed_tries = (0..64 * 10)
            .filter(|_| direct.should_try())
            .inspect(|_| direct.missed())
            .count();
        assert_eq!(missed_tries, 10);
    }

    #[test]
    fn a_busy_socket_keeps_trying() {
        let direct = DirectRecv::default();
        direct.missed();
        direct.missed();
        assert_eq!(tries(&direct, 3), 0);
        assert!(direct.should_try());
        direct.found();
        assert_eq!(tries(&direct, 5), 5);
    }

    #[test]
    fn a_direct_receive_reports_the_sender_truncation_and_an_empty_socket() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = rx.as_raw_fd();
        assert!(recv_from_now(fd, &mut Vec::<u8>::with_capacity(8)).is_none());
        tx.send_to(b"0123456789", rx.local_addr().unwrap()).unwrap();
        let mut buf = Vec::with_capacity(4);
        let meta = loop {
            if let Some(res) = recv_from_now(fd, &mut buf) {
                break res.unwrap();
            }
        };
        assert_eq!((meta.len, meta.datagram_len, meta.truncated), (4, 10, true));
        assert_eq!(meta.peer, Some(tx.local_addr().unwrap()));
        assert_eq!(&buf[..], b"0123");
        tx.send_to(b"ok", rx.local_addr().unwrap()).unwrap();
        let mut buf = Vec::with_capacity(64);
        let meta = loop {
            if let Some(res) = recv_from_now(fd, &mut buf) {
                break res.unwrap();
            }
        };
        assert_eq!((meta.len, meta.truncated, &buf[..]), (2, false, &b"ok"[..]));
    }
}
