//! UDP end to end: round trips with source addresses, connected sockets, truncation, control
//! messages (GSO/GRO), abandoned receives.

use std::{net::SocketAddr, task::Poll, time::Duration};

use integration_tests::{pattern, poll_once};
use net::{
    UdpSocket,
    udp::{Truncated, cmsg},
};
use runtime::{buf::IoBuf, spawn, time::timeout};

#[runtime::test]
async fn round_trips_report_source_addresses() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let echo = spawn(async move {
        let mut buf = vec![0u8; 2048];
        for _ in 0..3 {
            let (res, b) = server.recv_from(buf).await;
            let (n, peer) = res.unwrap();
            let (res, b) = server.send_to(b.slice(..n), peer).await;
            res.unwrap();
            buf = b.into_inner();
        }
    });
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, client) in clients.iter().enumerate() {
        let msg = pattern(100 + i * 300, i as u64);
        let (res, _) = client.send_to(msg.clone(), server_addr).await;
        assert_eq!(res.unwrap(), msg.len());
        let (res, buf) = client.recv_from(vec![0u8; 2048]).await;
        let (n, from) = res.unwrap();
        assert_eq!(from, server_addr);
        assert_eq!(&buf[..n], &msg[..]);
    }
    echo.await.unwrap();
}

#[runtime::test]
async fn connected_sockets_send_and_recv() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).await.unwrap();
    b.connect(a.local_addr().unwrap()).await.unwrap();
    assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
    let (res, _) = a.send("ping").await;
    assert_eq!(res.unwrap(), 4);
    let (res, buf) = b.recv(vec![0u8; 16]).await;
    assert_eq!(&buf[..res.unwrap()], b"ping");
    let (res, _) = b.send("pong").await;
    res.unwrap();
    let (res, buf) = a.recv(vec![0u8; 16]).await;
    assert_eq!(&buf[..res.unwrap()], b"pong");
}

#[runtime::test]
async fn oversized_datagrams_report_truncation() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (res, _) = tx.send_to(pattern(1000, 9), rx.local_addr().unwrap()).await;
    res.unwrap();
    let (res, buf) = rx.recv_from(Vec::with_capacity(100)).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let t = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Truncated>())
        .expect("a Truncated error");
    assert_eq!((t.len, t.capacity), (1000, buf.capacity()));
    assert_eq!(t.peer, Some(tx.local_addr().unwrap()));
    assert_eq!(&buf[..], &pattern(1000, 9)[..buf.len()]);

    // recv_msg reports it in the metadata instead.
    let (res, _) = tx.send_to(pattern(500, 1), rx.local_addr().unwrap()).await;
    res.unwrap();
    let (res, _, _) = rx.recv_msg(Vec::with_capacity(10), Vec::new()).await;
    let meta = res.unwrap();
    assert!(meta.truncated);
    assert_eq!(meta.datagram_len, 500);
}

/// GSO: one send of 3 × 1000 bytes leaves as three 1000-byte datagrams.
#[runtime::test]
async fn gso_splits_one_send_into_datagrams() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let data = pattern(3000, 5);
    let (res, _, _) = tx
        .send_msg(
            data.clone(),
            Some(rx.local_addr().unwrap()),
            Some(cmsg::udp_segment(1000)),
        )
        .await;
    assert_eq!(res.unwrap(), 3000);
    for i in 0..3 {
        let (res, buf) = rx.recv_from(vec![0u8; 4000]).await;
        let (n, _) = res.unwrap();
        assert_eq!(n, 1000);
        assert_eq!(&buf[..n], &data[i * 1000..(i + 1) * 1000]);
    }
}

