//! `DirectRecv`: when a UDP receive first tries a non-blocking `recvmsg(2)`, without the ring.
//!
//! On a busy socket (many peers sending to one socket, as a VPN or DNS server sees) the next
//! datagram is usually queued already when the task asks for it. Through the ring, every
//! datagram costs a loop turn: the task waits for the enter that submits its receive. A
//! non-blocking `recvmsg` takes it at once instead, and the replies the task writes behind
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

use std::cell::Cell;

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
}
