//! Bounding socket operations with `CancelExt` (`timeout`, `cancel_on`): the buffer comes
//! back, a request that completed first keeps its result, partial transfers report their
//! count, and the socket stays usable.

use std::{
    io::{self, Read, Write},
    net::Shutdown,
    time::{Duration, Instant},
};

use integration_tests::{Oneshot, pattern, stream_with_std_peer, turns_until};
use net::UdpSocket;
use runtime::{
    buf::IoBuf,
    metrics,
    op::{CancelExt, CancelReason, Cancelled},
    time::timeout,
};

/// The `Cancelled` payload of a scope's error.
fn cancelled(e: &io::Error) -> Cancelled {
    *e.get_ref()
        .and_then(|e| e.downcast_ref::<Cancelled>())
        .unwrap_or_else(|| panic!("not a cancel-scope error: {e:?}"))
}

/// Guards a bounded operation: if the scope never cancels, the test fails instead of hanging.
const GUARD: Duration = Duration::from_secs(5);

#[runtime::test]
async fn a_timed_out_read_returns_its_buffer_and_the_stream_goes_on() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let buf = Vec::with_capacity(4096);
    let (ptr, cap) = (buf.as_ptr(), buf.capacity());
    let start = Instant::now();
    let (res, buf) = timeout(GUARD, client.read(buf).timeout(Duration::from_millis(20)))
        .await
        .expect("the timed read was never cancelled");
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert_eq!(cancelled(&err).reason, CancelReason::TimedOut);
    assert!(runtime::op::is_cancelled(&err));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!((buf.as_ptr(), buf.capacity(), buf.len()), (ptr, cap, 0));
    // The buffer never reached the kernel while the read-ahead's multishot serves reads (it
    // stays armed for the next read, and is the only request left); a plain receive ended
    // (its final CQE came) before the buffer was handed back.
    assert!(metrics().ops_in_flight <= 1, "{:?}", metrics());

    // The same buffer serves the next reads, which get the bytes in order.
    peer.write_all(b"abc").unwrap();
    let (res, buf) = client.read(buf).await;
    assert_eq!(&buf[..res.unwrap()], b"abc");
    peer.write_all(b"def").unwrap();
    let (res, buf) = client.read(buf).timeout(Duration::from_secs(5)).await;
    assert_eq!(&buf[..res.unwrap()], b"def");
    assert_eq!(buf.as_ptr(), ptr);
}

/// The deadline has passed when the read is first polled, but the data is already in the
/// socket: the receive, submitted before its cancel, completes inside the same enter, and its
/// data is returned rather than a timeout.
#[runtime::test]
async fn a_read_completing_as_the_deadline_fires_returns_its_data() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    for round in 0..20u8 {
        peer.write_all(&[round; 5]).unwrap();
        let (res, buf) = timeout(
            GUARD,
            client
                .read(Vec::with_capacity(64))
                .timeout_at(Instant::now()),
        )
        .await
        .unwrap();
        assert_eq!(
            res.map_err(|e| format!("round {round}: {e}")).unwrap(),
            5,
            "round {round}"
        );
        assert_eq!(buf, [round; 5]);
    }
}

/// Timeouts racing arrivals lose no byte and reorder none: each read either returns data or
/// times out, and what it got plus what later reads get is exactly what was sent.
#[runtime::test]
async fn timeouts_racing_arrivals_lose_no_data() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let mut expected = Vec::new();
    let mut received = Vec::new();
    let mut timed_out = 0;
    for round in 0..300u32 {
        let chunk = format!("<{round}>");
        if round % 3 != 0 {
            peer.write_all(chunk.as_bytes()).unwrap();
            expected.extend_from_slice(chunk.as_bytes());
        }
        let wait = Duration::from_micros(u64::from(round % 7) * 50);
        let read = client.read(Vec::with_capacity(4)).timeout(wait);
        let (res, buf) = timeout(GUARD, read).await.unwrap();
        match res {
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => timed_out += 1,
            Err(e) => panic!("{e}"),
        }
    }
    peer.shutdown(Shutdown::Write).unwrap();
    loop {
        let (res, buf) = timeout(GUARD, client.read(Vec::with_capacity(1024)))
            .await
            .unwrap();
        match res.unwrap() {
            0 => break,
            n => received.extend_from_slice(&buf[..n]),
        }
    }
    assert!(timed_out > 0, "no read timed out; the test proves nothing");
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&expected)
    );
    assert!(turns_until(100, || metrics().ops_in_flight == 0).await);
}

