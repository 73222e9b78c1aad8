//! Dropping an operation's future before its final CQE: the resources it lent the kernel stay
//! alive, parked in the driver, until that CQE arrives, and are released right after it.

use std::{sync::Arc, time::Duration};

use integration_tests::{DropFlag, TrackedRead, pipe, poll_once, turns_until};
use runtime::{Runtime, metrics, op::Op};

#[test]
fn dropped_read_keeps_its_resources_until_the_final_cqe() {
    if integration_tests::skip_on_epoll(
        "driver_drop::dropped_read_keeps_its_resources_until_the_final_cqe",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    let (rx, _tx) = pipe().unwrap();
    let rx = Arc::new(rx);
    let (flag, recorder) = DropFlag::new();
    rt.block_on(async {
        let mut op = Op::new(TrackedRead::new(rx.clone(), 64, recorder));
        assert!(poll_once(&mut op).await.is_pending());
        // One loop turn hands the SQE to the kernel; the pipe is empty, so the read waits.
        runtime::yield_now().await;
        assert_eq!(metrics().ops_in_flight, 1);

        drop(op);
        assert!(
            !flag.dropped(),
            "resources freed while the kernel owned them"
        );
        let m = metrics();
        assert_eq!((m.ops_in_flight, m.ops_parked), (1, 1), "{m:?}");

        // The next turns submit the cancel and reap the read's -ECANCELED; only then is the
        // parked operation released.
        assert!(turns_until(100, || flag.dropped()).await, "never released");
        let m = metrics();
        assert_eq!((m.ops_in_flight, m.ops_parked), (0, 0), "{m:?}");
    });
}

#[test]
fn dropping_an_unsubmitted_op_releases_at_once() {
    let rt = Runtime::new().unwrap();
    let (rx, _tx) = pipe().unwrap();
    let (flag, recorder) = DropFlag::new();
    rt.block_on(async {
        let op = Op::new(TrackedRead::new(Arc::new(rx), 64, recorder));
        drop(op);
        assert!(flag.dropped());
        assert_eq!(metrics().ops_submitted, 0);
    });
}

/// The final CQE already arrived but the future was dropped before looking at it: the driver
/// releases the resources during the drop.
#[test]
fn dropping_after_the_cqe_arrived_releases_during_the_drop() {
    if integration_tests::skip_on_epoll(
        "driver_drop::dropping_after_the_cqe_arrived_releases_during_the_drop",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    let (rx, tx) = pipe().unwrap();
    let (flag, recorder) = DropFlag::new();
    rt.block_on(async {
        let mut op = Op::new(TrackedRead::new(Arc::new(rx), 64, recorder));
        assert!(poll_once(&mut op).await.is_pending());
        // SAFETY: writes 5 bytes from a static buffer to the pipe we own.
        let n = unsafe {
            use std::os::fd::AsRawFd;
            libc::write(tx.as_raw_fd(), b"hello".as_ptr().cast(), 5)
        };
        assert_eq!(n, 5);
        assert!(turns_until(100, || metrics().ops_in_flight == 0).await);
        assert!(!flag.dropped());
        drop(op);
        assert!(flag.dropped());
        assert_eq!(metrics().ops_parked, 0);
    });
}

/// A read that completes with data just as it is dropped: the bytes land in the parked buffer,
/// never in freed memory, and the buffer is released after the CQE.
#[test]
fn cancel_racing_completion_is_sound() {
    if integration_tests::skip_on_epoll(
        "driver_drop::cancel_racing_completion_is_sound",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    for _ in 0..200 {
        let (rx, tx) = pipe().unwrap();
        let (flag, recorder) = DropFlag::new();
        rt.block_on(async {
            let mut op = Op::new(TrackedRead::new(Arc::new(rx), 4096, recorder));
            assert!(poll_once(&mut op).await.is_pending());
            runtime::yield_now().await;
            // SAFETY: writes 3 bytes from a static buffer to the pipe we own.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::write(tx.as_raw_fd(), b"abc".as_ptr().cast(), 3);
            }
            drop(op);
            assert!(turns_until(1000, || flag.dropped()).await);
        });
    }
    rt.block_on(async {
        let m = metrics();
        assert_eq!(
            (m.ops_in_flight, m.ops_parked, m.stray_completions),
            (0, 0, 0)
        );
    });
}

/// A future holding an in-flight operation inside a task that is aborted.
#[test]
fn aborting_a_task_parks_its_operation() {
    if integration_tests::skip_on_epoll(
        "driver_drop::aborting_a_task_parks_its_operation",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    let (rx, _tx) = pipe().unwrap();
    let rx = Arc::new(rx);
    let (flag, recorder) = DropFlag::new();
    rt.block_on(async {
        let task = runtime::spawn(Op::new(TrackedRead::new(rx.clone(), 16, recorder)));
        assert!(turns_until(100, || metrics().ops_in_flight == 1).await);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(turns_until(100, || flag.dropped()).await);
        runtime::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(metrics().ops_parked, 0);
    });
}

/// A multishot poll (`IORING_POLL_ADD_MULTI`: one CQE with `F_MORE` per readiness event) on a
/// pipe, whose `next` panics on the first event, to check that a panic in a multishot op's
/// `next` does not free what the kernel still owns.
struct PanickingPoll {
    /// Kept open until the final CQE, as `MultishotOp` requires.
    fd: Arc<std::os::fd::OwnedFd>,
    _resource: integration_tests::DropRecorder,
}

// SAFETY: the SQE names only `fd`, which `self` keeps open; no memory. `next` panics on purpose
// (this test's subject) but never causes undefined behaviour.
unsafe impl runtime::op::MultishotOp for PanickingPoll {
    type Item = ();

    fn build(&mut self) -> io_uring::squeue::Entry {
        use std::os::fd::AsRawFd;
        io_uring::opcode::PollAdd::new(
            io_uring::types::Fd(self.fd.as_raw_fd()),
            libc::POLLIN as u32,
        )
        .multi(true)
        .build()
    }

    fn next(&mut self, cqe: runtime::op::Completion) -> Option<()> {
        assert!(!cqe.has_more(), "test op: `next` panics on an F_MORE CQE");
        None
    }

    fn next_detached(&mut self, _cqe: runtime::op::Completion) {}
}

#[test]
fn panic_in_multishot_next_parks_the_data_the_kernel_owns() {
    if integration_tests::skip_on_epoll(
        "driver_drop::panic_in_multishot_next_parks_the_data_the_kernel_owns",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    use std::io::Write;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::pin::Pin;
    use std::task::Poll;

    use futures_core::Stream;

    let rt = Runtime::new().unwrap();
    let (rx, tx) = pipe().unwrap();
    let mut tx = std::fs::File::from(tx);
    let (flag, recorder) = DropFlag::new();
    rt.block_on(async {
        let mut events = runtime::op::Multishot::new(PanickingPoll {
            fd: Arc::new(rx),
            _resource: recorder,
        });
        assert!(
            poll_once(&mut std::future::poll_fn(
                |cx| Pin::new(&mut events).poll_next(cx)
            ))
            .await
            .is_pending()
        );
        runtime::yield_now().await;
        tx.write_all(b"x").unwrap();
        let panicked = std::future::poll_fn(|cx| {
            match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut events).poll_next(cx))) {
                Err(_) => Poll::Ready(true),
                Ok(Poll::Ready(_)) => Poll::Ready(false),
                Ok(Poll::Pending) => Poll::Pending,
            }
        })
        .await;
        assert!(panicked, "the first event should have reached `next`");
        // The poll is still armed: the kernel still holds the request.
        assert!(
            !flag.dropped(),
            "a panic in `next` freed data of a request the kernel still owns"
        );
        assert_eq!(metrics().ops_in_flight, 1);
        // Dropping the stream parks the data and cancels the poll; it is freed at the final CQE.
        drop(events);
        assert!(!flag.dropped(), "freed before the final CQE");
        assert!(turns_until(1000, || flag.dropped()).await, "never released");
        let m = metrics();
        assert_eq!((m.ops_in_flight, m.ops_parked), (0, 0), "{m:?}");
    });
}
