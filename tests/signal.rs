//! `runtime::signal`: Unix signals as streams, and `ctrl_c`.
//!
//! Signal handlers are process-wide, so these tests live in their own binary and each holds
//! `integration_tests::exclusive()`. Cases named after a tokio test are ported from tokio's
//! `tokio/tests/signal_*.rs` files (the file is named in each case's comment).

// The lock serialises whole tests, each on its own runtime and thread: holding it across
// `.await` is the point.
#![allow(clippy::await_holding_lock)]

use std::{future::Future, io, time::Duration};

use integration_tests::exclusive;
use runtime::{
    signal::unix::{Signal, SignalKind, signal},
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(5);

/// Sends `signum` to this process.
fn send(signum: libc::c_int) {
    // raise(3) directs the signal at this thread, so its handler has run when raise returns; a
    // process-directed kill(2) would be handled by whichever thread the kernel picks (in a test
    // binary, the main thread), at some later moment, and deliveries meant to coalesce could
    // then arrive after the receive they were meant to precede.
    // SAFETY: raise takes no pointers; every test installs the handler before it sends.
    let ret = unsafe { libc::raise(signum) };
    assert_eq!(ret, 0, "raise: {}", io::Error::last_os_error());
}

/// Waits for `fut`, failing the test after `WAIT`.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {WAIT:?}"))
}

/// Whether `signal` has a delivery ready now (polled once, then given up).
async fn is_ready(signal: &mut Signal) -> bool {
    let mut fut = std::pin::pin!(signal.recv());
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}

/// tokio: `signal_usr1.rs`, `signal_usr1`.
#[runtime::test]
async fn signal_usr1() {
    let _lock = exclusive();
    let mut sig = signal(SignalKind::user_defined1()).expect("install SIGUSR1");
    send(libc::SIGUSR1);
    assert_eq!(within("recv", sig.recv()).await, Some(()));
}

/// tokio: `signal_twice.rs`, `twice`. Two deliveries, each awaited before the next.
#[runtime::test]
async fn twice() {
    let _lock = exclusive();
    let mut sig = signal(SignalKind::hangup()).expect("install SIGHUP");
    for _ in 0..2 {
        send(libc::SIGHUP);
        assert!(within("recv", sig.recv()).await.is_some());
    }
}

/// tokio: `signal_notify_both.rs`, `notify_both`. Every `Signal` of a kind sees a delivery.
#[runtime::test]
async fn notify_both() {
    let _lock = exclusive();
    let kind = SignalKind::user_defined2();
    let mut first = signal(kind).expect("install SIGUSR2");
    let mut second = signal(kind).expect("install SIGUSR2");
    send(libc::SIGUSR2);
    within("first recv", first.recv()).await;
    within("second recv", second.recv()).await;
}

/// tokio: `signal_drop_signal.rs`, `dropping_signal_does_not_deregister_any_other_instances`.
#[runtime::test]
async fn dropping_signal_does_not_deregister_any_other_instances() {
    let _lock = exclusive();
    let kind = SignalKind::user_defined1();
    // Signals created and dropped before and after the one that listens.
    let duplicate = signal(kind).expect("first duplicate");
    let mut sig = signal(kind).expect("listener");
    drop(duplicate);
    drop(signal(kind).expect("second duplicate"));
    send(libc::SIGUSR1);
    within("recv", sig.recv()).await;
}

/// tokio: `signal_drop_recv.rs`, `drop_then_get_a_signal`. A `recv` future dropped while
/// waiting (its eventfd read cancelled in the ring) loses nothing for the next `recv`.
#[runtime::test]
async fn drop_then_get_a_signal() {
    let _lock = exclusive();
    let mut sig = signal(SignalKind::hangup()).expect("install SIGHUP");
    assert!(!is_ready(&mut sig).await, "no delivery yet");
    // The read the poll above started was dropped with its future: wait a little so its
    // cancellation has gone through the ring.
    runtime::time::sleep(Duration::from_millis(10)).await;
    send(libc::SIGHUP);
    within("recv", sig.recv()).await;
}

