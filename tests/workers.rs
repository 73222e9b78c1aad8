//! Thread-per-core workers: reuse-port serving, cross-worker spawning and channels, wakes
//! under contention, pinning, graceful shutdown, Ctrl-C.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::{exclusive, open_fds, raise_fd_limit, run_in_child, skip};
use net::{ListenerOptions, TcpListener};
use runtime::{Builder, Runtime, on_each_worker, spawn_on, worker_count, worker_id};

fn workers(n: usize) -> Runtime {
    Builder::new().worker_threads(n).build().unwrap()
}

/// A free port for reuse-port listeners (taken and released, so nothing holds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every worker accepts on its own `SO_REUSEPORT` listener; together they serve 1,000
/// connections, and each connection is served entirely by one worker.
#[test]
fn reuseport_workers_share_a_thousand_connections() {
    raise_fd_limit(8192);
    let rt = workers(2);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    rt.block_on(async move {
        let (ready_tx, ready_rx) = runtime::channel::unbounded::<()>();
        let servers = on_each_worker(move |worker| {
            let ready = ready_tx.clone();
            async move {
                let listener =
                    TcpListener::bind_with(addr, ListenerOptions::new().reuse_port(true)).unwrap();
                ready.send(()).await.unwrap();
                let mut incoming = listener.incoming();
                let served = std::rc::Rc::new(std::cell::Cell::new(0usize));
                while let Some(conn) = incoming.next().await {
                    let mut stream = conn.unwrap();
                    let served = served.clone();
                    runtime::spawn(async move {
                        loop {
                            let (res, buf) = stream.read(vec![0u8; 64]).await;
                            let n = match res {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            assert_eq!(worker_id(), worker, "a connection moved between workers");
                            // Answer with the worker that served this request.
                            let mut reply = buf[..n].to_vec();
                            reply.push(worker as u8);
                            let (res, _) = stream.write_all(reply).await;
                            res.unwrap();
                        }
                        served.set(served.get() + 1);
                    });
                }
                served.get()
            }
        });
        for _ in 0..worker_count() {
            ready_rx.recv().await.unwrap();
        }
        // Clients on plain threads, three requests per connection.
        let per_worker = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let clients: Vec<_> = (0..8)
            .map(|t| {
                let per_worker = per_worker.clone();
                std::thread::spawn(move || {
                    for c in 0..125 {
                        let mut s = std::net::TcpStream::connect(addr).unwrap();
                        let mut served_by = None;
                        for r in 0..3u8 {
                            let msg = [t as u8, c as u8, r];
                            s.write_all(&msg).unwrap();
                            let mut reply = [0u8; 4];
                            s.read_exact(&mut reply).unwrap();
                            assert_eq!(&reply[..3], &msg);
                            let w = reply[3];
                            assert!(
                                served_by.is_none_or(|p| p == w),
                                "requests of one connection on two workers"
                            );
                            served_by = Some(w);
                        }
                        per_worker[served_by.unwrap() as usize].fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        while per_worker
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum::<usize>()
            < 1000
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "clients did not finish: {:?}",
                per_worker
            );
            runtime::time::sleep(Duration::from_millis(10)).await;
        }
        // Every client loop is done: joining does not block this worker.
        for c in clients {
            c.join().unwrap();
        }
        let counts: Vec<usize> = per_worker
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        assert!(
            counts.iter().all(|&c| c > 0),
            "the kernel spread no connections: {counts:?}"
        );
        for s in servers {
            s.abort();
        }
    });
}

/// 100,000 tasks sent from every worker to every other worker: none lost, no deadlock.
#[test]
fn spawn_on_between_all_workers() {
    const TOTAL: usize = 100_000;
    let rt = workers(3);
    let done = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let n = worker_count();
        let per_pair = TOTAL / (n * (n - 1));
        let senders = on_each_worker({
            let done = done.clone();
            move |from| {
                let done = done.clone();
                async move {
                    let mut handles = Vec::new();
                    for to in (0..n).filter(|&to| to != from) {
                        for i in 0..per_pair {
                            let done = done.clone();
                            handles.push(spawn_on(to, async move {
                                assert_eq!(worker_id(), to);
                                done.fetch_add(1, Ordering::Relaxed);
                                (from, to, i)
                            }));
                        }
                    }
                    let mut sum = 0;
                    for h in handles {
                        let (f, _, i) = h.await.unwrap();
                        assert_eq!(f, from);
                        sum += i;
                    }
                    sum
                }
            }
        });
        let deadline = Duration::from_secs(60);
        for s in senders {
            let sum = runtime::time::timeout(deadline, s)
                .await
                .expect("spawn_on deadlocked")
                .unwrap();
            assert_eq!(sum, (n - 1) * per_pair * (per_pair - 1) / 2);
        }
        assert_eq!(done.load(Ordering::SeqCst), per_pair * n * (n - 1));
    });
}

/// Many producers on several workers, one consumer: every message arrives, and cross-worker
/// wake-ups go through `IORING_OP_MSG_RING`.
#[test]
fn channels_between_workers_lose_no_wake() {
    let rt = workers(3);
    rt.block_on(async {
        let (tx, rx) = runtime::channel::bounded::<u64>(16);
        let producers = on_each_worker(move |worker| {
            let tx = tx.clone();
            async move {
                for i in 0..20_000u64 {
                    tx.send(i * 10 + worker as u64).await.unwrap();
                    if i % 97 == 0 {
                        runtime::time::sleep(Duration::from_micros(50)).await;
                    }
                }
                runtime::metrics().msg_ring_kicks
            }
        });
        let mut count = 0;
        let mut per_worker = [0u64; 3];
        while count < 3 * 20_000 {
            let v = runtime::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a wake-up was lost")
                .unwrap();
            per_worker[(v % 10) as usize] += 1;
            count += 1;
        }
        assert_eq!(per_worker, [20_000; 3]);
        let mut kicks = runtime::metrics().msg_ring_kicks;
        for p in producers {
            kicks += p.await.unwrap();
        }
        // The epoll backend wakes other workers through their eventfds only.
        assert!(
            kicks > 0 || integration_tests::epoll_selected(),
            "no MSG_RING kick between workers"
        );
        assert_eq!(runtime::metrics().msg_ring_fallbacks, 0);
    });
}

#[test]
fn workers_are_pinned_and_affinity_is_restored() {
    let _serial = exclusive();
    let before = affinity();
    let rt = Builder::new()
        .worker_threads(2)
        .pin_cores(true)
        .build()
        .unwrap();
    let pinned = rt.block_on(async {
        let per_worker = on_each_worker(|_| async { affinity() });
        let mut sets = Vec::new();
        for h in per_worker {
            sets.push(h.await.unwrap());
        }
        sets
    });
    drop(rt);
    assert!(pinned.iter().all(|cpus| cpus.len() == 1), "{pinned:?}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    if cpus >= 2 {
        assert_ne!(pinned[0], pinned[1], "two workers on one core");
    } else {
        skip(
            "workers::workers_are_pinned_and_affinity_is_restored",
            &format!("{cpus} CPU available: not checked that two workers sit on distinct cores"),
        );
    }
    assert_eq!(affinity(), before, "worker 0's affinity was not restored");

    let rt = Builder::new()
        .worker_threads(2)
        .pin_cores(false)
        .build()
        .unwrap();
    let unpinned = rt.block_on(async { on_each_worker(|_| async { affinity() }).remove(1).await });
    assert_eq!(unpinned.unwrap(), before);
}

fn affinity() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data; sched_getaffinity writes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Graceful shutdown with connections open and reads in flight on every worker: accept loops
/// stop, the rest is cancelled at the deadline, and no fd leaks.
#[test]
fn graceful_shutdown_meets_its_deadline_without_leaks() {
    // Counting fds needs a process of its own: the other tests here open sockets meanwhile.
    const CASE: &str = "WORKERS_GRACEFUL";
    const OK: &str = "child-checks-passed";
    if std::env::var(CASE).is_err() {
        run_in_child(
            "graceful_shutdown_meets_its_deadline_without_leaks",
            CASE,
            "fds",
            OK,
        );
        return;
    }
    let before = open_fds();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let rt = workers(2);
    let stopped_accepting = Arc::new(AtomicUsize::new(0));
    let clients = rt.block_on({
        let stopped = stopped_accepting.clone();
        async move {
            let (ready_tx, ready_rx) = runtime::channel::unbounded::<()>();
            on_each_worker(move |_| {
                let ready = ready_tx.clone();
                let stopped = stopped.clone();
                async move {
                    let listener =
                        TcpListener::bind_with(addr, ListenerOptions::new().reuse_port(true))
                            .unwrap();
                    ready.send(()).await.unwrap();
                    let mut incoming = listener.incoming();
                    let shutdown = std::pin::pin!(runtime::shutdown_requested());
                    let mut shutdown = Some(shutdown);
                    loop {
                        let next = std::pin::pin!(incoming.next());
                        match select(next, shutdown.as_mut().unwrap().as_mut()).await {
                            Either::Left(Some(Ok(mut stream))) => {
                                runtime::spawn(async move {
                                    // A read that never completes: the client never sends.
                                    let _ = stream.read(vec![0u8; 16]).await;
                                });
                            }
                            Either::Left(_) => {}
                            Either::Right(()) => break,
                        }
                    }
                    stopped.fetch_add(1, Ordering::SeqCst);
                    shutdown.take();
                }
            });
            for _ in 0..2 {
                ready_rx.recv().await.unwrap();
            }
            let clients: Vec<std::net::TcpStream> = (0..50)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            runtime::time::sleep(Duration::from_millis(50)).await;
            clients
        }
    });
    let start = Instant::now();
    rt.shutdown_graceful(Duration::from_millis(300));
    let took = start.elapsed();
    assert_eq!(
        stopped_accepting.load(Ordering::SeqCst),
        2,
        "an accept loop did not stop"
    );
    assert!(
        took >= Duration::from_millis(250),
        "returned before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "shutdown overran its deadline: {took:?}"
    );
    for c in &clients {
        let _ = c.shutdown(Shutdown::Both);
    }
    drop(clients);
    assert_eq!(open_fds(), before, "file descriptors leaked");
    println!("{OK}");
}

enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; the first to finish wins.
async fn select<A: std::future::Future + Unpin, B: std::future::Future + Unpin>(
    mut a: A,
    mut b: B,
) -> Either<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = std::pin::Pin::new(&mut a).poll(cx) {
            return std::task::Poll::Ready(Either::Left(v));
        }
        if let std::task::Poll::Ready(v) = std::pin::Pin::new(&mut b).poll(cx) {
            return std::task::Poll::Ready(Either::Right(v));
        }
        std::task::Poll::Pending
    })
    .await
}

