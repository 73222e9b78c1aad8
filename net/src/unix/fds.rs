//! Descriptor passing over Unix sockets (`SCM_RIGHTS`, `man 7 unix`).
//!
//! # Invariants
//!
//! - A send owns duplicates of the descriptors it passes (in [`SendFds`]) until its final
//!   completion. The control message carries the duplicates' numbers, so a send whose
//!   future was dropped and that the kernel runs later can never pass a number the caller
//!   closed and the process reused meanwhile.
//! - Every descriptor the kernel installed for a receive is owned (`OwnedFd`) as soon as
//!   the completion is decoded: the caller gets at most the `max_fds` it asked for, and
//!   the rest are closed at once. If the receive's future was dropped, its control buffer
//!   stays parked with the operation and the descriptors in it are closed when the
//!   completion arrives (`RecvMsg::complete_detached`).
//! - Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC` on every `RecvMsg`).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use io_uring::squeue;
use runtime::{
    buf::IoBuf,
    op::{Completion, OpCode},
};

use crate::{op::SendMsg, udp::cmsg};

/// The most descriptors one message may carry (`SCM_MAX_FD`, include/net/scm.h).
pub const MAX_FDS: usize = 253;

/// What a receive with descriptors got, from `recv_with_fds`.
#[derive(Debug)]
pub struct RecvFds {
    /// Bytes placed in the buffer.
    pub len: usize,
    /// The descriptors that came with them, in the order they were sent, close-on-exec.
    /// Dropping one closes it.
    pub fds: Vec<OwnedFd>,
    /// Whether more descriptors came than the receive had room for (`MSG_CTRUNC`, or more
    /// than `max_fds`): the ones that did not fit were closed, by the kernel or by this
    /// crate. Offer more room (a larger `max_fds`) to get them all.
    pub fds_truncated: bool,
    /// Datagrams only: whether the datagram was longer than the buffer (the kernel discarded
    /// the rest). Always false on a stream.
    pub truncated: bool,
}

impl RecvFds {
    /// Bytes without descriptors (served from data rescued from a dropped receive).
    pub(crate) fn plain(len: usize) -> RecvFds {
        RecvFds {
            len,
            fds: Vec::new(),
            fds_truncated: false,
            truncated: false,
        }
    }

    /// The result of a successful receive that copied `len` bytes, with `msg_flags` `flags`
    /// and the descriptors `fds` it took out of its control buffer; keeps `max_fds` of them.
    pub(crate) fn received(
        len: usize,
        mut fds: Vec<OwnedFd>,
        max_fds: usize,
        flags: i32,
    ) -> RecvFds {
        let extra = fds.len() > max_fds;
        // Dropping the surplus closes it: the caller asked for no more.
        fds.truncate(max_fds);
        RecvFds {
            len,
            fds,
            fds_truncated: extra || flags & libc::MSG_CTRUNC != 0,
            truncated: false,
        }
    }
}

/// Room for `max_fds` descriptors in a receive's control buffer (`None` for none).
pub(crate) fn control_for(max_fds: usize) -> Option<Vec<u8>> {
    let max = max_fds.min(MAX_FDS);
    (max > 0).then(|| Vec::with_capacity(cmsg::space(max * size_of::<libc::c_int>())))
}

/// Checks `fds` for one message and duplicates them (close-on-exec) for the send to own.
///
/// # Errors
///
/// `InvalidInput` for more than [`MAX_FDS`]; the OS error if duplicating fails (e.g.
/// `EMFILE`).
pub(crate) fn duplicate(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<OwnedFd>> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message; the kernel takes at most {MAX_FDS} \
                 (SCM_MAX_FD): send them in several messages",
                fds.len()
            ),
        ));
    }
    fds.iter().map(|fd| fd.try_clone_to_owned()).collect()
}

/// One `SCM_RIGHTS` control message carrying `fds`' numbers (`None` when there are none).
fn rights(fds: &[OwnedFd]) -> Option<Vec<u8>> {
    if fds.is_empty() {
        return None;
    }
    let data: Vec<u8> = fds
        .iter()
        .flat_map(|fd| fd.as_raw_fd().to_ne_bytes())
        .collect();
    let mut control = Vec::new();
    cmsg::push(&mut control, libc::SOL_SOCKET, libc::SCM_RIGHTS, &data);
    Some(control)
}

