//! `MsgBox`: the boxed kernel structures of one message ([`MsgState`]), recycled per thread.
//!
//! Every datagram send and receive needs a `msghdr`, an `iovec` and address storage at an
//! address that survives moves (the kernel reads and writes them while the op is in
//! flight). Allocating and freeing those 230-odd bytes for every datagram showed up as
//! `malloc`/`free` in profiles of the UDP echo server; a thread's recent boxes are kept
//! instead, and handed to its next ops.
//!
//! # Invariants
//!
//! - A box goes back to the thread's spares only when its op drops it, which the `OpCode`
//!   contract places after the op's final CQE: nothing in the kernel references it then.
//! - A spare box is reset before reuse (zeroed header and `iovec`, empty `iovec` array, the
//!   new address), so an op never sees an earlier message's state.
//! - At most [`SPARES_MAX`] boxes are kept per thread.

use std::{
    cell::RefCell,
    mem::ManuallyDrop,
    ops::{Deref, DerefMut},
};

use super::msg::MsgState;
use crate::addr::RawAddr;

/// The most spare boxes a thread keeps (a burst of datagrams in flight).
const SPARES_MAX: usize = 64;

/// The thread's spare boxes. Boxed each: a box is what an op takes and gives back, so its
/// heap address is the one the kernel is pointed at.
#[allow(clippy::vec_box)]
type Spares = RefCell<Vec<Box<MsgState>>>;

thread_local! {
    static SPARES: Spares = const { RefCell::new(Vec::new()) };
}

/// A boxed [`MsgState`] that goes back to its thread's spares when dropped.
pub(crate) struct MsgBox(ManuallyDrop<Box<MsgState>>);

impl MsgBox {
    /// A reset state for a message to or from `addr`, from the thread's spares if it has one.
    pub(crate) fn new(addr: RawAddr) -> MsgBox {
        let spare = SPARES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let state = match spare {
            Some(mut state) => {
                state.reset(addr);
                state
            }
            None => Box::new(MsgState::new(addr)),
        };
        MsgBox(ManuallyDrop::new(state))
    }
}

impl Deref for MsgBox {
    type Target = MsgState;

    fn deref(&self) -> &MsgState {
        &self.0
    }
}

impl DerefMut for MsgBox {
    fn deref_mut(&mut self) -> &mut MsgState {
        &mut self.0
    }
}

impl Drop for MsgBox {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and the field is not used after this take.
        let state = unsafe { ManuallyDrop::take(&mut self.0) };
        let _ = SPARES.try_with(|s| {
            let mut spares = s.borrow_mut();
            if spares.len() < SPARES_MAX {
                spares.push(state);
            }
        });
    }
}

impl std::fmt::Debug for MsgBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_box_is_reset_and_the_spares_are_bounded() {
        let first = MsgBox::new(RawAddr::empty());
        let at = &*first as *const MsgState;
        drop(first);
        let addr = RawAddr::from_socket_addr(&"127.0.0.1:9".parse().unwrap());
        let mut again = MsgBox::new(addr);
        assert_eq!(&*again as *const MsgState, at, "the spare was reused");
        assert_eq!(
            again.addr.socket_addr().unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(again.hdr.0.msg_iovlen, 0);
        again.hdr.0.msg_iovlen = 3;
        drop(again);
        assert_eq!(MsgBox::new(RawAddr::empty()).hdr.0.msg_iovlen, 0);
        let many: Vec<MsgBox> = (0..2 * SPARES_MAX)
            .map(|_| MsgBox::new(RawAddr::empty()))
            .collect();
        drop(many);
        assert_eq!(SPARES.with(|s| s.borrow().len()), SPARES_MAX);
    }
}
