//! Bulk streams on io_uring try the socket's non-blocking system call first, as the epoll
//! backend does (`runtime::op::may_try_inline`): a write too large to go behind
//! (`net/src/write.rs`) and a bulk stream's read after one that filled its buffer
//! (`net::stream::read_bulk`), so that the task goes on in the same loop turn. The bytes keep
//! their order against writes behind; under SQPOLL (whose point is to make no system calls)
//! nothing is tried. `metrics().inline_calls` counts what was.

use std::{
    io::{Read, Write},
    time::Duration,
};

use integration_tests::{pattern, read_to_end, stream_with_std_peer};
use runtime::{Backend, metrics, time::timeout};

const GUARD: Duration = Duration::from_secs(20);

/// What the runtime should have tried at once here: `Some(true)` on io_uring without SQPOLL,
/// `Some(false)` under SQPOLL, `None` on the epoll backend (where every op runs inline).
fn tries_inline() -> Option<bool> {
    let caps = runtime::capabilities();
    (caps.backend() == Backend::IoUring).then(|| !caps.sqpoll())
}

/// Checks `inline_calls` against [`tries_inline`].
fn check_inline(calls: u64, what: &str) {
    match tries_inline() {
        Some(true) => assert!(calls > 0, "no {what} was tried at once"),
        Some(false) => assert_eq!(calls, 0, "{what}s tried at once under SQPOLL"),
        None => {}
    }
}

#[runtime::test]
async fn bulk_reads_take_what_waits_at_once() {
    let (mut client, peer) = stream_with_std_peer().await;
    let expected = pattern(8 << 20, 11);
    let sent = expected.clone();
    let writer = std::thread::spawn(move || {
        let mut peer = peer;
        peer.write_all(&sent).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        peer
    });
    let before = metrics().inline_calls;
    let mut got = Vec::with_capacity(expected.len());
    read_to_end(&mut client, 16 * 1024, &mut got).await;
    let calls = metrics().inline_calls - before;
    drop(writer.join().unwrap());
    assert!(got == expected, "bytes lost or reordered");
    check_inline(calls, "bulk read");
}

/// Write `round`'s length: one small write (behind) before three large ones. A large write
/// right after a small one waits for it to go out first (by the slow path); the next ones
/// find nothing behind and are sent at once.
fn write_len(round: u64) -> usize {
    if round % 4 == 0 { 100 } else { 64 * 1024 }
}

#[runtime::test]
async fn large_writes_go_out_at_once_in_order_with_writes_behind() {
    let (mut client, peer) = stream_with_std_peer().await;
    let mut expected = Vec::new();
    for round in 0..200u64 {
        let len = write_len(round);
        expected.extend_from_slice(&pattern(len, round));
    }
    let total = expected.len();
    let reader = std::thread::spawn(move || {
        let mut peer = peer;
        let mut got = vec![0; total];
        peer.read_exact(&mut got).unwrap();
        got
    });
    let before = metrics().inline_calls;
    let mut at = 0;
    for round in 0..200u64 {
        let len = write_len(round);
        let (res, _) = timeout(GUARD, client.write_all(expected[at..at + len].to_vec()))
            .await
            .expect("the write never finished");
        res.unwrap();
        at += len;
    }
    client.flush().await.unwrap();
    let calls = metrics().inline_calls - before;
    let got = reader.join().unwrap();
    assert!(got == expected, "bytes lost or reordered");
    check_inline(calls, "large write");
}
