//! The per-runtime `Handle` and the thread-local that says which runtime the thread is running.
//!
//! # Invariants
//!
//! - A `Handle` belongs to one thread (it is `!Send`: `Rc`, `RefCell`); only its `remote` half
//!   is shared with other threads (see `wake.rs`).
//! - `CURRENT` is set while `Runtime::block_on` runs and while a runtime shuts down, and
//!   restored to its previous value afterwards. `block_on` refuses to nest on one thread.
//! - Each `RefCell` in the handle is borrowed only for short, non-reentrant sections: no user
//!   code (task polls, wakers, drops of user values) runs while one is borrowed.

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration};

use crate::{
    buf::ring::shared::{self, SharedRing},
    capabilities::Capabilities,
    coop, current,
    driver::{self, Driver},
    executor::Scheduler,
    time::{self, Timers},
    wake::Remote,
    zcrx,
};

/// Everything one runtime owns, shared by the runtime, its tasks and its operations.
pub(crate) struct Handle {
    /// Shared with every operation and buffer pool of this runtime, which need nothing else.
    pub(crate) driver: Rc<RefCell<Driver>>,
    pub(crate) scheduler: Scheduler,
    /// Shared with every `Sleep`, which needs nothing else.
    pub(crate) timers: Rc<RefCell<Timers>>,
    pub(crate) remote: Arc<Remote>,
    /// What the ring offers; subsystems add notes when a feature is unavailable.
    pub(crate) capabilities: RefCell<Capabilities>,
    /// Tasks run per loop turn before the ring is entered again.
    pub(crate) task_budget: usize,
    /// How long shutdown waits for the kernel to finish cancelled operations.
    pub(crate) shutdown_timeout: Duration,
    /// This worker's index in `group`.
    pub(crate) worker: usize,
    /// The workers of this runtime (just this one for a single-worker runtime).
    pub(crate) group: Arc<crate::executor::workers::Group>,
    /// Operations finished without the ring this loop turn (`coop.rs`); shared with that
    /// module's thread-local slot.
    pub(crate) coop: Rc<crate::coop::Coop>,
    /// Tasks waiting in `shutdown_requested`.
    pub(crate) drain_waiters: crate::wait_list::WaitList,
    /// The zero-copy receive ifq, if registered. The driver keeps a reference too
    /// (`Driver::keep_until_closed`), so it is dropped after the ring closes: the kernel may
    /// use its memory until then.
    pub(crate) zcrx: Option<Rc<crate::zcrx::ZcrxInner>>,
    /// The worker's shared receive ring, built on first use (`buf/ring/shared.rs`).
    pub(crate) shared_ring: Rc<SharedRing>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Handle>>> = const { RefCell::new(None) };
}

/// The runtime running on this thread.
///
/// # Panics
///
/// Panics when no runtime is running on this thread.
pub(crate) fn current() -> Rc<Handle> {
    try_current().unwrap_or_else(|| {
        panic!(
            "this function must be called from inside a runtime: use `#[runtime::main]`, \
             `#[runtime::test]` or `Runtime::block_on`"
        )
    })
}

/// The runtime running on this thread, if any.
pub(crate) fn try_current() -> Option<Rc<Handle>> {
    CURRENT
        .try_with(|c| c.try_borrow().ok().and_then(|h| h.clone()))
        .ok()
        .flatten()
}

/// Runs `f` with the current runtime if it is the one identified by `remote_id`.
pub(crate) fn with_runtime<R>(remote_id: u64, f: impl FnOnce(&Handle) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| match c.try_borrow() {
            Ok(current) => match current.as_ref() {
                Some(handle) if handle.remote.id == remote_id => Some(f(handle)),
                _ => None,
            },
            Err(_) => None,
        })
        .ok()
        .flatten()
}

/// Makes `handle` the current runtime until the guard is dropped, and its pieces the current
/// ones of their layers (`crate::current`): the driver, the timers, the budget, the ifq.
pub(crate) fn enter(handle: Rc<Handle>) -> EnterGuard {
    let (epoll, sqpoll) = {
        let driver = handle.driver.borrow();
        (driver.is_epoll(), driver.is_sqpoll())
    };
    let layers = Layers {
        _driver: current::set(&driver::CURRENT, Some(handle.driver.clone())),
        _engine: driver::set_current_engine(epoll, sqpoll),
        _timers: current::set(&time::CURRENT, Some(handle.timers.clone())),
        _coop: current::set(&coop::CURRENT, Some(handle.coop.clone())),
        _zcrx: current::set(&zcrx::CURRENT, handle.zcrx.clone()),
        _shared_ring: current::set(&shared::CURRENT, Some(handle.shared_ring.clone())),
    };
    let previous = CURRENT.with(|c| c.replace(Some(handle)));
    EnterGuard {
        previous,
        layers: Some(layers),
    }
}

/// The layers' slots, restored when the runtime leaves the thread.
#[derive(Debug)]
struct Layers {
    _driver: current::Restore<Rc<RefCell<Driver>>>,
    _engine: driver::EngineGuard,
    _timers: current::Restore<Rc<RefCell<Timers>>>,
    _coop: current::Restore<Rc<coop::Coop>>,
    _zcrx: current::Restore<Rc<zcrx::ZcrxInner>>,
    _shared_ring: current::Restore<Rc<SharedRing>>,
}

/// Whether any runtime is running on this thread.
pub(crate) fn is_entered() -> bool {
    CURRENT
        .try_with(|c| c.try_borrow().map(|h| h.is_some()).unwrap_or(true))
        .unwrap_or(false)
}

/// Restores the previously current runtime on drop.
#[derive(Debug)]
pub(crate) struct EnterGuard {
    previous: Option<Rc<Handle>>,
    layers: Option<Layers>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        // The layers first, so the handle below is not the last owner of its pieces while
        // their slots still hold them.
        drop(self.layers.take());
        let previous = self.previous.take();
        // The replaced handle is dropped after the thread-local is released, since dropping
        // the last reference runs the driver's and the tasks' destructors. Failure means the
        // thread-local is being destroyed: nothing is current any more.
        let replaced = CURRENT.try_with(|c| c.replace(previous));
        drop(replaced);
    }
}
