//! The io_uring operations behind the socket types, one struct per request.
//!
//! Each struct owns everything the kernel touches (see `runtime::op::OpCode`): a `Socket`
//! clone keeping the fd open, the buffer, and boxed kernel structures (`sockaddr`, `msghdr`,
//! `iovec` arrays) whose addresses survive moves of the operation.
//!
//! Sends are first tried on the fast path (`docs/kernel-notes.md` §2):
//! `MSG_DONTWAIT` (+ `MSG_WAITALL` on streams) with `IOSQE_CQE_SKIP_SUCCESS`, which completes
//! or fails inside the enter that submits it and posts no CQE on success. A failure (`EAGAIN`,
//! or a short stream send) posts a CQE, and the caller resumes with an ordinary send that waits
//! for the socket. Every send carries `MSG_NOSIGNAL`: a reset peer gives `EPIPE`, never SIGPIPE.

mod accept;
mod cancel;
mod connect;
mod msg;
mod msg_box;
mod msg_vectored;
pub(crate) mod nonblocking;
mod recv_ahead;
mod recv_multi;
mod shutdown;
mod socket;
mod sockopt;
mod stream;
mod zc;
pub(crate) mod zc_epoll;

pub(crate) use accept::{Accept, AcceptMulti};
pub(crate) use cancel::CancelFd;
pub(crate) use connect::Connect;
pub(crate) use msg::{RecvMsg, RecvMsgOutput, SendMsg};
pub(crate) use msg_vectored::{RecvMsgVectored, SendMsgVectored};
pub(crate) use recv_ahead::RecvAhead;
pub(crate) use recv_multi::{RecvEvent, RecvMsgMulti, RecvMulti, RecvZc};
pub(crate) use shutdown::Shutdown;
pub(crate) use socket::SocketDirect;
pub(crate) use sockopt::SetSockOpt;
pub(crate) use stream::{Readv, Recv, Send, SendMode, Writev, send_some};
pub(crate) use zc::{SendZc, ZcEvent};

/// Largest byte count one request moves, so results fit the CQE's `i32`.
pub(crate) const MAX_IO: usize = i32::MAX as usize;
