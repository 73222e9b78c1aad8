//! `BufRing`: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`) shared by the receives of
//! many sockets on one thread. A receive takes a buffer only when data arrives, so an idle
//! connection holds none.
//!
//! # Layout and protocol (`docs/kernel-notes.md` §4; liburing `io_uring_register_buf_ring(3)`,
//! the kernel's `io_uring/kbuf.c`)
//!
//! - The ring is `entries` `io_uring_buf { addr: u64, len: u32, bid: u16, resv: u16 }` in
//!   page-aligned memory; the 16-bit tail overlays `bufs[0].resv`, so entry 0 is written field
//!   by field and its `resv` never. New entries go at `tail & mask`; the tail is published with
//!   one release store per top-up.
//! - Buffers are `count == entries` slices of `buf_len` bytes in one anonymous mapping: pages
//!   become resident only when the kernel first writes them.
//!
//! # Invariants
//!
//! - Every buffer id is in exactly one place: `free` (ours, LIFO), `published` (in the
//!   kernel's ring, with its ring position), or lent out (an `RxBuf` exists for it, or, with
//!   incremental consumption, the kernel may still append to it).
//! - The kernel consumes entries in ring order, but the streams sharing a ring take their
//!   completions in any order (each when its task polls). `published` therefore records the
//!   ring position of every entry, and a bundle is the run of entries that follows its first
//!   buffer's entry, wherever that sits (see `published.rs`). A completion naming an id that
//!   is not published, or a run that is not, is rejected as malformed before anything is taken
//!   (never trusted to index memory), so other completions' buffers are not disturbed.
//! - Only `top_up` (once per loop turn, before the enter) and the constructor write ring
//!   entries. It keeps about twice the recent per-turn consumption in the ring, not all free
//!   buffers, so the same hot buffers circulate and resident memory stays small
//!   (`docs/kernel-notes.md` §4.3).
//! - The mappings are unmapped only after the group is unregistered; no operation can still
//!   select from it then, since each receive holds the ring until its final completion.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt, io,
    rc::Rc,
    sync::atomic::{AtomicU16, Ordering},
    task::{Context, Poll},
};

mod builder;
pub(crate) mod shared;
mod user;

pub use builder::BufRingBuilder;

use super::{published::Published, rx::RxBuf};
use crate::{
    driver::{Driver, Refill},
    mmap::Mapping,
    op::Completion,
    wait_list::WaitList,
};

/// `IOU_PBUF_RING_INC` (Linux 6.12): the kernel consumes buffers incrementally.
const IOU_PBUF_RING_INC: u16 = 2;

/// `struct io_uring_buf`.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RingEntry>() == 16);

/// Counters of a [`BufRing`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufRingStats {
    /// Buffers handed out by completions, one per `RxBuf` (with incremental consumption,
    /// several completions may hand out pieces of one buffer).
    pub taken: u64,
    /// `RxBuf`s dropped, so `taken - returned` of them are alive; a buffer goes back to the
    /// ring when its last one is dropped.
    pub returned: u64,
    /// Buffers currently in the kernel's ring.
    pub in_ring: usize,
    /// `RxBuf`s alive now (`taken - returned`).
    pub in_use: usize,
    /// Times a receive found the ring empty (`ENOBUFS`).
    pub exhausted: u64,
    /// Completions rejected as malformed (unknown buffer id, missing buffer flag, ...).
    pub malformed: u64,
}

/// Per-buffer state for incremental consumption.
#[derive(Debug, Clone, Copy, Default)]
struct Incremental {
    /// Where the kernel's next data for this buffer starts.
    offset: u32,
    /// `RxBuf`s referring to this buffer.
    refs: u32,
    /// The kernel is done with the buffer (a completion without `F_BUF_MORE`).
    done: bool,
}