/// tokio: `signal_multi_rt.rs`, `multi_loop`. One delivery reaches a `Signal` on each of
/// several runtimes, each on its own thread and ring.
#[test]
fn multi_loop() {
    let _lock = exclusive();
    const LOOPS: usize = 4;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let threads: Vec<_> = (0..LOOPS)
        .map(|_| {
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let rt = runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let mut sig = signal(SignalKind::hangup()).expect("install SIGHUP");
                    // Arm the read in this ring before saying we are ready.
                    assert!(!is_ready(&mut sig).await);
                    ready.send(()).unwrap();
                    within("recv", sig.recv()).await
                })
            })
        })
        .collect();
    drop(ready_tx);
    for _ in 0..LOOPS {
        ready_rx.recv().unwrap();
    }
    send(libc::SIGHUP);
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(()));
    }
}

/// tokio: `signal_realtime.rs`, `signal_realtime`. Real-time signals, by number.
#[runtime::test]
async fn signal_realtime() {
    let _lock = exclusive();
    let numbers: Vec<libc::c_int> = (libc::SIGRTMIN()..=libc::SIGRTMAX()).collect();
    let mut signals: Vec<Signal> = numbers
        .iter()
        .map(|&n| signal(SignalKind::from_raw(n)).expect("install a real-time signal"))
        .collect();
    for &n in &numbers {
        send(n);
    }
    for (sig, n) in signals.iter_mut().zip(&numbers) {
        assert!(
            within("recv", sig.recv()).await.is_some(),
            "real-time signal {n}"
        );
    }
}

/// Deliveries that come while nobody calls `recv` coalesce into one, as in tokio.
#[runtime::test]
async fn deliveries_between_two_recvs_coalesce() {
    let _lock = exclusive();
    let mut sig = signal(SignalKind::window_change()).expect("install SIGWINCH");
    for _ in 0..3 {
        send(libc::SIGWINCH);
    }
    within("recv", sig.recv()).await;
    runtime::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !is_ready(&mut sig).await,
        "three deliveries were reported once"
    );
}

/// A `Signal` sees only deliveries after its creation.
#[runtime::test]
async fn a_signal_sees_no_delivery_from_before_it_was_created() {
    let _lock = exclusive();
    let mut early = signal(SignalKind::user_defined2()).expect("install SIGUSR2");
    send(libc::SIGUSR2);
    within("recv", early.recv()).await;
    let mut late = signal(SignalKind::user_defined2()).expect("install SIGUSR2");
    runtime::time::sleep(Duration::from_millis(20)).await;
    assert!(!is_ready(&mut late).await, "created after the delivery");
}

/// Each kind is counted on its own: a `SIGUSR1` does not complete a `SIGUSR2` listener.
#[runtime::test]
async fn kinds_are_independent() {
    let _lock = exclusive();
    let mut usr1 = signal(SignalKind::user_defined1()).expect("install SIGUSR1");
    let mut usr2 = signal(SignalKind::user_defined2()).expect("install SIGUSR2");
    assert!(!is_ready(&mut usr2).await);
    send(libc::SIGUSR1);
    within("recv", usr1.recv()).await;
    runtime::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !is_ready(&mut usr2).await,
        "SIGUSR1 woke a SIGUSR2 listener"
    );
}

/// A `Signal` waiting on another worker is woken by a delivery sent from a plain thread, and
/// so is one on this worker.
#[test]
fn signals_are_delivered_on_every_worker() {
    let _lock = exclusive();
    let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let (ready_tx, ready_rx) = runtime::sync::oneshot::channel();
        let remote = runtime::spawn_on_with(1, move || async move {
            let mut sig = signal(SignalKind::terminate()).expect("install SIGTERM");
            assert!(!is_ready(&mut sig).await);
            ready_tx.send(()).unwrap();
            within("recv on worker 1", sig.recv()).await;
            runtime::worker_id()
        });
        let mut local = signal(SignalKind::terminate()).expect("install SIGTERM");
        ready_rx.await.unwrap();
        std::thread::spawn(|| send(libc::SIGTERM)).join().unwrap();
        within("recv on worker 0", local.recv()).await;
        assert_eq!(within("worker 1", remote).await.unwrap(), 1);
    });
}

