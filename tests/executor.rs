//! Tasks: spawning many, joining, aborting, panics, wakes from foreign threads, idleness.

use std::{
    cell::Cell,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::{DropFlag, Oneshot, thread_cpu_time, turns_until};
use runtime::{Runtime, metrics, spawn, yield_now};

#[runtime::test]
async fn spawn_many_and_join() {
    let handles: Vec<_> = (0..10_000u64)
        .map(|i| {
            spawn(async move {
                for _ in 0..(i % 3) {
                    yield_now().await;
                }
                i
            })
        })
        .collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, (0..10_000u64).sum());
    assert!(turns_until(10, || metrics().tasks_alive == 0).await);
}

#[runtime::test]
async fn futures_need_not_be_send() {
    let shared = Rc::new(Cell::new(0));
    let s = shared.clone();
    spawn(async move { s.set(s.get() + 1) }).await.unwrap();
    assert_eq!(shared.get(), 1);
}

#[runtime::test]
async fn dropped_handle_detaches_the_task() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    drop(spawn(async move {
        yield_now().await;
        d.set(true);
    }));
    assert!(turns_until(10, || done.get()).await);
}

#[runtime::test]
async fn abort_cancels_a_pending_task_and_drops_its_future() {
    let (flag, recorder) = DropFlag::new();
    let handle = spawn(async move {
        let _held = recorder;
        std::future::pending::<()>().await;
    });
    yield_now().await;
    assert!(!handle.is_finished());
    handle.abort();
    let err = handle.await.unwrap_err();
    assert!(err.is_cancelled() && !err.is_panic());
    assert_eq!(err.to_string(), "task was cancelled");
    assert!(turns_until(10, || flag.dropped()).await);
}

#[runtime::test]
async fn abort_after_completion_keeps_the_output() {
    let handle = spawn(async { 42 });
    assert!(turns_until(10, || handle.is_finished()).await);
    handle.abort();
    assert_eq!(handle.await.unwrap(), 42);
}

#[runtime::test]
async fn abort_from_another_thread() {
    let handle = Arc::new(spawn(std::future::pending::<()>()));
    let remote = handle.clone();
    std::thread::spawn(move || remote.abort()).join().unwrap();
    let handle = Arc::into_inner(handle).unwrap();
    assert!(handle.await.unwrap_err().is_cancelled());
}

#[runtime::test]
async fn a_panicking_task_reports_through_its_handle() {
    let handle = spawn(async {
        yield_now().await;
        panic!("task exploded");
    });
    let err = handle.await.unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("task exploded"), "{err}");
    // The runtime carries on.
    assert_eq!(spawn(async { 1 }).await.unwrap(), 1);
    let payload = spawn(async { std::panic::panic_any(7u8) })
        .await
        .unwrap_err()
        .into_panic();
    assert_eq!(payload.downcast_ref::<u8>(), Some(&7));
}

#[runtime::test]
async fn yield_now_lets_other_tasks_run() {
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = order.clone();
    let other = spawn(async move { o.borrow_mut().push("other") });
    order.borrow_mut().push("main before");
    yield_now().await;
    order.borrow_mut().push("main after");
    other.await.unwrap();
    assert_eq!(*order.borrow(), ["main before", "other", "main after"]);
}

/// A task woken by a plain OS thread while the runtime sleeps in `io_uring_enter`.
#[runtime::test]
async fn wake_from_a_foreign_thread() {
    let oneshot = Oneshot::default();
    let remote = oneshot.clone();
    let task = spawn(oneshot);
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        remote.complete("from afar");
    });
    let start = Instant::now();
    assert_eq!(task.await.unwrap(), "from afar");
    assert!(start.elapsed() >= Duration::from_millis(50));
    thread.join().unwrap();
}

/// The `block_on` future itself woken from a foreign thread.
#[test]
fn block_on_future_woken_from_a_foreign_thread() {
    let rt = Runtime::new().unwrap();
    let oneshot = Oneshot::default();
    let remote = oneshot.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote.complete(5);
    });
    assert_eq!(rt.block_on(oneshot), 5);
    thread.join().unwrap();
}

/// Many threads waking many tasks at once: every wake is delivered.
#[runtime::test]
async fn no_wake_is_lost_under_contention() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_000;
    let done = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..THREADS * PER_THREAD {
        let oneshot = Oneshot::default();
        senders.push(oneshot.clone());
        let done = done.clone();
        tasks.push(spawn(async move {
            oneshot.await;
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    yield_now().await;
    let threads: Vec<_> = senders
        .chunks(PER_THREAD)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for (i, s) in chunk.into_iter().enumerate() {
                    if i % 100 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    s.complete(());
                }
            })
        })
        .collect();
    for t in tasks {
        runtime::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a wake was lost")
            .unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), THREADS * PER_THREAD);
}

/// An idle runtime blocks in the kernel: its thread uses (almost) no CPU.
#[test]
fn idle_runtime_uses_no_cpu() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        spawn(std::future::pending::<()>());
        let cpu = thread_cpu_time();
        let start = Instant::now();
        runtime::time::sleep(Duration::from_millis(300)).await;
        let used = thread_cpu_time() - cpu;
        let wall = start.elapsed();
        assert!(
            used < wall / 20,
            "idle runtime used {used:?} of CPU in {wall:?}"
        );
        assert!(metrics().enters < 20, "{:?}", metrics());
    });
}

#[test]
#[should_panic(expected = "from inside a runtime")]
fn spawn_outside_a_runtime_panics_with_a_hint() {
    drop(spawn(async {}));
}

#[test]
#[should_panic(expected = "cannot call `block_on` from inside a runtime")]
fn nested_block_on_panics() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let inner = Runtime::new().unwrap();
        inner.block_on(async {});
    });
}

/// Runtimes are per thread: several threads each run their own at the same time.
#[test]
fn one_runtime_per_thread() {
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let rt = Runtime::new().unwrap();
                rt.block_on(async move {
                    let t = spawn(async move {
                        runtime::time::sleep(Duration::from_millis(10)).await;
                        i * 2
                    });
                    t.await.unwrap()
                })
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results, [0, 2, 4, 6]);
}

#[runtime::test(entries = 64, cq_entries = 512)]
async fn macro_arguments_reach_the_builder() {
    if integration_tests::skip_on_epoll(
        "executor::macro_arguments_reach_the_builder",
        "ring sizes from the macro arguments",
    ) {
        return;
    }
    let caps = runtime::capabilities();
    assert_eq!((caps.sq_entries(), caps.cq_entries()), (64, 512));
}

#[runtime::test]
async fn test_macro_supports_result_returns() -> std::io::Result<()> {
    runtime::op::nop().await?;
    Ok(())
}
