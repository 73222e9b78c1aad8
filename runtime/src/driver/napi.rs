//! NAPI busy polling (`IORING_REGISTER_NAPI`, Linux 6.9): while the event loop waits for
//! completions, the kernel polls the receive queues of the devices its sockets use instead
//! of sleeping until an interrupt.
//!
//! # Invariants
//!
//! - The ring uses *dynamic tracking*: the kernel adds a socket's NAPI id to the ring's list
//!   when a receive arms poll on it (`io_uring/napi.c`, `__io_napi_add_id`), and drops ids
//!   unused for 60 s. Nothing here learns ids, so no socket code is involved.
//! - `Driver::napi` is `Some` exactly while a registration is in force; `unregister_napi`
//!   clears it, and the shutdown drain calls it before the ring is closed.
//! - Both calls pass the kernel a live, exclusively borrowed `io_uring_napi`, which it reads
//!   and then overwrites with the previous settings.

use std::{io, time::Duration};

use super::{Driver, ring::Ring};

/// `IORING_REGISTER_NAPI` (Linux 6.9), not exported by the io-uring crate.
const IORING_REGISTER_NAPI: libc::c_uint = 27;
/// `IORING_UNREGISTER_NAPI` (Linux 6.9).
const IORING_UNREGISTER_NAPI: libc::c_uint = 28;
/// `IO_URING_NAPI_REGISTER_OP` (Linux 6.13; 0, which older kernels read as padding).
const IO_URING_NAPI_REGISTER_OP: u8 = 0;
/// `IO_URING_NAPI_TRACKING_DYNAMIC` (Linux 6.13; 0, which older kernels read as `resv`).
const IO_URING_NAPI_TRACKING_DYNAMIC: u32 = 0;
/// The longest busy-poll window: newer kernels cap it at 10 ms themselves
/// (`io_napi_register_napi`), older ones would spin as long as asked.
const MAX_BUSY_POLL_US: u32 = 10_000;

/// `struct io_uring_napi` from the kernel's `include/uapi/linux/io_uring.h` (6.13 layout;
/// 6.9 named `opcode`, `pad` and `op_param` `pad[3]` and the low half of a `u64 resv`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IoUringNapi {
    busy_poll_to: u32,
    prefer_busy_poll: u8,
    opcode: u8,
    pad: [u8; 2],
    op_param: u32,
    resv: u32,
}

const _: () = assert!(std::mem::size_of::<IoUringNapi>() == 16);

/// A registration in force: what was asked, as the capabilities report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Napi {
    /// Busy-poll window in microseconds, as registered (at most 10 ms).
    pub(crate) busy_poll_us: u32,
    /// `SO_PREFER_BUSY_POLL` semantics: device interrupts stay masked while the ring polls.
    pub(crate) prefer_busy_poll: bool,
}

impl Napi {
    /// The registration `timeout` and `prefer_busy_poll` ask for, the window rounded to whole
    /// microseconds and capped as the kernel caps it.
    pub(crate) fn new(timeout: Duration, prefer_busy_poll: bool) -> Napi {
        let us = u32::try_from(timeout.as_micros()).unwrap_or(u32::MAX);
        Napi {
            busy_poll_us: us.clamp(1, MAX_BUSY_POLL_US),
            prefer_busy_poll,
        }
    }
}

impl Ring {
    /// One `io_uring_register(2)` call carrying `arg`.
    fn register_napi_raw(&self, opcode: libc::c_uint, arg: &mut IoUringNapi) -> io::Result<()> {
        // SAFETY: both opcodes read one `io_uring_napi` and write the previous settings back
        // into it; `arg` is a live, exclusively borrowed value of that exact layout (checked
        // size above) for the duration of the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.raw_fd(),
                opcode,
                arg as *mut IoUringNapi,
                1u32,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Driver {
    /// Turns NAPI busy polling on for this ring (dynamic tracking). The error names the
    /// cause: a kernel before 6.9 or built without `CONFIG_NET_RX_BUSY_POLL` answers
    /// `EINVAL`.
    pub(crate) fn register_napi(&mut self, napi: Napi) -> io::Result<()> {
        let mut arg = IoUringNapi {
            busy_poll_to: napi.busy_poll_us,
            prefer_busy_poll: u8::from(napi.prefer_busy_poll),
            opcode: IO_URING_NAPI_REGISTER_OP,
            op_param: IO_URING_NAPI_TRACKING_DYNAMIC,
            ..IoUringNapi::default()
        };
        self.ring_for("NAPI busy polling")?
            .register_napi_raw(IORING_REGISTER_NAPI, &mut arg)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "IORING_REGISTER_NAPI failed ({e}): NAPI busy polling needs Linux 6.9 \
                         built with CONFIG_NET_RX_BUSY_POLL (kernel {}); drop \
                         Builder::napi_busy_poll to run without it",
                        super::kernel_release()
                    ),
                )
            })?;
        self.napi = Some(napi);
        Ok(())
    }

    /// Turns NAPI busy polling off again; nothing to do when it is not on.
    pub(crate) fn unregister_napi(&mut self) -> io::Result<()> {
        if self.napi.is_none() {
            return Ok(());
        }
        let mut arg = IoUringNapi::default();
        self.ring_for("NAPI busy polling")?
            .register_napi_raw(IORING_UNREGISTER_NAPI, &mut arg)?;
        self.napi = None;
        Ok(())
    }

    /// The NAPI registration in force, if any.
    #[cfg(test)]
    pub(crate) fn napi(&self) -> Option<Napi> {
        self.napi
    }
}
