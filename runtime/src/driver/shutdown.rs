//! The shutdown drain: cancel everything, wait (bounded) for the kernel to give every
//! resource back, and leak what it did not.
//!
//! # Invariants
//!
//! - After `begin_shutdown`, no new operation is accepted (`submit` returns `None`) and every
//!   operation in flight, the wake read included, has an `IORING_OP_ASYNC_CANCEL` queued.
//! - Memory the kernel may still write is never freed: an operation whose final CQE did not
//!   arrive by the deadline has its parked resources forgotten (`Lifecycle::Leaked`), and one
//!   still owned by a future leaks them when that future is dropped (`gave_up`).
//! - The drain runs no user code while the driver is borrowed: finishing parked operations
//!   goes through [`dispatch()`](super::dispatch()), like any other turn.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use io_uring::opcode;

use super::{
    CANCEL, Driver, WAKE, Wait,
    dispatch::{DISPATCH_BATCH, dispatch},
    lifecycle::{Lifecycle, encode},
};

/// Non-blocking turns given to operations left to run on their own before the drain cancels
/// them (see [`drain`]).
const CHAIN_TURNS: usize = 64;

/// How long those turns may wait for an SQPOLL thread to take what they queued.
const CHAIN_WAIT: Duration = Duration::from_millis(100);

/// Shuts `driver` down: lets chains of skip-success operations finish, cancels every
/// operation, and routes completions until each has its final CQE or `timeout` passed; then
/// leaks whatever the kernel still holds.
///
/// Operations left to run on their own that finish inside an enter (sends written behind,
/// `Op::detach`) may chain to more of the same: a few non-blocking turns let those chains
/// finish first, so bytes a task wrote just before the end still go out.
pub(crate) fn drain(driver: &RefCell<Driver>, timeout: Duration) {
    let mut cqes = Vec::with_capacity(DISPATCH_BATCH);
    // With SQPOLL a turn whose SQEs the kernel thread has not taken yet decides nothing, so
    // it does not count; such turns are bounded by time instead.
    let chain_deadline = Instant::now() + CHAIN_WAIT;
    let mut turns = 0;
    while turns < CHAIN_TURNS {
        if !driver.borrow().has_any_skip_pending() {
            break;
        }
        if driver.borrow_mut().enter(Wait::No).is_err() {
            break;
        }
        dispatch(driver, &mut cqes);
        // (The epoll engine has no SQ: every turn counts.)
        let consumed = driver
            .borrow_mut()
            .uring()
            .is_none_or(|ring| ring.sq_consumed());
        if consumed || Instant::now() >= chain_deadline {
            turns += 1;
        } else {
            std::thread::yield_now();
        }
    }

    driver.borrow_mut().begin_shutdown();
    // The epoll engine's parked ops that hold nothing the kernel uses end now.
    loop {
        let parked = driver.borrow_mut().take_parked_ready();
        if parked.is_empty() {
            break;
        }
        for op in parked {
            op.finish(super::Completion::new(-libc::ECANCELED, 0, [0; 2]));
        }
    }
    let deadline = Instant::now() + timeout;
    while driver.borrow().has_unfinished() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let slice = (deadline - now).min(Duration::from_millis(100));
        if driver.borrow_mut().enter(Wait::Timeout(slice)).is_err() {
            break;
        }
        dispatch(driver, &mut cqes);
    }
    let mut driver = driver.borrow_mut();
    if driver.has_unfinished() {
        driver.leak_unfinished();
    }
    // Closing the ring would drop it too; unregistering says so before the fd goes. A
    // failure leaves it to the close.
    let _ = driver.unregister_napi();
}

impl Driver {
    /// Stops accepting operations and cancels every one in flight, including the wake read.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let keys: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.state.in_kernel())
            .map(|(i, s)| encode(i, s.generation))
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
        let parked = match &self.ring {
            super::Engine::Epoll(poller) => !poller.parked.is_empty(),
            super::Engine::Uring(_) => false,
        };
        self.in_flight > 0 || self.wake.armed || !self.backlog.is_empty() || parked
    }

    /// Gives up on operations the kernel did not finish: their memory is leaked, never freed.
    pub(crate) fn leak_unfinished(&mut self) {
        self.gave_up = true;
        if let super::Engine::Epoll(poller) = &mut self.ring {
            self.stats.leaked += poller.leak_parked() as u64;
        }
        for (_, slot) in self.slots.iter_mut() {
            if let Lifecycle::Parked(_) = slot.state {
                let Lifecycle::Parked(parked) =
                    std::mem::replace(&mut slot.state, Lifecycle::Leaked)
                else {
                    unreachable!("state matched as parked just above")
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
}
