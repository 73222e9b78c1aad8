//! `SendZc`: `IORING_OP_SEND_ZC` (streams, connected datagrams) and `IORING_OP_SENDMSG_ZC`
//! (datagrams to an address), as a two-CQE request.
//!
//! The first CQE carries the send's result; if it has `IORING_CQE_F_MORE`, a notification
//! (`IORING_CQE_F_NOTIF`) follows once the kernel holds no reference to the buffer. The
//! decision is made on `F_MORE` only, never on the result: failed sends post a notification
//! too (`docs/kernel-notes.md` §3; `io_uring/net.c` `io_sendrecv_fail`). The request runs as
//! a `Multishot` stream, so the buffer stays owned by the request (parked in the driver if the
//! stream is dropped) until the final CQE.

use std::{io, net::SocketAddr};

use io_uring::{opcode, squeue};
use runtime::{
    buf::{IoBuf, fixed_index},
    op::{Completion, MultishotOp},
};

use super::{MAX_IO, msg::MsgState};
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
    msg: Option<Box<MsgState>>,
    /// Whether the send's result reported bytes sent; only then does the notification say
    /// anything about zero copy (a failed send's notification always reads "copied").
    sent_bytes: bool,
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
            msg: Some(MsgState::new(RawAddr::from_socket_addr(addr))),
            sent_bytes: false,
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
}
