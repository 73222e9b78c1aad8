//! Dropping a runtime with tasks and operations in flight: nothing crashes, every parked
//! resource is released after its final CQE, and no file descriptor leaks.
//!
//! Tests here count the process's fds, so they take `exclusive()` to keep each other out.

use std::{sync::Arc, time::Duration};

use integration_tests::{
    DropCounter, DropFlag, TrackedRead, exclusive, open_fds, pipe, poll_once, turns_until,
};
use runtime::{Builder, Runtime, metrics, op::Op};

#[test]
fn drop_with_ops_in_flight_releases_everything_and_leaks_no_fd() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::drop_with_ops_in_flight_releases_everything_and_leaks_no_fd",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let before = open_fds();
    let counter = DropCounter::default();
    {
        let (rx, tx) = pipe().unwrap();
        let rx = Arc::new(rx);
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            for _ in 0..100 {
                let op = Op::new(TrackedRead::new(rx.clone(), 128, counter.token()));
                runtime::spawn(op);
            }
            // Tasks that nothing will ever wake, holding a resource each.
            for _ in 0..10 {
                let token = counter.token();
                runtime::spawn(async move {
                    std::future::pending::<()>().await;
                    drop(token);
                });
            }
            runtime::spawn(runtime::time::sleep(Duration::from_secs(3600)));
            assert!(turns_until(100, || metrics().ops_in_flight == 100).await);
            assert_eq!(metrics().tasks_alive, 111);
        });
        assert_eq!(counter.count(), 0);
        drop(rt);
        assert_eq!(
            counter.count(),
            110,
            "every parked resource released at shutdown"
        );
        drop(tx);
    }
    assert_eq!(open_fds(), before, "file descriptors leaked");
}

/// An operation future that outlives its runtime (returned out of `block_on`): shutdown cancels
/// it and records its final CQE; dropping it later releases the resources.
#[test]
#[allow(clippy::async_yields_async)] // the point: the op escapes `block_on` unfinished
fn op_outliving_its_runtime_is_released_when_dropped() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::op_outliving_its_runtime_is_released_when_dropped",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let before = open_fds();
    let (flag, recorder) = DropFlag::new();
    {
        let (rx, _tx) = pipe().unwrap();
        let rt = Runtime::new().unwrap();
        let op = rt.block_on(async {
            let mut op = Op::new(TrackedRead::new(Arc::new(rx), 16, recorder));
            assert!(poll_once(&mut op).await.is_pending());
            runtime::yield_now().await;
            op
        });
        drop(rt);
        assert!(!flag.dropped(), "still owned by the future");
        drop(op);
        assert!(flag.dropped());
    }
    assert_eq!(open_fds(), before, "file descriptors leaked");
}

/// Polling an operation after its runtime shut down fails cleanly instead of hanging.
#[test]
#[allow(clippy::async_yields_async)] // the point: the op escapes `block_on` unpolled
fn op_polled_after_shutdown_fails_with_ecanceled() {
    let _serial = exclusive();
    let rt = Runtime::new().unwrap();
    let op = rt.block_on(async { runtime::op::nop() });
    drop(rt);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut op = op;
    match std::pin::Pin::new(&mut op).poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.raw_os_error(), Some(libc::ECANCELED)),
        other => panic!("expected ECANCELED, got {other:?}"),
    }
}

/// Runtimes come and go on one thread without exhausting registered ring slots (16 per
/// thread) or leaking fds.
#[test]
fn many_runtimes_on_one_thread() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::many_runtimes_on_one_thread",
        "registered ring fds, IORING_REGISTER_RING_FDS",
    ) else {
        return;
    };
    let before = open_fds();
    for _ in 0..40 {
        let rt = Runtime::new().unwrap();
        assert!(rt.capabilities().registered_ring_fd());
        rt.block_on(async { runtime::op::nop().await.unwrap() });
    }
    assert_eq!(open_fds(), before);
}

