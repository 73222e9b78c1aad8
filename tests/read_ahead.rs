//! The read-ahead under `TcpStream::read` (`net/src/read_ahead.rs`): one multishot receive on
//! the worker's shared ring serves many reads, a reader that stops holds a bounded share of
//! the ring, bulk streams go back to plain receives, and every hand-over (split, receive
//! stream, adapter, drop, shutdown) keeps the bytes in order and leaks nothing. On the epoll
//! backend there is no shared ring and reads are plain; the same tests check the bytes there.

use std::{io::Write, net::Shutdown, time::Duration};

use integration_tests::{open_fds, pattern, read_to_end, settles_within, stream_with_std_peer};
use runtime::{Backend, buf::BufRing, metrics, time::timeout};

const GUARD: Duration = Duration::from_secs(10);

/// Whether this runtime runs on io_uring (where the read-ahead exists).
fn on_uring() -> bool {
    runtime::capabilities().backend() == Backend::IoUring
}

/// Reads from `stream` until `want` bytes arrived, with buffers of `len`.
async fn read_n(stream: &mut net::TcpStream, want: usize, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        let (res, buf) = timeout(GUARD, stream.read(Vec::with_capacity(len)))
            .await
            .expect("the bytes never came");
        let n = res.unwrap();
        assert!(n > 0, "end of stream after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Many request-response turns cost one request in all on io_uring, not one per read.
#[runtime::test]
async fn many_reads_share_one_receive_request() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    // The first read arms the request.
    peer.write_all(b"warm").unwrap();
    assert_eq!(read_n(&mut client, 4, 64).await, b"warm");
    let before = metrics().ops_submitted;
    for round in 0..200u32 {
        let msg = format!("<{round}>");
        peer.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_n(&mut client, msg.len(), 64).await, msg.as_bytes());
    }
    let submitted = metrics().ops_submitted - before;
    if on_uring() {
        assert!(submitted <= 4, "{submitted} requests for 200 reads");
        assert!(BufRing::shared().is_some());
    } else {
        assert!(
            BufRing::shared().is_none(),
            "the epoll backend has no shared ring"
        );
    }
}

/// A reader of small messages that stops: each arrival takes a whole ring buffer, so the
/// request, sized from the arrivals it saw, ends after about 16 of them (before the ring runs
/// dry) and the rest waits in the socket; every byte arrives in order once it reads again.
/// With a fixed 64 KiB limit the request takes every published buffer and the ring reports
/// `exhausted` (checked by hand).
#[runtime::test]
async fn a_stopped_reader_holds_about_sixteen_ring_buffers() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let mut expected = Vec::new();
    // Messages of 10 bytes, read as they come: the read-ahead learns their size.
    for round in 0..100u32 {
        let msg = format!("<{round:08}>");
        peer.write_all(msg.as_bytes()).unwrap();
        expected.extend_from_slice(msg.as_bytes());
        assert_eq!(read_n(&mut client, 10, 64).await, msg.as_bytes());
    }
    let mut later = Vec::new();
    for round in 100..400u32 {
        later.extend_from_slice(format!("<{round:08}>").as_bytes());
    }
    expected.extend_from_slice(&later);
    // 300 more, each its own arrival, while the reader does something else.
    let writer = std::thread::spawn(move || {
        for msg in later.chunks(10) {
            peer.write_all(msg).unwrap();
            std::thread::sleep(Duration::from_micros(500));
        }
        peer.shutdown(Shutdown::Write).unwrap();
        peer
    });
    let before = metrics().completions;
    runtime::time::sleep(Duration::from_millis(400)).await;
    let arrivals = metrics().completions - before;
    let mut got = expected[..1000].to_vec();
    read_to_end(&mut client, 4096, &mut got).await;
    assert!(got == expected, "bytes lost or reordered");
    drop(writer.join().unwrap());
    if let Some(ring) = BufRing::shared() {
        // The request ended at its own byte limit: it took about 16 buffers (one completion
        // each, plus the timer's), never so many that the ring ran dry (which only the 16
        // buffers the ring keeps published would have stopped).
        assert!(
            arrivals <= 24,
            "{arrivals} completions while the reader stopped"
        );
        let s = ring.stats();
        assert_eq!(s.exhausted, 0, "the stopped reader emptied the ring: {s:?}");
    }
}

