//! Regression tests: bundled receives of many sockets sharing one provided-buffer ring.
//!
//! Each stream takes its completions' buffers when its task polls, so streams take bundles
//! in whatever order their tasks run, not in the order the kernel selected the buffers. A
//! bundle must be found wherever it sits in the ring, and a malformed one must be rejected
//! without losing or double-returning the buffers of the others.

use std::{
    collections::VecDeque,
    io::{ErrorKind, Write},
    net::Shutdown,
    time::Duration,
};

use integration_tests::{join_all, turns_until};
use net::{TcpListener, TcpStream};
use runtime::{
    buf::{BufRing, RxBuf},
    op::{Completion, cqe_flags},
    spawn,
    time::{sleep, timeout},
    yield_now,
};

/// Byte `pos` of connection `conn`'s stream: different per connection and position, so
/// interleaving, loss or reordering shows.
fn byte(conn: u64, pos: u64) -> u8 {
    (pos.wrapping_mul(131) ^ conn.wrapping_mul(0x9e37_79b9)) as u8 ^ (pos >> 8) as u8
}

fn chunk(conn: u64, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(|p| byte(conn, p)).collect()
}

/// A completion that selected buffer `bid` and received `res` bytes, as the kernel posts it.
fn selected(bid: u16, res: i32, flags: u32) -> Completion {
    let flags = flags | cqe_flags::BUFFER | (u32::from(bid) << cqe_flags::BUFFER_SHIFT);
    Completion::new(res, flags | cqe_flags::MORE, [0; 2])
}

fn ids_and_lens(bufs: &VecDeque<RxBuf>) -> Vec<(u16, usize)> {
    bufs.iter()
        .map(|b| (b.buffer_id().unwrap(), b.len()))
        .collect()
}

/// Receives with a bundled stream, holding every buffer, until nothing more arrives for a
/// while; returns the distinct buffer ids held.
async fn hold_until_stalled(stream: &mut TcpStream, ring: &BufRing) -> Vec<u16> {
    let mut received = stream.recv_stream(ring);
    let mut held: Vec<RxBuf> = Vec::new();
    while let Ok(Some(item)) = timeout(Duration::from_millis(300), received.next()).await {
        held.push(item.expect("receive while holding buffers"));
    }
    let mut ids: Vec<u16> = held.iter().filter_map(RxBuf::buffer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// 48 connections stream 256 KiB each through one 64-buffer bundled ring while their tasks
/// poll in varying order (some hold a buffer across a yield). Every byte must arrive in order
/// on every connection, no completion may be rejected, and afterwards every one of the 64
/// buffers must be usable again: a stream that holds everything it receives gets all 64.
#[runtime::test]
async fn many_sockets_share_a_bundled_ring_and_every_buffer_comes_back() {
    assert!(
        runtime::capabilities().recvsend_bundle() || integration_tests::epoll_selected(),
        "{}",
        runtime::capabilities()
    );
    const CONNS: u64 = 48;
    const PER_CONN: u64 = 256 * 1024;
    const ENTRIES: u16 = 64;
    let ring = BufRing::builder()
        .entries(u32::from(ENTRIES))
        .buf_len(512)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let server = {
        let ring = ring.clone();
        spawn(async move {
            let mut checkers = Vec::new();
            for _ in 0..CONNS {
                let (mut stream, _) = listener.accept().await.unwrap();
                let ring = ring.clone();
                checkers.push(spawn(async move {
                    // The client sends its id first (8 bytes), then its stream.
                    let mut received = stream.recv_stream(&ring);
                    let mut header = Vec::new();
                    let mut conn = None;
                    let mut pos = 0u64;
                    let mut n = 0u64;
                    while let Some(item) = received.next().await {
                        let buf = item.map_err(|e| format!("conn {conn:?} at {pos}: {e}"))?;
                        let mut data: &[u8] = &buf;
                        if conn.is_none() {
                            let take = (8 - header.len()).min(data.len());
                            header.extend_from_slice(&data[..take]);
                            data = &data[take..];
                            if header.len() == 8 {
                                conn = Some(u64::from_le_bytes(header[..].try_into().unwrap()));
                            }
                        }
                        if let Some(c) = conn {
                            for &b in data {
                                if b != byte(c, pos) {
                                    return Err(format!("conn {c}: wrong byte at {pos}"));
                                }
                                pos += 1;
                            }
                        }
                        // Vary the order in which the streams take their completions.
                        n += 1;
                        if n % 3 == conn.unwrap_or(0) % 3 {
                            yield_now().await;
                        }
                        drop(buf);
                    }
                    if pos != PER_CONN {
                        return Err(format!("conn {conn:?} ended after {pos} bytes"));
                    }
                    Ok(())
                }));
            }
            let mut errors = Vec::new();
            for c in join_all(checkers).await {
                if let Err(e) = c.unwrap() {
                    errors.push(e);
                }
            }
            errors
        })
    };

    let clients: Vec<_> = (0..CONNS)
        .map(|conn| {
            spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let (res, _) = stream.write_all(conn.to_le_bytes().to_vec()).await;
                res.unwrap();
                let mut sent = 0u64;
                // Uneven writes, so bundles of different sizes form.
                let mut len = 1000 + 700 * conn as usize % 9000;
                while sent < PER_CONN {
                    let n = len.min((PER_CONN - sent) as usize);
                    // A receiver that failed closes its socket; the check below reports it.
                    if stream.write_all(chunk(conn, sent, n)).await.0.is_err() {
                        break;
                    }
                    sent += n as u64;
                    len = 1000 + (len * 7) % 20_000;
                }
                let _ = stream.shutdown(Shutdown::Write);
                stream
            })
        })
        .collect();
    let (streams, errors) = timeout(Duration::from_secs(60), async {
        let streams = join_all(clients).await;
        (streams, server.await.unwrap())
    })
    .await
    .expect("the streams stalled: buffers were lost");
    drop(streams);
    assert!(
        errors.is_empty(),
        "{} streams failed: {errors:?}",
        errors.len()
    );
    let stats = ring.stats();
    assert_eq!(stats.malformed, 0, "{stats:?}");
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.taken, stats.returned, "{stats:?}");

    // Every buffer is back in circulation: one stream that holds all it gets receives each
    // of the 64 (a buffer the ring still counted as the kernel's, though the kernel had
    // used it, would never come again).
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let writer = std::thread::spawn(move || {
        let _ = peer.write_all(&chunk(99, 0, 4 * 64 * 512));
        peer
    });
    let ids = hold_until_stalled(&mut stream, &ring).await;
    assert_eq!(
        ids,
        (0..ENTRIES).collect::<Vec<_>>(),
        "buffers missing: {:?}",
        ring.stats()
    );
    drop(writer.join().unwrap());
    drop(stream);
    // With nothing held, the published count returns to the whole ring.
    assert!(
        turns_until(1000, || {
            let s = ring.stats();
            s.in_use == 0 && s.in_ring == usize::from(ENTRIES)
        })
        .await,
        "{:?}",
        ring.stats()
    );
    let stats = ring.stats();
    assert_eq!(stats.taken, stats.returned, "{stats:?}");
    assert_eq!(stats.malformed, 0, "{stats:?}");
}

