//! Batches both ways: `RecvStream::next_batch` hands out a bundle's buffers together (and a
//! message's buffer alone), and `writev_all` sends any number of buffers whole and in order:
//! behind the caller's back when they are few, with as many vectored sends as it takes when
//! they are many or large, more than the kernel takes in one `sendmsg` included.

use std::{
    io::{Read, Write},
    net::Shutdown,
    time::Duration,
};

use integration_tests::{epoll_selected, pattern, stream_with_std_peer};
use runtime::{
    buf::{BufRing, RxBuf},
    time::{sleep, timeout},
};

/// Reads `peer` to EOF on a thread.
fn read_to_end(mut peer: std::net::TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    })
}

/// Joins `thread` without blocking the loop (it must run to send what was written behind).
async fn join<T>(thread: std::thread::JoinHandle<T>) -> T {
    while !thread.is_finished() {
        sleep(Duration::from_millis(1)).await;
    }
    thread.join().unwrap()
}

/// `data` cut into buffers of `len` bytes (the last may be shorter).
fn cut(data: &[u8], len: usize) -> Vec<Vec<u8>> {
    data.chunks(len).map(<[u8]>::to_vec).collect()
}

/// Few small buffers (written behind), 2,000 tiny ones (more than one `sendmsg` takes), three
/// of 300 KiB (more than the socket buffer: partial sends), empty ones, and plain writes
/// between them: the peer gets every byte, in call order.
#[runtime::test]
async fn writev_all_sends_every_byte_in_order() {
    let (mut stream, peer) = stream_with_std_peer().await;
    let reader = read_to_end(peer);
    let data = pattern(1_200_000, 3);
    let mut at = 0;
    // Takes the next `len` bytes of `data`; the calls below take all of it.
    let mut take = |len: usize| {
        let part = &data[at..at + len];
        at += len;
        part.to_vec()
    };
    stream.write_all(take(10)).await.0.unwrap();
    let (res, bufs) = stream.writev_all(cut(&take(3000), 1000)).await;
    res.unwrap();
    assert_eq!(bufs.len(), 3, "the buffers come back");
    let (res, _) = stream.writev_all(cut(&take(74_000), 37)).await;
    res.unwrap();
    stream.write_all(take(100)).await.0.unwrap();
    let (res, _) = stream.writev_all(cut(&take(900_000), 300_000)).await;
    res.unwrap();
    let (res, _) = stream.writev_all(Vec::<Vec<u8>>::new()).await;
    res.unwrap();
    let mixed = vec![Vec::new(), take(5000), Vec::new(), take(1)];
    stream.writev_all(mixed).await.0.unwrap();
    stream
        .writev_all(cut(&take(217_889), 4096))
        .await
        .0
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let got = join(reader).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes lost or reordered");
}

/// More buffers than the kernel's `UIO_MAXIOV` in one `writev`: a partial write (the first
/// 1,024), not a failure of the whole request.
#[runtime::test]
async fn writev_of_more_buffers_than_one_sendmsg_takes_writes_part_of_them() {
    let (mut stream, peer) = stream_with_std_peer().await;
    let reader = read_to_end(peer);
    let bufs = cut(&pattern(20_000, 5), 10);
    let (res, bufs) = stream.writev(bufs).await;
    let n = res.expect("a writev of 2,000 buffers must not fail");
    assert!(n > 0 && n <= 1024 * 10, "wrote {n} bytes");
    let sent: Vec<u8> = bufs.concat();
    stream.write_all(sent[n..].to_vec()).await.0.unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(join(reader).await == pattern(20_000, 5));
}

