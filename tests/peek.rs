//! Peeking: `TcpStream::peek` (a receive with `MSG_PEEK`), `UdpSocket::peek_from` and
//! `peek_sender`. Ports of tokio's `tokio/tests/tcp_peek.rs` (`peek`) and the peek tests of
//! `tokio/tests/udp.rs` (`send_to_peek_from`, `peek_sender`), plus what owned buffers and
//! rescued data add: a dropped read's bytes are peeked first, a dropped peek takes nothing,
//! and a peek does not need the bytes written behind to be flushed.

use std::{
    io::Write,
    net::{Shutdown, SocketAddr},
    time::Duration,
};

use integration_tests::{poll_once, settles_within, stream_with_std_peer, tcp_pair};
use net::{TcpListener, TcpStream, UdpSocket, udp::Truncated};
use runtime::{metrics, spawn, time::timeout};

const MSG: &[u8] = b"hello";

/// Runs the loop long enough for a CQE the kernel posted to be reaped.
async fn settle() {
    runtime::time::sleep(Duration::from_millis(20)).await;
}

// From tokio/tests/tcp_peek.rs `peek`.
#[runtime::test]
async fn peek() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || listener.accept().unwrap().0);
    let left = std::net::TcpStream::connect(addr).unwrap();
    let mut right = t.join().unwrap();
    let _ = right.write(&[1, 2, 3, 4]).unwrap();

    let mut left = TcpStream::from_std(left);
    let (res, buf) = left.peek(vec![0u8; 16]).await;
    let n = res.unwrap();
    assert_eq!([1, 2, 3, 4], buf[..n]);

    let (res, buf) = left.read(vec![0u8; 16]).await;
    let n = res.unwrap();
    assert_eq!([1, 2, 3, 4], buf[..n]);
}

/// Peeking twice sees the same bytes; a `Vec::with_capacity` buffer gets the peeked length.
#[runtime::test]
async fn peeks_leave_the_bytes_for_the_next_read() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    peer.write_all(b"abcdef").unwrap();
    settle().await;
    for _ in 0..2 {
        let (res, buf) = stream.peek(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), 6);
        assert_eq!(buf, b"abcdef");
    }
    // A small buffer peeks a prefix.
    let (res, buf) = stream.peek(Vec::with_capacity(3)).await;
    let n = res.unwrap();
    assert_eq!(&buf[..n], &b"abcdef"[..n]);
    let (res, buf) = stream.read_exact(Vec::with_capacity(6)).await;
    res.unwrap();
    assert_eq!(buf, b"abcdef");
}

/// A peek waits for data like a read, and sees end of file as `Ok(0)`.
#[runtime::test]
async fn peek_waits_for_data_and_sees_eof() {
    let (mut stream, mut peer) = tcp_pair().await;
    let writer = spawn(async move {
        runtime::time::sleep(Duration::from_millis(10)).await;
        let (res, _) = peer.write_all(b"late").await;
        res.unwrap();
        peer.flush().await.unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        peer
    });
    let (res, buf) = timeout(Duration::from_secs(5), stream.peek(Vec::with_capacity(8)))
        .await
        .expect("the peek never saw the data");
    assert_eq!(res.unwrap(), 4);
    assert_eq!(buf, b"late");
    let _peer = writer.await.unwrap();
    let (res, buf) = stream.read(Vec::with_capacity(8)).await;
    assert_eq!(res.unwrap(), 4);
    assert_eq!(buf, b"late");
    let (res, _) = stream.peek(Vec::with_capacity(8)).await;
    assert_eq!(res.unwrap(), 0, "EOF");
}

