//! Driver-level operation round trips: NOP, TIMEOUT, a full SQ, an overflowing CQ.

use std::time::{Duration, Instant};

use integration_tests::join_all;
use runtime::{
    Builder, RingMode, Runtime, metrics,
    op::{Op, Timeout, nop},
};

#[test]
fn nop_round_trip() {
    if integration_tests::skip_on_epoll(
        "driver_ops::nop_round_trip",
        "SQ/CQ accounting in the metrics",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        nop().await.unwrap();
        let m = metrics();
        assert_eq!(m.ops_submitted, 1);
        assert_eq!(m.ops_in_flight, 0);
    });
}

#[test]
fn timeout_op_round_trip() {
    if integration_tests::skip_on_epoll(
        "driver_ops::timeout_op_round_trip",
        "IORING_OP_TIMEOUT, which has no non-blocking form",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let start = Instant::now();
        Op::new(Timeout::new(Duration::from_millis(20)))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
    });
}

#[test]
fn unpolled_op_never_reaches_the_kernel() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let op = nop();
        assert!(!op.is_submitted());
        drop(op);
        runtime::yield_now().await;
        assert_eq!(metrics().ops_submitted, 0);
    });
}

/// 10,000 timers in flight at once through an 8-entry SQ: every push beyond 8 takes the
/// SQ-full path (flush to the kernel, retry) and none is lost.
#[test]
fn ten_thousand_ops_in_flight_with_a_small_sq() {
    if integration_tests::skip_on_epoll(
        "driver_ops::ten_thousand_ops_in_flight_with_a_small_sq",
        "SQ/CQ accounting in the metrics",
    ) {
        return;
    }
    let rt = Builder::new().entries(8).cq_entries(64).build().unwrap();
    assert_eq!(rt.capabilities().sq_entries(), 8);
    rt.block_on(async {
        let ops: Vec<_> = (0..10_000)
            .map(|_| Op::new(Timeout::new(Duration::from_millis(50))))
            .collect();
        let peak = std::rc::Rc::new(std::cell::Cell::new(0));
        let watcher = {
            let peak = peak.clone();
            runtime::spawn(async move {
                for _ in 0..200 {
                    peak.set(peak.get().max(metrics().ops_in_flight));
                    runtime::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let results = join_all(ops).await;
        assert_eq!(results.len(), 10_000);
        assert!(results.iter().all(|r| r.is_ok()));
        watcher.abort();
        let m = metrics();
        assert!(
            peak.get() >= 10_000,
            "expected all 10,000 timers in flight together, saw at most {}",
            peak.get()
        );
        assert!(m.enters >= 10_000 / 8, "SQ-full flushes: {m:?}");
        assert_eq!(m.ops_in_flight, 0);
    });
}

/// A 4-entry CQ with 2,000 NOPs completing in bursts: CQEs overflow into the kernel's list and
/// every one of them is still delivered.
#[test]
fn cq_overflow_delivers_every_completion() {
    if integration_tests::skip_on_epoll(
        "driver_ops::cq_overflow_delivers_every_completion",
        "SQ/CQ accounting in the metrics",
    ) {
        return;
    }
    let rt = Builder::new().entries(4).cq_entries(4).build().unwrap();
    assert_eq!(rt.capabilities().cq_entries(), 4);
    rt.block_on(async {
        let ops: Vec<_> = (0..2_000).map(|_| nop()).collect();
        let results = join_all(ops).await;
        assert!(results.iter().all(|r| r.is_ok()));
        let m = metrics();
        assert!(m.completions >= 2_000, "{m:?}");
        assert!(m.cq_overflows > 0, "the CQ never overflowed: {m:?}");
        assert_eq!(m.ops_in_flight, 0);
        assert_eq!(m.stray_completions, 0);
    });
}

/// Every ring mode the runtime can fall back to runs ops, timers and tasks.
#[test]
fn every_ring_mode_works() {
    if integration_tests::skip_on_epoll(
        "driver_ops::every_ring_mode_works",
        "ring setup modes and capabilities",
    ) {
        return;
    }
    for mode in [
        RingMode::Auto,
        RingMode::DeferTaskrun,
        RingMode::CoopTaskrun,
        RingMode::Plain,
    ] {
        let rt = Builder::new().ring_mode(mode).build().unwrap();
        let caps = rt.capabilities().clone();
        match mode {
            RingMode::Auto | RingMode::DeferTaskrun => assert!(caps.defer_taskrun(), "{caps}"),
            RingMode::CoopTaskrun => assert!(caps.coop_taskrun() && !caps.defer_taskrun()),
            _ => assert!(!caps.coop_taskrun() && !caps.defer_taskrun() && !caps.taskrun_flag()),
        }
        rt.block_on(async {
            let ops: Vec<_> = (0..300).map(|_| nop()).collect();
            assert!(join_all(ops).await.iter().all(|r| r.is_ok()));
            let t = runtime::spawn(async {
                runtime::time::sleep(Duration::from_millis(5)).await;
                3
            });
            assert_eq!(t.await.unwrap(), 3);
            let oneshot = integration_tests::Oneshot::default();
            let remote = oneshot.clone();
            let thread = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                remote.complete(9);
            });
            assert_eq!(oneshot.await, 9);
            thread.join().unwrap();
        });
    }
}

#[test]
fn capabilities_report_the_fast_path_on_this_kernel() {
    if integration_tests::skip_on_epoll(
        "driver_ops::capabilities_report_the_fast_path_on_this_kernel",
        "ring setup modes and capabilities",
    ) {
        return;
    }
    let rt = Runtime::new().unwrap();
    let caps = rt.capabilities();
    assert!(caps.defer_taskrun(), "{caps}");
    assert!(caps.taskrun_flag());
    assert!(caps.registered_ring_fd());
    assert!(caps.supports_opcode(io_uring::opcode::Nop::CODE));
    assert!(caps.supports_opcode(io_uring::opcode::SendZc::CODE));
    // Datagrams to an address go out as SEND, not SENDMSG, where the probe says the kernel
    // is 6.1 or newer (SENDMSG_ZC came with SEND's destination address).
    assert!(caps.supports_opcode(io_uring::opcode::SendMsgZc::CODE));
    assert!(runtime::op::send_takes_address());
    assert!(caps.notes().is_empty(), "{:?}", caps.notes());
    let report = caps.to_string();
    assert!(report.contains("DEFER_TASKRUN"), "{report}");
    // The free function reads the same value from inside the runtime.
    let inside = rt.block_on(async { runtime::capabilities() });
    assert_eq!(inside.sq_entries(), caps.sq_entries());
}

#[test]
fn disabled_ring_fd_registration_is_noted() {
    if integration_tests::skip_on_epoll(
        "driver_ops::disabled_ring_fd_registration_is_noted",
        "ring setup modes and capabilities",
    ) {
        return;
    }
    let rt = Builder::new().register_ring_fd(false).build().unwrap();
    assert!(!rt.capabilities().registered_ring_fd());
    assert!(
        rt.capabilities()
            .notes()
            .iter()
            .any(|n| n.contains("register_ring_fd(false)"))
    );
    rt.block_on(async { nop().await.unwrap() });
}

#[test]
fn invalid_sizes_are_rejected_with_a_reason() {
    for (entries, cq) in [
        (0, None),
        (40_000, None),
        (64, Some(32)),
        (64, Some(70_000)),
    ] {
        let mut b = Builder::new();
        b.entries(entries);
        if let Some(cq) = cq {
            b.cq_entries(cq);
        }
        let err = b.build().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("Builder::"), "{err}");
    }
}