pub(crate) struct RingInner {
    /// The driver the group is registered with: all the pool needs of the runtime.
    driver: Rc<RefCell<Driver>>,
    bgid: u16,
    entries: u16,
    buf_len: usize,
    ring: Mapping,
    bufs: Mapping,
    incremental: bool,
    /// The epoll backend: no kernel selects from the ring, receives do (`user.rs`).
    user_space: bool,
    /// With `user_space`: the emulated kernel head (`user.rs`).
    head: Cell<u16>,
    /// Our copy of the tail (the kernel only reads the shared one).
    tail: Cell<u16>,
    published: RefCell<Published>,
    free: RefCell<Vec<u16>>,
    inc: RefCell<Vec<Incremental>>,
    /// Buffers wanted since the last top-up (taken, or asked for and refused with `ENOBUFS`),
    /// and the decaying peak of that count.
    wanted_this_turn: Cell<usize>,
    peak: Cell<usize>,
    waiters: WaitList,
    stats: Cell<BufRingStats>,
}

/// A ring of provided buffers, registered with the current thread's runtime. Cheap to clone;
/// receives of many sockets on this thread can share one ring (see
/// `net::TcpStream::recv_stream`).
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// let ring = runtime::buf::BufRing::builder().entries(256).buf_len(4096).build().unwrap();
/// assert_eq!(ring.entries(), 256);
/// # });
/// ```
#[derive(Clone)]
pub struct BufRing {
    inner: Rc<RingInner>,
}

impl BufRing {
    /// A builder with 256 entries of 4 KiB.
    pub fn builder() -> BufRingBuilder {
        BufRingBuilder {
            entries: 256,
            buf_len: 4096,
            incremental: false,
        }
    }

    /// The buffer group id, for SQEs with `IOSQE_BUFFER_SELECT`.
    pub fn group_id(&self) -> u16 {
        self.inner.bgid
    }

    /// Number of ring entries (and buffers).
    pub fn entries(&self) -> u16 {
        self.inner.entries
    }

    /// Size of each buffer.
    pub fn buf_len(&self) -> usize {
        self.inner.buf_len
    }

    /// Whether buffers are consumed incrementally (`IOU_PBUF_RING_INC`).
    pub fn is_incremental(&self) -> bool {
        self.inner.incremental
    }

    /// Counters.
    pub fn stats(&self) -> BufRingStats {
        let mut s = self.inner.stats.get();
        s.in_ring = self.inner.published.borrow().len();
        s
    }

    /// Takes the buffer a completion selected from this ring, as an [`RxBuf`] holding the
    /// `cqe.result()` bytes it received. Returns `Ok(None)` when the completion selected no
    /// buffer (an error or end of file without data) or consumed none (a failed transfer; with
    /// incremental consumption, one without data). The completions of the sockets sharing the
    /// ring may be taken in any order (for incremental rings, see
    /// [`BufRingBuilder::incremental`]).
    ///
    /// # Errors
    ///
    /// `InvalidData` for a malformed completion: data without `IORING_CQE_F_BUFFER`, a buffer
    /// id that is not in the kernel's ring (never handed to it, or already taken), or more
    /// bytes than a buffer holds. Nothing is taken then, and nothing is read out of bounds.
    pub fn take(&self, cqe: &Completion) -> io::Result<Option<RxBuf>> {
        self.inner.take(cqe)
    }

    /// Takes the buffers of a bundle completion (`IORING_RECVSEND_BUNDLE`): `cqe.result()`
    /// bytes spread over consecutive ring entries starting at the completion's buffer id, one
    /// [`RxBuf`] per entry, appended to `out`. Completions of the sockets sharing the ring may
    /// be taken in any order. A completion without data takes nothing (the kernel consumed no
    /// entry for it).
    ///
    /// # Errors
    ///
    /// `InvalidData` for a malformed completion, as [`take`](BufRing::take), and for a bundle
    /// whose entries are not all still the kernel's (its first id is not in the ring, or the
    /// run of entries from there is shorter than its bytes need). Then nothing is taken and
    /// `out` is unchanged.
    pub fn take_bundle(&self, cqe: &Completion, out: &mut VecDeque<RxBuf>) -> io::Result<()> {
        self.inner.take_bundle(cqe, out)
    }

