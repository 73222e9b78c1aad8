//! Receive streams over provided-buffer rings: many connections through few buffers, drops,
//! backpressure, truncation, malformed completions, incremental and bundled consumption.

use std::{
    io::Write,
    net::{Shutdown, SocketAddr},
    time::Duration,
};

use integration_tests::{join_all, raise_fd_limit};
use net::{TcpListener, TcpStream, UdpSocket, udp::cmsg};
use runtime::{
    buf::{BufRing, RxBuf},
    op::{Completion, cqe_flags},
    spawn,
    time::{sleep, timeout},
};

/// Byte `pos` of connection `conn`'s stream: cheap to generate and check, and different per
/// connection and position, so interleaving or loss shows.
fn byte(conn: u64, pos: u64) -> u8 {
    (pos.wrapping_mul(131) ^ conn.wrapping_mul(0x9e37_79b9)) as u8 ^ (pos >> 8) as u8
}

fn chunk(conn: u64, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(|p| byte(conn, p)).collect()
}

/// 1,000 connections each stream 1 MiB through one ring of 64 buffers: the ring runs dry over
/// and over (`ENOBUFS`), the streams wait and re-arm, and every byte arrives in order.
#[runtime::test]
async fn a_thousand_connections_through_a_64_buffer_ring() {
    raise_fd_limit(4096);
    const CONNS: u64 = 1000;
    const PER_CONN: u64 = 1 << 20;
    const CHUNK: usize = 64 * 1024;
    let ring = BufRing::builder()
        .entries(64)
        .buf_len(4096)
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
                    let mut received = stream.recv_stream_unbundled(&ring);
                    let mut header = Vec::new();
                    let mut pos = 0u64;
                    let mut conn = None;
                    let mut rearms = 0;
                    while let Some(item) = received.next().await {
                        let buf = item.unwrap();
                        let mut data: &[u8] = &buf;
                        if conn.is_none() {
                            let need = 8 - header.len();
                            let take = need.min(data.len());
                            header.extend_from_slice(&data[..take]);
                            data = &data[take..];
                            if header.len() == 8 {
                                conn = Some(u64::from_le_bytes(header[..].try_into().unwrap()));
                            }
                        }
                        if let Some(c) = conn {
                            for &b in data {
                                assert_eq!(b, byte(c, pos), "conn {c} byte {pos}");
                                pos += 1;
                            }
                        }
                        rearms = received.rearms();
                    }
                    assert_eq!(pos, PER_CONN, "conn {conn:?} ended early");
                    rearms
                }));
            }
            let mut rearms = 0;
            for c in join_all(checkers).await {
                rearms += c.unwrap();
            }
            rearms
        })
    };

    let clients: Vec<_> = (0..CONNS)
        .map(|conn| {
            spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let (res, _) = stream.write_all(conn.to_le_bytes().to_vec()).await;
                res.unwrap();
                let mut sent = 0u64;
                while sent < PER_CONN {
                    let (res, _) = stream.write_all(chunk(conn, sent, CHUNK)).await;
                    res.unwrap();
                    sent += CHUNK as u64;
                }
                stream.shutdown(Shutdown::Write).unwrap();
                stream
            })
        })
        .collect();
    let streams = join_all(clients).await;
    let rearms = server.await.unwrap();
    drop(streams);
    let stats = ring.stats();
    // On the epoll backend a receive takes buffers only when data is there and a returned
    // buffer is published at once, so 64 buffers run dry only while consumers hold them all,
    // which these do not (epoll.rs holds a whole pool to see a stream wait for buffers).
    if !integration_tests::epoll_selected() {
        assert!(stats.exhausted > 0, "the ring never ran dry: {stats:?}");
        assert!(rearms > 0, "no stream was ever re-armed");
    }
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.taken, stats.returned, "{stats:?}");
    assert_eq!(stats.malformed, 0);
}

