//! Zero-copy receive (ZCRX): the NIC writes TCP payloads straight into memory shared with this
//! runtime (`IORING_REGISTER_ZCRX_IFQ` + `IORING_OP_RECV_ZC`, Linux 6.15).
//!
//! Configure it on the [`Builder`](crate::Builder) with a [`ZcrxConfig`]: the runtime then
//! builds its ring with `DEFER_TASKRUN` and 32-byte CQEs, maps an area and a refill region, and
//! registers an interface queue (ifq) for one hardware RX queue. Receives through it
//! (`net::TcpStream::recv_zc_stream`, or `recv_zero_copy`, which falls back to provided buffers
//! where no ifq exists) yield [`RxBuf`]s that point into the area; dropping one queues exactly
//! one refill entry, and the refill tail is published once per loop turn.
//!
//! What a NIC and the system need (header/data split, flow steering, RSS exclusion,
//! `CAP_NET_ADMIN`) is in `docs/zcrx.md`. On interfaces that cannot host it (loopback, veth,
//! virtio_net) registration fails with `EOPNOTSUPP`; [`ZcrxMode::Auto`] records that in
//! [`Capabilities::notes`](crate::Capabilities::notes) and carries on without.
//!
//! # Invariants
//!
//! - The area and refill region stay mapped for as long as the ring may use them: the ifq is
//!   owned by the runtime's handle and dropped after the driver (which closes the ring), and
//!   every `RxBuf` holds the ifq.
//! - Each completion lends one piece of the area, and its `RxBuf` returns it with exactly one
//!   refill entry (see `refill.rs`).

mod abi;
mod refill;
mod register;

use std::{
    cell::{Cell, RefCell},
    fmt, io,
    rc::Rc,
    task::{Context, Poll},
};

use refill::RefillQueue;
pub(crate) use register::register;

use crate::{
    buf::{Lender, RxBuf},
    current,
    mmap::Mapping,
    op::Completion,
    wait_list::WaitList,
};

thread_local! {
    /// The ifq of the runtime running on this thread, if it has one (filled by
    /// `executor::context::enter`).
    pub(crate) static CURRENT: current::Slot<Rc<ZcrxInner>> = const { current::Slot::new() };
}

/// Whether the runtime uses zero-copy receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZcrxMode {
    /// Never (the default).
    #[default]
    Off,
    /// If registration works; otherwise record why in the capabilities and go on without.
    Auto,
    /// Required: `Builder::build` fails with the kernel's reason if registration fails.
    On,
}

/// Zero-copy receive settings for [`Builder::zcrx`](crate::Builder::zcrx).
#[derive(Debug, Clone)]
pub struct ZcrxConfig {
    pub(crate) interface: String,
    pub(crate) rx_queue: u32,
    pub(crate) area_size: usize,
    pub(crate) rq_entries: u32,
    pub(crate) mode: ZcrxMode,
    pub(crate) device_less: bool,
}

impl ZcrxConfig {
    /// Zero-copy receive on hardware RX queue `rx_queue` of `interface` (e.g. `"eth0"`).
    /// With several workers, worker `i` uses queue `rx_queue + i`. Defaults: 64 MiB area, 4096
    /// refill entries, mode [`ZcrxMode::Off`] (set it to `Auto` or `On`).
    pub fn new(interface: impl Into<String>, rx_queue: u32) -> ZcrxConfig {
        ZcrxConfig {
            interface: interface.into(),
            rx_queue,
            area_size: 64 << 20,
            rq_entries: 4096,
            mode: ZcrxMode::Off,
            device_less: false,
        }
    }

    /// A device-less ifq (`ZCRX_REG_NODEV`, Linux 7.1): no NIC queue, every payload arrives
    /// through the kernel's copy path into the area. For testing the data path anywhere;
    /// older kernels reject it (`EINVAL`).
    pub fn device_less() -> ZcrxConfig {
        ZcrxConfig {
            device_less: true,
            ..ZcrxConfig::new("", 0)
        }
    }

