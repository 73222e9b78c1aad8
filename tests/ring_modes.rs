//! Ring modes beyond the default: SQPOLL (a kernel submission thread) and NAPI busy polling.
//! Each SQPOLL test checks one guarantee of the default mode in that mode: the thread is woken
//! when it sleeps, a full SQ waits in the backlog, an overflowing CQ loses nothing, sends that
//! skip their completion are known complete, shutdown drains, and a refused SQPOLL falls back.
//! Every socket test also runs in SQPOLL mode in CI (`RUNTIME_SQPOLL`, see `.ci/run`).
//!
//! Every test takes `exclusive()`: some count the process's fds or create network
//! namespaces, and the others open fds meanwhile.

use std::{
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    sync::Arc,
    time::Duration,
};

use integration_tests::{
    DropCounter, TrackedRead, eventually, join_all, open_fds, pipe, run_in_child, skip, turns_until,
};
use net::{TcpListener, TcpStream};
use runtime::{
    Builder, Runtime, metrics,
    op::{Op, Timeout, nop},
    time::timeout,
};

/// A single-worker runtime with an SQ thread that sleeps after `idle_ms` without work.
fn sqpoll(idle_ms: u64) -> Builder {
    let mut b = Builder::new();
    b.worker_threads(1).sqpoll(Duration::from_millis(idle_ms));
    b
}

/// The names of this process's threads (`/proc/self/task/*/comm`).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// What the tests of ring modes start with: `None` on the epoll backend (the test is skipped,
/// logged with the reason), otherwise the lock that runs one at a time (they count threads
/// and fds, and pin CPUs).
fn ring_mode_test(name: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    let test = format!("ring_modes::{name}");
    integration_tests::exclusive_on_io_uring(&test, "SQPOLL and NAPI are io_uring ring modes")
}

#[test]
fn sqpoll_runs_a_kernel_thread_and_says_so() {
    let Some(_serial) = ring_mode_test("sqpoll_runs_a_kernel_thread_and_says_so") else {
        return;
    };
    let rt = sqpoll(10).build().unwrap();
    let caps = rt.capabilities();
    assert!(caps.sqpoll(), "{caps}");
    assert!(!caps.defer_taskrun() && !caps.coop_taskrun(), "{caps}");
    assert_eq!(caps.sqpoll_idle(), Some(Duration::from_millis(10)));
    assert!(caps.sqpoll_cpu().is_some(), "{caps}");
    assert!(
        caps.notes()
            .iter()
            .any(|n| n.contains("SQPOLL") && n.contains("DEFER_TASKRUN")),
        "the notes say why DEFER_TASKRUN is off: {caps}"
    );
    assert!(caps.to_string().contains("mode SQPOLL"), "{caps}");
    // The kernel names the SQ thread after the task that created the ring.
    // SAFETY: gettid takes no arguments.
    let sq_thread = format!("iou-sqp-{}", unsafe { libc::gettid() });
    // The thread renames itself once it runs.
    assert!(
        eventually(Duration::from_secs(2), || thread_names()
            .contains(&sq_thread)),
        "no {sq_thread} thread: {:?}",
        thread_names()
    );
    rt.block_on(async {
        let ops: Vec<_> = (0..300).map(|_| nop()).collect();
        assert!(join_all(ops).await.iter().all(|r| r.is_ok()));
    });
}

#[test]
fn sqpoll_cpu_is_the_one_asked_for() {
    let Some(_serial) = ring_mode_test("sqpoll_cpu_is_the_one_asked_for") else {
        return;
    };
    let rt = sqpoll(10).sqpoll_cpu(0).build().unwrap();
    assert_eq!(rt.capabilities().sqpoll_cpu(), Some(0));
    rt.block_on(async { nop().await.unwrap() });
}