/// Splitting, reading through a half, dropping it, and reading on: the bytes the read-ahead
/// had queued come first and nothing is lost or reordered.
#[runtime::test]
async fn split_and_receive_streams_take_over_in_order() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let mut expected = Vec::new();
    let mut got = Vec::new();
    let mut send = |peer: &mut std::net::TcpStream, round: u32| {
        let msg = format!("<{round}>");
        peer.write_all(msg.as_bytes()).unwrap();
        expected.extend_from_slice(msg.as_bytes());
    };
    for round in 0..20 {
        send(&mut peer, round);
    }
    // Takes a little, leaving the rest queued in the read-ahead.
    got.extend(read_n(&mut client, 3, 3).await);
    for round in 20..40 {
        send(&mut peer, round);
    }
    {
        let (mut reader, _writer) = client.split();
        let (res, buf) = reader.read(Vec::with_capacity(5)).await;
        got.extend_from_slice(&buf[..res.unwrap()]);
    }
    for round in 40..60 {
        send(&mut peer, round);
    }
    got.extend(read_n(&mut client, 10, 4).await);
    {
        let ring = BufRing::builder().entries(64).buf_len(256).build().unwrap();
        let mut stream = client.recv_stream(&ring);
        let first = timeout(GUARD, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend_from_slice(&first);
    }
    for round in 60..80 {
        send(&mut peer, round);
    }
    peer.shutdown(Shutdown::Write).unwrap();
    read_to_end(&mut client, 7, &mut got).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    drop(client);
    assert!(settles_within(Duration::from_secs(5), || metrics().ops_in_flight == 0).await);
}

/// A peek sees what the read-ahead queued and takes nothing from it.
#[runtime::test]
async fn a_peek_sees_queued_bytes_and_leaves_them() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    peer.write_all(b"first").unwrap();
    assert_eq!(read_n(&mut client, 5, 64).await, b"first");
    peer.write_all(b"second").unwrap();
    let (res, buf) = timeout(GUARD, client.peek(Vec::with_capacity(64)))
        .await
        .unwrap();
    assert_eq!(&buf[..res.unwrap()], b"second");
    assert_eq!(read_n(&mut client, 6, 64).await, b"second");
}

/// Bulk data (arrivals filling whole ring buffers) goes back to plain receives: the shared
/// ring stops handing out buffers for the stream after the first arming or so.
#[runtime::test]
async fn a_bulk_stream_goes_back_to_plain_receives() {
    let (mut client, peer) = stream_with_std_peer().await;
    let total = 8 << 20;
    let writer = std::thread::spawn(move || {
        let mut peer = peer;
        let chunk = pattern(64 * 1024, 3);
        for _ in 0..total / chunk.len() {
            peer.write_all(&chunk).unwrap();
        }
        peer
    });
    let got = read_n(&mut client, total, 64 * 1024).await;
    assert_eq!(got.len(), total);
    if let Some(ring) = BufRing::shared() {
        let taken = ring.stats().taken as usize * ring.buf_len();
        assert!(
            taken < total / 4,
            "{taken} of {total} bytes went through the ring"
        );
    }
    let mut peer = writer.join().unwrap();
    // Messages again: back to the read-ahead after a few small reads.
    for round in 0..40u32 {
        let msg = format!("<{round}>");
        peer.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_n(&mut client, msg.len(), 64).await, msg.as_bytes());
    }
}

/// Streams whose read-ahead is armed and holds unread bytes, at runtime shutdown: every
/// request ends and no descriptor is left open.
#[test]
fn shutdown_with_armed_read_aheads_leaks_no_descriptor() {
    let _exclusive = integration_tests::exclusive();
    let before = open_fds();
    let rt = runtime::Runtime::new().unwrap();
    let peers = rt.block_on(async {
        let mut peers = Vec::new();
        for i in 0..8u8 {
            let (mut client, mut peer) = stream_with_std_peer().await;
            peer.write_all(&[i; 10]).unwrap();
            // Armed, with bytes left queued (a 1-byte read takes one of ten).
            assert_eq!(read_n(&mut client, 1, 1).await, [i]);
            runtime::spawn(async move {
                let _keep = client;
                std::future::pending::<()>().await;
            });
            peers.push(peer);
        }
        peers
    });
    drop(rt);
    drop(peers);
    assert_eq!(open_fds(), before, "{}", integration_tests::describe_fds());
}
