//! Zero-copy send policy and counters, kept per socket.
//!
//! `IORING_OP_SEND_ZC` hands the buffer's pages to the network stack instead of copying them;
//! the kernel posts the send's result, then a notification once no packet references the
//! pages any more, and only then may the buffer be reused. Where the kernel copies anyway
//! (loopback always does; `docs/kernel-notes.md` §3) waiting for that notification is
//! pure cost, so the default policy, [`ZeroCopy::Auto`], asks the kernel to report usage
//! (`IORING_SEND_ZC_REPORT_USAGE`) and switches the socket to ordinary sends at the first
//! notification that says the data was copied, or when the socket type cannot do zero copy.

use std::{
    cell::{Cell, OnceCell, RefCell},
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_core::Stream;
use runtime::{buf::IoBuf, op::Multishot};

use crate::{
    op::{SendZc, ZcEvent, zc_epoll::ZcEpoll},
    socket::Socket,
};

/// Whether a socket's zero-copy sends (`send_zc` and friends) really use `SEND_ZC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Zero-copy until the kernel reports that it copied (or cannot do it on this socket), then
    /// ordinary sends (the default). See [`ZeroCopyStats::switched_to_copy`].
    #[default]
    Auto,
    /// Always `SEND_ZC`; a socket that cannot do it fails with `Unsupported`.
    On,
    /// Never `SEND_ZC`: zero-copy sends behave like ordinary sends.
    Off,
}

/// Counters of a socket's zero-copy sends, from `zero_copy_stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroCopyStats {
    /// `SEND_ZC`/`SENDMSG_ZC` requests submitted.
    pub zc_requests: u64,
    /// Notifications received (each releases a buffer).
    pub notifications: u64,
    /// Notifications that reported the kernel copied the data anyway.
    pub copied: u64,
    /// Zero-copy sends that went out as ordinary sends because of the policy.
    pub copy_sends: u64,
    /// Whether `ZeroCopy::Auto` switched this socket to ordinary sends, and why.
    pub switched_to_copy: Option<SwitchReason>,
}

/// Why [`ZeroCopy::Auto`] stopped using `SEND_ZC` on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    /// A notification said the kernel copied the data (e.g. loopback).
    KernelCopied,
    /// The socket type has no zero-copy support (`EOPNOTSUPP`), or the kernel lacks `SEND_ZC`.
    Unsupported,
}

impl fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SwitchReason::KernelCopied => "the kernel reported copying the data",
            SwitchReason::Unsupported => "the socket or kernel has no zero-copy send",
        })
    }
}

/// The per-socket state behind the policy.
#[derive(Debug, Default)]
pub(crate) struct ZcState {
    policy: Cell<ZeroCopy>,
    /// Boxed on first use: most sockets never send zero-copy, and every byte here is paid
    /// by every connection.
    extra: OnceCell<Box<ZcExtra>>,
    /// The kernel rejected `IORING_SEND_ZC_REPORT_USAGE` (before Linux 6.2).
    no_usage_report: Cell<bool>,
}

/// The part of [`ZcState`] only sockets that sent zero-copy pay for.
#[derive(Debug, Default)]
struct ZcExtra {
    stats: Cell<ZeroCopyStats>,
    /// The epoll backend's `MSG_ZEROCOPY` bookkeeping.
    epoll: RefCell<ZcEpoll>,
}

/// How a zero-copy send goes out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZcPath {
    ZeroCopy,
    Copy,
}

impl ZcState {
    pub(crate) fn policy(&self) -> ZeroCopy {
        self.policy.get()
    }

    pub(crate) fn set_policy(&self, policy: ZeroCopy) {
        self.policy.set(policy);
    }

    pub(crate) fn stats(&self) -> ZeroCopyStats {
        self.extra.get().map(|x| x.stats.get()).unwrap_or_default()
    }

    pub(crate) fn path(&self) -> ZcPath {
        match (self.policy.get(), self.stats().switched_to_copy) {
            (ZeroCopy::On, _) => ZcPath::ZeroCopy,
            (ZeroCopy::Auto, None) => ZcPath::ZeroCopy,
            _ => ZcPath::Copy,
        }
    }

    fn update(&self, f: impl FnOnce(&mut ZeroCopyStats)) {
        let stats = &self.extra.get_or_init(Box::default).stats;
        let mut s = stats.get();
        f(&mut s);
        stats.set(s);
    }

    pub(crate) fn requested(&self) {
        self.update(|s| s.zc_requests += 1);
    }

    pub(crate) fn copy_send(&self) {
        self.update(|s| s.copy_sends += 1);
    }

    pub(crate) fn notified(&self, copied: bool) {
        let auto = self.policy.get() == ZeroCopy::Auto;
        self.update(|s| {
            s.notifications += 1;
            if copied {
                s.copied += 1;
                if auto && s.switched_to_copy.is_none() {
                    s.switched_to_copy = Some(SwitchReason::KernelCopied);
                }
            }
        });
    }

    pub(crate) fn unsupported(&self) {
        if self.policy.get() == ZeroCopy::Auto {
            self.update(|s| s.switched_to_copy = Some(SwitchReason::Unsupported));
        }
    }

    pub(crate) fn report_usage(&self) -> bool {
        !self.no_usage_report.get()
    }