/// GRO: with `UDP_GRO` on, the kernel reports the segment size of what it coalesced, and
/// `cmsg::segments` splits the payload back into the datagrams that were sent.
#[runtime::test]
async fn gro_reports_the_segment_size() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_gro(true).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let data = pattern(4000, 6);
    let (res, _, _) = tx
        .send_msg(
            data.clone(),
            Some(rx.local_addr().unwrap()),
            Some(cmsg::udp_segment(1000)),
        )
        .await;
    res.unwrap();
    let mut datagrams = Vec::new();
    let mut coalesced = false;
    while datagrams.len() < 4 {
        let (res, buf, control) = rx
            .recv_msg(vec![0u8; 65536], Vec::with_capacity(cmsg::space(4)))
            .await;
        let meta = res.unwrap();
        let reported = cmsg::gro_segment_size(&control);
        if let Some(size) = reported {
            assert_eq!(size, 1000);
            coalesced = true;
        }
        let seg = reported.unwrap_or(meta.len);
        datagrams.extend(cmsg::segments(&buf[..meta.len], seg).map(<[u8]>::to_vec));
    }
    // Loopback hands a GSO send to a GRO socket whole (Linux 5.x+).
    assert!(coalesced, "no receive reported a GRO segment size");
    assert_eq!(datagrams.len(), 4);
    for (i, d) in datagrams.iter().enumerate() {
        assert_eq!(&d[..], &data[i * 1000..(i + 1) * 1000]);
    }
}

/// A receive dropped after the kernel delivered a datagram to it: the datagram is kept for the
/// next receive, which is not left waiting for one that never comes.
#[runtime::test]
async fn abandoned_receives_keep_their_datagram() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx_addr: SocketAddr = rx.local_addr().unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    for round in 0..200u32 {
        let mut recv = Box::pin(rx.recv_from(vec![0u8; 64]));
        if let Poll::Ready((res, buf)) = poll_once(&mut recv).await {
            let (n, _) = res.unwrap();
            got.push(buf[..n].to_vec());
        } else if round % 2 == 0 {
            runtime::yield_now().await;
        }
        tx.send_to(format!("d{round}").as_bytes(), rx_addr).unwrap();
        sent += 1;
        drop(recv);
        if round % 4 == 0 {
            let (res, buf) = timeout(Duration::from_secs(5), rx.recv_from(vec![0u8; 64]))
                .await
                .expect("the datagram went to the abandoned receive and was lost");
            let (n, from) = res.unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            got.push(buf[..n].to_vec());
        }
    }
    while got.len() < sent {
        let (res, buf) = timeout(Duration::from_secs(5), rx.recv_from(vec![0u8; 64]))
            .await
            .expect("a datagram was lost");
        let (n, _) = res.unwrap();
        got.push(buf[..n].to_vec());
    }
    let mut got: Vec<String> = got
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    got.sort();
    let mut expected: Vec<String> = (0..200).map(|r| format!("d{r}")).collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[runtime::test]
async fn bad_addresses_are_invalid_input() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (res, _) = s.send_to("x", "not an address").await;
    assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    let err = UdpSocket::bind("999.0.0.1:0").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    let err = s.connect("nowhere.invalid:53").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[runtime::test]
async fn std_conversions() {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = std_socket.local_addr().unwrap();
    let s = UdpSocket::from_std(std_socket);
    assert_eq!(s.local_addr().unwrap(), addr);
    let back = s.into_std().unwrap();
    assert_eq!(back.local_addr().unwrap(), addr);
}

/// Datagrams already queued on a busy socket are received without a loop turn each (a
/// non-blocking `recvmsg` first, see `net/src/udp/direct.rs`): 200 queued datagrams, received
/// in order and whole, cost a handful of `io_uring_enter`s, not 200. The loop still gets a
/// turn every `runtime::coop::BUDGET` of them.
#[runtime::test]
async fn queued_datagrams_are_received_without_a_turn_each() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&server)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = client.local_addr().unwrap();
    // A first receive through the ring: the socket is quiet, then busy.
    client
        .send_to(b"first", server.local_addr().unwrap())
        .unwrap();
    let (res, _) = server.recv_from(vec![0u8; 64]).await;
    assert_eq!(res.unwrap(), (5, client_addr));
    const N: usize = 200;
    for i in 0..N {
        client
            .send_to(&pattern(32, i as u64), server.local_addr().unwrap())
            .unwrap();
    }
    let enters = runtime::metrics().enters;
    let mut buf = vec![0u8; 64];
    for i in 0..N {
        let (res, b) = server.recv_from(buf).await;
        let (n, peer) = res.unwrap();
        assert_eq!((n, peer), (32, client_addr));
        assert_eq!(&b[..n], &pattern(32, i as u64)[..], "datagram {i}");
        buf = b;
    }
    let enters = runtime::metrics().enters - enters;
    assert!(
        enters <= 8,
        "{N} queued datagrams took {enters} io_uring_enter calls"
    );
}
