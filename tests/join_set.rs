//! `runtime::task::JoinSet`. Most cases are ported from tokio's `tokio/tests/task_join_set.rs`
//! (named after the tokio test they come from); tokio's paused clock becomes short real sleeps.

use std::{rc::Rc, sync::Arc, time::Duration};

use runtime::{
    sync::{oneshot, watch},
    task::JoinSet,
    time::sleep,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// Spawn `n` tasks whose futures are `!Send` and return their index.
fn spawn_index_tasks(set: &mut JoinSet<usize>, n: usize) {
    for i in 0..n {
        let rc = Rc::new(i);
        set.spawn(async move { *rc });
    }
}

// Spawn `n` pending-forever tasks that own a `oneshot::Sender`: when a task is aborted, the
// sender is dropped, which its receiver sees.
fn spawn_pending_tasks(
    set: &mut JoinSet<()>,
    receivers: &mut Vec<oneshot::Receiver<()>>,
    n: usize,
) {
    for _ in 0..n {
        let (tx, rx) = oneshot::channel::<()>();
        receivers.push(rx);
        set.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
    }
}

async fn await_receivers_and_assert(receivers: Vec<oneshot::Receiver<()>>) {
    for rx in receivers {
        assert!(
            rx.await.is_err(),
            "the task should have been aborted and its sender dropped"
        );
    }
}

/// tokio: `test_with_sleep`.
#[runtime::test]
async fn test_with_sleep() {
    let mut set = JoinSet::new();
    for i in 0..10 {
        set.spawn(async move { i });
        assert_eq!(set.len(), 1 + i);
    }
    set.detach_all();
    assert_eq!(set.len(), 0);
    assert!(set.join_next().await.is_none());

    for round in 0..2 {
        for i in 0..10usize {
            set.spawn(async move {
                sleep(ms(i as u64 * 3)).await;
                i
            });
        }
        let mut seen = [false; 10];
        while let Some(res) = set.join_next().await.transpose().unwrap() {
            seen[res] = true;
        }
        assert!(seen.iter().all(|&s| s), "round {round}: {seen:?}");
        assert!(set.join_next().await.is_none());
    }
}

/// tokio: `test_abort_on_drop`.
#[runtime::test]
async fn test_abort_on_drop() {
    let mut set = JoinSet::new();
    let mut receivers = Vec::new();
    spawn_pending_tasks(&mut set, &mut receivers, 16);
    drop(set);
    await_receivers_and_assert(receivers).await;
}

/// tokio: `alternating`.
#[runtime::test]
async fn alternating() {
    let mut set = JoinSet::new();
    assert_eq!(set.len(), 0);
    set.spawn(async {});
    assert_eq!(set.len(), 1);
    set.spawn(async {});
    assert_eq!(set.len(), 2);
    for _ in 0..16 {
        let () = set.join_next().await.unwrap().unwrap();
        assert_eq!(set.len(), 1);
        set.spawn(async {});
        assert_eq!(set.len(), 2);
    }
}

/// tokio: `abort_tasks`.
#[runtime::test]
async fn abort_tasks() {
    let mut set = JoinSet::new();
    let mut num_cancelled = 0;
    let mut num_completed = 0;
    for i in 0..16u64 {
        let abort = set.spawn(async move {
            sleep(ms(i)).await;
            i
        });
        if i % 2 != 0 {
            abort.abort();
        }
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok(i) => {
                num_completed += 1;
                assert_eq!(i % 2, 0);
            }
            Err(e) => {
                assert!(e.is_cancelled());
                num_cancelled += 1;
            }
        }
    }
    assert_eq!(num_cancelled, 8);
    assert_eq!(num_completed, 8);
}

/// tokio: `runtime_gone`. The task's runtime shut down before it ran: joining it elsewhere
/// reports a cancellation.
#[test]
fn runtime_gone() {
    let mut set = JoinSet::new();
    {
        let rt = runtime::Runtime::new().unwrap();
        rt.block_on(async {
            set.spawn(async { 1 });
        });
        drop(rt);
    }
    let rt = runtime::Runtime::new().unwrap();
    let res = rt.block_on(set.join_next()).unwrap();
    assert!(res.unwrap_err().is_cancelled());
}

/// tokio: `join_all`.
#[runtime::test]
async fn join_all() {
    let mut set: JoinSet<i32> = JoinSet::new();
    for _ in 0..5 {
        set.spawn(async { 1 });
    }
    let res: Vec<i32> = set.join_all().await;
    assert_eq!(res, [1; 5]);
}

/// tokio: `task_panics`. `join_all` resumes a task's panic, and the other task is aborted.
#[runtime::test]
async fn task_panics() {
    let mut set: JoinSet<()> = JoinSet::new();
    let (tx, mut rx) = oneshot::channel();
    set.spawn(async move {
        sleep(ms(40)).await;
        tx.send(()).unwrap();
    });
    set.spawn(async {
        sleep(ms(10)).await;
        panic!("boom");
    });
    assert_eq!(set.len(), 2);
    let panic = runtime::spawn(set.join_all()).await.unwrap_err();
    assert!(panic.is_panic());
    assert!(rx.try_recv().is_err());
}