/// Two workers, each with its own SQ thread on the CPU after its own: work sent to the other
/// worker (a `MSG_RING` kick into a ring whose loop sleeps in its enter) runs there, and its
/// result comes back the same way, rounds apart so that both SQ threads have gone to sleep.
#[test]
fn sqpoll_workers_wake_each_other() {
    let Some(_serial) = ring_mode_test("sqpoll_workers_wake_each_other") else {
        return;
    };
    let mut b = Builder::new();
    b.worker_threads(2).sqpoll(Duration::from_millis(1));
    let rt = b.build().unwrap();
    assert!(rt.capabilities().sqpoll());
    rt.block_on(async {
        for round in 0..5u64 {
            runtime::time::sleep(Duration::from_millis(10)).await;
            let remote = runtime::spawn_on_with(1, move || async move {
                nop().await.unwrap();
                let caps = runtime::capabilities();
                (round * 2, caps.sqpoll(), caps.sqpoll_cpu())
            });
            let (value, sqpoll, cpu) = timeout(Duration::from_secs(5), remote)
                .await
                .expect("the other worker answered")
                .unwrap();
            assert_eq!(value, round * 2);
            assert!(sqpoll, "worker 1 runs SQPOLL too");
            let own = rt_cpu();
            assert!(
                cpu.is_some() && cpu != own,
                "worker 1's SQ thread is on {cpu:?}"
            );
        }
    });
}

/// The SQ CPU of the calling worker's ring.
fn rt_cpu() -> Option<u32> {
    runtime::capabilities().sqpoll_cpu()
}

/// The thread sleeps after 1 ms idle; an operation queued afterwards must wake it, whether
/// the loop then blocks for the completion or stays busy with another task.
#[test]
fn sqpoll_wakes_its_sleeping_thread() {
    let Some(_serial) = ring_mode_test("sqpoll_wakes_its_sleeping_thread") else {
        return;
    };
    let rt = sqpoll(1).build().unwrap();
    rt.block_on(async {
        for round in 0..5 {
            runtime::time::sleep(Duration::from_millis(20)).await;
            let done = timeout(Duration::from_secs(2), nop()).await;
            assert!(
                matches!(done, Ok(Ok(_))),
                "round {round}: the NOP never completed, the SQ thread slept on"
            );
        }
        for round in 0..5 {
            runtime::time::sleep(Duration::from_millis(20)).await;
            // A task that keeps the loop from blocking: enters are then optional.
            let spinner = runtime::spawn(async {
                loop {
                    runtime::yield_now().await;
                }
            });
            let done = timeout(Duration::from_secs(2), nop()).await;
            spinner.abort();
            assert!(
                matches!(done, Ok(Ok(_))),
                "round {round} (busy loop): the NOP never completed, the SQ thread slept on"
            );
        }
    });
}

/// 10,000 timers through an 8-entry SQ: pushes beyond 8 wait for the thread to make room
/// (`IORING_ENTER_SQ_WAIT`) or in the backlog, and none is lost.
#[test]
fn sqpoll_full_sq_loses_nothing() {
    let Some(_serial) = ring_mode_test("sqpoll_full_sq_loses_nothing") else {
        return;
    };
    let rt = sqpoll(10).entries(8).cq_entries(64).build().unwrap();
    assert!(rt.capabilities().sqpoll());
    rt.block_on(async {
        let ops: Vec<_> = (0..10_000)
            .map(|_| Op::new(Timeout::new(Duration::from_millis(50))))
            .collect();
        let results = join_all(ops).await;
        assert!(results.iter().all(|r| r.is_ok()));
        let m = metrics();
        assert_eq!(m.ops_in_flight, 0, "{m:?}");
        assert_eq!(m.ops_submitted, 10_000, "{m:?}");
    });
}

