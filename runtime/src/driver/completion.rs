//! `Completion`: one CQE, copied out of the ring.

use std::io;

/// `IORING_CQE_F_*` flag bits (`<linux/io_uring.h>`).
pub mod cqe_flags {
    /// The CQE carries a provided-buffer id in its upper 16 flag bits.
    pub const BUFFER: u32 = 1 << 0;
    /// More CQEs will follow for the same SQE (multishot item, `SEND_ZC` result).
    pub const MORE: u32 = 1 << 1;
    /// The socket had more data (or connections) queued after this completion.
    pub const SOCK_NONEMPTY: u32 = 1 << 2;
    /// A zero-copy send notification: the kernel no longer references the buffer.
    pub const NOTIF: u32 = 1 << 3;
    /// With incremental buffer consumption: the kernel will put more data in this buffer.
    pub const BUF_MORE: u32 = 1 << 4;
    /// Shift of the provided-buffer id inside the flags.
    pub const BUFFER_SHIFT: u32 = 16;
    /// Not a kernel flag: set by the epoll backend on the `-EOPNOTSUPP` completion of an op
    /// that has no non-blocking form, so that `into_result` explains the refusal.
    pub const UNSUPPORTED_BACKEND: u32 = 1 << 15;
}

/// One completion queue entry, as the driver hands it to an operation.
///
/// `result` is the kernel's `res`: a byte count, fd or other value on success, `-errno` on
/// failure. `extra` is the second half of a 32-byte CQE (zero on rings with 16-byte CQEs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    result: i32,
    flags: u32,
    extra: [u64; 2],
    sequence: u64,
}

impl Completion {
    /// A completion with the given fields (used by the driver and by tests of op parsers).
    pub fn new(result: i32, flags: u32, extra: [u64; 2]) -> Completion {
        Completion {
            result,
            flags,
            extra,
            sequence: 0,
        }
    }

    /// The completion of an op that has no non-blocking form, on the epoll backend:
    /// `-EOPNOTSUPP`, which [`into_result`](Completion::into_result) turns into an
    /// `Unsupported` error that names the backend.
    pub fn unsupported() -> Completion {
        Completion::new(-libc::EOPNOTSUPP, cqe_flags::UNSUPPORTED_BACKEND, [0; 2])
    }

    /// The same completion stamped with the driver's processing order.
    pub(crate) fn with_sequence(mut self, sequence: u64) -> Completion {
        self.sequence = sequence;
        self
    }

    /// The order in which the runtime processed this completion among all completions of its
    /// ring (strictly increasing). Operations on the same socket use it to put data delivered
    /// to an abandoned receive back in stream order.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The raw `res` field.
    pub fn result(&self) -> i32 {
        self.result
    }

    /// The raw `flags` field.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The 16 bytes that follow the CQE on rings with 32-byte CQEs.
    pub fn extra(&self) -> [u64; 2] {
        self.extra
    }

    /// `res` as a `Result`: non-negative values as `Ok`, `-errno` as the matching `io::Error`.
    pub fn into_result(self) -> io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else if self.flags & cqe_flags::UNSUPPORTED_BACKEND != 0 {
            Err(super::epoll::unsupported(
                "this operation has no non-blocking form (it is an io_uring request)",
            ))
        } else {
            Err(io::Error::from_raw_os_error(-self.result))
        }
    }

    /// Whether more CQEs follow for the same SQE (`IORING_CQE_F_MORE`). A completion without
    /// this flag is the operation's final one.
    pub fn has_more(&self) -> bool {
        self.flags & cqe_flags::MORE != 0
    }

    /// Whether this is a zero-copy send notification (`IORING_CQE_F_NOTIF`).
    pub fn is_notification(&self) -> bool {
        self.flags & cqe_flags::NOTIF != 0
    }

    /// The provided buffer the kernel picked, if `IORING_CQE_F_BUFFER` is set.
    pub fn buffer_id(&self) -> Option<u16> {
        if self.flags & cqe_flags::BUFFER != 0 {
            Some((self.flags >> cqe_flags::BUFFER_SHIFT) as u16)
        } else {
            None
        }
    }

    /// Whether the socket still had data queued (`IORING_CQE_F_SOCK_NONEMPTY`).
    pub fn sock_nonempty(&self) -> bool {
        self.flags & cqe_flags::SOCK_NONEMPTY != 0
    }

    /// Whether the kernel will append more data to the same provided buffer
    /// (`IORING_CQE_F_BUF_MORE`, incremental consumption).
    pub fn buffer_more(&self) -> bool {
        self.flags & cqe_flags::BUF_MORE != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flags_and_errors() {
        let c = Completion::new(-libc::ECONNRESET, cqe_flags::MORE, [0; 2]);
        assert!(c.has_more());
        assert_eq!(
            c.into_result().unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        let c = Completion::new(5, cqe_flags::BUFFER | (7 << 16), [0; 2]);
        assert_eq!(c.buffer_id(), Some(7));
        assert_eq!(c.into_result().unwrap(), 5);
        assert!(!c.has_more());
        assert_eq!(Completion::new(0, 0, [0; 2]).buffer_id(), None);
    }
}