    /// Records that a request found the ring empty (`ENOBUFS`): it counts as one more buffer
    /// wanted this turn, so the next top-up publishes more. (Each refusal adds one, not a
    /// doubling: when many receives are refused in one turn, the demand grows by their number,
    /// never to the whole pool, whose every buffer the kernel would then touch in ring order.)
    pub fn note_exhausted(&self) {
        let inner = &self.inner;
        inner.wanted_this_turn.set(inner.wanted_this_turn.get() + 1);
        inner.update_stats(|s| s.exhausted += 1);
    }

    /// Whether a buffer can be given to the kernel at the next loop turn (one is free or
    /// already published), as [`poll_available`](BufRing::poll_available) answers without
    /// registering a task.
    pub fn has_available(&self) -> bool {
        !self.inner.free.borrow().is_empty() || !self.inner.published.borrow().is_empty()
    }

    /// Ready when a buffer can be given to the kernel at the next loop turn (one is free);
    /// otherwise registers the task to be woken when an `RxBuf` is dropped.
    pub fn poll_available(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_available() {
            return Poll::Ready(());
        }
        self.inner.waiters.register(cx.waker());
        Poll::Pending
    }
}

/// Fewest buffers kept in the kernel's ring (when that many exist).
const MIN_IN_RING: usize = 16;

impl RingInner {
    fn update_stats(&self, f: impl FnOnce(&mut BufRingStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn malformed(&self, what: String) -> io::Error {
        self.update_stats(|s| s.malformed += 1);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "malformed completion for buffer group {}: {what}",
                self.bgid
            ),
        )
    }