/// Ctrl-C completes `ctrl_c()` instead of killing the process (in a child process, since it
/// installs a process-wide handler).
#[test]
fn ctrl_c_is_a_future() {
    const CASE: &str = "WORKERS_CTRL_C";
    const OK: &str = "child-checks-passed";
    if std::env::var(CASE).is_err() {
        run_in_child("ctrl_c_is_a_future", CASE, "sigint", OK);
        return;
    }
    let rt = workers(2);
    rt.block_on(async {
        // Install the handler (and wait) on worker 1, signal from a plain thread.
        let waiter = runtime::spawn_on_with(1, || async {
            runtime::signal::ctrl_c().await.unwrap();
            worker_id()
        });
        runtime::time::sleep(Duration::from_millis(50)).await;
        let kill = std::thread::spawn(|| {
            // SAFETY: sends SIGINT to this process, whose handler is installed.
            unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        });
        let worker = runtime::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("ctrl_c did not complete")
            .unwrap();
        assert_eq!(worker, 1);
        kill.join().unwrap();
        // A second Ctrl-C is seen by a second call.
        let again = runtime::spawn(runtime::signal::ctrl_c());
        runtime::time::sleep(Duration::from_millis(20)).await;
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        runtime::time::timeout(Duration::from_secs(5), again)
            .await
            .expect("second ctrl_c did not complete")
            .unwrap()
            .unwrap();
    });
    println!("{OK}");
}

