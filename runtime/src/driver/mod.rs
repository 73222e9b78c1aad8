//! The driver: one io_uring, the table of operations in flight on it, and everything that
//! moves an operation from its SQE to its final CQE. Where io_uring cannot be used, the same
//! driver runs on an epoll engine instead (`Engine::Epoll`; `epoll.rs`, `readiness.rs`), and
//! operations are done by their own non-blocking system calls. It knows nothing of tasks, timers,
//! buffer pools or the builder: the layers above call it, never the other way round.
//!
//! # Invariants
//!
//! - Every SQE the driver queues is either in the SQ, in `backlog` (SQ was full: it is pushed on
//!   the next turn, in order), or consumed by the kernel. No SQE is ever dropped.
//! - Every operation SQE has a slot in the op table whose [`Lifecycle`](lifecycle::Lifecycle)
//!   lives until its final CQE is consumed. `in_flight` counts slots whose final CQE has not
//!   arrived: the kernel may still touch their resources. `parked` counts slots whose owner let
//!   go (`Lifecycle::Parked`).
//! - Internal SQEs use reserved `user_data` values whose generation (`u32::MAX`) slots never get:
//!   `CANCEL` (their CQEs are ignored), `WAKE` (the eventfd read that lets other threads
//!   interrupt a blocking enter; re-armed whenever it completes, until shutdown), `MSG_WAKE`
//!   (a kick another ring posted here), `MSG_SENT | i` (our own kick `i`, see `kick`) and
//!   `ALARM | g` (the timer that ends a wait for a deadline, see `alarm`).
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
//!
//! # Files
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the `Driver` struct, the SQ backlog, the wake read |
//! | `alarm.rs` | `Alarm`: one kernel timer kept armed, so a wait for a deadline has no timeout |
//! | `lifecycle.rs` | the `Lifecycle` enum: submit, poll, detach, cancel, complete one slot |
//! | `dispatch.rs` | enter, reap, CQ-overflow flush, routing, skip-success resolution |
//! | `shutdown.rs` | the shutdown drain and the leak of what the kernel kept |
//! | `kick.rs` | `KickTarget`: waking another ring (`MSG_RING`, eventfd fallback) |
//! | `register.rs` | fixed buffers, provided-buffer rings, values that outlive the ring |
//! | `files.rs` | the registered file table (direct descriptors) and the closes of its slots |
//! | `napi.rs` | NAPI busy polling: `IORING_REGISTER_NAPI`, unregistered at shutdown |
//! | `setup.rs` | `RingMode`, `RingConfig`, setup-flag fallbacks, the probe (`RingInfo`) |
//! | `ring.rs` | the only user of `io_uring::IoUring`: push, enter, reap |
//! | `completion.rs` | `Completion`, one CQE copied out of the ring |
//! | `epoll.rs` | `Poller`: the epoll engine, one edge-triggered instance, the fd table, waiters |
//! | `readiness.rs` | the driver's side of the epoll engine: prepare, stamp, wait, park, route |
//!
//! # One read, from the call to its CQE and back
//!
//! `TcpStream::read` runs through five files, in order:
//!
//! 1. `net/src/tcp/stream.rs`: `TcpStream::read`, the public call, hands the socket and the
//!    buffer to the byte-stream code shared with Unix streams.
//! 2. `net/src/stream.rs`: `read` serves bytes rescued from an abandoned receive first;
//!    otherwise it awaits a `Recv` inside `RescueAware`, which cancels it if bytes are
//!    rescued meanwhile.
//! 3. `net/src/op/stream.rs`: `Recv`, the op: its SQE (`OpCode::build`) and what its CQE
//!    means (`OpCode::complete`: bytes marked initialized, the buffer handed back).
//! 4. `runtime/src/op/future.rs`: `Op::poll`. The first poll builds the SQE and calls
//!    [`Driver::submit`]; every poll then asks [`Driver::poll_cqe`] for the CQE.
//! 5. `driver/lifecycle.rs`: the op's slot, from `submit` (`Waiting`, the waker stored by
//!    `poll_cqe`) to `complete_slot` (`Finished`, the waker returned to be run) to the
//!    `poll_cqe` that takes the CQE and removes the slot.
//!
//! Underneath, once per loop turn for every op at once (`runtime/src/runtime.rs`),
//! `dispatch.rs` enters the ring (`ring.rs`: the SQ goes to the kernel, the CQ comes back)
//! and routes each CQE to its slot with `complete_slot`.
//!
//! # Driving it without a runtime
//!
//! Nothing here needs a `Runtime`: `Driver::new` takes ring options and the eventfd to keep a
//! wake read on, and `submit` / `enter` / [`dispatch::dispatch`] / `poll_cqe` /
//! [`shutdown::drain`] are all a test needs (see `driver/tests.rs`). Put in this thread's
//! [`CURRENT`] slot, it also runs `Op` futures polled by hand (see `op/tests.rs`).