/// Bundle completions taken in another order than the kernel selected their buffers, mixed
/// with a single-buffer one, each get their own buffers; malformed bundles (a start id that is
/// not in the ring, a run across another completion's entry, more bytes than the run holds)
/// are rejected without taking anything, and every buffer comes back once.
///
/// No request is armed, so the kernel selects nothing: the completions are the ones it would
/// post after taking [0,1,2] for A, [3,4] for B, [5] for C, 6 for a plain receive D and
/// [7..=15] for E.
#[runtime::test]
async fn bundles_taken_in_any_order_get_their_own_buffers() {
    let ring = BufRing::builder().entries(16).buf_len(64).build().unwrap();
    assert_eq!(ring.stats().in_ring, 16);
    let mut a = VecDeque::new();
    let mut b = VecDeque::new();
    let mut c = VecDeque::new();
    let mut e = VecDeque::new();

    ring.take_bundle(&selected(7, 9 * 64 - 10, 0), &mut e)
        .unwrap();
    let mut expected: Vec<_> = (7..=15).map(|bid| (bid, 64)).collect();
    expected[8].1 = 54;
    assert_eq!(ids_and_lens(&e), expected);
    ring.take_bundle(&selected(5, 1, 0), &mut c).unwrap();
    assert_eq!(ids_and_lens(&c), [(5, 1)]);
    ring.take_bundle(&selected(3, 100, 0), &mut b).unwrap();
    assert_eq!(ids_and_lens(&b), [(3, 64), (4, 36)]);
    let d = ring.take(&selected(6, 64, 0)).unwrap().unwrap();
    assert_eq!((d.buffer_id(), d.len()), (Some(6), 64));

    let mut rejected = VecDeque::new();
    let malformed = [
        ("start id already taken", selected(4, 10, 0)),
        ("start id outside the ring", selected(16, 10, 0)),
        ("run across B's entry", selected(1, 3 * 64, 0)),
        ("more bytes than the ring holds", selected(0, 17 * 64, 0)),
    ];
    for (what, cqe) in malformed {
        let err = ring.take_bundle(&cqe, &mut rejected).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{what}: {err}");
        assert!(rejected.is_empty(), "{what}: took buffers");
    }
    // A completion without data, or a failed one, consumed no entry.
    ring.take_bundle(&selected(0, 0, 0), &mut rejected).unwrap();
    ring.take_bundle(&selected(0, -libc::ECONNRESET, 0), &mut rejected)
        .unwrap();
    assert!(rejected.is_empty());
    assert!(
        ring.take(&selected(0, -libc::ECONNRESET, 0))
            .unwrap()
            .is_none()
    );
    assert_eq!(ring.stats().in_ring, 3, "{:?}", ring.stats());

    // A's buffers were not disturbed by the rejected completions.
    ring.take_bundle(&selected(0, 130, 0), &mut a).unwrap();
    assert_eq!(ids_and_lens(&a), [(0, 64), (1, 64), (2, 2)]);
    let stats = ring.stats();
    assert_eq!((stats.taken, stats.in_use, stats.in_ring), (16, 16, 0));
    assert_eq!(stats.malformed, 4);

    drop(b);
    drop(d);
    drop(a);
    drop(e);
    drop(c);
    let stats = ring.stats();
    assert_eq!((stats.returned, stats.in_use), (16, 0), "{stats:?}");
    // The next loop turn gives all 16 back to the kernel.
    yield_now().await;
    assert_eq!(ring.stats().in_ring, 16, "{:?}", ring.stats());
}