/// `Signal` is a `futures_core::Stream` of `()`.
#[runtime::test]
async fn signal_is_a_stream() {
    use futures_core::Stream;

    let _lock = exclusive();
    let mut sig = signal(SignalKind::quit()).expect("install SIGQUIT");
    send(libc::SIGQUIT);
    let item = within(
        "poll_next",
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut sig).poll_next(cx)),
    )
    .await;
    assert_eq!(item, Some(()));
}

/// The signals that cannot be handled are refused with an error that says why, and nothing is
/// installed for them.
#[test]
fn forbidden_signals_are_refused() {
    let _lock = exclusive();
    for (n, name) in [
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGBUS, "SIGBUS"),
    ] {
        let err = signal(SignalKind::from_raw(n)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("cannot"),
            "{name}: {msg}"
        );
    }
    for n in [0, -1, 65, 1000] {
        let err = signal(SignalKind::from_raw(n)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{n}");
        assert!(
            err.to_string().contains("not a signal number"),
            "{n}: {err}"
        );
    }
}

/// The named kinds are the signals they say.
#[test]
fn named_kinds() {
    let kinds = [
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::user_defined1(), libc::SIGUSR1),
        (SignalKind::user_defined2(), libc::SIGUSR2),
        (SignalKind::child(), libc::SIGCHLD),
        (SignalKind::quit(), libc::SIGQUIT),
        (SignalKind::window_change(), libc::SIGWINCH),
        (SignalKind::pipe(), libc::SIGPIPE),
        (SignalKind::alarm(), libc::SIGALRM),
    ];
    for (kind, n) in kinds {
        assert_eq!(kind.as_raw_value(), n);
        assert_eq!(SignalKind::from_raw(n), kind);
    }
}

/// SIGCHLD and SIGPIPE are delivered like the others.
#[runtime::test]
async fn child_and_pipe() {
    let _lock = exclusive();
    let mut child = signal(SignalKind::child()).expect("install SIGCHLD");
    let mut pipe = signal(SignalKind::pipe()).expect("install SIGPIPE");
    let status = std::process::Command::new("true").status();
    if status.is_err() {
        // No `true` binary: send SIGCHLD by hand.
        send(libc::SIGCHLD);
    }
    within("SIGCHLD", child.recv()).await;
    send(libc::SIGPIPE);
    within("SIGPIPE", pipe.recv()).await;
}

/// tokio: `signal_ctrl_c.rs`, `ctrl_c`. `ctrl_c` completes at a `SIGINT` after its first poll;
/// every waiting `ctrl_c` completes.
#[runtime::test]
async fn ctrl_c() {
    let _lock = exclusive();
    let first = runtime::spawn(runtime::signal::ctrl_c());
    let second = runtime::spawn(runtime::signal::ctrl_c());
    // Both tasks have polled (and registered) before the signal.
    runtime::time::sleep(Duration::from_millis(20)).await;
    send(libc::SIGINT);
    within("first ctrl_c", first).await.unwrap().unwrap();
    within("second ctrl_c", second).await.unwrap().unwrap();
}

/// Two tasks of one worker wait on the same kind, each with its read in the ring; one
/// delivery completes one of the two reads, and the other task must be woken too (while
/// neither `Signal` is dropped).
#[runtime::test]
async fn one_delivery_wakes_every_waiting_task() {
    use runtime::sync::oneshot;

    let _lock = exclusive();
    let mut ready = Vec::new();
    let mut got = Vec::new();
    let (release_tx, release_rx) = runtime::sync::watch::channel(false);
    for _ in 0..2 {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (got_tx, got_rx) = oneshot::channel();
        let mut release = release_rx.clone();
        ready.push(ready_rx);
        got.push(got_rx);
        runtime::spawn(async move {
            let mut sig = signal(SignalKind::user_defined1()).expect("install SIGUSR1");
            assert!(!is_ready(&mut sig).await);
            ready_tx.send(()).unwrap();
            let _ = got_tx.send(sig.recv().await);
            // Keep the `Signal` until the test is done.
            let _ = release.wait_for(|r| *r).await;
            drop(sig);
        });
    }
    for r in ready {
        within("task ready", r).await.unwrap();
    }
    send(libc::SIGUSR1);
    for g in got {
        assert_eq!(within("task's recv", g).await.unwrap(), Some(()));
    }
    release_tx.send(true).unwrap();
}