mod alarm;
mod completion;
mod dispatch;
mod epoll;
mod files;
mod kick;
mod lifecycle;
mod napi;
mod readiness;
mod register;
mod ring;
mod setup;
mod setup_error;
mod shutdown;
#[cfg(test)]
mod tests;

use std::{
    any::Any,
    cell::{Cell, RefCell},
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, OwnedFd},
    rc::{Rc, Weak},
    sync::Arc,
    task::Waker,
};

use io_uring::{opcode, squeue, types};
use slab::Slab;

use crate::current;

pub use completion::{Completion, cqe_flags};
pub(crate) use dispatch::{DISPATCH_BATCH, dispatch};
pub use epoll::Interest;
pub(crate) use epoll::{ReadyOp, forget_fd, unsupported as unsupported_on_epoll};
pub(crate) use files::{FileTable, MAX_FILE_SLOTS, nofile_soft_limit};
pub(crate) use kick::{KickTarget, signal_eventfd};
pub(crate) use lifecycle::Parked;
use lifecycle::Slot;
pub(crate) use napi::Napi;
pub(crate) use readiness::{cancel_fd, detach as detach_ready, found_empty, try_ready};
pub(crate) use register::{Refill, refill};
pub(crate) use ring::Wait;
pub use setup::RingMode;
pub(crate) use setup::{RingConfig, RingInfo, RingSetup, SEND_TAKES_ADDRESS, SqPoll};
pub(crate) use setup_error::kernel_release;
pub(crate) use shutdown::drain;

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

/// Which engine runs the driver's operations.
///
/// Chosen once, when the driver is built (`Builder::backend`), and never changed. The io_uring
/// path matches on it once per enter and per queued SQE; ops find out which engine runs them
/// from a thread-local flag read in `Op::new` (`current_is_epoll`), so neither path borrows
/// the driver to ask. The epoll engine queues no SQE and has no op table: its ops are done by
/// their own non-blocking system calls (`OpCode::try_nonblocking`), and only what would
/// block reaches it (`epoll.rs`, `readiness.rs`).
#[derive(Debug)]
pub(crate) enum Engine {
    /// io_uring: SQEs in, CQEs out.
    Uring(ring::Ring),
    /// epoll and non-blocking system calls (`epoll.rs`).
    Epoll(epoll::Poller),
}

/// Work the caller runs once the driver borrow has ended ([`Action::run`]).
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
    pub(crate) inline_calls: u64,
    pub(crate) enters: u64,
    pub(crate) stray_completions: u64,
    pub(crate) backlogged: u64,
    pub(crate) leaked: u64,
    pub(crate) cq_overflows: u64,
    pub(crate) msg_ring_kicks: u64,
    pub(crate) msg_ring_fallbacks: u64,
}

/// The eventfd read kept armed for cross-thread wake-ups.
struct WakeRead {
    /// The eventfd, held open for as long as a read may be armed on it.
    eventfd: Arc<OwnedFd>,
    /// Heap buffer the kernel writes the eventfd counter into.
    buf: Box<[u8; 8]>,
    armed: bool,
}

thread_local! {
    /// The driver of the runtime running on this thread (filled by `executor::context::enter`).
    pub(crate) static CURRENT: current::Slot<Rc<RefCell<Driver>>> =
        const { current::Slot::new() };
}

thread_local! {
    /// How the driver in [`CURRENT`] runs ([`EPOLL`], [`SQPOLL`] bits): read by every
    /// `Op::new` without borrowing the driver (set with [`CURRENT`] by
    /// `executor::context::enter`).
    static ENGINE: Cell<u8> = const { Cell::new(0) };
}

/// [`ENGINE`] bit: the driver runs on the epoll engine.
const EPOLL: u8 = 1;
/// [`ENGINE`] bit: the driver's ring has a kernel thread consuming its SQ.
const SQPOLL: u8 = 2;
/// [`ENGINE`] bit: a driver is current at all.
const ACTIVE: u8 = 4;