/// 2,000 NOPs queued in one poll with a 4-entry CQ: the thread's CQEs overflow into the
/// kernel's list and each is still delivered.
#[test]
fn sqpoll_cq_overflow_delivers_every_completion() {
    let Some(_serial) = ring_mode_test("sqpoll_cq_overflow_delivers_every_completion") else {
        return;
    };
    let rt = sqpoll(10).entries(4).cq_entries(4).build().unwrap();
    assert!(rt.capabilities().sqpoll());
    rt.block_on(async {
        let ops: Vec<_> = (0..2_000).map(|_| nop()).collect();
        let results = join_all(ops).await;
        assert!(results.iter().all(|r| r.is_ok()));
        let m = metrics();
        assert!(m.cq_overflows > 0, "the CQ never overflowed: {m:?}");
        assert_eq!(m.ops_in_flight, 0);
        assert_eq!(m.stray_completions, 0);
    });
}

/// Small writes go out as skip-success sends: each is known complete once the SQ thread has
/// taken it and posted no failure. Every byte arrives, in order, and a flush returns.
#[test]
fn sqpoll_skip_success_sends_deliver_every_byte() {
    let Some(_serial) = ring_mode_test("sqpoll_skip_success_sends_deliver_every_byte") else {
        return;
    };
    let rt = sqpoll(10).build().unwrap();
    let (total, received) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut total = Vec::new();
        for i in 0..2_000u32 {
            let msg = format!("message {i}\n").into_bytes();
            total.extend_from_slice(&msg);
            let (res, _) = stream.write_all(msg).await;
            res.unwrap();
            if i % 100 == 0 {
                timeout(Duration::from_secs(5), stream.flush())
                    .await
                    .expect("a flush in SQPOLL mode returns")
                    .unwrap();
            }
        }
        stream.flush().await.unwrap();
        drop(stream);
        (total, reader.join().unwrap())
    });
    assert_eq!(received.len(), total.len());
    assert!(received == total, "bytes arrived out of order or changed");
}

/// Dropping an SQPOLL runtime with reads in flight, idle tasks and bytes just written behind:
/// the bytes go out, every parked resource is released after its final CQE, no fd leaks.
#[test]
fn sqpoll_shutdown_with_ops_in_flight_drains() {
    let Some(_serial) = ring_mode_test("sqpoll_shutdown_with_ops_in_flight_drains") else {
        return;
    };
    let before = open_fds();
    let counter = DropCounter::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    });
    {
        let (rx, tx) = pipe().unwrap();
        let rx = Arc::new(rx);
        let rt = sqpoll(10).build().unwrap();
        assert!(rt.capabilities().sqpoll());
        rt.block_on(async {
            for _ in 0..100 {
                runtime::spawn(Op::new(TrackedRead::new(rx.clone(), 128, counter.token())));
            }
            for _ in 0..10 {
                let token = counter.token();
                runtime::spawn(async move {
                    std::future::pending::<()>().await;
                    drop(token);
                });
            }
            assert!(turns_until(1000, || metrics().ops_in_flight >= 100).await);
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Written behind: still queued when the runtime is dropped.
            let (res, _) = stream.write_all(b"last words".to_vec()).await;
            res.unwrap();
            runtime::spawn(async move {
                let _keep = stream;
                std::future::pending::<()>().await;
            });
        });
        drop(rt);
        assert_eq!(counter.count(), 110, "every parked resource released");
        drop(tx);
    }
    assert_eq!(reader.join().unwrap(), b"last words");
    assert_eq!(open_fds(), before, "file descriptors leaked");
}

/// Bytes written behind just before the drop, while the SQ thread sleeps: the drain wakes the
/// thread and waits for it to take each send before it counts a turn, so a send staged behind
/// another still goes out.
#[test]
fn sqpoll_shutdown_sends_what_was_written_behind_while_the_thread_slept() {
    let Some(_serial) =
        ring_mode_test("sqpoll_shutdown_sends_what_was_written_behind_while_the_thread_slept")
    else {
        return;
    };
    for round in 0..5 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let rt = sqpoll(1).build().unwrap();
        rt.block_on(async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Long enough for the thread to go to sleep (1 ms idle).
            runtime::time::sleep(Duration::from_millis(20)).await;
            for part in [&b"first "[..], b"second ", b"third"] {
                let (res, _) = stream.write_all(part.to_vec()).await;
                res.unwrap();
            }
            runtime::spawn(async move {
                let _keep = stream;
                std::future::pending::<()>().await;
            });
        });
        drop(rt);
        assert_eq!(
            String::from_utf8_lossy(&reader.join().unwrap()),
            "first second third",
            "round {round}"
        );
    }
}