    /// Gives free buffers to the kernel until about twice the recent per-turn consumption is
    /// in the ring, then publishes the tail once.
    pub(crate) fn top_up(&self) {
        let wanted = self.wanted_this_turn.replace(0);
        // The peak decays by 1/8 per turn, so a past burst is forgotten slowly.
        let peak = wanted.max(self.peak.get() - self.peak.get() / 8);
        self.peak.set(peak);
        let target = (2 * peak).max(MIN_IN_RING).min(self.entries as usize);
        let mut published = self.published.borrow_mut();
        let mut free = self.free.borrow_mut();
        if published.len() >= target || free.is_empty() {
            return;
        }
        let base = self.ring.as_ptr().cast::<RingEntry>();
        let mask = self.entries - 1;
        let mut tail = self.tail.get();
        // Fewer than `entries` are published, so the slot at the tail is one the kernel has
        // consumed (every entry it has not consumed is still published).
        while published.len() < target {
            let Some(bid) = free.pop() else { break };
            let slot = (tail & mask) as usize;
            let addr = self.buf_ptr(bid) as u64;
            // SAFETY: `slot < entries`, so the entry lies inside the ring mapping. The kernel
            // reads only entries between its head and the published tail, and this one is past
            // the published tail. Fields are written one by one so that `resv` of entry 0,
            // which holds the shared tail, is never touched.
            unsafe {
                let entry = base.add(slot);
                (&raw mut (*entry).addr).write(addr);
                (&raw mut (*entry).len).write(self.buf_len as u32);
                (&raw mut (*entry).bid).write(bid);
            }
            published.publish(bid);
            tail = tail.wrapping_add(1);
        }
        self.tail.set(tail);
        // SAFETY: the tail is the `resv` field of entry 0 (offset 14), 2-byte aligned inside
        // the page-aligned ring mapping; the kernel reads it with acquire semantics, and the
        // release store makes the entries written above visible first.
        let shared_tail = unsafe { AtomicU16::from_ptr(base.cast::<u8>().add(14).cast::<u16>()) };
        shared_tail.store(tail, Ordering::Release);
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < entries` (checked by callers), so the offset is inside `bufs`.
        unsafe { self.bufs.as_ptr().add(bid as usize * self.buf_len) }
    }

    /// The id of the (first) buffer a completion selected, validated against this ring; `None`
    /// when it selected none, which is only valid for a completion without data.
    fn selected(&self, cqe: &Completion) -> io::Result<Option<u16>> {
        let Some(bid) = cqe.buffer_id() else {
            if cqe.result() > 0 {
                return Err(self.malformed(format!(
                    "{} bytes received but IORING_CQE_F_BUFFER is not set",
                    cqe.result()
                )));
            }
            return Ok(None);
        };
        if bid >= self.entries {
            return Err(self.malformed(format!(
                "buffer id {bid} outside a ring of {} entries",
                self.entries
            )));
        }
        Ok(Some(bid))
    }

    fn lend(self: &Rc<Self>, bid: u16, offset: usize, len: usize) -> RxBuf {
        self.wanted_this_turn.set(self.wanted_this_turn.get() + 1);
        self.update_stats(|s| {
            s.taken += 1;
            s.in_use += 1;
        });
        RxBuf::from_ring(
            BufRing {
                inner: self.clone(),
            },
            bid,
            offset,
            len,
        )
    }

    fn take(self: &Rc<Self>, cqe: &Completion) -> io::Result<Option<RxBuf>> {
        let Some(bid) = self.selected(cqe)? else {
            return Ok(None);
        };
        if cqe.result() > self.buf_len as i32 {
            return Err(self.malformed(format!(
                "{} bytes in a {}-byte buffer",
                cqe.result(),
                self.buf_len
            )));
        }
        // A failed transfer consumes no entry (`io_kbuf_commit` in the kernel's
        // `io_uring/kbuf.c` returns early for a negative length): the kernel keeps the buffer.
        let Ok(len) = usize::try_from(cqe.result()) else {
            return Ok(None);
        };
        if !self.incremental {
            self.claim(bid)?;
            return Ok(Some(self.lend(bid, 0, len)));
        }
        // Incremental: the buffer stays in the kernel's ring (published) until a completion
        // without `F_BUF_MORE`, and the data sits after what earlier completions took from it.
        // Everything is checked before any state changes, so a malformed completion leaves the
        // buffer to the completions that really use it.
        if !self.published.borrow().contains(bid) {
            return Err(self.malformed(format!("buffer id {bid} is not in the kernel's ring")));
        }
        if len == 0 {
            // No data moves no incremental buffer on (`io_kbuf_commit` in the kernel's
            // `io_uring/kbuf.c`): the kernel keeps it, whatever the flags say.
            return Ok(None);
        }
        let mut inc = self.inc.borrow_mut();
        let state = &mut inc[bid as usize];
        let offset = state.offset as usize;
        if offset + len > self.buf_len {
            drop(inc);
            return Err(self.malformed(format!(
                "incremental data {offset}+{len} beyond a {}-byte buffer",
                self.buf_len
            )));
        }
        let done = !cqe.buffer_more();
        if done {
            // Cannot fail: `bid` is published, checked above.
            self.claim(bid)?;
        }
        state.offset += len as u32;
        state.refs += 1;
        state.done = done;
        drop(inc);
        Ok(Some(self.lend(bid, offset, len)))
    }

    /// Removes the entry holding `bid` from the published ones: the kernel consumed it.
    fn claim(&self, bid: u16) -> io::Result<()> {
        let claimed = self.published.borrow_mut().claim(bid);
        claimed.map_err(|e| self.malformed(e.to_string()))
    }

    fn take_bundle(self: &Rc<Self>, cqe: &Completion, out: &mut VecDeque<RxBuf>) -> io::Result<()> {
        let Some(first) = self.selected(cqe)? else {
            return Ok(());
        };
        if self.incremental {
            return Err(self.malformed("bundle completion on an incremental ring".into()));
        }
        // A bundle without data consumed no entry, even when the completion names the buffer
        // the kernel looked at (`io_bundle_nbufs` in the kernel's `io_uring/net.c` counts zero
        // buffers for no data). Taking one would publish a buffer the kernel still holds.
        let Ok(total) = usize::try_from(cqe.result()) else {
            return Ok(());
        };
        if total == 0 {
            return Ok(());
        }
        // Every entry holds `buf_len` bytes (`top_up` writes them so), and the kernel fills
        // them in ring order, so `total` bytes used this many consecutive entries.
        // The claim checks the whole run before handing out the first buffer.
        let count = total.div_ceil(self.buf_len);
        let mut left = total;
        let claimed = self.published.borrow_mut().claim_run(first, count, |bid| {
            let len = left.min(self.buf_len);
            out.push_back(self.lend(bid, 0, len));
            left -= len;
        });
        claimed.map_err(|e| self.malformed(format!("{} bytes: {e}", cqe.result())))
    }

    /// The bytes of buffer `bid` at `offset..offset + len`.
    pub(crate) fn bytes(&self, bid: u16, offset: usize, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && offset + len <= self.buf_len);
        // SAFETY: `bid < entries` and `offset + len <= buf_len` (validated when the buffer was
        // taken), so the range is inside `bufs`; the kernel wrote these bytes before posting
        // the completion and writes no more to them until the buffer is queued again, which
        // happens only after every `RxBuf` for it is gone.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid).add(offset), len) }
    }

    /// An `RxBuf` for `bid` was dropped.
    pub(crate) fn give_back(&self, bid: u16) {
        if self.incremental {
            let mut inc = self.inc.borrow_mut();
            let state = &mut inc[bid as usize];
            state.refs -= 1;
            if state.refs > 0 || !state.done {
                drop(inc);
                self.update_stats(|s| {
                    s.returned += 1;
                    s.in_use -= 1;
                });
                return;
            }
            *state = Incremental::default();
        }
        self.free.borrow_mut().push(bid);
        self.update_stats(|s| {
            s.returned += 1;
            s.in_use -= 1;
        });
        self.waiters.wake_all();
    }
}

impl Refill for RingInner {
    fn refill(&self) {
        self.top_up();
    }
}

impl Drop for RingInner {
    fn drop(&mut self) {
        if self.user_space {
            // Never registered: nothing but this pool uses the mappings.
            return;
        }
        let unregistered = match self.driver.try_borrow_mut() {
            Ok(mut driver) => driver.unregister_buf_ring(self.bgid),
            Err(_) => false,
        };
        if !unregistered {
            // The kernel may still select buffers from this group: never unmap them.
            self.ring.leak();
            self.bufs.leak();
        }
    }
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("group_id", &self.inner.bgid)
            .field("entries", &self.inner.entries)
            .field("buf_len", &self.inner.buf_len)
            .field("incremental", &self.inner.incremental)
            .field("stats", &self.stats())
            .finish()
    }
}

impl BufRing {
    pub(crate) fn inner(&self) -> &RingInner {
        &self.inner
    }
}

/// Property tests: completions are kernel-controlled input, so arbitrary results, flags and
/// buffer ids must never panic, never lend a buffer twice or one the kernel does not hold, and
/// never lose a buffer.
#[cfg(test)]
mod proptests {
    use std::collections::HashSet;

    use proptest::{prelude::*, test_runner::TestRunner};

    use super::*;
    use crate::op::cqe_flags;

    /// One step fed to a ring.
    #[derive(Debug, Clone)]
    enum Step {
        Take(Completion),
        Bundle(Completion),
        /// Drops the held `RxBuf` at this index (modulo the number held).
        Drop(usize),
        /// The once-per-turn refill.
        TopUp,
    }

    /// Completions biased towards plausible values: a buffer flag most of the time, ids in and
    /// out of the ring, results around the buffer size and negative errnos.
    fn completion(entries: u16, buf_len: usize) -> impl Strategy<Value = Completion> {
        let bid = prop_oneof![3 => 0..entries, 1 => any::<u16>()];
        let res = prop_oneof![
            3 => 0..=(2 * buf_len as i32),
            1 => -200..0i32,
            1 => any::<i32>(),
        ];
        let low_flags = any::<u16>().prop_map(|f| u32::from(f) & 0x803f);
        (res, bid, low_flags, prop::bool::weighted(0.85)).prop_map(|(res, bid, low, buffer)| {
            let mut flags = low & !cqe_flags::BUFFER;
            if buffer {
                flags |= cqe_flags::BUFFER;
            }
            Completion::new(
                res,
                flags | u32::from(bid) << cqe_flags::BUFFER_SHIFT,
                [0; 2],
            )
        })
    }

    fn steps(entries: u16, buf_len: usize) -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            4 => completion(entries, buf_len).prop_map(Step::Take),
            1 => completion(entries, buf_len).prop_map(Step::Bundle),
            2 => any::<usize>().prop_map(Step::Drop),
            1 => Just(Step::TopUp),
        ];
        prop::collection::vec(step, 0..64)
    }

    /// Where every buffer id is: no duplicates, nothing both free and in the kernel's ring,
    /// and no lent buffer free (it could be handed to the kernel while still read).
    fn check_partition(inner: &RingInner, held: &[RxBuf]) -> Result<(), TestCaseError> {
        let free = inner.free.borrow();
        let queued = inner.published.borrow().ids();
        let free_set: HashSet<u16> = free.iter().copied().collect();
        let queued_set: HashSet<u16> = queued.iter().copied().collect();
        prop_assert_eq!(free_set.len(), free.len(), "duplicate free ids {:?}", free);
        prop_assert_eq!(
            queued_set.len(),
            queued.len(),
            "duplicate queued {:?}",
            queued
        );
        prop_assert!(
            free_set.is_disjoint(&queued_set),
            "{:?} / {:?}",
            free,
            queued
        );
        prop_assert!(free.iter().chain(queued.iter()).all(|&b| b < inner.entries));
        for buf in held {
            let bid = buf.buffer_id().expect("a ring buffer");
            prop_assert!(!free_set.contains(&bid), "lent buffer {} is free", bid);
            if !inner.incremental {
                prop_assert!(!queued_set.contains(&bid), "lent buffer {} is queued", bid);
            }
        }
        let in_use = inner.stats.get().in_use;
        prop_assert_eq!(in_use, held.len());
        Ok(())
    }

    fn run_steps(ring: &BufRing, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let inner = &*ring.inner;
        let mut held: Vec<RxBuf> = Vec::new();
        for step in steps {
            match step {
                Step::Take(cqe) => match ring.take(&cqe) {
                    Ok(Some(buf)) => held.push(buf),
                    // No buffer named, or a transfer that moved nothing (an error, or no
                    // data on an incremental ring): the kernel kept the buffer.
                    Ok(None) => prop_assert!(
                        cqe.buffer_id().is_none()
                            || cqe.result() < 0
                            || (inner.incremental && cqe.result() == 0)
                    ),
                    Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
                },
                Step::Bundle(cqe) => {
                    let mut out = VecDeque::new();
                    let res = ring.take_bundle(&cqe, &mut out);
                    if let Err(e) = res {
                        prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    }
                    held.extend(out);
                }
                Step::Drop(i) => {
                    if !held.is_empty() {
                        let i = i % held.len();
                        drop(held.swap_remove(i));
                    }
                }
                Step::TopUp => inner.top_up(),
            }
            for buf in &held {
                // Reads the bytes: out-of-bounds views would trip `bytes`'s assertion.
                prop_assert!(buf.len() <= inner.buf_len);
                prop_assert_eq!(buf.iter().count(), buf.len());
            }
            check_partition(inner, &held)?;
        }
        drop(held);
        check_partition(inner, &[])?;
        // Nothing leaked: every buffer is free or in the kernel's ring again.
        let accounted = inner.free.borrow().len() + inner.published.borrow().len();
        prop_assert_eq!(accounted, inner.entries as usize);
        Ok(())
    }

    /// `cases` cases, no regression files (a failure prints the minimal input instead).
    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(cases)
        }
    }

    /// Whether this kernel builds incremental rings; records a skip of `test` if not.
    fn incremental_supported(test: &str) -> bool {
        let probe = BufRing::builder().entries(1).incremental(true).build();
        let supported = probe.unwrap().is_incremental();
        if !supported {
            skip(test, "this kernel rejects IOU_PBUF_RING_INC (Linux 6.12)");
        }
        supported
    }

    fn check_ring(incremental: bool, cases: u32) {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            if incremental
                && !incremental_supported(concat!(
                    module_path!(),
                    "::arbitrary_completions_keep_the_incremental_ring_accounted"
                ))
            {
                return;
            }
            let mut runner = TestRunner::new(config(cases));
            let strategy = (prop_oneof![Just(4u16), Just(16u16)], 1usize..=256).prop_flat_map(
                |(entries, buf_len)| (Just(entries), Just(buf_len), steps(entries, buf_len)),
            );
            runner
                .run(&strategy, |(entries, buf_len, steps)| {
                    let ring = BufRing::builder()
                        .entries(u32::from(entries))
                        .buf_len(buf_len)
                        .incremental(incremental)
                        .build()
                        .unwrap();
                    run_steps(&ring, steps)
                })
                .unwrap();
        });
    }

    #[test]
    fn arbitrary_completions_keep_the_whole_buffer_ring_accounted() {
        check_ring(false, 1000);
    }

    #[test]
    fn arbitrary_completions_keep_the_incremental_ring_accounted() {
        check_ring(true, 1000);
    }

    /// Records a skipped check the way the integration tests do (`integration_tests::skip`):
    /// prints it and appends `test: reason` to the file named by `RUNTIME_SKIP_LOG`.
    fn skip(test: &str, reason: &str) {
        use std::io::Write;

        let line = format!("{test}: {reason}\n");
        print!("skipped {line}");
        if let Some(path) = std::env::var_os("RUNTIME_SKIP_LOG") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("RUNTIME_SKIP_LOG names a writable file");
            let written = file
                .write(line.as_bytes())
                .expect("append to RUNTIME_SKIP_LOG");
            assert_eq!(written, line.len(), "short write to RUNTIME_SKIP_LOG");
        }
    }

    /// Fills every buffer with a pattern that identifies the buffer and the position in it.
    fn fill_pattern(inner: &RingInner) {
        for bid in 0..inner.entries {
            for i in 0..inner.buf_len {
                // SAFETY: `bid < entries` and `i < buf_len`, so the byte is inside `bufs`; no
                // request selects from this group, so the kernel does not write it.
                unsafe { inner.buf_ptr(bid).add(i).write(pattern(bid, i)) };
            }
        }
    }

    fn pattern(bid: u16, i: usize) -> u8 {
        (bid as usize * 31 + i * 7) as u8
    }

    /// Well-formed completions, as the kernel posts them, hand out the buffers in ring order
    /// with the bytes received: whole buffers, or, with incremental consumption, consecutive
    /// pieces of one buffer (`F_BUF_MORE` on all but the last).
    fn round_trip(incremental: bool) {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            if incremental
                && !incremental_supported(concat!(
                    module_path!(),
                    "::well_formed_incremental_completions_round_trip"
                ))
            {
                return;
            }
            let mut runner = TestRunner::new(config(300));
            // Per message: the lengths of its pieces (one piece without incremental rings). A
            // piece moves at least one byte: a completion without data takes no buffer.
            let messages = prop::collection::vec(prop::collection::vec(1usize..=21, 1..4), 1..40);
            runner
                .run(&messages, |messages| {
                    let ring = BufRing::builder()
                        .entries(8)
                        .buf_len(64)
                        .incremental(incremental)
                        .build()
                        .unwrap();
                    prop_assert_eq!(ring.is_incremental(), incremental);
                    fill_pattern(&ring.inner);
                    for mut pieces in messages {
                        if !incremental {
                            pieces.truncate(1);
                        }
                        let bid = *ring
                            .inner
                            .published
                            .borrow()
                            .ids()
                            .first()
                            .expect("a queued buffer");
                        let mut offset = 0;
                        let mut bufs = Vec::new();
                        for (i, &len) in pieces.iter().enumerate() {
                            let mut flags =
                                cqe_flags::BUFFER | u32::from(bid) << cqe_flags::BUFFER_SHIFT;
                            if i + 1 < pieces.len() {
                                flags |= cqe_flags::BUF_MORE;
                            }
                            let cqe = Completion::new(len as i32, flags, [0; 2]);
                            let buf = ring.take(&cqe).unwrap().expect("a buffer");
                            prop_assert_eq!(buf.buffer_id(), Some(bid));
                            let expected: Vec<u8> =
                                (offset..offset + len).map(|i| pattern(bid, i)).collect();
                            prop_assert_eq!(&buf[..], &expected[..]);
                            offset += len;
                            bufs.push(buf);
                        }
                        prop_assert!(!ring.inner.published.borrow().contains(bid));
                        drop(bufs);
                        prop_assert!(ring.inner.free.borrow().contains(&bid));
                        ring.inner.top_up();
                    }
                    let stats = ring.stats();
                    prop_assert_eq!((stats.malformed, stats.in_use), (0, 0));
                    Ok(())
                })
                .unwrap();
        });
    }

    /// Regression: on an incremental ring, a second completion for a buffer the kernel had
    /// already finished counted a reference that no `RxBuf` held, so the buffer never came
    /// back (and one for a free buffer lent it out while it could be refilled).
    #[test]
    fn incremental_completions_for_buffers_not_in_the_ring_are_rejected() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            if !incremental_supported(concat!(
                module_path!(),
                "::incremental_completions_for_buffers_not_in_the_ring_are_rejected"
            )) {
                return;
            }
            let ring = BufRing::builder()
                .entries(4)
                .buf_len(64)
                .incremental(true)
                .build()
                .unwrap();
            let done = Completion::new(8, cqe_flags::BUFFER, [0; 2]);
            let buf = ring.take(&done).unwrap().expect("buffer 0");
            let err = ring.take(&done).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            drop(buf);
            assert!(
                ring.inner.free.borrow().contains(&0),
                "buffer 0 did not come back"
            );
            // Buffer 0 is free now, not the kernel's: a completion naming it is malformed.
            let more = Completion::new(8, cqe_flags::BUFFER | cqe_flags::BUF_MORE, [0; 2]);
            assert!(ring.take(&more).is_err());
            assert_eq!(ring.stats().in_use, 0);
        });
    }

    #[test]
    fn well_formed_completions_round_trip() {
        round_trip(false);
    }

    #[test]
    fn well_formed_incremental_completions_round_trip() {
        round_trip(true);
    }
}

#[cfg(test)]
mod refill_tests {
    use super::*;

    /// Many receives refused in one turn (`ENOBUFS`, e.g. 64 connections whose data arrived
    /// together) raise the refill target by their number, not to the whole pool: publishing
    /// every buffer would let the kernel, which takes entries in ring order, touch (and make
    /// resident) the pages of all of them.
    #[test]
    fn a_turn_of_refusals_publishes_what_they_asked_for_not_the_pool() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let ring = BufRing::builder()
                .entries(4096)
                .buf_len(64)
                .build()
                .unwrap();
            assert_eq!(ring.stats().in_ring, MIN_IN_RING);
            for _ in 0..64 {
                ring.note_exhausted();
            }
            ring.inner().top_up();
            let in_ring = ring.stats().in_ring;
            assert!(
                (64..=128).contains(&in_ring),
                "64 refusals in one turn published {in_ring} of 4096 buffers"
            );
            assert_eq!(ring.stats().exhausted, 64);
        });
    }
}