fn current_engine() -> u8 {
    ENGINE.try_with(Cell::get).unwrap_or(0)
}

/// Whether the current thread's driver runs on the epoll engine (false outside a runtime).
pub(crate) fn current_is_epoll() -> bool {
    current_engine() & EPOLL != 0
}

/// Whether a driver is current and makes system calls itself (not SQPOLL).
pub(crate) fn current_enters_itself() -> bool {
    current_engine() & (ACTIVE | SQPOLL) == ACTIVE
}

/// Marks how the current thread's driver runs until the guard is dropped.
pub(crate) fn set_current_engine(epoll: bool, sqpoll: bool) -> EngineGuard {
    let bits = ACTIVE | if epoll { EPOLL } else { 0 } | if sqpoll { SQPOLL } else { 0 };
    EngineGuard(ENGINE.with(|e| e.replace(bits)))
}

/// Restores the previous [`set_current_engine`] value on drop.
#[derive(Debug)]
pub(crate) struct EngineGuard(u8);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        let _ = ENGINE.try_with(|e| e.set(self.0));
    }
}

/// The driver of the runtime running on this thread: all an operation needs of it.
///
/// # Panics
///
/// Panics when no runtime is running on this thread.
pub(crate) fn current() -> Rc<RefCell<Driver>> {
    try_current().unwrap_or_else(|| {
        panic!(
            "this function must be called from inside a runtime: use `#[runtime::main]`, \
             `#[runtime::test]` or `Runtime::block_on`"
        )
    })
}

/// The driver of the runtime running on this thread, if any.
pub(crate) fn try_current() -> Option<Rc<RefCell<Driver>>> {
    current::get(&CURRENT)
}

/// Slots in the ring's fixed-buffer table (the kernel's limit is 16384).
pub(crate) const FIXED_BUFFER_SLOTS: usize = 4096;

/// One ring and its op table (see the module docs).
pub(crate) struct Driver {
    ring: Engine,
    /// Values that must outlive the ring (`keep_until_closed`); declared after `ring`, so they
    /// are dropped after the ring fd is closed.
    keep_alive: Vec<Rc<dyn Any>>,
    /// Buffer pools topped up before every enter (`register::refill`).
    refills: Vec<Weak<dyn Refill>>,
    /// Which fixed-buffer slots are taken; empty until the first registration.
    fixed_slots: Vec<bool>,
    /// Provided-buffer group ids in use.
    buf_groups: Vec<u16>,
    /// The registered file table (direct descriptors), once registered (`files.rs`).
    files: files::Files,
    /// Whether the kernel has `IORING_OP_MSG_RING`.
    msg_ring: bool,
    /// The opcodes the probe reported supported (`RingInfo::opcodes`).
    opcodes: [u64; 4],
    /// Why a registration asked of the driver was refused, one sentence each (reported in
    /// the runtime's capabilities).
    notes: Vec<String>,
    /// Our `MSG_RING` kicks in flight. Declared after `ring`, so that on drop the ring (and
    /// any kick SQE still in its SQ) is gone before the target fds the kicks name are closed.
    msg_targets: Slab<KickTarget>,
    /// The op table: one slot per operation the kernel may still post a CQE for.
    slots: Slab<Slot>,
    next_generation: u32,
    backlog: VecDeque<squeue::Entry>,
    wake: WakeRead,
    /// The timer that ends waits for a deadline (`alarm.rs`).
    alarm: alarm::Alarm,
    /// CQ size the kernel granted, which bounds one dispatch.
    cq_entries: usize,
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
    /// The NAPI busy-poll registration in force (`napi.rs`).
    napi: Option<Napi>,
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
    /// Builds the ring as `config` asks and arms a read on `wake_eventfd`, whose completion
    /// interrupts a blocking enter. Returns what the kernel granted alongside.
    pub(crate) fn new(
        config: &RingConfig,
        wake_eventfd: Arc<OwnedFd>,
    ) -> io::Result<(Driver, RingInfo)> {
        let (ring, info) = ring::Ring::new(config)?;
        let mut driver = Driver::with_engine(Engine::Uring(ring), config.entries, wake_eventfd);
        driver.msg_ring = info.supports_opcode(opcode::MsgRingData::CODE);
        driver.opcodes = info.opcodes;
        driver.cq_entries = info.cq_entries as usize;
        driver.files.wanted = config.direct_descriptors;
        driver.arm_wake();
        if config.direct_descriptors > 0 {
            // A refusal is noted (`files.rs`); sockets then use ordinary descriptors.
            let _ = driver.file_table(0);
        }
        Ok((driver, info))
    }

