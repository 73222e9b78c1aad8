//! The driver: one io_uring plus the table of operations in flight on it.
//!
//! # Invariants
//!
//! - Every SQE the driver queues is either in the SQ, in `backlog` (SQ was full: it is pushed on
//!   the next turn, in order), or consumed by the kernel. No SQE is ever dropped.
//! - Every operation SQE has a slot (`driver::slot`) that lives until its final CQE is consumed.
//!   `in_flight` counts slots whose final CQE has not arrived: the kernel may still touch their
//!   resources.
//! - Internal SQEs use reserved `user_data` values whose generation (`u32::MAX`) slots never get:
//!   `CANCEL` (their CQEs are ignored) and `WAKE` (the eventfd read that lets other threads
//!   interrupt a blocking enter; re-armed whenever it completes, until shutdown).
//! - The driver never runs user code while borrowed: wakers and parked resources with a final
//!   CQE are returned as [`Action`]s for the caller to run after the borrow ends.
//! - Skip-success SQEs (`OpCode::skip_success`) post no CQE when they succeed. Their keys wait
//!   in `skip_pending` until an enter has consumed every queued SQE and every CQE it produced
//!   has been routed (CQ empty, no overflow); a slot that got no final CQE by then succeeded,
//!   and `resolve_skipped` delivers the synthesized completion. The loop never blocks while a
//!   pending one is *urgent* (someone waits for it); a lazily detached one (`detach_lazy`:
//!   nobody waits) lets the loop block, and its outcome is delivered after that enter.
//! - Every routed CQE is stamped with a strictly increasing sequence number.
//! - After `begin_shutdown`, no new operation is accepted (`submit` returns `None`). Slots whose
//!   final CQE never arrives before the shutdown deadline have their resources leaked, never
//!   freed, because the kernel may still write to them.

mod ring;
mod setup_error;
pub(crate) mod slot;

use std::{collections::VecDeque, io, sync::Arc, task::Context, task::Poll, task::Waker};

use io_uring::{opcode, squeue, types};
use slab::Slab;

pub(crate) use ring::{RingConfig, Wait};
pub(crate) use setup_error::kernel_release;
use slot::{Owner, Parked, Slot};

use crate::{capabilities::Capabilities, op::Completion, wake::Remote};

/// `user_data` of `ASYNC_CANCEL` SQEs; their CQEs carry nothing we need.
const CANCEL: u64 = u64::MAX;
/// `user_data` of the eventfd read that wakes a blocking enter.
const WAKE: u64 = u64::MAX - 1;
/// `user_data` of the CQE a `MSG_RING` kick from another ring posts here.
const MSG_WAKE: u64 = u64::MAX - 2;
/// Base of the `user_data` of our own `MSG_RING` SQEs: the low bits index `msg_targets`.
const MSG_SENT: u64 = (RESERVED_GENERATION as u64) << 32 | 1 << 31;
/// Generations never handed to slots, so slot `user_data` cannot collide with the above.
const RESERVED_GENERATION: u32 = u32::MAX;

/// Work the caller runs once the driver borrow has ended.
pub(crate) enum Action {
    Nothing,
    Wake(Waker),
    Finish(Box<dyn Parked>, Completion),
}

/// Counters exposed through `runtime::Metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DriverStats {
    pub(crate) submitted: u64,
    pub(crate) completions: u64,
    pub(crate) enters: u64,
    pub(crate) stray_completions: u64,
    pub(crate) backlogged: u64,
    pub(crate) leaked: u64,
    pub(crate) cq_overflows: u64,
    pub(crate) msg_ring_kicks: u64,
    pub(crate) msg_ring_fallbacks: u64,
}

/// A `MSG_RING` kick in flight: its target, to fall back to the eventfd on failure, and the
/// fd its SQE names, kept open until the kick's CQE so the number cannot be reused by another
/// ring before the kernel resolves it.
struct Kick {
    target: Arc<Remote>,
    _ring: Arc<std::os::fd::OwnedFd>,
}

