//! Zero-copy send on the epoll backend: `MSG_ZEROCOPY` (Linux 4.14; UDP 5.0) with the
//! notifications read from the socket's error queue, behind the same `SendZc` op.
//!
//! Each successful `send(MSG_ZEROCOPY)` call on a socket is numbered by the kernel (0, 1, 2,
//! ... per socket); once no packet references its pages any more, the kernel queues a
//! `sock_extended_err` with `ee_origin == SO_EE_ORIGIN_ZEROCOPY` covering a range of numbers
//! `[ee_info, ee_data]`, with `SO_EE_CODE_ZEROCOPY_COPIED` in `ee_code` when it copied the
//! data after all (loopback always does). See the kernel's `Documentation/networking/
//! msg_zerocopy.rst`. A send op keeps its buffer until every number it used is covered, so
//! the handoff is the one `SEND_ZC` gives: the buffer comes back only after the notification.
//!
//! # Invariants
//!
//! - `next` counts the socket's successful zero-copy calls, as the kernel numbers them; every
//!   zero-copy send on a socket goes through `send_once`, so the two never disagree.
//! - `done` holds the ranges notified so far, merged; reading the error queue is the only
//!   writer. A range stays until the socket is dropped (merged ranges stay few: the kernel
//!   notifies in order and coalesces).

use std::{cell::RefCell, os::fd::RawFd};

use runtime::op::Completion;

/// `SO_ZEROCOPY` (`<asm-generic/socket.h>`).
const SO_ZEROCOPY: libc::c_int = 60;
/// `SO_EE_ORIGIN_ZEROCOPY` (`<linux/errqueue.h>`).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED` (`<linux/errqueue.h>`).
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// A socket's `MSG_ZEROCOPY` bookkeeping (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ZcEpoll {
    /// `SO_ZEROCOPY` was set (`Some(Ok)`), or refused with this errno.
    enabled: Option<Result<(), i32>>,
    next: u32,
    /// Notified ranges `[lo, hi]` (inclusive), merged, with whether any said "copied".
    done: Vec<(u32, u32, bool)>,
}

impl ZcEpoll {
    /// Sets `SO_ZEROCOPY` on `fd` once; `Err(errno)` when the socket cannot do it.
    pub(crate) fn enable(state: &RefCell<ZcEpoll>, fd: RawFd) -> Result<(), i32> {
        let mut s = state.borrow_mut();
        if let Some(enabled) = s.enabled {
            return enabled;
        }
        let on: libc::c_int = 1;
        // SAFETY: reads one int from a live local.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_ZEROCOPY,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let enabled = if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EOPNOTSUPP))
        };
        s.enabled = Some(enabled);
        enabled
    }

    /// One zero-copy call: `call` performs the send (with `MSG_ZEROCOPY`); returns its
    /// completion and, when it sent bytes, the number the kernel gave the call.
    pub(crate) fn send_once(
        state: &RefCell<ZcEpoll>,
        call: impl FnOnce() -> Option<Completion>,
    ) -> (Option<Completion>, Option<u32>) {
        let cqe = call();
        match cqe {
            Some(c) if c.result() > 0 => {
                let mut s = state.borrow_mut();
                let id = s.next;
                s.next = s.next.wrapping_add(1);
                (cqe, Some(id))
            }
            other => (other, None),
        }
    }

    /// Reads every notification queued on `fd`'s error queue into `done`.
    pub(crate) fn drain(state: &RefCell<ZcEpoll>, fd: RawFd) {
        loop {
            let mut control = [0u64; 16];
            let mut hdr: libc::msghdr = unsafe_zeroed_msghdr();
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: the header (a live local) names only the live control array.
            let ret =
                unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
            if ret < 0 {
                return;
            }
            // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into
            // `control`; the CMSG_* walk stays inside them.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
                while !cmsg.is_null() {
                    let level = (*cmsg).cmsg_level;
                    let ty = (*cmsg).cmsg_type;
                    let recverr = (level == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                        || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR);
                    let len = (*cmsg).cmsg_len as usize;
                    if recverr
                        && len
                            >= libc::CMSG_LEN(std::mem::size_of::<libc::sock_extended_err>() as u32)
                                as usize
                    {
                        let ee = libc::CMSG_DATA(cmsg)
                            .cast::<libc::sock_extended_err>()
                            .read_unaligned();
                        if ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY && ee.ee_errno == 0 {
                            let copied = ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0;
                            state.borrow_mut().notified(ee.ee_info, ee.ee_data, copied);
                        }
                    }
                    cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
                }
            }
        }
    }

    fn notified(&mut self, lo: u32, hi: u32, copied: bool) {
        if hi < lo {
            return;
        }
        self.done.push((lo, hi, copied));
        self.done.sort_unstable_by_key(|r| r.0);
        let mut merged: Vec<(u32, u32, bool)> = Vec::with_capacity(self.done.len());
        for (lo, hi, copied) in self.done.drain(..) {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => {
                    last.1 = last.1.max(hi);
                    last.2 |= copied;
                }
                _ => merged.push((lo, hi, copied)),
            }
        }
        self.done = merged;
    }

    /// Whether every number in `[lo, hi]` was notified; `Some(copied)` then.
    pub(crate) fn covered(state: &RefCell<ZcEpoll>, lo: u32, hi: u32) -> Option<bool> {
        let s = state.borrow();
        s.done.iter().find(|r| r.0 <= lo && hi <= r.1).map(|r| r.2)
    }
}

/// A zeroed `msghdr` (all-null pointers and zero lengths are its empty value).
fn unsafe_zeroed_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}