/// Incremental rings: a completion that continues a buffer the kernel is done with (it is no
/// longer in the ring) is rejected and changes nothing, so the buffer still comes back when
/// its real data is dropped.
#[runtime::test]
async fn incremental_completions_for_buffers_out_of_the_ring_are_rejected() {
    if integration_tests::skip_on_epoll(
        "buf_ring_shared_bundles::incremental_completions_for_buffers_out_of_the_ring_are_rejected",
        "incremental buffer consumption, IOU_PBUF_RING_INC",
    ) {
        return;
    }
    let ring = BufRing::builder()
        .entries(4)
        .buf_len(4096)
        .incremental(true)
        .build()
        .unwrap();
    assert!(ring.is_incremental(), "{}", runtime::capabilities());
    let first = ring
        .take(&selected(0, 10, cqe_flags::BUF_MORE))
        .unwrap()
        .unwrap();
    let last = ring.take(&selected(0, 20, 0)).unwrap().unwrap();
    assert_eq!((first.len(), last.len()), (10, 20));
    for flags in [cqe_flags::BUF_MORE, 0] {
        let err = ring.take(&selected(0, 5, flags)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }
    drop(first);
    drop(last);
    let stats = ring.stats();
    assert_eq!(
        (stats.taken, stats.returned, stats.in_use),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(stats.malformed, 2);
    // Buffer 0 is free again: the next loop turn gives all four back to the kernel.
    yield_now().await;
    assert_eq!(ring.stats().in_ring, 4, "{:?}", ring.stats());
}

/// A stream whose request stays armed after a completion it rejects must cancel the request:
/// otherwise the kernel goes on filling ring buffers for it that no one ever takes. Here a
/// forged completion claims the buffer the kernel selects next, so the kernel's real
/// completion for it is rejected; the data sent after that must reach the socket's next
/// receive, and every buffer must come back, while the ended stream is still alive.
#[runtime::test]
async fn a_stream_that_ends_with_an_error_cancels_its_request() {
    let ring = BufRing::builder().entries(16).buf_len(256).build().unwrap();
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let mut received = stream.recv_stream(&ring);
    // Arm the request with nothing to receive yet.
    assert!(
        timeout(Duration::from_millis(20), received.next())
            .await
            .is_err()
    );
    // The kernel takes the entry at its head, buffer 0, next.
    let forged = ring.take(&selected(0, 1, 0)).unwrap().unwrap();
    peer.write_all(b"lost").unwrap();
    let err = timeout(Duration::from_secs(5), received.next())
        .await
        .expect("the stream saw no completion")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(received.next().await.is_none(), "the stream ended");
    // The kernel consumed buffer 0's entry for the rejected completion: it may be reused.
    drop(forged);
    // The ended stream, still alive, no longer has a request in the kernel.
    assert!(
        integration_tests::turns_until(1000, || runtime::metrics().ops_in_flight == 0).await,
        "the ended stream's multishot receive is still armed: {:?}",
        runtime::metrics()
    );

    // Data sent while the ended stream lives, with loop turns for the kernel to act on it
    // before the next receive is even submitted.
    sleep(Duration::from_millis(20)).await;
    let data = chunk(7, 0, 64 * 1024);
    peer.write_all(&data).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    sleep(Duration::from_millis(20)).await;
    let stats = ring.stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    // Reads borrow the stream, so the ended receive stream goes first.
    drop(received);
    let mut got = Vec::new();
    loop {
        let (res, buf) = timeout(Duration::from_secs(5), stream.read(vec![0u8; 65536]))
            .await
            .expect("data sent after the error went to a request no one takes");
        match res.unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(got == data, "data after the error lost or reordered");
    let stats = ring.stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.taken, stats.returned, "{stats:?}");
}