    /// Size of the receive area in bytes (rounded up to whole pages; default 64 MiB). Every
    /// byte in flight between the NIC and the application lives here.
    pub fn area_size(&mut self, bytes: usize) -> &mut Self {
        self.area_size = bytes;
        self
    }

    /// Refill-queue entries (a power of two up to 32768; default 4096).
    pub fn rq_entries(&mut self, entries: u32) -> &mut Self {
        self.rq_entries = entries;
        self
    }

    /// The mode (default [`ZcrxMode::Off`]).
    pub fn mode(&mut self, mode: ZcrxMode) -> &mut Self {
        self.mode = mode;
        self
    }

    pub(crate) fn describe(&self, queue: u32) -> String {
        if self.device_less {
            "a device-less ifq".to_owned()
        } else {
            format!("interface {} RX queue {queue}", self.interface)
        }
    }
}

/// Why an interface queue could not be registered: the kernel's errno and an explanation.
/// Carried inside the `io::Error` that `Builder::build` returns; get it back with
/// `err.get_ref().and_then(|e| e.downcast_ref::<ZcrxError>())`.
#[derive(Debug, Clone)]
pub struct ZcrxError {
    errno: Option<i32>,
    message: String,
}

impl ZcrxError {
    /// The errno the kernel returned (e.g. `EOPNOTSUPP`).
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl fmt::Display for ZcrxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ZcrxError {}

/// Whether a registration error says the queue already has a memory provider.
pub(crate) fn is_eexist(err: &io::Error) -> bool {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<ZcrxError>())
        .is_some_and(|e| e.errno == Some(libc::EEXIST))
}

/// Counters of a runtime's zero-copy receive area.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZcrxStats {
    /// Completions that lent a piece of the area.
    pub received: u64,
    /// Pieces currently held by `RxBuf`s.
    pub in_use: usize,
    /// Refills waiting for room in the refill queue.
    pub refill_pending: usize,
    /// Times the area ran out (`ENOMEM`).
    pub exhausted: u64,
}

/// The registered interface queue of a runtime.
pub(crate) struct ZcrxInner {
    id: u32,
    area: *mut u8,
    area_len: usize,
    refill: RefCell<RefillQueue>,
    received: Cell<u64>,
    in_use: Cell<usize>,
    returned: Cell<u64>,
    exhausted: Cell<u64>,
    /// `returned` when the area last ran out; waiting streams resume once it moved on.
    returned_at_exhaustion: Cell<u64>,
    waiters: WaitList,
    description: String,
    /// The area and refill-region mappings (absent for the in-memory test stand-in).
    _mappings: Option<(Mapping, Mapping)>,
}

impl ZcrxInner {
    /// Hands the data of one `RECV_ZC` completion out as an `RxBuf`.
    pub(crate) fn take(self: &Rc<Self>, cqe: &Completion) -> io::Result<RxBuf> {
        let (offset, len) = refill::decode(cqe.extra()[0], cqe.result(), self.area_len)?;
        self.received.set(self.received.get() + 1);
        self.in_use.set(self.in_use.get() + 1);
        // `len` came from the CQE's non-negative `i32` result, so it fits a `u32`.
        Ok(RxBuf::lent(self.clone(), offset, len as u32))
    }
}

// SAFETY: `take` lends only pieces inside the area, which stays mapped while `self` lives;
// the kernel wrote them before the completion and writes no more to them until their refill
// entry is published, which only `give_back` queues.
unsafe impl Lender for ZcrxInner {
    /// The area bytes of a lent piece.
    fn bytes(&self, offset: u64, len: usize) -> &[u8] {
        debug_assert!(offset as usize + len <= self.area_len);
        // SAFETY: `take` checked that `offset + len` lies inside the area, which stays mapped
        // while `self` lives; the kernel wrote these bytes before the completion and writes
        // no more to them until the refill entry for them is published.
        unsafe { std::slice::from_raw_parts(self.area.add(offset as usize), len) }
    }