/// Shutdown waits for cancelled operations only up to its deadline. With a zero deadline the
/// in-flight read cannot have finished, so its resources must be leaked, never freed: the kernel
/// may still write into them while the ring is torn down.
#[test]
fn shutdown_past_its_deadline_leaks_instead_of_freeing() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::shutdown_past_its_deadline_leaks_instead_of_freeing",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let (flag, recorder) = DropFlag::new();
    let rt = Builder::new()
        .shutdown_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let (rx, _tx) = pipe().unwrap();
    rt.block_on(async {
        runtime::spawn(Op::new(TrackedRead::new(Arc::new(rx), 16, recorder)));
        assert!(turns_until(100, || metrics().ops_in_flight == 1).await);
    });
    drop(rt);
    assert!(!flag.dropped(), "freed memory the kernel may still own");
}

/// With the default deadline, shutdown of ordinary in-flight operations completes promptly and
/// releases them.
#[test]
fn shutdown_with_in_flight_ops_is_prompt() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::shutdown_with_in_flight_ops_is_prompt",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let counter = DropCounter::default();
    let rt = Runtime::new().unwrap();
    let (rx, _tx) = pipe().unwrap();
    let rx = Arc::new(rx);
    rt.block_on(async {
        for _ in 0..1000 {
            runtime::spawn(Op::new(TrackedRead::new(rx.clone(), 16, counter.token())));
        }
        assert!(turns_until(100, || metrics().ops_in_flight == 1000).await);
    });
    let start = std::time::Instant::now();
    drop(rt);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(counter.count(), 1000);
}

/// Tasks spawned while the runtime shuts down (from a destructor) are dropped, not run.
#[test]
fn spawn_during_shutdown_is_refused() {
    let _serial = exclusive();
    struct SpawnOnDrop(DropFlag);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let ran = self.0.clone();
            let (flag, recorder) = DropFlag::new();
            let handle = runtime::spawn(async move {
                drop(recorder);
                let _ = ran;
            });
            drop(handle);
            assert!(
                flag.dropped(),
                "the refused task's future is dropped at once"
            );
        }
    }
    let (outer, _recorder) = DropFlag::new();
    let rt = Runtime::new().unwrap();
    rt.block_on(async move {
        let guard = SpawnOnDrop(outer);
        runtime::spawn(async move {
            std::future::pending::<()>().await;
            drop(guard);
        });
        runtime::yield_now().await;
    });
    drop(rt);
}

/// An operation dropped *during* the shutdown drain (here: owned by another operation's
/// resources, so it is dropped when that one's final CQE releases them) is parked like any
/// other and counted out at its final CQE, so shutdown ends as soon as the kernel released
/// everything instead of waiting for `shutdown_timeout`.
#[test]
fn op_dropped_during_the_drain_does_not_stall_shutdown() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "runtime_shutdown::op_dropped_during_the_drain_does_not_stall_shutdown",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let (rx, _tx) = pipe().unwrap();
    let rx = Arc::new(rx);
    let (flag, recorder) = DropFlag::new();
    let rt = Builder::new()
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    rt.block_on(async {
        // The inner read is in flight, owned by a future that lives inside the outer read.
        let mut inner = Op::new(TrackedRead::new(rx.clone(), 16, recorder));
        assert!(poll_once(&mut inner).await.is_pending());
        let outer = Op::new(TrackedRead::new(rx.clone(), 16, inner));
        runtime::spawn(outer);
        assert!(turns_until(100, || metrics().ops_in_flight == 2).await);
    });
    let started = std::time::Instant::now();
    drop(rt);
    let took = started.elapsed();
    assert!(
        flag.dropped(),
        "the inner read's resources were never released"
    );
    assert!(
        took < Duration::from_secs(5),
        "shutdown waited {took:?} (its timeout is 10 s) for an operation it had already released"
    );
}