/// Bytes a dropped read took from the kernel are the next ones: a peek shows them (the kernel
/// no longer has them), and the read after it returns them once.
#[runtime::test]
async fn peek_serves_bytes_a_dropped_read_took() {
    if integration_tests::skip_on_epoll(
        "peek::peek_serves_bytes_a_dropped_read_took",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let (mut stream, mut peer) = stream_with_std_peer().await;
    let mut read = Box::pin(stream.read(Vec::with_capacity(64)));
    assert!(poll_once(&mut read).await.is_pending());
    peer.write_all(b"rescued").unwrap();
    settle().await; // the read completes with the bytes; nobody polls it again
    drop(read); // its bytes are rescued
    peer.write_all(b"+later").unwrap();
    settle().await;

    let (res, buf) = timeout(Duration::from_secs(5), stream.peek(Vec::with_capacity(64)))
        .await
        .expect("the peek waited for the kernel while the bytes were rescued");
    let n = res.unwrap();
    assert_eq!(&buf[..n], b"rescued");
    assert_eq!(buf.len(), n);
    let mut got = Vec::new();
    while got.len() < b"rescued+later".len() {
        let (res, buf) = stream.read(Vec::with_capacity(64)).await;
        got.extend_from_slice(&buf[..res.unwrap()]);
    }
    assert_eq!(got, b"rescued+later");
}

/// A peek future dropped after the kernel completed it takes nothing: its bytes are read
/// once, not once from a rescue and again from the kernel.
#[runtime::test]
async fn a_dropped_peek_takes_nothing() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    let mut peek = Box::pin(stream.peek(Vec::with_capacity(64)));
    assert!(poll_once(&mut peek).await.is_pending());
    peer.write_all(b"once").unwrap();
    settle().await; // the peek completed; its output is never taken
    drop(peek);
    let (res, buf) = stream.read(Vec::with_capacity(64)).await;
    assert_eq!(&buf[..res.unwrap()], b"once");
    peer.write_all(b"|next").unwrap();
    let (res, buf) = timeout(Duration::from_secs(5), stream.read(Vec::with_capacity(64)))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..res.unwrap()]),
        "|next",
        "the dropped peek's bytes came back twice"
    );
    // The read-ahead's request is the stream's, not a read's: it ends with the stream.
    drop(stream);
    assert!(settles_within(Duration::from_secs(5), || metrics().ops_in_flight == 0).await);
}

/// A request written behind and a peek for the answer: the peek needs no flush, the request
/// goes out with the loop's next enter and the answer comes back.
#[runtime::test]
async fn peek_after_a_write_behind_needs_no_flush() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let (res, buf) = conn.read_exact(Vec::with_capacity(5)).await;
        res.unwrap();
        assert_eq!(buf, b"ping\n");
        let (res, _) = conn.write_all(b"pong\n").await;
        res.unwrap();
        conn.flush().await.unwrap();
        conn
    });
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (res, _) = stream.write_all(b"ping\n").await; // written behind
    res.unwrap();
    let (res, buf) = timeout(Duration::from_secs(5), stream.peek(Vec::with_capacity(16)))
        .await
        .expect("the peek waited for an answer to a request that was never sent");
    let n = res.unwrap();
    assert_eq!(&buf[..n], &b"pong\n"[..n]);
    let _conn = server.await.unwrap();
}

/// The halves of a split stream peek too.
#[runtime::test]
async fn split_halves_peek() {
    let (stream, mut peer) = stream_with_std_peer().await;
    peer.write_all(MSG).unwrap();
    let (mut rd, _wr) = stream.into_split();
    let (res, buf) = rd.peek(Vec::with_capacity(16)).await;
    assert_eq!(&buf[..res.unwrap()], MSG);
    let (res, buf) = rd.read(Vec::with_capacity(16)).await;
    assert_eq!(&buf[..res.unwrap()], MSG);
}

// From tokio/tests/udp.rs `send_to_peek_from`.
#[runtime::test]
async fn send_to_peek_from() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    let (res, _) = sender.send_to(MSG, &receiver_addr).await;
    res.unwrap();

    for _ in 0..2 {
        let (res, buf) = receiver.peek_from(Vec::with_capacity(32)).await;
        let (n, addr) = res.unwrap();
        assert_eq!(&buf[..n], MSG);
        assert_eq!(addr, sender.local_addr().unwrap());
    }
    let (res, buf) = receiver.recv_from(Vec::with_capacity(32)).await;
    let (n, addr) = res.unwrap();
    assert_eq!(&buf[..n], MSG);
    assert_eq!(addr, sender.local_addr().unwrap());
}