/// A CPU the process may not use makes the kernel refuse SQPOLL (`EINVAL`): the ring is built
/// without it, in the fastest mode left, and the notes say why.
#[test]
fn refused_sqpoll_falls_back_with_a_note() {
    let Some(_serial) = ring_mode_test("refused_sqpoll_falls_back_with_a_note") else {
        return;
    };
    let rt = sqpoll(10).sqpoll_cpu(1 << 20).build().unwrap();
    let caps = rt.capabilities();
    assert!(!caps.sqpoll(), "{caps}");
    assert!(
        caps.defer_taskrun(),
        "fell back to the fastest mode: {caps}"
    );
    assert!(
        caps.notes()
            .iter()
            .any(|n| n.starts_with("SQPOLL off") && n.contains("EINVAL")),
        "{caps}"
    );
    rt.block_on(async {
        let ops: Vec<_> = (0..100).map(|_| nop()).collect();
        assert!(join_all(ops).await.iter().all(|r| r.is_ok()));
    });
}

/// Zero-copy receive needs DEFER_TASKRUN: asked together, SQPOLL yields with a note.
#[test]
fn sqpoll_yields_to_zero_copy_receive() {
    let Some(_serial) = ring_mode_test("sqpoll_yields_to_zero_copy_receive") else {
        return;
    };
    let mut b = sqpoll(10);
    b.zcrx(
        runtime::zcrx::ZcrxConfig::new("lo", 0)
            .mode(runtime::zcrx::ZcrxMode::Auto)
            .clone(),
    );
    let rt = b.build().unwrap();
    let caps = rt.capabilities();
    assert!(!caps.sqpoll(), "{caps}");
    assert!(
        caps.notes()
            .iter()
            .any(|n| n.starts_with("SQPOLL off") && n.contains("zero-copy receive")),
        "{caps}"
    );
}

/// `RUNTIME_SQPOLL=<idle ms>` switches `Builder::new` to SQPOLL; a malformed value fails
/// `build` with a message naming the variable. Run in child processes, which own their
/// environment.
#[test]
fn sqpoll_environment_variable() {
    let Some(_serial) = ring_mode_test("sqpoll_environment_variable") else {
        return;
    };
    match std::env::var("RUNTIME_SQPOLL").ok().as_deref() {
        None => {
            run_in_child(
                "sqpoll_environment_variable",
                "RUNTIME_SQPOLL",
                "7",
                "env sqpoll on",
            );
            run_in_child(
                "sqpoll_environment_variable",
                "RUNTIME_SQPOLL",
                "soon",
                "env sqpoll rejected",
            );
        }
        Some("soon") => {
            let err = Builder::new().build().unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("RUNTIME_SQPOLL"), "{err}");
            println!("env sqpoll rejected");
        }
        Some(ms) => {
            let rt = Runtime::new().unwrap();
            let caps = rt.capabilities();
            let ms: u64 = ms.parse().unwrap();
            assert_eq!(
                caps.sqpoll_idle(),
                Some(Duration::from_millis(ms)),
                "{caps}"
            );
            println!("env sqpoll on");
        }
    }
}

/// Runs `ip` with `args`; `Err` with its stderr when it fails or is missing.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by a veth pair, deleted (with the pair) on drop.
struct VethPair {
    names: [String; 2],
}

