//! `runtime::select!` (tokio's macro, re-exported) under `#[runtime::test]`. The cases named
//! after a tokio test are ported from tokio's `tokio/tests/macros_select.rs`.

use std::time::Duration;

use net::{TcpListener, TcpStream};
use runtime::{sync::oneshot, time::sleep};

/// tokio: `sync_one_lit_expr_comma`.
#[runtime::test]
async fn sync_one_lit_expr_comma() {
    let foo = runtime::select! {
        foo = async { 1 } => foo,
    };
    assert_eq!(foo, 1);
}

/// tokio: `no_branch_else_only`, `no_branch_else_only_biased`.
#[runtime::test]
async fn no_branch_else_only() {
    let foo = runtime::select! {
        else => 1,
    };
    assert_eq!(foo, 1);
    let foo = runtime::select! {
        biased;
        else => 2,
    };
    assert_eq!(foo, 2);
}

/// tokio: `sync_two`. Only the winning branch runs its future to the end.
#[runtime::test]
async fn sync_two() {
    use std::cell::Cell;

    let cnt = Cell::new(0);
    let res = runtime::select! {
        foo = async {
            cnt.set(cnt.get() + 1);
            1
        } => foo,
        bar = async {
            cnt.set(cnt.get() + 1);
            2
        } => bar,
    };
    assert_eq!(1, cnt.get());
    assert!(res == 1 || res == 2);
}

/// tokio: `one_ready`.
#[runtime::test]
async fn one_ready() {
    let (tx1, rx1) = oneshot::channel::<i32>();
    let (_tx2, rx2) = oneshot::channel::<i32>();
    tx1.send(1).unwrap();
    let v = runtime::select! {
        res = rx1 => res.unwrap(),
        _ = rx2 => unreachable!(),
    };
    assert_eq!(1, v);
}

/// tokio: `disable_with_if`. A branch whose guard is false is never polled; the select waits
/// for the others, woken by a task on this runtime.
#[runtime::test]
async fn disable_with_if() {
    let f = std::future::poll_fn(|_| -> std::task::Poll<()> { panic!("polled a disabled branch") });
    let (tx, rx) = oneshot::channel();
    runtime::spawn(async move {
        sleep(Duration::from_millis(5)).await;
        tx.send(()).unwrap();
    });
    runtime::select! {
        _ = f, if false => unreachable!(),
        _ = rx => (),
    }
}

/// tokio: `biased_one_not_ready`.
#[runtime::test]
async fn biased_one_not_ready() {
    let (_tx1, rx1) = oneshot::channel::<i32>();
    let (tx2, rx2) = oneshot::channel::<i32>();
    let (tx3, rx3) = oneshot::channel::<i32>();
    tx2.send(2).unwrap();
    tx3.send(3).unwrap();
    let v = runtime::select! {
        biased;
        _ = rx1 => unreachable!(),
        res = rx2 => res.unwrap(),
        _ = rx3 => panic!("`biased;` polls rx2 before rx3"),
    };
    assert_eq!(2, v);
}

/// tokio: `biased_eventually_ready`, with this runtime's `yield_now`.
#[runtime::test]
async fn biased_eventually_ready() {
    let one = async {};
    let two = async { runtime::yield_now().await };
    let three = async { runtime::yield_now().await };
    let mut count = 0u8;
    let mut one = std::pin::pin!(one);
    let mut two = std::pin::pin!(two);
    let mut three = std::pin::pin!(three);
    loop {
        runtime::select! {
            biased;
            _ = &mut two, if count < 2 => {
                count += 1;
                assert_eq!(count, 2);
            }
            _ = &mut three, if count < 3 => {
                count += 1;
                assert_eq!(count, 3);
            }
            _ = &mut one, if count < 1 => {
                count += 1;
                assert_eq!(count, 1);
            }
            else => break,
        }
    }
    assert_eq!(count, 3);
}

/// Without `biased;`, the start branch is random (tokio's thread-local generator works without
/// a tokio runtime): two always-ready branches both win sometimes.
#[runtime::test]
async fn unbiased_select_is_fair() {
    let mut wins = [0u32; 2];
    for _ in 0..200 {
        runtime::select! {
            () = std::future::ready(()) => wins[0] += 1,
            () = std::future::ready(()) => wins[1] += 1,
        }
    }
    assert!(wins[0] > 20 && wins[1] > 20, "{wins:?}");
}

/// Reads that lose to a timer are dropped (cancelled in the ring) and take none of the bytes
/// sent afterwards: the next read gets them all, in order.
#[runtime::test]
async fn a_read_that_loses_is_cancelled_and_loses_no_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    for _ in 0..3 {
        runtime::select! {
            (res, _) = server.read(Vec::with_capacity(64)) => panic!("read won: {res:?}"),
            () = sleep(Duration::from_millis(10)) => {}
        }
    }
    for round in 0..3u8 {
        let (res, _) = client.write_all(vec![b'a' + round; 3]).await;
        res.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 9 {
        let (res, buf) = server.read(Vec::with_capacity(64)).await;
        let n = res.unwrap();
        assert!(n > 0, "end of file after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"aaabbbccc");
}