/// Dropping an armed stream cancels the multishot receive; buffers delivered after the drop go
/// back to the ring, and their data is kept for the next receive.
#[runtime::test]
async fn dropping_a_stream_returns_every_buffer_and_keeps_the_data() {
    let ring = BufRing::builder()
        .entries(16)
        .buf_len(1024)
        .build()
        .unwrap();
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let total = 200_000usize;
    let data = chunk(1, 0, total);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            for part in data.chunks(1000) {
                peer.write_all(part).unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
            peer
        })
    };
    let mut got = Vec::new();
    let mut received = stream.recv_stream(&ring);
    while got.len() < 20_000 {
        got.extend_from_slice(&received.next().await.unwrap().unwrap());
    }
    drop(received);
    // Some data arrives for the dropped request; the rest waits in the socket.
    sleep(Duration::from_millis(20)).await;
    let stats = ring.stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(
        stats.taken, stats.returned,
        "every buffer came back: {stats:?}"
    );
    let peer = writer.join().unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    loop {
        let (res, buf) = stream.read(vec![0u8; 65536]).await;
        match res.unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(got.len(), total);
    assert!(
        got == data,
        "bytes lost or reordered across the dropped stream"
    );
}

/// Holding every buffer empties the ring: the stream pauses (no data is dropped; it waits in
/// the socket) and resumes when buffers come back.
#[runtime::test]
async fn holding_buffers_applies_backpressure() {
    let ring = BufRing::builder().entries(8).buf_len(512).build().unwrap();
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let data = chunk(2, 0, 64 * 1024);
    peer.write_all(&data).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();

    let mut received = stream.recv_stream(&ring);
    let mut held: Vec<RxBuf> = Vec::new();
    // Take buffers until the ring is dry and the stream stalls.
    while let Ok(item) = timeout(Duration::from_millis(100), received.next()).await {
        held.push(item.unwrap().unwrap());
    }
    assert_eq!(
        held.len(),
        8,
        "the stream stalls once all 8 buffers are held"
    );
    assert!(ring.stats().exhausted > 0);
    let mut got: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
    drop(held);
    while let Some(item) = timeout(Duration::from_secs(5), received.next())
        .await
        .expect("the stream did not resume")
    {
        got.extend_from_slice(&item.unwrap());
    }
    assert!(got == data, "data lost or reordered under backpressure");
}

/// Completions a correct kernel would not post are rejected, never used to index memory.
#[runtime::test]
async fn malformed_completions_are_errors() {
    let ring = BufRing::builder().entries(4).buf_len(64).build().unwrap();
    let buffer = |bid: u16| cqe_flags::BUFFER | (u32::from(bid) << cqe_flags::BUFFER_SHIFT);
    let cases = [
        (
            "id outside the ring",
            Completion::new(10, buffer(9), [0; 2]),
        ),
        ("data without F_BUFFER", Completion::new(10, 0, [0; 2])),
        (
            "more bytes than a buffer",
            Completion::new(65, buffer(0), [0; 2]),
        ),
    ];
    for (what, cqe) in cases {
        let err = ring.take(&cqe).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{what}: {err}");
    }
    // A valid completion for a buffer the kernel holds works once; naming it again (it is no
    // longer in the ring) is malformed.
    let ok = ring
        .take(&Completion::new(5, buffer(0), [0; 2]))
        .unwrap()
        .unwrap();
    assert_eq!(ok.len(), 5);
    let err = ring
        .take(&Completion::new(5, buffer(0), [0; 2]))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    drop(ok);
    assert!(ring.take(&Completion::new(0, 0, [0; 2])).unwrap().is_none());
    assert_eq!(ring.stats().malformed, 4);
}