impl VethPair {
    fn create() -> Result<VethPair, String> {
        let pid = std::process::id();
        let pair = VethPair {
            names: [format!("rtnapi-{pid}-a"), format!("rtnapi-{pid}-b")],
        };
        let [a, b] = &pair.names;
        let (va, vb) = (format!("rtn{pid}a"), format!("rtn{pid}b"));
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&[
            "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ])?;
        ip(&["-n", a, "addr", "add", "10.199.0.1/24", "dev", &va])?;
        ip(&["-n", b, "addr", "add", "10.199.0.2/24", "dev", &vb])?;
        ip(&["-n", a, "link", "set", &va, "up"])?;
        ip(&["-n", b, "link", "set", &vb, "up"])?;
        Ok(pair)
    }

    /// Moves the calling thread into namespace `i` (only this thread: `setns` is per task).
    fn enter(&self, i: usize) {
        let path = format!("/var/run/netns/{}", self.names[i]);
        let ns = std::fs::File::open(&path).unwrap();
        // SAFETY: setns takes an fd we own for the call and a namespace type; it changes only
        // the calling thread's network namespace.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The io_uring fds of this process, as numbers.
fn io_uring_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (target.to_string_lossy() == "anon_inode:[io_uring]")
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
        .collect()
}

fn fdinfo(fd: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap()
}

/// NAPI busy polling on a ring whose sockets talk over a veth pair between two namespaces the
/// test creates: the registration is in force while the runtime runs (the kernel's fdinfo
/// says so), traffic flows, and shutdown unregisters it (read through a duplicate of the
/// ring fd that outlives the runtime).
#[test]
fn napi_busy_poll_registers_and_unregisters_on_a_veth_pair() {
    const TEST: &str = "ring_modes::napi_busy_poll_registers_and_unregisters_on_a_veth_pair";
    let Some(_serial) =
        integration_tests::exclusive_on_io_uring(TEST, "SQPOLL and NAPI are io_uring ring modes")
    else {
        return;
    };
    let pair = match VethPair::create() {
        Ok(pair) => Arc::new(pair),
        Err(e) => return skip(TEST, &format!("no veth pair in fresh namespaces: {e}")),
    };
    let server_pair = pair.clone();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        server_pair.enter(0);
        let before = io_uring_fds();
        let mut b = Builder::new();
        b.worker_threads(1)
            .napi_busy_poll(Duration::from_micros(50), true);
        let rt = b.build().unwrap();
        let caps = rt.capabilities();
        assert_eq!(
            caps.napi_busy_poll(),
            Some((Duration::from_micros(50), true)),
            "{caps}"
        );
        let ring = io_uring_fds()
            .into_iter()
            .find(|fd| !before.contains(fd))
            .expect("the runtime's ring fd");
        let info = fdinfo(ring);
        let fdinfo_has_napi = info.contains("NAPI:");
        if fdinfo_has_napi {
            assert!(info.contains("NAPI:\tenabled"), "{info}");
            assert!(info.contains("napi tracking:\tdynamic"), "{info}");
            assert!(info.contains("napi_busy_poll_dt:\t50000"), "{info}");
            assert!(info.contains("napi_prefer_busy_poll:\ttrue"), "{info}");
        }
        // SAFETY: dup takes an fd number and returns a new descriptor we own.
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(ring)) };
        rt.block_on(async {
            let listener = TcpListener::bind("10.199.0.1:0").unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let (res, buf) = stream.read(Vec::with_capacity(64)).await;
            let n = res.unwrap();
            let (res, _) = stream.write_all(buf).await;
            res.unwrap();
            stream.flush().await.unwrap();
            assert_eq!(n, 5);
        });
        drop(rt);
        let after = fdinfo(dup.as_raw_fd());
        if fdinfo_has_napi {
            assert!(
                after.contains("NAPI:\tdisabled"),
                "still registered: {after}"
            );
        }
        fdinfo_has_napi
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server listens");
    pair.enter(1);
    let mut client = std::net::TcpStream::connect(("10.199.0.1", port)).unwrap();
    client.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    let checked_fdinfo = server.join().unwrap();
    if !checked_fdinfo {
        skip(
            TEST,
            "this kernel's ring fdinfo has no NAPI section (6.12+): the registration was not \
             read back",
        );
    }
}
