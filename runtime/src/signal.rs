//! Signals as futures: [`ctrl_c`].
//!
//! The first call installs a `SIGINT` handler for the whole process. The handler does the only
//! async-signal-safe thing needed: it writes to an eventfd, which lives for the rest of the
//! process. Each `ctrl_c()` future is an io_uring read of that eventfd, so waiting costs no
//! thread and works on any worker. Each Ctrl-C completes one waiting read.

use std::{
    io,
    os::fd::RawFd,
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
};

use io_uring::{opcode, squeue, types};

use crate::op::{Completion, Op, OpCode};

/// The eventfd the `SIGINT` handler writes to (-1 before installation).
static SIGINT_EVENTFD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigint(_signal: libc::c_int) {
    let fd = SIGINT_EVENTFD.load(Ordering::Relaxed);
    if fd >= 0 {
        crate::wake::signal_eventfd(fd);
    }
}

fn install() -> io::Result<RawFd> {
    static INSTALLED: OnceLock<Result<RawFd, i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: eventfd takes no pointers. Blocking mode: io_uring completes reads of
        // O_NONBLOCK files with EAGAIN instead of waiting.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        SIGINT_EVENTFD.store(fd, Ordering::SeqCst);
        // SAFETY: `sigaction` is plain data, zeroed then filled with a handler of the right
        // signature; sigaction(2) reads it.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(fd)
    });
    match *result {
        Ok(fd) => Ok(fd),
        Err(errno) => {
            let err = io::Error::from_raw_os_error(errno);
            Err(io::Error::new(
                err.kind(),
                format!("could not install the SIGINT handler: {err}"),
            ))
        }
    }
}

/// Completes at the next Ctrl-C (`SIGINT`).
///
/// The first call replaces the process's `SIGINT` disposition (which would otherwise terminate
/// it) for good, as tokio's `ctrl_c` does.
///
/// # Errors
///
/// Fails if the handler cannot be installed.
///
/// # Panics
///
/// Panics outside a runtime.
///
/// ```no_run
/// # runtime::Runtime::new().unwrap().block_on(async {
/// runtime::signal::ctrl_c().await.unwrap();
/// println!("shutting down");
/// # });
/// ```
pub async fn ctrl_c() -> io::Result<()> {
    let fd = install()?;
    Op::new(EventfdRead {
        fd,
        buf: Box::new([0; 8]),
    })
    .await
}

/// An 8-byte read of an eventfd that is never closed.
#[derive(Debug)]
struct EventfdRead {
    fd: RawFd,
    /// Boxed: the kernel writes the counter here.
    buf: Box<[u8; 8]>,
}

// SAFETY: the SQE points at the boxed 8-byte buffer owned by `self`, and at an eventfd that
// stays open for the life of the process.
unsafe impl OpCode for EventfdRead {
    type Output = io::Result<()>;

    fn build(&mut self) -> squeue::Entry {
        opcode::Read::new(types::Fd(self.fd), self.buf.as_mut_ptr(), 8).build()
    }

    fn complete(self, cqe: Completion) -> io::Result<()> {
        cqe.into_result().map(drop)
    }
}