/// Takes ownership of the descriptors in the `SCM_RIGHTS` messages of `control`.
///
/// # Safety
///
/// `control` must be the control data a successful `recvmsg` wrote (its length the
/// `msg_controllen` the kernel reported), and nothing else may have taken the descriptors
/// in it: the kernel installed them for this receive, and they become the result's.
pub(crate) unsafe fn take_rights(control: &[u8]) -> Vec<OwnedFd> {
    cmsg::parse(control)
        .filter(|m| m.level == libc::SOL_SOCKET && m.ty == libc::SCM_RIGHTS)
        .flat_map(|m| m.data.chunks_exact(size_of::<libc::c_int>()))
        .filter_map(|b| {
            let fd = libc::c_int::from_ne_bytes(b.try_into().ok()?);
            // SAFETY: the kernel installed this descriptor for the receive (caller's
            // guarantee), so it is open and owned by nothing else.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// `IORING_OP_SENDMSG` passing descriptors: the message, and the duplicates its control
/// message names, owned until the final completion (see the module docs).
#[derive(Debug)]
pub(crate) struct SendFds<B> {
    send: SendMsg<B>,
    fds: Vec<OwnedFd>,
}

impl<B: IoBuf> SendFds<B> {
    /// `make` builds the `SendMsg` from the control message for `fds`.
    pub(crate) fn new(
        fds: Vec<OwnedFd>,
        make: impl FnOnce(Option<Vec<u8>>) -> SendMsg<B>,
    ) -> SendFds<B> {
        SendFds {
            send: make(rights(&fds)),
            fds,
        }
    }
}

// SAFETY: every SQE field comes from `send`, which upholds the `OpCode` rules for the memory it
// owns (moved with `self`, heap-stable), including the skip-success contract of its fast mode;
// the descriptors its control message names are owned by `self` until it is consumed.
unsafe impl<B: IoBuf> OpCode for SendFds<B> {
    /// The result, the buffer, and the duplicates (for a retry).
    type Output = (io::Result<usize>, B, Vec<OwnedFd>);

    fn build(&mut self) -> squeue::Entry {
        self.send.build()
    }

    fn skip_success(&self) -> Option<i32> {
        self.send.skip_success()
    }

    fn complete(self, cqe: Completion) -> Self::Output {
        let (res, buf, _) = self.send.complete(cqe);
        (res, buf, self.fds)
    }

    fn readiness(&self) -> Option<(std::os::fd::RawFd, runtime::op::Interest)> {
        self.send.readiness()
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        self.send.try_nonblocking()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, IntoRawFd};

    use super::*;

    #[test]
    fn rights_parse_back_into_owned_descriptors() {
        let (r, w) = std::io::pipe().unwrap();
        let dups = duplicate(&[r.as_fd(), w.as_fd()]).unwrap();
        let control = rights(&dups).unwrap();
        let numbers: Vec<i32> = dups.into_iter().map(IntoRawFd::into_raw_fd).collect();
        // SAFETY: the numbers were released from their `OwnedFd`s just above, so the control
        // message is now their only owner, as a received one would be.
        let taken = unsafe { take_rights(&control) };
        let got: Vec<i32> = taken.iter().map(AsRawFd::as_raw_fd).collect();
        assert_eq!(got, numbers);
    }

    #[test]
    fn too_many_descriptors_are_invalid_input() {
        let (r, _w) = std::io::pipe().unwrap();
        let many = vec![r.as_fd(); MAX_FDS + 1];
        let e = duplicate(&many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("253"), "{e}");
        assert!(control_for(0).is_none());
        assert_eq!(control_for(1).unwrap().capacity(), cmsg::space(4));
        assert_eq!(
            control_for(10_000).unwrap().capacity(),
            cmsg::space(4 * MAX_FDS)
        );
    }

    #[test]
    fn surplus_descriptors_are_dropped_and_flagged() {
        let (r, w) = std::io::pipe().unwrap();
        let got = RecvFds::received(3, vec![r.into(), w.into()], 1, 0);
        assert_eq!(got.fds.len(), 1);
        assert!(got.fds_truncated);
        let got = RecvFds::received(3, Vec::new(), 1, libc::MSG_CTRUNC);
        assert!(got.fds_truncated);
    }
}