    /// A driver on the epoll engine (see `epoll.rs`), woken through `wake_eventfd`.
    pub(crate) fn new_epoll(wake_eventfd: Arc<OwnedFd>) -> io::Result<Driver> {
        let poller = epoll::Poller::new(wake_eventfd.clone())?;
        let mut driver = Driver::with_engine(Engine::Epoll(poller), 0, wake_eventfd);
        // What the ops' non-blocking forms cover (`is_supported` answers for this runtime).
        for code in [
            opcode::Nop::CODE,
            opcode::Read::CODE,
            opcode::Accept::CODE,
            opcode::Connect::CODE,
            opcode::Send::CODE,
            opcode::Recv::CODE,
            opcode::SendMsg::CODE,
            opcode::RecvMsg::CODE,
            opcode::Readv::CODE,
            opcode::AsyncCancel::CODE,
            opcode::SendZc::CODE,
            opcode::SendMsgZc::CODE,
        ] {
            driver.opcodes[usize::from(code / 64)] |= 1 << (code % 64);
        }
        Ok(driver)
    }

    fn with_engine(ring: Engine, entries: u32, wake_eventfd: Arc<OwnedFd>) -> Driver {
        Driver {
            ring,
            keep_alive: Vec::new(),
            refills: Vec::new(),
            fixed_slots: Vec::new(),
            buf_groups: Vec::new(),
            files: files::Files::default(),
            msg_ring: false,
            opcodes: [0; 4],
            notes: Vec::new(),
            msg_targets: Slab::new(),
            slots: Slab::with_capacity(entries as usize),
            next_generation: 0,
            backlog: VecDeque::new(),
            wake: WakeRead {
                eventfd: wake_eventfd,
                buf: Box::new([0; 8]),
                armed: false,
            },
            alarm: alarm::Alarm::new(),
            cq_entries: DISPATCH_BATCH,
            in_flight: 0,
            parked: 0,
            closed: false,
            gave_up: false,
            skip_pending: Vec::new(),
            urgent_skips: 0,
            next_sequence: 1,
            stats: DriverStats::default(),
            napi: None,
        }
    }

    /// Whether this driver runs on the epoll engine.
    pub(crate) fn is_epoll(&self) -> bool {
        matches!(self.ring, Engine::Epoll(_))
    }

    /// Whether the ring has a kernel thread consuming its SQ (`IORING_SETUP_SQPOLL`).
    pub(crate) fn is_sqpoll(&self) -> bool {
        matches!(&self.ring, Engine::Uring(ring) if ring.is_sqpoll())
    }

    /// The io_uring of this driver; `None` on the epoll engine.
    pub(super) fn uring(&mut self) -> Option<&mut ring::Ring> {
        match &mut self.ring {
            Engine::Uring(ring) => Some(ring),
            Engine::Epoll(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> (DriverStats, usize, usize) {
        (self.stats, self.in_flight, self.parked)
    }

    fn arm_wake(&mut self) {
        // The epoll engine watches the eventfd itself.
        if self.closed || self.wake.armed || self.is_epoll() {
            return;
        }
        self.wake.armed = true;
        let sqe = opcode::Read::new(
            types::Fd(self.wake.eventfd.as_raw_fd()),
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
        let Engine::Uring(ring) = &mut self.ring else {
            // No SQE is ever queued on the epoll engine (`Op` runs system calls instead).
            return;
        };
        if self.backlog.is_empty() {
            if ring.push(&sqe).is_ok() {
                return;
            }
            // SQ full: hand the queued SQEs to the kernel now, then retry.
            self.stats.enters += 1;
            if ring.enter(Wait::No).is_ok() && ring.push(&sqe).is_ok() {
                return;
            }
        }
        self.stats.backlogged += 1;
        self.backlog.push_back(sqe);
    }

    /// Moves backlogged SQEs into the SQ, entering the kernel as often as needed.
    fn flush_backlog(&mut self) -> io::Result<()> {
        let Engine::Uring(ring) = &mut self.ring else {
            return Ok(());
        };
        while let Some(sqe) = self.backlog.front() {
            if ring.push(sqe).is_ok() {
                self.backlog.pop_front();
                continue;
            }
            self.stats.enters += 1;
            let consumed = ring.enter(Wait::No)?;
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
