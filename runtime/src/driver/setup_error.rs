//! Turns a failed `io_uring_setup` into an `io::Error` that names the cause and the remedy.
//!
//! The raw errno alone ("Operation not permitted") sends users hunting; each message here says
//! which knob is responsible on this machine and how to change it, with the current value read
//! from the system where it can be.

use std::{fs, io};

use super::setup::RingConfig;

/// Explains why the ring could not be created: `err` is `io_uring_setup`'s error for the
/// attempt with `flags` (which needs Linux `min_kernel`), `config` what was asked. The kind
/// follows the errno (`Unsupported` for `ENOSYS`); the message names the cause and the remedy.
pub(crate) fn explain(
    err: io::Error,
    config: &RingConfig,
    flags: &str,
    min_kernel: &str,
) -> io::Error {
    let errno = err.raw_os_error();
    let message = match errno {
        Some(libc::EPERM) => {
            let sysctl = read_trimmed("/proc/sys/kernel/io_uring_disabled");
            let likely = match sysctl.as_deref() {
                Some("0") | None => "so the likely cause is a seccomp profile or an LSM policy",
                Some(_) => "which disables it for this process",
            };
            format!(
                "io_uring_setup failed with EPERM: this process may not use io_uring. \
                 sysctl kernel.io_uring_disabled is {} ({likely}; 0 allows everyone, 1 only \
                 CAP_SYS_ADMIN or members of kernel.io_uring_group, 2 nobody). A seccomp \
                 profile can also deny it: Docker 25+ and many container runtimes block \
                 io_uring_setup by default. Remedy: `sysctl -w kernel.io_uring_disabled=0` (or \
                 add this user to kernel.io_uring_group), or run the container with a seccomp \
                 profile that allows io_uring_setup, io_uring_enter and io_uring_register",
                sysctl
                    .as_deref()
                    .unwrap_or("absent (kernel older than 6.6)"),
            )
        }
        Some(libc::ENOSYS) => format!(
            "io_uring_setup failed with ENOSYS: kernel {} has no io_uring (too old, or built \
             without CONFIG_IO_URING). This runtime needs Linux 5.11 or newer, 6.1+ for its \
             fastest mode",
            kernel_release()
        ),
        Some(libc::ENOMEM) => {
            let (soft, hard) = memlock_limit();
            format!(
                "io_uring_setup failed with ENOMEM: the ring ({} SQ entries, {} CQ entries) is \
                 charged against RLIMIT_MEMLOCK, which is {} (soft) / {} (hard) for this process, \
                 and the process lacks CAP_IPC_LOCK. Remedy: raise the limit (`ulimit -l \
                 unlimited`, systemd LimitMEMLOCK=infinity, `docker run --ulimit memlock=-1`) or \
                 build the runtime with smaller Builder::entries / Builder::cq_entries",
                config.entries, config.cq_entries, soft, hard
            )
        }
        Some(libc::EINVAL) => format!(
            "io_uring_setup rejected the ring parameters with EINVAL (flags: {flags}, which need \
             Linux {min_kernel}; {} SQ entries, {} CQ entries; kernel {}). Entries must be \
             1..=32768 and cq_entries between entries and 65536; on an older kernel choose \
             RingMode::Auto so the runtime falls back",
            config.entries,
            config.cq_entries,
            kernel_release()
        ),
        Some(libc::EMFILE) | Some(libc::ENFILE) => format!(
            "io_uring_setup failed: out of file descriptors ({err}); raise `ulimit -n` or close \
             descriptors"
        ),
        _ => format!("io_uring_setup failed: {err}"),
    };
    let kind = match errno {
        Some(libc::ENOSYS) => io::ErrorKind::Unsupported,
        _ => err.kind(),
    };
    io::Error::new(kind, message)
}

/// The error for a kernel that creates rings but lacks a feature the event loop relies on.
pub(crate) fn missing_feature(feature: &str, since: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "kernel {} lacks {feature}, which this runtime needs; upgrade to Linux {since} or newer",
            kernel_release()
        ),
    )
}

/// `uname -r`, or "unknown".
pub(crate) fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The current RLIMIT_MEMLOCK as human-readable (soft, hard).
fn memlock_limit() -> (String, String) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the exclusively borrowed `lim`.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if ret != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            format!("{v} bytes")
        }
    };
    (show(lim.rlim_cur), show(lim.rlim_max))
}