/// `read_exact` stopped by its deadline reports how far it got; the bytes are in the buffer
/// and the rest of the stream follows.
#[runtime::test]
async fn a_timed_out_read_exact_reports_what_it_filled() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    peer.write_all(b"012").unwrap();
    let read = client
        .read_exact(Vec::with_capacity(10))
        .timeout(Duration::from_millis(30));
    let (res, buf) = timeout(GUARD, read).await.unwrap();
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(cancelled(&err).transferred, 3, "{err}");
    assert!(err.to_string().contains("after 3 bytes"), "{err}");
    assert_eq!(buf, b"012");
    // Resume where it stopped: receives fill a buffer from its start, so slice past the
    // bytes already there.
    peer.write_all(b"3456789").unwrap();
    let (res, rest) = timeout(GUARD, client.read_exact(buf.slice(3..)))
        .await
        .unwrap();
    res.unwrap();
    assert_eq!(rest.into_inner(), b"0123456789");
}

/// `cancel_on` stops a read when another future completes (here a signal from another
/// task), with an `Other` error that says so, and the buffer back.
#[runtime::test]
async fn cancel_on_stops_a_read_when_its_signal_comes() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let signal = Oneshot::default();
    let trigger = signal.clone();
    runtime::spawn(async move {
        runtime::time::sleep(Duration::from_millis(10)).await;
        trigger.complete(());
    });
    let buf = Vec::with_capacity(100);
    let ptr = buf.as_ptr();
    let (res, buf) = timeout(GUARD, client.read(buf).cancel_on(signal))
        .await
        .unwrap();
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(cancelled(&err).reason, CancelReason::Requested);
    assert!(err.to_string().contains("cancel_on"), "{err}");
    assert_eq!(buf.as_ptr(), ptr);
    peer.write_all(b"x").unwrap();
    let (res, buf) = client.read(buf).await;
    assert_eq!(&buf[..res.unwrap()], b"x");
}

/// Writes to a peer that does not read: a timed `write_all` stops with the count it sent, a
/// timed `write` returns its partial count or times out, each hands its buffer back, and the
/// peer then receives exactly the bytes the counts claim.
#[runtime::test]
async fn timed_writes_to_a_choked_peer_return_the_buffer_and_the_count() {
    let (mut client, mut peer) = stream_with_std_peer().await;
    let first = pattern(32 << 20, 1);
    let ptr = first.as_ptr();
    let write = client.write_all(first).timeout(Duration::from_millis(100));
    let (res, first) = timeout(GUARD, write).await.unwrap();
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    let sent = cancelled(&err).transferred;
    assert!(sent > 0 && sent < first.len(), "sent {sent}");
    assert_eq!(first.as_ptr(), ptr);
    assert_eq!(metrics().ops_in_flight, 0);

    let second = pattern(1 << 20, 2);
    let ptr = second.as_ptr();
    let write = client.write(second).timeout(Duration::from_millis(50));
    let (res, second) = timeout(GUARD, write).await.unwrap();
    let more = match res {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => 0,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(second.as_ptr(), ptr);

    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        sent + more,
        "the counts disagree with the bytes sent"
    );
    assert!(got[..sent] == first[..sent], "write_all's bytes differ");
    assert!(got[sent..] == second[..more], "write's bytes differ");
}

#[runtime::test]
async fn timed_udp_receives_return_the_buffer() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();

    let buf = Vec::with_capacity(1500);
    let (ptr, cap) = (buf.as_ptr(), buf.capacity());
    let recv = socket.recv_from(buf).timeout(Duration::from_millis(20));
    let (res, buf) = timeout(GUARD, recv).await.unwrap();
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert_eq!((buf.as_ptr(), buf.capacity(), buf.len()), (ptr, cap, 0));
    assert_eq!(metrics().ops_in_flight, 0);

    // The socket goes on, with the same buffer; a datagram already queued beats the deadline.
    sender.send_to(b"ping", addr).unwrap();
    let recv = socket.recv_from(buf).timeout_at(Instant::now());
    let (res, buf) = timeout(GUARD, recv).await.unwrap();
    let (n, from) = res.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"ping"[..], sender.local_addr().unwrap())
    );

    socket.connect(sender.local_addr().unwrap()).await.unwrap();
    let (res, buf) = socket.recv(buf).timeout(Duration::from_millis(10)).await;
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert_eq!(buf.as_ptr(), ptr);

    // Sends are bounded the same way (a datagram send does not wait, so it completes).
    let (res, buf) = socket
        .send_to(buf, sender.local_addr().unwrap())
        .timeout(Duration::from_secs(1))
        .await;
    assert_eq!(res.unwrap(), 4);
    let (res, _) = socket.send(buf).timeout(Duration::from_secs(1)).await;
    assert_eq!(res.unwrap(), 4);
    // Small datagrams are sent behind (`UdpSocket::send_to`): one loop turn submits them.
    runtime::yield_now().await;
    sender
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = [0u8; 16];
    for _ in 0..2 {
        let (n, _) = sender.recv_from(&mut got).unwrap();
        assert_eq!(&got[..n], b"ping");
    }
}
