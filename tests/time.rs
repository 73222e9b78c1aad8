//! Timers: sleep accuracy, timeouts that fire and cancel, intervals.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use integration_tests::{DropFlag, TrackedRead, join_all, pipe, turns_until};
use runtime::{
    metrics,
    op::Op,
    time::{MissedTickBehavior, interval, sleep, sleep_until, timeout},
};

#[runtime::test]
async fn sleep_is_accurate_to_a_few_milliseconds() {
    let mut overshoots = Vec::new();
    for ms in [5u64, 20, 50, 20, 5] {
        let d = Duration::from_millis(ms);
        let start = Instant::now();
        sleep(d).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= d, "woke early: {elapsed:?} < {d:?}");
        overshoots.push(elapsed - d);
    }
    overshoots.sort();
    let median = overshoots[overshoots.len() / 2];
    assert!(
        median < Duration::from_millis(3),
        "median overshoot {median:?}"
    );
}

#[runtime::test]
async fn sleep_until_the_past_is_immediate() {
    let start = Instant::now();
    sleep_until(start - Duration::from_secs(1)).await;
    sleep(Duration::ZERO).await;
    assert!(start.elapsed() < Duration::from_millis(5));
    assert_eq!(metrics().timers, 0);
}

#[runtime::test]
async fn many_timers_fire_in_deadline_order() {
    let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let start = Instant::now();
    let sleeps: Vec<_> = (0..2_000u64)
        .map(|i| {
            let order = order.clone();
            // All deadlines lie beyond the first poll of every task.
            let deadline = start + Duration::from_millis(50 + (i * 7919) % 50);
            runtime::spawn(async move {
                sleep_until(deadline).await;
                order.borrow_mut().push(deadline);
            })
        })
        .collect();
    for r in join_all(sleeps).await {
        r.unwrap();
    }
    let fired = order.borrow();
    assert_eq!(fired.len(), 2_000);
    assert!(fired.windows(2).all(|w| w[0] <= w[1]), "fired out of order");
    assert_eq!(metrics().timers, 0);
}

#[runtime::test]
async fn dropped_sleep_deregisters() {
    let mut s = sleep(Duration::from_secs(60));
    assert!(integration_tests::poll_once(&mut s).await.is_pending());
    assert_eq!(metrics().timers, 1);
    drop(s);
    assert_eq!(metrics().timers, 0);
}

#[runtime::test]
async fn timeout_fires_and_drops_the_future() {
    let (flag, recorder) = DropFlag::new();
    let start = Instant::now();
    let res = timeout(Duration::from_millis(20), async move {
        let _held = recorder;
        sleep(Duration::from_secs(60)).await;
    })
    .await;
    let err = res.unwrap_err();
    assert_eq!(err.to_string(), "deadline has elapsed");
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(flag.dropped());
    assert_eq!(metrics().timers, 0);
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

/// A timeout around an I/O operation cancels the operation in the kernel.
#[runtime::test]
async fn timeout_cancels_an_operation() {
    let (rx, _tx) = pipe().unwrap();
    let (flag, recorder) = DropFlag::new();
    let read = Op::new(TrackedRead::new(Arc::new(rx), 16, recorder));
    assert!(timeout(Duration::from_millis(10), read).await.is_err());
    assert!(turns_until(100, || flag.dropped()).await);
    assert_eq!(metrics().ops_in_flight, 0);
}

#[runtime::test]
async fn timeout_passes_the_output_through() {
    let v = timeout(Duration::from_secs(5), async { 7 }).await.unwrap();
    assert_eq!(v, 7);
    assert_eq!(metrics().timers, 0);
}

#[runtime::test]
async fn interval_ticks_on_schedule() {
    let period = Duration::from_millis(10);
    let start = Instant::now();
    let mut ticks = interval(period);
    let mut scheduled = Vec::new();
    for _ in 0..6 {
        scheduled.push(ticks.tick().await);
    }
    assert!(start.elapsed() >= period * 5);
    for pair in scheduled.windows(2) {
        assert_eq!(pair[1] - pair[0], period);
    }
}

#[runtime::test]
async fn interval_skips_missed_ticks_when_asked() {
    let period = Duration::from_millis(10);
    let mut ticks = interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let first = ticks.tick().await;
    // Block the thread past three periods: the ticks in between are missed.
    std::thread::sleep(Duration::from_millis(35));
    let late = ticks.tick().await;
    assert_eq!(late, first + period);
    let next = ticks.tick().await;
    assert_eq!(next, first + period * 4);
}

/// The loop waits for a far deadline (its alarm armed 5 s away) when another thread wakes
/// it; a sleep started then, 30 ms long, must move the alarm earlier and end on time. A
/// sleep dropped before its deadline leaves the alarm early: the loop wakes for nothing and
/// the next sleep still ends on time.
#[runtime::test]
async fn sleeps_end_on_time_after_the_loop_waited_for_a_later_or_a_dropped_deadline() {
    let far = runtime::spawn(sleep(Duration::from_secs(5)));
    let woken = integration_tests::Oneshot::default();
    let waker = woken.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.complete(());
    });
    woken.await;
    thread.join().unwrap();
    sleeps_on_time(Duration::from_millis(30)).await;
    sleeps_on_time(Duration::from_millis(10)).await;
    let mut dropped = sleep(Duration::from_millis(5));
    assert!(
        integration_tests::poll_once(&mut dropped)
            .await
            .is_pending()
    );
    drop(dropped);
    sleeps_on_time(Duration::from_millis(40)).await;
    far.abort();
}

/// Sleeps for `d` and checks it ended no earlier and less than 500 ms later.
async fn sleeps_on_time(d: Duration) {
    let start = Instant::now();
    sleep(d).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= d, "woke early: {elapsed:?} < {d:?}");
    assert!(
        elapsed < d + Duration::from_millis(500),
        "woke late: {elapsed:?}"
    );
}
