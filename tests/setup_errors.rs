//! When io_uring cannot be used, `Builder::build` explains why and what to do.
//!
//! Each case runs in a child process (this test binary, re-executed with `SETUP_ERROR_CASE`
//! set), because it changes process-wide state that cannot be undone: capabilities, rlimits,
//! seccomp filters.

use std::{env, io, process::Command};

use integration_tests::{drop_cap_ipc_lock, set_memlock};

const CASE_VAR: &str = "SETUP_ERROR_CASE";
const CHILD_OK: &str = "child-checks-passed";

/// Runs `checks` in a child process: in the parent, re-executes this binary for `test_name`
/// alone and asserts the child's checks passed; in that child, runs them.
fn in_child(test_name: &str, checks: impl FnOnce()) {
    if env::var_os(CASE_VAR).is_some() {
        checks();
        println!("{CHILD_OK}");
        return;
    }
    let out = Command::new(env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, test_name)
        // `Auto` must decide on its own in the child, whatever pass this is.
        .env_remove(runtime::BACKEND_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(CHILD_OK),
        "child case {test_name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// Installs a seccomp filter that fails `io_uring_setup` with `errno`.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring_setup(errno: i32) {
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // Load seccomp_data.arch; anything but x86_64 is allowed through.
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 4,
        },
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        // Load seccomp_data.nr; io_uring_setup fails with `errno`.
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_ERRNO | errno as u32,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let prog = SockFprog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers; PR_SET_SECCOMP reads `prog`, which points at
    // `filter`; both outlive the calls.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const SockFprog
            ),
            0,
            "seccomp: {}",
            io::Error::last_os_error()
        );
    }
}

/// A runtime that must run on io_uring (`Backend::Auto` would fall back to epoll).
fn io_uring_only() -> io::Result<runtime::Runtime> {
    runtime::Builder::new()
        .backend(runtime::Backend::IoUring)
        .build()
}

/// With `io_uring_setup` failing with `errno`, `Backend::IoUring` fails with `kind` and a
/// message that contains every one of `needles`.
#[cfg(target_arch = "x86_64")]
fn refused_setup_is_explained(errno: i32, kind: io::ErrorKind, needles: &[&str]) {
    deny_io_uring_setup(errno);
    let err = io_uring_only().unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert_eq!(err.kind(), kind, "{msg}");
    for needle in needles {
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    }
}

/// Under a seccomp filter that denies `io_uring_setup` (what Docker's default profile does),
/// `Auto` runs on epoll, says why, and serves an echo round trip.
fn auto_falls_back(errno: i32, why: &str) {
    deny_io_uring_setup(errno);
    let rt = runtime::Runtime::new().expect("Auto falls back to epoll");
    let caps = rt.capabilities();
    println!("{caps}");
    assert_eq!(caps.backend(), runtime::Backend::Epoll, "{caps}");
    let note = &caps.notes()[0];
    assert!(note.contains("io_uring is not available"), "{note}");
    assert!(note.contains(why), "the note gives the setup error: {note}");
    let echoed = rt.block_on(async {
        let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = runtime::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (res, buf) = stream.read(Vec::with_capacity(64)).await;
            let n = res.unwrap();
            let (res, _) = stream.write_all(buf).await;
            res.unwrap();
            stream.flush().await.unwrap();
            n
        });
        let mut client = net::TcpStream::connect(addr).await.unwrap();
        let (res, _) = client.write_all(b"ping over epoll").await;
        res.unwrap();
        let (res, buf) = client.read_exact(vec![0u8; 15]).await;
        res.unwrap();
        assert_eq!(server.await.unwrap(), 15);
        buf
    });
    assert_eq!(&echoed[..], b"ping over epoll");
    // And the explicit choice still fails, with the explanation.
    let err = io_uring_only().unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
}

#[test]
#[cfg(target_arch = "x86_64")]
fn auto_runs_on_epoll_when_seccomp_denies_io_uring() {
    in_child("auto_runs_on_epoll_when_seccomp_denies_io_uring", || {
        auto_falls_back(libc::EPERM, "seccomp");
    });
}

#[test]
#[cfg(target_arch = "x86_64")]
fn auto_runs_on_epoll_on_a_kernel_without_io_uring() {
    in_child("auto_runs_on_epoll_on_a_kernel_without_io_uring", || {
        auto_falls_back(libc::ENOSYS, "ENOSYS");
    });
}

/// A bad `RUNTIME_BACKEND` value is an explained error, not a silent default.
#[test]
fn a_bad_backend_variable_is_explained() {
    in_child("a_bad_backend_variable_is_explained", || {
        // SAFETY: the child runs this one test on one thread (`--test-threads=1`).
        unsafe { env::set_var(runtime::BACKEND_ENV, "kqueue") };
        let err = runtime::Runtime::new().unwrap_err();
        println!("{err}");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("RUNTIME_BACKEND=epoll"), "{err}");
        let rt = runtime::Builder::new()
            .backend(runtime::Backend::Epoll)
            .build()
            .expect("an explicit backend ignores the variable");
        assert_eq!(rt.capabilities().backend(), runtime::Backend::Epoll);
    });
}

#[test]
fn memlock_too_low_is_explained() {
    in_child("memlock_too_low_is_explained", || {
        drop_cap_ipc_lock();
        set_memlock(0);
        let err = runtime::Runtime::new().unwrap_err();
        let msg = err.to_string();
        println!("{msg}");
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{msg}");
        assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
        assert!(
            msg.contains("0 bytes (soft)"),
            "names the current limit: {msg}"
        );
        assert!(msg.contains("ulimit -l"), "names a remedy: {msg}");
    });
}

#[test]
#[cfg(target_arch = "x86_64")]
fn io_uring_blocked_by_seccomp_or_sysctl_is_explained() {
    in_child("io_uring_blocked_by_seccomp_or_sysctl_is_explained", || {
        refused_setup_is_explained(
            libc::EPERM,
            io::ErrorKind::PermissionDenied,
            &["kernel.io_uring_disabled is 0", "seccomp"],
        );
    });
}

#[test]
#[cfg(target_arch = "x86_64")]
fn kernel_without_io_uring_is_explained() {
    in_child("kernel_without_io_uring_is_explained", || {
        refused_setup_is_explained(
            libc::ENOSYS,
            io::ErrorKind::Unsupported,
            &["Linux 5.11 or newer"],
        );
    });
}