    /// The epoll backend's `MSG_ZEROCOPY` state of this socket.
    pub(crate) fn epoll(&self) -> &RefCell<ZcEpoll> {
        &self.extra.get_or_init(Box::default).epoll
    }

    pub(crate) fn usage_report_rejected(&self) {
        self.no_usage_report.set(true);
    }
}

/// The release half of a zero-copy send: resolves to the buffer once the kernel no longer
/// references it (the notification arrived, or no notification was due).
///
/// Dropping it does not release the buffer early: it stays parked in the runtime until the
/// notification, then is dropped there.
#[must_use = "the buffer comes back by awaiting this"]
pub struct ZcSent<B: IoBuf> {
    state: Sent<B>,
}

enum Sent<B: IoBuf> {
    Ready(Option<B>),
    InFlight(Multishot<SendZc<B>>),
}

impl<B: IoBuf> ZcSent<B> {
    pub(crate) fn ready(buf: B) -> ZcSent<B> {
        ZcSent {
            state: Sent::Ready(Some(buf)),
        }
    }

    /// Whether the buffer is free (awaiting yields it at once).
    pub fn is_released(&self) -> bool {
        match &self.state {
            Sent::Ready(_) => true,
            Sent::InFlight(stream) => stream.is_finished(),
        }
    }
}

impl<B: IoBuf> Future for ZcSent<B> {
    type Output = B;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<B> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                Sent::Ready(buf) => {
                    return Poll::Ready(buf.take().expect("`ZcSent` polled after it completed"));
                }
                Sent::InFlight(stream) => {
                    if ready!(Pin::new(&mut *stream).poll_next(cx)).is_some() {
                        continue;
                    }
                    let Sent::InFlight(stream) =
                        std::mem::replace(&mut this.state, Sent::Ready(None))
                    else {
                        unreachable!("state matched just above")
                    };
                    let op = stream
                        .into_inner()
                        .unwrap_or_else(|_| unreachable!("the stream ended, so it is finished"));
                    this.state = Sent::Ready(Some(op.into_buf()));
                }
            }
        }
    }
}

impl<B: IoBuf> fmt::Debug for ZcSent<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZcSent")
            .field("released", &self.is_released())
            .finish()
    }
}

/// What a zero-copy attempt came to.
pub(crate) enum Attempt<B: IoBuf> {
    /// `SEND_ZC` ran: its result, and the release.
    Sent(io::Result<usize>, ZcSent<B>),
    /// The policy (or missing support under `Auto`) says: send it the ordinary way.
    UseCopy(B),
}

/// Sends through `SEND_ZC`/`SENDMSG_ZC` as the socket's policy allows, up to the first CQE.
/// `make` builds the request; `opcode` is what the kernel must support.
pub(crate) async fn attempt<B: IoBuf>(
    socket: &Socket,
    buf: B,
    opcode: u8,
    make: impl Fn(Socket, B) -> SendZc<B>,
) -> Attempt<B> {
    let zc = socket.zc();
    if zc.path() == ZcPath::Copy {
        zc.copy_send();
        return Attempt::UseCopy(buf);
    }
    if !runtime::op::is_supported(opcode) {
        return unsupported(
            socket,
            buf,
            "this kernel has no zero-copy send (SEND_ZC needs Linux 6.0, SENDMSG_ZC 6.1)",
        );
    }
    let mut op = make(socket.clone(), buf);
    loop {
        let usage_requested = zc.report_usage();
        let (res, sent) = start(op).await;
        match res {
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && usage_requested
                    && sent.is_released() =>
            {
                // Kernels before 6.2 reject the usage report: retry without it.
                zc.usage_report_rejected();
                op = make(socket.clone(), sent.await).without_usage_report();
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let buf = sent.await;
                return unsupported(
                    socket,
                    buf,
                    "this socket does not support zero-copy send (EOPNOTSUPP)",
                );
            }
            res => return Attempt::Sent(res, sent),
        }
    }
}

fn unsupported<B: IoBuf>(socket: &Socket, buf: B, why: &str) -> Attempt<B> {
    let zc = socket.zc();
    if zc.policy() == ZeroCopy::On {
        let err = io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{why}; use ZeroCopy::Auto to fall back to ordinary sends"),
        );
        return Attempt::Sent(Err(err), ZcSent::ready(buf));
    }
    zc.unsupported();
    zc.copy_send();
    Attempt::UseCopy(buf)
}

/// Runs a zero-copy request up to its first CQE.
async fn start<B: IoBuf>(op: SendZc<B>) -> (io::Result<usize>, ZcSent<B>) {
    let mut stream = Multishot::new(op);
    loop {
        let event = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        match event {
            Some(ZcEvent::Sent(res)) => {
                return (
                    res,
                    ZcSent {
                        state: Sent::InFlight(stream),
                    },
                );
            }
            // A notification cannot precede the result; nothing to do with one.
            Some(ZcEvent::Notified) => {}
            None => {
                let op = stream
                    .into_inner()
                    .unwrap_or_else(|_| unreachable!("the stream ended, so it is finished"));
                let err = io::Error::from_raw_os_error(libc::ECANCELED);
                return (Err(err), ZcSent::ready(op.into_buf()));
            }
        }
    }
}