// From tokio/tests/udp.rs `peek_sender`.
#[runtime::test]
async fn peek_sender() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender_addr = sender.local_addr().unwrap();
    let receiver_addr = receiver.local_addr().unwrap();

    let msg = b"Hello, world!";
    let (res, _) = sender.send_to(msg, receiver_addr).await;
    res.unwrap();

    let peeked_sender = receiver.peek_sender().await.unwrap();
    assert_eq!(peeked_sender, sender_addr);

    // `peek_sender` returns the right sender but doesn't remove the datagram.
    let (res, buf) = receiver.recv_from(Vec::with_capacity(32)).await;
    let (n, received_sender) = res.unwrap();
    assert_eq!(&buf[..n], msg);
    assert_eq!(received_sender, peeked_sender);
}

/// A datagram larger than the peek's buffer is reported as `Truncated` and stays queued,
/// whole.
#[runtime::test]
async fn truncated_peek_keeps_the_datagram() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (res, _) = sender
        .send_to(vec![7u8; 100], receiver.local_addr().unwrap())
        .await;
    res.unwrap();
    let (res, buf) = receiver.peek_from(Vec::with_capacity(10)).await;
    let err = res.unwrap_err();
    let truncated = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Truncated>())
        .copied()
        .expect("a Truncated error");
    assert_eq!(truncated.len, 100);
    assert_eq!(truncated.peer, Some(sender.local_addr().unwrap()));
    assert!(buf.iter().all(|&b| b == 7));
    let (res, buf) = receiver.recv_from(Vec::with_capacity(128)).await;
    assert_eq!(res.unwrap().0, 100);
    assert_eq!(buf, vec![7u8; 100]);
}

/// A datagram a dropped receive took is the next one: `peek_from` and `peek_sender` show it,
/// and the next receive returns it.
#[runtime::test]
async fn udp_peeks_serve_a_rescued_datagram() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let mut recv = Box::pin(receiver.recv_from(Vec::with_capacity(64)));
    assert!(poll_once(&mut recv).await.is_pending());
    let (res, _) = sender.send_to(b"first", to).await;
    res.unwrap();
    settle().await;
    drop(recv); // "first" is rescued
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (res, _) = other.send_to(b"second", to).await;
    res.unwrap();
    settle().await;

    let from: SocketAddr = timeout(Duration::from_secs(5), receiver.peek_sender())
        .await
        .expect("peek_sender waited for the kernel while a datagram was rescued")
        .unwrap();
    assert_eq!(from, sender.local_addr().unwrap());
    let (res, buf) = receiver.peek_from(Vec::with_capacity(64)).await;
    let (n, from) = res.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"first"[..], sender.local_addr().unwrap())
    );
    for (want, peer) in [("first", &sender), ("second", &other)] {
        let (res, buf) = receiver.recv_from(Vec::with_capacity(64)).await;
        let (n, from) = res.unwrap();
        assert_eq!(String::from_utf8_lossy(&buf[..n]), want);
        assert_eq!(from, peer.local_addr().unwrap());
    }
}

/// A dropped UDP peek takes nothing: the datagram is received once.
#[runtime::test]
async fn a_dropped_udp_peek_takes_nothing() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let mut peek = Box::pin(receiver.peek_from(Vec::with_capacity(64)));
    assert!(poll_once(&mut peek).await.is_pending());
    let (res, _) = sender.send_to(b"only", to).await;
    res.unwrap();
    settle().await;
    drop(peek);
    let (res, buf) = receiver.recv_from(Vec::with_capacity(64)).await;
    assert_eq!(&buf[..res.unwrap().0], b"only");
    let second = timeout(
        Duration::from_millis(100),
        receiver.recv_from(Vec::with_capacity(64)),
    )
    .await;
    assert!(
        second.is_err(),
        "the dropped peek's datagram was received twice"
    );
}