/// tokio: `abort_all`.
#[runtime::test]
async fn abort_all() {
    let mut set: JoinSet<()> = JoinSet::new();
    for _ in 0..5 {
        set.spawn(std::future::pending());
    }
    for _ in 0..5 {
        set.spawn(async { sleep(ms(5)).await });
    }
    // Five pending tasks and five finished ones.
    sleep(ms(30)).await;
    set.abort_all();
    assert_eq!(set.len(), 10);
    let mut count = 0;
    let mut cancelled = 0;
    while let Some(res) = set.join_next().await {
        if let Err(e) = res {
            assert!(e.is_cancelled());
            cancelled += 1;
        }
        count += 1;
    }
    assert_eq!(count, 10);
    assert_eq!(cancelled, 5, "finished tasks keep their output");
    assert_eq!(set.len(), 0);
}

/// tokio: `try_join_next`.
#[runtime::test]
async fn try_join_next() {
    const TASK_NUM: u32 = 1000;
    let (send, recv) = watch::channel(());
    let mut set = JoinSet::new();
    for _ in 0..TASK_NUM {
        let mut recv = recv.clone();
        set.spawn(async move { recv.changed().await.unwrap() });
    }
    drop(recv);
    assert!(set.try_join_next().is_none());
    send.send_replace(());
    send.closed().await;
    let mut count = 0;
    while let Some(res) = set.try_join_next() {
        res.unwrap();
        count += 1;
    }
    assert_eq!(count, TASK_NUM);
    assert!(set.is_empty());
}

/// tokio: `spawn_local::spawn_then_join_next` (our `spawn` takes `!Send` futures).
#[runtime::test]
async fn spawn_then_join_next() {
    const N: usize = 8;
    let mut set = JoinSet::new();
    spawn_index_tasks(&mut set, N);
    let mut seen = vec![false; N];
    while let Some(res) = set.join_next().await {
        seen[res.expect("task panicked")] = true;
    }
    assert!(seen.into_iter().all(|b| b));
    assert!(set.is_empty());
}

/// tokio: `spawn_local::spawn_then_shutdown`.
#[runtime::test]
async fn spawn_then_shutdown() {
    let mut set = JoinSet::new();
    let mut receivers = Vec::new();
    spawn_pending_tasks(&mut set, &mut receivers, 8);
    assert!(set.try_join_next().is_none());
    set.shutdown().await;
    assert!(set.is_empty());
    await_receivers_and_assert(receivers).await;
}

/// `shutdown` returns only once every task's future has been dropped, even for a task that is
/// in the middle of running on another worker when it is aborted.
#[test]
fn shutdown_waits_until_every_future_is_dropped() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct CountDrop(Arc<AtomicUsize>);
        impl Drop for CountDrop {
            fn drop(&mut self) {
                // A slow destructor: the abort is seen long before the future is gone.
                std::thread::sleep(ms(30));
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut set = JoinSet::new();
        for worker in [0, 1, 1] {
            let guard = CountDrop(dropped.clone());
            set.spawn_on(worker, async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
        }
        sleep(ms(20)).await;
        set.shutdown().await;
        assert!(set.is_empty());
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    });
}

/// Tasks on other workers are joined like local ones, and `spawn_on_with` creates its future
/// on the target worker.
#[test]
fn spawn_on_joins_tasks_of_every_worker() {
    let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let mut set = JoinSet::new();
        for i in 0..20usize {
            if i % 2 == 0 {
                set.spawn_on(1, async move { (i, runtime::worker_id()) });
            } else {
                set.spawn_on_with(1, move || {
                    let rc = Rc::new(i);
                    async move { (*rc, runtime::worker_id()) }
                });
            }
        }
        let mut seen = [false; 20];
        while let Some(res) = set.join_next().await {
            let (i, worker) = res.unwrap();
            assert_eq!(worker, 1);
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
    });
}

/// `join_next` is cancel-safe: a result is not lost when the future is dropped after the task
/// finished (here, by a `select!` whose other branch wins).
#[runtime::test]
async fn join_next_is_cancel_safe() {
    let mut set = JoinSet::new();
    set.spawn(async {
        sleep(ms(10)).await;
        7
    });
    sleep(ms(30)).await;
    runtime::select! {
        biased;
        () = std::future::ready(()) => {}
        _ = set.join_next() => panic!("the biased first branch is ready"),
    }
    assert_eq!(set.len(), 1);
    assert_eq!(set.join_next().await.unwrap().unwrap(), 7);
}

/// A panic is reported by `join_next` as a `JoinError` and does not disturb the other tasks.
#[runtime::test]
async fn panics_are_reported_per_task() {
    let mut set = JoinSet::new();
    set.spawn(async { panic!("task failed") });
    set.spawn(async { 5 });
    let mut ok = 0;
    let mut panicked = 0;
    while let Some(res) = set.join_next().await {
        match res {
            Ok(v) => ok += v,
            Err(e) => {
                assert!(e.is_panic());
                panicked += 1;
            }
        }
    }
    assert_eq!((ok, panicked), (5, 1));
}