#[runtime::test]
async fn datagram_streams_report_peers_and_truncation() {
    let ring = BufRing::builder().entries(32).buf_len(256).build().unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx_addr: SocketAddr = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagrams = rx.recv_msg_stream(&ring);
    for i in 0..5u8 {
        let (res, _) = tx.send_to(vec![i; 100], rx_addr).await;
        res.unwrap();
        let d = datagrams.next().await.unwrap().unwrap();
        assert_eq!(d.peer(), Some(tx.local_addr().unwrap()));
        assert!(!d.is_truncated());
        assert_eq!(&d.payload()[..], &[i; 100][..]);
    }
    // Larger than the 144 bytes of payload room: flagged, with its true length.
    let big: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let (res, _) = tx.send_to(big.clone(), rx_addr).await;
    res.unwrap();
    let d = datagrams.next().await.unwrap().unwrap();
    assert!(d.is_truncated());
    assert_eq!(d.len(), 1000);
    assert_eq!(&d.payload()[..], &big[..d.payload().len()]);
    assert_eq!(d.payload().len(), 256 - 112);
}

/// With GRO on, a GSO send arrives as one coalesced buffer whose segments are the datagrams.
#[runtime::test]
async fn datagram_streams_expose_gro_segments() {
    let ring = BufRing::builder()
        .entries(16)
        .buf_len(8192)
        .build()
        .unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_gro(true).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let data: Vec<u8> = (0..4000u32).map(|i| (i / 1000) as u8).collect();
    let mut datagrams = rx.recv_msg_stream(&ring);
    let (res, _, _) = tx
        .send_msg(
            data.clone(),
            Some(rx.local_addr().unwrap()),
            Some(cmsg::udp_segment(1000)),
        )
        .await;
    res.unwrap();
    let mut segments = Vec::new();
    let mut coalesced = false;
    while segments.len() < 4 {
        let d = datagrams.next().await.unwrap().unwrap();
        coalesced |= d.gro_segment_size() == Some(1000);
        segments.extend(d.segments().map(<[u8]>::to_vec));
    }
    assert!(coalesced);
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s.len(), 1000);
        assert!(s.iter().all(|&b| b == i as u8));
    }
}

/// Incremental consumption: small receives share one buffer instead of taking one each.
#[runtime::test]
async fn incremental_rings_pack_small_receives() {
    if integration_tests::skip_on_epoll(
        "buf_ring::incremental_rings_pack_small_receives",
        "incremental buffer consumption, IOU_PBUF_RING_INC",
    ) {
        return;
    }
    let ring = BufRing::builder()
        .entries(4)
        .buf_len(64 * 1024)
        .incremental(true)
        .build()
        .unwrap();
    assert!(ring.is_incremental(), "{}", runtime::capabilities());
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let mut received = stream.recv_stream(&ring);
    let mut ids = Vec::new();
    let mut got = Vec::new();
    for i in 0..20u8 {
        peer.write_all(&[i; 10]).unwrap();
        let buf = received.next().await.unwrap().unwrap();
        ids.push(buf.buffer_id().unwrap());
        got.extend_from_slice(&buf);
    }
    let expected: Vec<u8> = (0..20u8).flat_map(|i| [i; 10]).collect();
    assert_eq!(got, expected);
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "small receives should continue in the same buffer: {ids:?}"
    );
    drop(received);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(ring.stats().in_use, 0);
}

/// Bundled receives (one completion over several buffers) deliver the bytes in order.
#[runtime::test]
async fn bundled_streams_deliver_in_order() {
    // The epoll backend's user-space pool fills bundles itself.
    assert!(runtime::capabilities().recvsend_bundle() || integration_tests::epoll_selected());
    let ring = BufRing::builder()
        .entries(64)
        .buf_len(1024)
        .build()
        .unwrap();
    let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
    let data = chunk(3, 0, 1 << 20);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            peer.write_all(&data).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut received = stream.recv_stream(&ring);
    let mut got = Vec::with_capacity(1 << 20);
    while let Some(item) = received.next().await {
        got.extend_from_slice(&item.unwrap());
    }
    writer.join().unwrap();
    assert!(got == data, "bundled bytes lost or reordered");
    sleep(Duration::from_millis(5)).await;
    assert_eq!(ring.stats().in_use, 0);
}
