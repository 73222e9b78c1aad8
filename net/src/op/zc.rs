//! `SendZc`: `IORING_OP_SEND_ZC` (streams, connected datagrams) and `IORING_OP_SENDMSG_ZC`
//! (datagrams to an address), as a two-CQE request.
//!
//! The first CQE carries the send's result; if it has `IORING_CQE_F_MORE`, a notification
//! (`IORING_CQE_F_NOTIF`) follows once the kernel holds no reference to the buffer. The
//! decision is made on `F_MORE` only, never on the result: failed sends post a notification
//! too (`docs/kernel-notes.md` §3; `io_uring/net.c` `io_sendrecv_fail`). The request runs as
//! a `Multishot` stream, so the buffer stays owned by the request (parked in the driver if the
//! stream is dropped) until the final CQE.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use io_uring::{opcode, squeue};
use runtime::{
    buf::{IoBuf, fixed_index},
    op::{Completion, Interest, MultishotOp, cqe_flags},
};

use super::{MAX_IO, msg_box::MsgBox, nonblocking, zc_epoll::ZcEpoll};
use crate::{
    addr::RawAddr,
    socket::{Socket, on_target},
};

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the data was copied.
const REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in the notification's `res`.
const USAGE_COPIED: u32 = 1 << 31;

/// One CQE of a zero-copy send.
#[derive(Debug)]
pub(crate) enum ZcEvent {
    /// The send's result (bytes sent or the error).
    Sent(io::Result<usize>),
    /// The kernel released the buffer (whether it copied is recorded in the socket's stats).
    Notified,
}

/// A zero-copy send of `buf`'s initialized bytes.
#[derive(Debug)]
pub(crate) struct SendZc<B> {
    socket: Socket,
    buf: B,
    flags: i32,
    report_usage: bool,
    /// For `SENDMSG_ZC` to an address: the boxed message structures.
    msg: Option<MsgBox>,
    /// Whether the send's result reported bytes sent; only then does the notification say
    /// anything about zero copy (a failed send's notification always reads "copied").
    sent_bytes: bool,
    /// The epoll backend's progress (`zc_epoll.rs`).
    progress: Progress,
}

/// Where a zero-copy send stands on the epoll backend.
#[derive(Debug, Default)]
struct Progress {
    /// The first try ran (counted as a request).
    started: bool,
    /// Bytes sent by the calls so far.
    sent: usize,
    /// The numbers of the first and last successful `MSG_ZEROCOPY` call.
    ids: Option<(u32, u32)>,
    /// The result was reported; the notification is awaited.
    result_posted: bool,
}

impl<B: IoBuf> SendZc<B> {
    /// `SEND_ZC` on a connected socket; `all` adds `MSG_WAITALL` (streams: the kernel keeps
    /// sending until every byte went out or an error occurs).
    pub(crate) fn send(socket: Socket, buf: B, all: bool) -> SendZc<B> {
        let report_usage = socket.zc().report_usage();
        let flags = libc::MSG_NOSIGNAL | if all { libc::MSG_WAITALL } else { 0 };
        SendZc {
            socket,
            buf,
            flags,
            report_usage,
            msg: None,
            sent_bytes: false,
            progress: Progress::default(),
        }
    }

    /// `SENDMSG_ZC` of one datagram to `addr`.
    pub(crate) fn send_to(socket: Socket, buf: B, addr: &SocketAddr) -> SendZc<B> {
        let report_usage = socket.zc().report_usage();
        SendZc {
            socket,
            buf,
            flags: libc::MSG_NOSIGNAL,
            report_usage,
            msg: Some(MsgBox::new(RawAddr::from_socket_addr(addr))),
            sent_bytes: false,
            progress: Progress::default(),
        }
    }

    /// Drops the usage-report flag (for kernels before 6.2, which reject it).
    pub(crate) fn without_usage_report(mut self) -> SendZc<B> {
        self.report_usage = false;
        self
    }

    pub(crate) fn into_buf(self) -> B {
        self.buf
    }

    fn handle(&mut self, cqe: Completion) -> ZcEvent {
        if cqe.is_notification() {
            let copied = (cqe.result() as u32) & USAGE_COPIED != 0;
            self.socket.zc().notified(copied && self.sent_bytes);
            ZcEvent::Notified
        } else {
            self.sent_bytes = cqe.result() > 0;
            ZcEvent::Sent(cqe.into_result().map(|n| n as usize))
        }
    }
}