/// What becomes of an operation whose owner lets go of it (`Driver::park`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detach {
    /// Its future was dropped: cancel the request.
    Cancel,
    /// Handed over to finish on its own (`Op::detach`), with nobody waiting for it.
    RunLazily,
}

/// The eventfd read kept armed for cross-thread wake-ups.
struct WakeRead {
    /// Heap buffer the kernel writes the eventfd counter into.
    buf: Box<[u8; 8]>,
    armed: bool,
}

/// Slots in the ring's fixed-buffer table (the kernel's limit is 16384).
pub(crate) const FIXED_BUFFER_SLOTS: usize = 4096;

pub(crate) struct Driver {
    ring: ring::Ring,
    /// Which fixed-buffer slots are taken; empty until the first registration.
    fixed_slots: Vec<bool>,
    /// Provided-buffer group ids in use.
    buf_groups: Vec<u16>,
    /// Whether the kernel has `IORING_OP_MSG_RING`.
    msg_ring: bool,
    /// Our `MSG_RING` kicks in flight. Declared after `ring`, so that on drop the ring (and
    /// any kick SQE still in its SQ) is gone before the target fds the kicks name are closed.
    msg_targets: Slab<Kick>,
    slots: Slab<Slot>,
    next_generation: u32,
    backlog: VecDeque<squeue::Entry>,
    remote: Arc<Remote>,
    wake: WakeRead,
    in_flight: usize,
    parked: usize,
    /// Shutdown began: no new operation is accepted.
    closed: bool,
    /// Shutdown's deadline passed (`leak_unfinished`): the kernel may still use what any
    /// unfinished operation owns, so a future dropped from now on leaks its resources.
    gave_up: bool,
    skip_pending: Vec<u64>,
    /// Of `skip_pending`, those whose outcome someone waits for: the loop must not block
    /// while any is pending. Lazy ones (`detach_lazy`) only make their outcome known later.
    urgent_skips: usize,
    next_sequence: u64,
    stats: DriverStats,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("ring", &self.ring)
            .field("in_flight", &self.in_flight)
            .field("parked", &self.parked)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub(crate) fn new(
        config: &RingConfig,
        remote: Arc<Remote>,
    ) -> io::Result<(Driver, Capabilities)> {
        let (ring, caps) = ring::Ring::new(config)?;
        let mut driver = Driver {
            ring,
            fixed_slots: Vec::new(),
            buf_groups: Vec::new(),
            msg_ring: caps.supports_opcode(opcode::MsgRingData::CODE),
            msg_targets: Slab::new(),
            slots: Slab::with_capacity(config.entries as usize),
            next_generation: 0,
            backlog: VecDeque::new(),
            remote,
            wake: WakeRead {
                buf: Box::new([0; 8]),
                armed: false,
            },
            in_flight: 0,
            parked: 0,
            closed: false,
            gave_up: false,
            skip_pending: Vec::new(),
            urgent_skips: 0,
            next_sequence: 1,
            stats: DriverStats::default(),
        };
        driver.arm_wake();
        Ok((driver, caps))
    }

    /// Queues an operation's SQE and returns its `user_data` key, or `None` after shutdown.
    /// `skip_success` is the result to report if the (skip-success) SQE posts no CQE.
    pub(crate) fn submit(&mut self, sqe: squeue::Entry, skip_success: Option<i32>) -> Option<u64> {
        if self.closed {
            return None;
        }
        let generation = self.next_generation;
        self.next_generation = match generation.wrapping_add(1) {
            RESERVED_GENERATION => 0,
            g => g,
        };
        let entry = self.slots.vacant_entry();
        let key = slot::encode(entry.key(), generation);
        let mut slot = Slot::new(generation);
        slot.skip_success = skip_success;
        entry.insert(slot);
        if skip_success.is_some() {
            self.skip_pending.push(key);
            self.urgent_skips += 1;
        }
        self.in_flight += 1;
        self.stats.submitted += 1;
        self.queue_sqe(sqe.user_data(key));
        Some(key)
    }