#[runtime::test(threads = 2)]
async fn the_test_macro_takes_threads() {
    assert_eq!(worker_count(), 2);
    assert_eq!(worker_id(), 0);
    let other = spawn_on(1, async { worker_id() }).await.unwrap();
    assert_eq!(other, 1);
}

#[runtime::test]
async fn the_macros_default_to_one_worker() {
    assert_eq!(worker_count(), 1);
}

/// Tasks sent to a worker that has shut down are cancelled, not lost in a queue.
#[test]
#[allow(clippy::async_yields_async)] // the point: the handle outlives the runtime
fn spawn_on_after_a_worker_stopped_is_cancelled() {
    let rt = workers(2);
    let handle = rt.block_on(async {
        let h = spawn_on(1, std::future::pending::<()>());
        runtime::yield_now().await;
        h
    });
    drop(rt);
    let rt = Runtime::new().unwrap();
    let res = rt.block_on(handle);
    assert!(res.unwrap_err().is_cancelled());
}

/// The io_uring fds open in this process.
fn io_uring_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_string_lossy()
                .contains("io_uring")
                .then(|| e.file_name().to_string_lossy().parse().ok())?
        })
        .collect()
}

/// A `MSG_RING` kick is queued when the waker runs and submitted at the sender's next enter.
/// If the target ring closes in between and its fd number is taken by another ring, the kick
/// must not land there (a CQE with our `user_data` in somebody else's ring).
#[test]
fn msg_ring_kick_never_reaches_a_ring_that_reused_the_target_fd() {
    const CASE: &str = "RUNTIME_TEST_KICK_REUSE";
    const OK: &str = "kick-reuse-checks-passed";
    let name = "msg_ring_kick_never_reaches_a_ring_that_reused_the_target_fd";
    if std::env::var(CASE).is_err() {
        run_in_child(name, CASE, "child", OK);
        return;
    }
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    use std::task::{Poll, Waker};

    let sender = Runtime::new().unwrap();
    if !sender
        .capabilities()
        .supports_opcode(io_uring::opcode::MsgRingData::CODE)
    {
        println!("IORING_OP_MSG_RING unsupported: nothing to test\n{OK}");
        return;
    }
    let (waker_tx, waker_rx) = std::sync::mpsc::channel::<(Waker, Vec<i32>)>();
    let release = Arc::new(AtomicBool::new(false));
    let released = release.clone();
    let target = std::thread::spawn(move || {
        let before = io_uring_fds();
        let rt = Runtime::new().unwrap();
        let ring_fds: Vec<i32> = io_uring_fds()
            .into_iter()
            .filter(|fd| !before.contains(fd))
            .collect();
        rt.block_on(async {
            let mut deadline = std::pin::pin!(runtime::time::sleep(Duration::from_millis(300)));
            let mut sent = false;
            std::future::poll_fn(|cx| {
                if !sent {
                    sent = true;
                    waker_tx
                        .send((cx.waker().clone(), ring_fds.clone()))
                        .unwrap();
                }
                if released.load(Ordering::SeqCst) || deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        });
        // Dropping the runtime closes its ring: its fd number is free for reuse.
    });
    sender.block_on(async {
        let (waker, ring_fds) = waker_rx.recv().unwrap();
        // The ring fd is the first io_uring fd the target opened (it may hold duplicates).
        let target_fd = *ring_fds
            .iter()
            .min()
            .expect("the target runtime opened a ring");
        // Let the target fall asleep in its enter, then wake it from this runtime's thread:
        // the kick is queued in this ring's SQ, not yet submitted.
        std::thread::sleep(Duration::from_millis(100));
        release.store(true, Ordering::SeqCst);
        waker.wake();
        // Without entering this ring: the target wakes on its own timer, sees the release,
        // and shuts down, closing its ring.
        target.join().unwrap();
        // Another ring takes the target's old fd number.
        let mut other = io_uring::IoUring::new(8).unwrap();
        // SAFETY: dup2 onto a number this test knows is free (the target ring's, just closed).
        let fd = unsafe { libc::dup2(other.as_raw_fd(), target_fd) };
        assert_eq!(fd, target_fd, "dup2: {}", std::io::Error::last_os_error());
        // Now this runtime enters and submits the kick.
        for _ in 0..10 {
            runtime::yield_now().await;
        }
        let mut cq = other.completion();
        cq.sync();
        let stray: Vec<u64> = cq.map(|cqe| cqe.user_data()).collect();
        assert!(
            stray.is_empty(),
            "a kick meant for a closed ring landed in the ring that reused its fd: {stray:x?}"
        );
        // SAFETY: closes the duplicate made above, which nothing else uses.
        unsafe { libc::close(target_fd) };
    });
    println!("{OK}");
}