// SAFETY: the SQE points into `buf`'s stable memory (`IoBuf` contract; with a fixed index only
// when `fixed_index` confirms the buffer is registered with this ring, rule 4), or at the boxed
// message structures that point there and at the boxed address; the fd is kept open by
// `socket`. All are owned by `self` until the final CQE, which is the notification whenever the
// first CQE has `F_MORE`, so the buffer is never released while the kernel references it.
unsafe impl<B: IoBuf> MultishotOp for SendZc<B> {
    type Item = ZcEvent;

    fn build(&mut self) -> squeue::Entry {
        self.socket.zc().requested();
        let len = self.buf.bytes_init().min(MAX_IO);
        let index = fixed_index(&self.buf);
        let usage = if self.report_usage { REPORT_USAGE } else { 0 };
        match &mut self.msg {
            None => {
                on_target!(self.socket.uring_fd(), fd => opcode::SendZc::new(fd, self.buf.stable_ptr(), len as u32)
                .flags(self.flags)
                .zc_flags(usage)
                .buf_index(index)
                .build())
            }
            Some(msg) => {
                let hdr = msg.prepare_send(self.buf.stable_ptr(), len, true, None);
                on_target!(self.socket.uring_fd(), fd => opcode::SendMsgZc::new(fd, hdr)
                    .flags(self.flags as u32)
                    .ioprio(usage)
                    .buf_index(index)
                    .build())
            }
        }
    }

    fn next(&mut self, cqe: Completion) -> Option<ZcEvent> {
        Some(self.handle(cqe))
    }

    fn next_detached(&mut self, cqe: Completion) {
        drop(self.handle(cqe));
    }

    fn readiness(&self) -> Option<(RawFd, Interest)> {
        let fd = self.socket.as_raw_fd();
        match self.progress.result_posted {
            false => Some((fd, Interest::Writable)),
            true => Some((fd, Interest::Error)),
        }
    }

    fn try_nonblocking(&mut self) -> Option<Completion> {
        let fd = self.socket.as_raw_fd();
        let state = self.socket.zc().epoll();
        if self.progress.result_posted {
            // Like `SEND_ZC`, a send that moved nothing with zero copy is notified at once.
            let Some((lo, hi)) = self.progress.ids else {
                return Some(Completion::new(0, cqe_flags::NOTIF, [0; 2]));
            };
            ZcEpoll::drain(state, fd);
            let copied = ZcEpoll::covered(state, lo, hi)?;
            let res = if copied { USAGE_COPIED as i32 } else { 0 };
            return Some(Completion::new(res, cqe_flags::NOTIF, [0; 2]));
        }
        if !self.progress.started {
            self.progress.started = true;
            self.socket.zc().requested();
        }
        if let Err(errno) = ZcEpoll::enable(state, fd) {
            return Some(Completion::new(-errno, 0, [0; 2]));
        }
        let len = self.buf.bytes_init().min(MAX_IO);
        let all = self.flags & libc::MSG_WAITALL != 0 && self.msg.is_none();
        let result = loop {
            let sent = self.progress.sent;
            let (cqe, id) = ZcEpoll::send_once(state, || match &mut self.msg {
                // SAFETY: `sent < len` bytes of `buf`'s stable memory, which `self` owns
                // until the final completion (the notification).
                None => unsafe {
                    let ptr = self.buf.stable_ptr().add(sent);
                    nonblocking::send_with(fd, ptr, len - sent, libc::MSG_ZEROCOPY)
                },
                Some(msg) => {
                    let hdr = msg.prepare_send(self.buf.stable_ptr(), len, true, None);
                    // SAFETY: the boxed header points at `buf` and the boxed address,
                    // owned by `self` until the final completion.
                    unsafe { nonblocking::sendmsg(fd, hdr, libc::MSG_ZEROCOPY) }
                }
            });
            if let Some(id) = id {
                self.progress.ids = Some((self.progress.ids.map_or(id, |r| r.0), id));
            }
            match cqe {
                None if sent == 0 || all => return None,
                None => break sent as i32,
                Some(c) if c.result() > 0 => {
                    self.progress.sent += c.result() as usize;
                    if !all || self.progress.sent >= len {
                        break self.progress.sent as i32;
                    }
                }
                Some(_) if sent > 0 => break sent as i32,
                Some(c) => break c.result(),
            }
        };
        self.progress.result_posted = true;
        // A notification follows, as on io_uring (at once when nothing went out zero-copy).
        Some(Completion::new(result, cqe_flags::MORE, [0; 2]))
    }

    fn keeps_running(&self) -> bool {
        // The kernel pins the pages of every call that sent until it notifies.
        self.progress.ids.is_some()
    }
}