    /// Hands the owner its next CQE, or registers its waker. The final CQE removes the slot.
    pub(crate) fn poll_cqe(&mut self, key: u64, cx: &mut Context<'_>) -> Poll<Completion> {
        let (index, generation) = slot::decode(key);
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => unreachable!("an operation polled its slot after the slot was released"),
        };
        if let Some(cqe) = slot.cqes.pop() {
            if !cqe.has_more() {
                self.slots.remove(index);
            }
            return Poll::Ready(cqe);
        }
        if let Owner::Future(waker) = &mut slot.owner {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    /// The owner of `key` is gone: park its resources until the final CQE and cancel it.
    ///
    /// Returns the resources and the final CQE when that CQE had already arrived; the caller
    /// releases them after ending the borrow.
    pub(crate) fn detach(
        &mut self,
        key: u64,
        parked: Box<dyn Parked>,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        self.park(key, parked, Detach::Cancel)
    }

    /// The owner of `key` hands it over to run to its end without a future: its resources are
    /// parked until the final CQE, as for [`detach`](Driver::detach), but nothing is cancelled.
    /// A pending skip-success request detached this way stops holding the loop awake (no task
    /// waits for its outcome; it is learnt after a later enter) until
    /// [`expedite`](Driver::expedite) says someone waits again.
    pub(crate) fn detach_lazy(
        &mut self,
        key: u64,
        parked: Box<dyn Parked>,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        self.park(key, parked, Detach::RunLazily)
    }

    fn park(
        &mut self,
        key: u64,
        mut parked: Box<dyn Parked>,
        how: Detach,
    ) -> Option<(Box<dyn Parked>, Completion)> {
        let (index, generation) = slot::decode(key);
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => unreachable!("an operation detached from its slot after the slot was released"),
        };
        while let Some(cqe) = slot.cqes.pop() {
            if cqe.has_more() {
                parked.on_more(cqe);
            } else {
                self.slots.remove(index);
                return Some((parked, cqe));
            }
        }
        if self.gave_up {
            // Shutdown gave up waiting for this operation (`leak_unfinished` already stopped
            // counting it as in flight): the kernel may still use it.
            self.slots.remove(index);
            self.stats.leaked += 1;
            std::mem::forget(parked);
            return None;
        }
        // Detached during the shutdown drain too: park it like any other, so that its final
        // CQE releases it and counts it out (shutdown ends as soon as the kernel released all).
        if how == Detach::RunLazily
            && slot.skip_success.is_some()
            && !slot.finished
            && !slot.lazy_skip
        {
            slot.lazy_skip = true;
            self.urgent_skips -= 1;
        }
        slot.owner = Owner::Parked(parked);
        self.parked += 1;
        if how == Detach::Cancel {
            self.queue_sqe(opcode::AsyncCancel::new(key).build().user_data(CANCEL));
        }
        None
    }

    /// Someone now waits for the outcome of the lazy skip-success request `key` (see
    /// [`detach_lazy`](Driver::detach_lazy)): the loop must not block before it is known.
    pub(crate) fn expedite(&mut self, key: u64) {
        let (index, generation) = slot::decode(key);
        if let Some(slot) = self.slots.get_mut(index)
            && slot.generation == generation
            && slot.lazy_skip
            && !slot.finished
        {
            slot.lazy_skip = false;
            self.urgent_skips += 1;
        }
    }