/// A failure of the connection reaches `writev_all` as an error, with the buffers back.
#[runtime::test]
async fn writev_all_to_a_reset_peer_fails() {
    let (mut stream, peer) = stream_with_std_peer().await;
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    sleep(Duration::from_millis(20)).await;
    let mut failure = None;
    for _ in 0..100 {
        let (res, bufs) = stream
            .writev_all(cut(&pattern(192 * 1024, 1), 64 * 1024))
            .await;
        assert_eq!(bufs.len(), 3);
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
    }
    let e = failure.expect("writes to a reset peer must fail");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

fn ring() -> BufRing {
    BufRing::builder()
        .entries(64)
        .buf_len(1024)
        .build()
        .unwrap()
}

fn bundles_offered() -> bool {
    runtime::capabilities().recvsend_bundle() || epoll_selected()
}

async fn next_batch(received: &mut net::RecvStream<'_>, max: usize) -> Option<Vec<RxBuf>> {
    let batch = timeout(Duration::from_secs(10), received.next_batch(max)).await;
    batch
        .expect("a batch never came")
        .map(|b| b.expect("receive"))
}

/// A message that arrived alone comes alone; bytes that arrived together come as one batch of
/// at most `max` buffers, the rest with the next calls, in order.
#[runtime::test]
async fn next_batch_takes_a_bundle_together_and_a_message_alone() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    let ring = ring();
    let mut received = stream.recv_stream(&ring);
    peer.write_all(&pattern(100, 1)).unwrap();
    let first = next_batch(&mut received, 64).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0][..] == pattern(100, 1)[..]);
    drop(first);

    let data = pattern(10 * 1024, 2);
    peer.write_all(&data).unwrap();
    sleep(Duration::from_millis(100)).await; // all of it waits in the socket
    let mut got = Vec::new();
    let mut batches = Vec::new();
    while got.len() < data.len() {
        let batch = next_batch(&mut received, 3).await.unwrap();
        assert!(
            !batch.is_empty() && batch.len() <= 3,
            "{} buffers",
            batch.len()
        );
        batches.push(batch.len());
        got.extend(batch.iter().flat_map(|b| b.iter().copied()));
    }
    assert!(got == data, "bytes lost or reordered");
    if bundles_offered() {
        assert_eq!(
            batches[0], 3,
            "a bundle's buffers come together: {batches:?}"
        );
    }
    drop(peer);
    assert!(next_batch(&mut received, 64).await.is_none(), "the end");
}

/// Bytes followed by a reset: every byte comes out, then the error, then the end, however
/// the batches fell.
#[runtime::test]
async fn next_batch_yields_the_bytes_before_a_reset_then_the_error() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    let ring = ring();
    let data = pattern(8 * 1024, 4);
    peer.write_all(&data).unwrap();
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    sleep(Duration::from_millis(100)).await;
    let mut received = stream.recv_stream(&ring);
    let mut got = Vec::new();
    let error = loop {
        let batch = timeout(Duration::from_secs(10), received.next_batch(64))
            .await
            .expect("nothing came");
        match batch {
            Some(Ok(bufs)) => got.extend(bufs.iter().flat_map(|b| b.iter().copied())),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the reset"),
        }
    };
    assert!(
        got == data,
        "{} of {} bytes before the error",
        got.len(),
        data.len()
    );
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert!(
        timeout(Duration::from_secs(10), received.next_batch(64))
            .await
            .unwrap()
            .is_none()
    );
}

/// The ring example's loop: what comes in batches goes back with `writev_all`, a bulk stream
/// and messages alike.
#[runtime::test]
async fn batches_echo_through_writev_all() {
    let (client, server) = integration_tests::tcp_pair().await;
    let ring = ring();
    let echo = runtime::spawn(async move {
        let (mut reader, mut writer) = server.into_split();
        let mut received = reader.recv_stream(&ring);
        while let Some(bufs) = received.next_batch(64).await {
            writer.writev_all(bufs.unwrap()).await.0.unwrap();
        }
    });
    let (mut reader, mut writer) = client.into_split();
    let data = pattern(2 << 20, 9);
    let sent = data.clone();
    let send = runtime::spawn(async move {
        for part in cut(&sent, 100_000) {
            writer.write_all(part).await.0.unwrap();
        }
        writer.shutdown().unwrap();
        writer
    });
    let mut got = Vec::new();
    loop {
        let read = timeout(
            Duration::from_secs(10),
            reader.read(Vec::with_capacity(65536)),
        );
        let (res, buf) = read.await.expect("the echo stalled");
        match res.unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        got == data,
        "{} of {} bytes came back",
        got.len(),
        data.len()
    );
    drop(send.await.unwrap());
    echo.await.unwrap();
}
