//! `BufRing::shared`: one ring per runtime worker, built on first use, for receives that do
//! not name a ring of their own (`net`'s plain stream reads run a multishot receive on it).
//!
//! # Invariants
//!
//! - The slot belongs to one runtime (its `Handle` owns it) and is current only while that
//!   runtime runs on the thread (`executor::context::enter`), so a ring is never used with
//!   another runtime's driver.
//! - It is built at most once per runtime: a refusal (the epoll backend, or a kernel without
//!   provided-buffer rings) is remembered with its reason in the runtime's capabilities, and
//!   later calls answer `None` at once.
//! - The runtime empties the slot when it shuts down, before draining its operations; a
//!   receive still in flight keeps its own clone until its final completion.

use std::{cell::RefCell, rc::Rc};

use super::BufRing;
use crate::current;

/// Buffers in the shared ring. Only those in circulation become resident: the ring publishes
/// about twice the recent per-turn demand (`ring/mod.rs`).
const ENTRIES: u32 = 4096;
/// Size of each buffer: a whole page, the most one copy of a small message wastes.
const BUF_LEN: usize = 4096;

thread_local! {
    /// The shared-ring slot of the runtime running on this thread.
    pub(crate) static CURRENT: current::Slot<Rc<SharedRing>> = const { current::Slot::new() };
}

/// A runtime's shared ring, built on first use.
#[derive(Debug, Default)]
pub(crate) struct SharedRing(RefCell<State>);

#[derive(Debug, Default)]
enum State {
    #[default]
    Unbuilt,
    Built(BufRing),
    /// Refused; the reason went to the capabilities' notes.
    Unavailable,
}

impl SharedRing {
    /// Drops the runtime's reference to its ring (shutdown).
    pub(crate) fn clear(&self) {
        let old = std::mem::replace(&mut *self.0.borrow_mut(), State::Unavailable);
        drop(old);
    }

    fn get(&self) -> Option<BufRing> {
        let state = std::mem::take(&mut *self.0.borrow_mut());
        let (ring, state) = match state {
            State::Built(ring) => (Some(ring.clone()), State::Built(ring)),
            State::Unavailable => (None, State::Unavailable),
            State::Unbuilt => match build() {
                Some(ring) => (Some(ring.clone()), State::Built(ring)),
                None => (None, State::Unavailable),
            },
        };
        *self.0.borrow_mut() = state;
        ring
    }
}

/// Builds the shared ring on io_uring; `None` (with a note in the capabilities) where it
/// cannot be had.
fn build() -> Option<BufRing> {
    let driver = crate::driver::current();
    if driver.borrow().is_epoll() {
        return None;
    }
    match BufRing::builder().entries(ENTRIES).buf_len(BUF_LEN).build() {
        Ok(ring) => Some(ring),
        Err(e) => {
            driver.borrow_mut().note(format!(
                "the shared receive ring could not be registered ({e}); stream reads use one \
                 receive request per read"
            ));
            None
        }
    }
}

impl BufRing {
    /// This runtime worker's shared ring (4096 buffers of 4 KiB, of which only those in
    /// circulation become resident), built on first use; `None` on the epoll backend or where
    /// the kernel refused the ring ([`Capabilities::notes`](crate::Capabilities) says why).
    /// `net`'s plain stream reads receive into it; receive streams may share it too.
    ///
    /// Outside a runtime it returns `None`.
    pub fn shared() -> Option<BufRing> {
        current::with(&CURRENT, |slot| slot.get()).flatten()
    }
}