    /// Registers buffers as consecutive fixed-buffer slots; returns the first slot's index.
    ///
    /// # Safety
    ///
    /// The memory each `iovec` describes must stay valid until `unregister_buffers` clears the
    /// slots (or the ring closes), and no operation may use a slot after it was cleared.
    pub(crate) unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> io::Result<u16> {
        if self.fixed_slots.is_empty() {
            self.ring.register_buffer_table(FIXED_BUFFER_SLOTS as u32)?;
            self.fixed_slots = vec![false; FIXED_BUFFER_SLOTS];
        }
        let n = iovecs.len();
        let base = FIXED_BUFFER_SLOTS
            .checked_sub(n)
            .and_then(|last| {
                (0..=last).find(|&b| self.fixed_slots[b..b + n].iter().all(|used| !used))
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "no {n} consecutive free slots left in the ring's table of \
                         {FIXED_BUFFER_SLOTS} fixed buffers"
                    ),
                )
            })?;
        // SAFETY: forwarded to the caller; the slots were free.
        unsafe { self.ring.update_buffers(base as u32, iovecs)? };
        self.fixed_slots[base..base + n].fill(true);
        Ok(base as u16)
    }

    /// Clears fixed-buffer slots `base..base + n`. Returns whether it worked: only then may
    /// their memory be freed (otherwise the kernel still has it registered).
    #[must_use]
    pub(crate) fn unregister_buffers(&mut self, base: u16, n: usize) -> bool {
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            n
        ];
        // SAFETY: empty iovecs describe no memory; they only clear the slots.
        if unsafe { self.ring.update_buffers(u32::from(base), &empty) }.is_ok() {
            let base = usize::from(base);
            self.fixed_slots[base..base + n].fill(false);
            true
        } else {
            false
        }
    }

    /// Registers a provided-buffer ring under a free group id and returns the id.
    ///
    /// # Safety
    ///
    /// As `Ring::register_buf_ring`: the ring memory and every buffer it names stay valid until
    /// `unregister_buf_ring(id)` succeeds.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        ring_addr: u64,
        entries: u16,
        flags: u16,
    ) -> io::Result<u16> {
        let bgid = (0..u16::MAX)
            .find(|id| !self.buf_groups.contains(id))
            .ok_or_else(|| io::Error::other("no free provided-buffer group id"))?;
        // SAFETY: forwarded to the caller.
        unsafe {
            self.ring
                .register_buf_ring(ring_addr, entries, bgid, flags)?
        };
        self.buf_groups.push(bgid);
        Ok(bgid)
    }

    /// Unregisters group `bgid`; only on success may its memory be freed.
    #[must_use]
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) -> bool {
        if self.ring.unregister_buf_ring(bgid).is_ok() {
            self.buf_groups.retain(|&g| g != bgid);
            true
        } else {
            false
        }
    }

    /// Queues an `IORING_OP_MSG_RING` that posts a wake-up CQE into the ring `target_ring`
    /// refers to; `target_ring` stays open until the kick's CQE. Returns false when the kernel
    /// lacks it or the driver is shutting down.
    pub(crate) fn send_msg_ring(
        &mut self,
        target_ring: Arc<std::os::fd::OwnedFd>,
        target: Arc<Remote>,
    ) -> bool {
        use std::os::fd::AsRawFd;
        if !self.msg_ring || self.closed || self.msg_targets.len() >= (1 << 30) {
            return false;
        }
        let fd = target_ring.as_raw_fd();
        let index = self.msg_targets.insert(Kick {
            target,
            _ring: target_ring,
        });
        let sqe = opcode::MsgRingData::new(types::Fd(fd), 0, MSG_WAKE, None)
            .build()
            .user_data(MSG_SENT | index as u64);
        self.stats.msg_ring_kicks += 1;
        self.queue_sqe(sqe);
        true
    }

    /// The ring fd, for registrations made with raw syscalls.
    pub(crate) fn ring_fd(&self) -> std::os::fd::RawFd {
        self.ring.raw_fd()
    }

    /// Queues a cancellation of `key`'s request, which stays owned by its future.
    pub(crate) fn cancel(&mut self, key: u64) {
        let (index, generation) = slot::decode(key);
        if self
            .slots
            .get(index)
            .is_some_and(|s| s.generation == generation && !s.finished)
        {
            self.queue_sqe(opcode::AsyncCancel::new(key).build().user_data(CANCEL));
        }
    }

    /// Submits queued SQEs and reaps completions, blocking as `wait` allows.
    pub(crate) fn enter(&mut self, mut wait: Wait) -> io::Result<()> {
        self.flush_backlog()?;
        if !self.ring.cq_is_empty() {
            wait = Wait::No;
        }
        if matches!(wait, Wait::No)
            && self.ring.sq_len() == 0
            && !self.ring.has_pending_kernel_work()
        {
            return Ok(());
        }
        self.stats.enters += 1;
        self.ring.enter(wait).map(drop)
    }

    /// Whether overflowed CQEs wait in the kernel for a GETEVENTS enter (counted).
    pub(crate) fn cq_overflowed(&mut self) -> bool {
        let overflowed = self.ring.cq_overflowed();
        if overflowed {
            self.stats.cq_overflows += 1;
        }
        overflowed
    }

    /// Copies up to `max` CQEs out of the ring into `out` as (user_data, completion).
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, Completion)>, max: usize) {
        self.ring.reap(out, max);
    }

    /// Whether any skip-success operation, urgent or lazy, waits to learn its outcome.
    pub(crate) fn has_any_skip_pending(&self) -> bool {
        !self.skip_pending.is_empty()
    }

    /// Whether skip-success operations wait to learn their outcome; the loop must not block.
    pub(crate) fn has_skip_pending(&self) -> bool {
        self.urgent_skips > 0
    }

    /// Synthesizes the completions of skip-success operations that are known to have succeeded:
    /// every queued SQE has been consumed and every CQE produced so far has been reaped, and
    /// none was a final CQE for them. Otherwise leaves them pending for a later turn.
    pub(crate) fn resolve_skipped(&mut self, out: &mut Vec<(u64, Completion)>) {
        if self.skip_pending.is_empty()
            || !self.backlog.is_empty()
            || self.ring.sq_len() != 0
            || !self.ring.cq_is_empty()
            || self.ring.cq_overflowed()
        {
            return;
        }
        self.urgent_skips = 0;
        for key in self.skip_pending.drain(..) {
            let (index, generation) = slot::decode(key);
            if let Some(slot) = self.slots.get(index)
                && slot.generation == generation
                && !slot.finished
                && let Some(result) = slot.skip_success
            {
                out.push((key, Completion::new(result, 0, [0; 2])));
            }
        }
    }

    /// Delivers one CQE to its slot and says what the caller must do next.
    pub(crate) fn route(&mut self, user_data: u64, cqe: Completion) -> Action {
        self.stats.completions += 1;
        let cqe = cqe.with_sequence(self.next_sequence);
        self.next_sequence += 1;
        match user_data {
            CANCEL | MSG_WAKE => return Action::Nothing,
            WAKE => {
                self.wake.armed = false;
                self.arm_wake();
                return Action::Nothing;
            }
            ud if ud & MSG_SENT == MSG_SENT => {
                let index = (ud & !MSG_SENT) as usize;
                if let Some(kick) = self.msg_targets.try_remove(index)
                    && cqe.result() < 0
                {
                    // The target ring is gone or refused: kick it the other way.
                    self.stats.msg_ring_fallbacks += 1;
                    kick.target.write_eventfd();
                }
                return Action::Nothing;
            }
            _ => {}
        }
        let (index, generation) = slot::decode(user_data);
        let Some(slot) = self
            .slots
            .get_mut(index)
            .filter(|s| s.generation == generation && !s.finished)
        else {
            // Not ours (or a CQE after the final one, which a correct kernel never posts).
            self.stats.stray_completions += 1;
            return Action::Nothing;
        };
        let is_final = !cqe.has_more();
        if is_final {
            slot.finished = true;
            self.in_flight -= 1;
        }
        match &mut slot.owner {
            Owner::Future(waker) => {
                slot.cqes.push(cqe);
                waker.take().map_or(Action::Nothing, Action::Wake)
            }
            Owner::Parked(parked) if !is_final => {
                parked.on_more(cqe);
                Action::Nothing
            }
            Owner::Parked(_) => {
                let slot = self.slots.remove(index);
                self.parked -= 1;
                match slot.owner {
                    Owner::Parked(parked) => Action::Finish(parked, cqe),
                    Owner::Future(_) => unreachable!("owner matched as parked just above"),
                }
            }
        }
    }

    /// Stops accepting operations and cancels every one in flight, including the wake read.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let keys: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(i, s)| slot::encode(i, s.generation))
            .collect();
        for key in keys {
            self.queue_sqe(opcode::AsyncCancel::new(key).build().user_data(CANCEL));
        }
        if self.wake.armed {
            self.queue_sqe(opcode::AsyncCancel::new(WAKE).build().user_data(CANCEL));
        }
    }

    /// Whether the kernel may still touch memory owned by this driver or its operations.
    pub(crate) fn has_unfinished(&self) -> bool {
        self.in_flight > 0 || self.wake.armed || !self.backlog.is_empty()
    }

    /// Gives up on operations the kernel did not finish: their memory is leaked, never freed.
    pub(crate) fn leak_unfinished(&mut self) {
        self.gave_up = true;
        for (_, slot) in self.slots.iter_mut().filter(|(_, s)| !s.finished) {
            if let Owner::Parked(_) = slot.owner {
                let Owner::Parked(parked) = std::mem::replace(&mut slot.owner, Owner::Future(None))
                else {
                    unreachable!("owner matched as parked just above")
                };
                std::mem::forget(parked);
                self.stats.leaked += 1;
            }
            // Slots still owned by a future stay: when it is dropped, `detach` sees `gave_up`
            // and leaks its resources; when it is polled, it stays pending.
        }
        if self.wake.armed {
            let buf = std::mem::replace(&mut self.wake.buf, Box::new([0; 8]));
            Box::leak(buf);
            self.wake.armed = false;
        }
        self.in_flight = 0;
        self.backlog.clear();
        self.skip_pending.clear();
        self.urgent_skips = 0;
    }

    pub(crate) fn stats(&self) -> (DriverStats, usize, usize) {
        (self.stats, self.in_flight, self.parked)
    }

    fn arm_wake(&mut self) {
        if self.closed || self.wake.armed {
            return;
        }
        self.wake.armed = true;
        let sqe = opcode::Read::new(
            types::Fd(self.remote.eventfd()),
            self.wake.buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.queue_sqe(sqe);
    }

    /// Pushes an SQE, flushing the SQ to the kernel once if it is full; if it is still full,
    /// keeps the SQE in the backlog for the next turn. Order is preserved.
    fn queue_sqe(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            if self.ring.push(&sqe).is_ok() {
                return;
            }
            // SQ full: hand the queued SQEs to the kernel now, then retry.
            self.stats.enters += 1;
            if self.ring.enter(Wait::No).is_ok() && self.ring.push(&sqe).is_ok() {
                return;
            }
        }
        self.stats.backlogged += 1;
        self.backlog.push_back(sqe);
    }

    /// Moves backlogged SQEs into the SQ, entering the kernel as often as needed.
    fn flush_backlog(&mut self) -> io::Result<()> {
        while let Some(sqe) = self.backlog.front() {
            if self.ring.push(sqe).is_ok() {
                self.backlog.pop_front();
                continue;
            }
            self.stats.enters += 1;
            let consumed = self.ring.enter(Wait::No)?;
            if consumed == 0 {
                // The kernel took nothing (e.g. transient EAGAIN); retry on the next turn.
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The runtime's shutdown normally finished every operation; if not, never free memory
        // the kernel may still write (the ring itself is closed right after this).
        if self.has_unfinished() {
            self.leak_unfinished();
        }
    }
}
