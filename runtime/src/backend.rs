//! [`Backend`]: which engine runs a runtime's operations, and how `Auto` chooses.
//!
//! `Auto` (the default) uses io_uring and falls back to epoll when `io_uring_setup` is
//! refused (`EPERM`: sysctl `kernel.io_uring_disabled`, a seccomp profile such as Docker's
//! default, an LSM) or missing (`ENOSYS`), or when the kernel lacks what the event loop needs.
//! The environment variable `RUNTIME_BACKEND=io_uring|epoll` overrides `Auto` (never an
//! explicit choice), so any program can be run on either backend without recompiling.

use std::io;

/// The environment variable that overrides [`Backend::Auto`].
pub const BACKEND_ENV: &str = "RUNTIME_BACKEND";

/// Which engine runs the runtime's operations ([`Builder::backend`](crate::Builder::backend)).
///
/// Both run the same API: every socket operation, timers, signals, `spawn_on`, multi-worker
/// runtimes, graceful shutdown. Features only io_uring has (fixed buffers, zero-copy receive,
/// `MSG_RING`) report `Unsupported` or fall back on epoll, as their docs say; see
/// `docs/epoll.md` of this repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring where the process may use it, else epoll; `RUNTIME_BACKEND` overrides it.
    #[default]
    Auto,
    /// io_uring only: `build` fails with the explained setup error where it is refused.
    IoUring,
    /// One edge-triggered epoll instance per worker and non-blocking system calls.
    Epoll,
}

impl Backend {
    /// The name `RUNTIME_BACKEND` uses for it (`auto`, `io_uring`, `epoll`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }

    /// Parses a `RUNTIME_BACKEND` value.
    fn parse(value: &str) -> io::Result<Backend> {
        match value.trim().to_ascii_lowercase().as_str() {
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            "auto" | "" => Ok(Backend::Auto),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{BACKEND_ENV}={value:?} is not a backend: use {BACKEND_ENV}=io_uring, \
                     {BACKEND_ENV}=epoll or {BACKEND_ENV}=auto (or unset it)"
                ),
            )),
        }
    }

    /// What the builder asked for, with `RUNTIME_BACKEND` applied to `Auto`.
    pub(crate) fn resolve(self) -> io::Result<Backend> {
        if self != Backend::Auto {
            return Ok(self);
        }
        match std::env::var(BACKEND_ENV) {
            Ok(value) => Backend::parse(&value),
            Err(std::env::VarError::NotPresent) => Ok(Backend::Auto),
            Err(std::env::VarError::NotUnicode(value)) => Backend::parse(&value.to_string_lossy()),
        }
    }

    /// Whether `Auto` falls back to epoll after io_uring failed to start with `err` (the
    /// driver's explained setup error): refused or missing, not misconfigured.
    pub(crate) fn falls_back(err: &io::Error) -> bool {
        matches!(
            err.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
        )
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_environment_values_and_explains_a_bad_one() {
        assert_eq!(Backend::parse("epoll").unwrap(), Backend::Epoll);
        assert_eq!(Backend::parse("io_uring").unwrap(), Backend::IoUring);
        assert_eq!(Backend::parse(" Auto ").unwrap(), Backend::Auto);
        let e = Backend::parse("kqueue").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("RUNTIME_BACKEND=epoll"), "{e}");
    }

    #[test]
    fn auto_falls_back_only_when_io_uring_is_refused_or_missing() {
        let refused = io::Error::new(io::ErrorKind::PermissionDenied, "EPERM");
        let missing = io::Error::new(io::ErrorKind::Unsupported, "ENOSYS");
        let memlock = io::Error::new(io::ErrorKind::OutOfMemory, "ENOMEM");
        assert!(Backend::falls_back(&refused));
        assert!(Backend::falls_back(&missing));
        assert!(!Backend::falls_back(&memlock));
    }
}