    /// An `RxBuf` of the area was dropped: queue its one refill entry.
    fn give_back(&self, offset: u64, len: usize) {
        self.refill.borrow_mut().refill(offset, len as u32);
        self.in_use.set(self.in_use.get() - 1);
        self.returned.set(self.returned.get() + 1);
        self.waiters.wake_all();
    }
}

impl ZcrxInner {
    /// Publishes pending refills (once per loop turn).
    pub(crate) fn publish(&self) -> usize {
        self.refill.borrow_mut().publish()
    }

    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.get()
    }

    #[cfg(test)]
    pub(crate) fn refill_pending(&self) -> usize {
        self.refill.borrow().pending()
    }

    #[cfg(test)]
    pub(crate) fn publishes(&self) -> u64 {
        self.refill.borrow().publishes()
    }

    #[cfg(test)]
    pub(crate) fn for_test(
        area: *mut u8,
        area_len: usize,
        refill: RefCell<RefillQueue>,
    ) -> Rc<Self> {
        Rc::new(ZcrxInner::new(
            0,
            area,
            area_len,
            refill,
            "a test stand-in".into(),
            None,
        ))
    }

    fn new(
        id: u32,
        area: *mut u8,
        area_len: usize,
        refill: RefCell<RefillQueue>,
        description: String,
        mappings: Option<(Mapping, Mapping)>,
    ) -> ZcrxInner {
        ZcrxInner {
            id,
            area,
            area_len,
            refill,
            received: Cell::new(0),
            in_use: Cell::new(0),
            returned: Cell::new(0),
            exhausted: Cell::new(0),
            returned_at_exhaustion: Cell::new(0),
            waiters: WaitList::default(),
            description,
            _mappings: mappings,
        }
    }
}

/// The zero-copy receive queue of the current thread's runtime, if it has one. Operations
/// that build on it (`RECV_ZC` streams) take its id and hand completions to
/// [`take`](Zcrx::take).
#[derive(Clone)]
pub struct Zcrx {
    inner: Rc<ZcrxInner>,
}

impl Zcrx {
    /// The current runtime's ifq, or `None` when zero-copy receive is not in use.
    ///
    /// # Panics
    ///
    /// Panics outside a runtime.
    pub fn current() -> Option<Zcrx> {
        // Panics outside a runtime, as documented.
        drop(crate::driver::current());
        current::get(&CURRENT).map(|inner| Zcrx { inner })
    }

    /// The ifq id, for `IORING_OP_RECV_ZC`'s `zcrx_ifq_idx`.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// What the ifq is registered on.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// Hands the bytes of a data completion of `IORING_OP_RECV_ZC` out as an [`RxBuf`] that
    /// points into the area.
    ///
    /// # Errors
    ///
    /// `InvalidData` when the completion names bytes outside the area (never read).
    pub fn take(&self, cqe: &Completion) -> io::Result<RxBuf> {
        self.inner.take(cqe)
    }

    /// Records that a receive found the area exhausted (`ENOMEM`).
    pub fn note_exhausted(&self) {
        let inner = &self.inner;
        inner.exhausted.set(inner.exhausted.get() + 1);
        inner.returned_at_exhaustion.set(inner.returned.get());
    }

    /// Ready once area buffers came back since the last exhaustion; otherwise registers the
    /// task to be woken when one does.
    pub fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.inner;
        if inner.returned.get() != inner.returned_at_exhaustion.get() || inner.in_use.get() == 0 {
            return Poll::Ready(());
        }
        inner.waiters.register(cx.waker());
        Poll::Pending
    }

    /// Counters.
    pub fn stats(&self) -> ZcrxStats {
        let inner = &self.inner;
        ZcrxStats {
            received: inner.received.get(),
            in_use: inner.in_use.get(),
            refill_pending: inner.refill.borrow().pending(),
            exhausted: inner.exhausted.get(),
        }
    }
}

impl fmt::Debug for Zcrx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zcrx")
            .field("id", &self.inner.id)
            .field("on", &self.inner.description)
            .field("stats", &self.stats())
            .finish()
    }
}
