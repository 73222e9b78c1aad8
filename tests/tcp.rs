//! TCP end to end: echo round trips, many connections, half-close, split halves, cancelled
//! reads, shutdown after a reset, conversions.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    pin::Pin,
    task::Poll,
    time::Duration,
};

use integration_tests::{
    join_all, pattern, poll_once, raise_fd_limit, settles_within, turns_until,
};
use net::{TcpListener, TcpStream};
use runtime::{buf::IoBuf, metrics, spawn, time::timeout};

/// An echo server task on an ephemeral port; returns its address.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    spawn(async move {
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            let Ok(mut stream) = conn else { continue };
            spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let (res, b) = stream.read(buf).await;
                    let n = match res {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let (res, b) = stream.write_all(b.slice(..n)).await;
                    buf = b.into_inner();
                    if res.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `data` and reads the same number of bytes back, with a writer and a reader task.
async fn round_trip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let len = data.len();
    let write = spawn(async move {
        let (res, _) = writer.write_all(data).await;
        res.unwrap();
        writer
    });
    let (res, echoed) = reader.read_exact(Vec::with_capacity(len)).await;
    res.unwrap();
    drop(write.await.unwrap());
    echoed
}

#[runtime::test]
async fn echo_round_trips_from_1_byte_to_16_mib() {
    let addr = echo_server();
    for (i, len) in [1, 100, 4096, 65_537, 1 << 20, 16 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u64 + 1);
        let echoed = round_trip(addr, data.clone()).await;
        assert_eq!(echoed.len(), len);
        assert!(echoed == data, "content differs for {len} bytes");
    }
}

#[runtime::test]
async fn a_thousand_concurrent_connections() {
    raise_fd_limit(4096);
    let addr = echo_server();
    let clients: Vec<_> = (0..1000u64)
        .map(|i| {
            spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let data = pattern(1024, i);
                let (res, _) = stream.write_all(data.clone()).await;
                res.unwrap();
                let (res, echoed) = stream.read_exact(Vec::with_capacity(1024)).await;
                res.unwrap();
                assert_eq!(echoed, data);
            })
        })
        .collect();
    for c in join_all(clients).await {
        c.unwrap();
    }
}

#[runtime::test]
async fn half_close_delivers_eof_and_keeps_the_other_direction() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        loop {
            let (res, buf) = stream.read(vec![0u8; 7]).await;
            match res.unwrap() {
                0 => break,
                n => received.extend_from_slice(&buf[..n]),
            }
        }
        // The client only shut down its write side: we can still answer.
        let (res, _) = stream.write_all(format!("got {}", received.len())).await;
        res.unwrap();
        received
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (res, _) = client.write_all("half-close me").await;
    res.unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (res, reply) = client.read_exact(vec![0u8; 6]).await;
    res.unwrap();
    assert_eq!(&reply, b"got 13");
    let (res, _) = client.read(vec![0u8; 8]).await;
    assert_eq!(res.unwrap(), 0, "EOF after the server's answer");
    assert_eq!(server.await.unwrap(), b"half-close me");
}

#[runtime::test]
async fn read_after_the_peer_closed_is_zero() {
    let (mut client, server) = integration_tests::tcp_pair().await;
    drop(server);
    for _ in 0..3 {
        let (res, _) = client.read(vec![0u8; 16]).await;
        assert_eq!(res.unwrap(), 0);
    }
}

#[runtime::test]
async fn split_halves_in_separate_tasks() {
    let addr = echo_server();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writer_task = spawn(async move {
        for i in 0..100u8 {
            let (res, _) = writer.write_all(vec![i; 100]).await;
            res.unwrap();
        }
        writer
    });
    let reader_task = spawn(async move {
        let (res, got) = reader.read_exact(Vec::with_capacity(10_000)).await;
        res.unwrap();
        (reader, got)
    });
    let writer = writer_task.await.unwrap();
    let (reader, got) = reader_task.await.unwrap();
    for (i, chunk) in got.chunks(100).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8));
    }
    let stream = reader.reunite(writer).unwrap();
    assert!(stream.peer_addr().is_ok());
}

/// `split` borrows the stream: one task has a write and a read in flight at once (8 MiB
/// through an echo server would stall if they took turns), and the stream is usable after.
#[runtime::test]
async fn borrowed_halves_read_and_write_at_once() {
    let addr = echo_server();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let data = pattern(8 << 20, 5);
    let (mut reader, mut writer) = stream.split();
    let mut write = Box::pin(writer.write_all(data.clone()));
    let mut read = Box::pin(reader.read_exact(Vec::with_capacity(data.len())));
    let (mut wrote, mut echoed) = (None, None);
    std::future::poll_fn(|cx| {
        if wrote.is_none()
            && let Poll::Ready((res, _)) = write.as_mut().poll(cx)
        {
            wrote = Some(res);
        }
        if echoed.is_none()
            && let Poll::Ready(out) = read.as_mut().poll(cx)
        {
            echoed = Some(out);
        }
        if wrote.is_some() && echoed.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    wrote.unwrap().unwrap();
    let (res, got) = echoed.unwrap();
    res.unwrap();
    assert!(got == data, "echoed bytes differ");
    drop((read, write));
    let (res, _) = stream.write_all(b"again".to_vec()).await;
    res.unwrap();
    let (res, buf) = stream.read_exact(Vec::with_capacity(5)).await;
    res.unwrap();
    assert_eq!(buf, b"again");
}

#[runtime::test]
async fn vectored_reads_and_writes() {
    let addr = echo_server();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let parts = vec![b"one ".to_vec(), b"two ".to_vec(), b"three".to_vec()];
    let (res, _) = stream.writev(parts).await;
    assert_eq!(res.unwrap(), 13);
    let mut got = Vec::new();
    let mut bufs = vec![Vec::with_capacity(4), Vec::with_capacity(16)];
    while got.len() < 13 {
        for b in &mut bufs {
            b.clear();
        }
        let (res, b) = stream.readv(bufs).await;
        let n = res.unwrap();
        let mut left = n;
        for part in &b {
            let take = left.min(part.len());
            got.extend_from_slice(&part[..take]);
            left -= take;
        }
        bufs = b;
    }
    assert_eq!(got, b"one two three");
}

/// Dropping a read while data arrives loses nothing: whatever the kernel delivered into the
/// abandoned buffer comes back from the next read, in order.
#[runtime::test]
async fn dropped_reads_lose_no_data() {
    let (mut client, mut server) = integration_tests::stream_with_std_peer().await;
    let mut expected = Vec::new();
    let mut received = Vec::new();
    for round in 0..300u32 {
        let mut read = Box::pin(client.read(vec![0u8; 64]));
        if let Poll::Ready((res, buf)) = poll_once(&mut read).await {
            // Served at once from data rescued in an earlier round.
            let n = res.unwrap();
            received.extend_from_slice(&buf[..n]);
        } else if round % 3 != 0 {
            runtime::yield_now().await; // the read reaches the kernel before the data
        }
        let chunk = format!("<{round}>");
        server.write_all(chunk.as_bytes()).unwrap();
        expected.extend_from_slice(chunk.as_bytes());
        drop(read);
        if round % 2 == 0 {
            // Another read in flight while the cancelled one may still complete. If the data
            // it needs were stuck with the abandoned read, it would wait forever.
            let (res, buf) = timeout(Duration::from_secs(5), client.read(vec![0u8; 3]))
                .await
                .expect("data delivered to the abandoned read never reached this one");
            let n = res.unwrap();
            received.extend_from_slice(&buf[..n]);
        }
    }
    server.shutdown(Shutdown::Write).unwrap();
    loop {
        let (res, buf) = timeout(Duration::from_secs(5), client.read(vec![0u8; 1000]))
            .await
            .expect("EOF never came");
        match res.unwrap() {
            0 => break,
            n => received.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&expected)
    );
    // The read-ahead's request is the stream's, not a read's: it ends with the stream.
    drop(client);
    assert!(
        settles_within(Duration::from_secs(5), || metrics().ops_in_flight == 0).await,
        "{:?}",
        metrics()
    );
}

/// Polls `a` and `b` until one finishes, the way `select!` does; the loser is dropped with
/// the call. `Some` holds `a`'s output, `None` says `b` won.
async fn first_of<A: Future + Unpin, B: Future + Unpin>(mut a: A, mut b: B) -> Option<A::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = Pin::new(&mut a).poll(cx) {
            return Poll::Ready(Some(out));
        }
        Pin::new(&mut b).poll(cx).map(|_| None)
    })
    .await
}

/// The `select!` pattern: a read races a timer and loses, its future is dropped, and the next
/// read gets the bytes in order, including those the kernel had already delivered to the
/// losing read. (A second read while the loser is still alive no longer compiles: see the
/// `compile_fail` example on `TcpStream`.)
#[runtime::test]
async fn a_read_that_lost_a_select_is_dropped_and_the_next_read_gets_its_bytes() {
    let (mut client, mut peer) = integration_tests::stream_with_std_peer().await;
    let mut expected = Vec::new();
    let mut received = Vec::new();
    for round in 0..100u32 {
        let chunk = format!("<{round}>");
        let read = Box::pin(client.read(Vec::with_capacity(64)));
        let timer = runtime::time::sleep(Duration::from_millis(1));
        // In odd rounds the bytes reach the kernel while the losing read is still queued
        // there, so they land in its buffer before it is dropped.
        if round % 2 == 1 {
            peer.write_all(chunk.as_bytes()).unwrap();
        }
        if let Some((res, buf)) = first_of(read, timer).await {
            let n = res.unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        if round % 2 == 0 {
            peer.write_all(chunk.as_bytes()).unwrap();
        }
        expected.extend_from_slice(chunk.as_bytes());
        while received.len() < expected.len() {
            let (res, buf) = timeout(Duration::from_secs(5), client.read(Vec::with_capacity(64)))
                .await
                .expect("bytes taken by the losing read never reached the next one");
            let n = res.unwrap();
            received.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&expected)
    );
    // The read-ahead's request is the stream's, not a read's: it ends with the stream.
    drop(client);
    assert!(
        settles_within(Duration::from_secs(5), || metrics().ops_in_flight == 0).await,
        "{:?}",
        metrics()
    );
}

#[runtime::test]
async fn connect_errors_are_explicit() {
    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    for bad in ["no-port-here", "127.0.0.1:notaport", "256.1.1.1:80", ":80"] {
        let err = TcpStream::connect(bad).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}: {err}");
    }
    let err = TcpStream::connect("host.that-does-not-exist.invalid:80")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("could not resolve"), "{err}");
}

#[runtime::test]
async fn connect_resolves_host_names() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
    let stream = TcpStream::connect(("localhost", port)).await.unwrap();
    assert_eq!(stream.peer_addr().unwrap().port(), port);
    assert_eq!(accept.await.unwrap().unwrap(), stream.local_addr().unwrap());
}

#[runtime::test]
async fn writes_to_a_reset_peer_fail_cleanly() {
    let (mut client, server) = integration_tests::tcp_pair().await;
    // SO_LINGER 0: closing sends RST.
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    runtime::time::sleep(Duration::from_millis(20)).await;
    let mut last = None;
    for _ in 0..10 {
        let (res, _) = client.write_all(vec![7u8; 64 * 1024]).await;
        if let Err(e) = res {
            last = Some(e);
            break;
        }
    }
    let err = last.expect("writing to a reset connection must fail");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
}

/// A pair whose server end was closed with SO_LINGER 0 (an RST), once the client's kernel
/// has torn the connection down (`getpeername` then fails with `ENOTCONN`).
async fn client_of_a_reset_connection() -> TcpStream {
    let (client, server) = integration_tests::tcp_pair().await;
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    for _ in 0..500 {
        if client.peer_addr().is_err() {
            return client;
        }
        runtime::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the client never saw the reset");
}

/// `shutdown` after the peer reset the connection is not the caller's fault: it returns
/// `Ok(())` for every direction and for the owned write half, as tokio does
/// (tokio-rs/tokio#4665), while real errors still come through.
#[runtime::test]
async fn shutdown_after_a_reset_is_ok() {
    for how in [Shutdown::Write, Shutdown::Read, Shutdown::Both] {
        let client = client_of_a_reset_connection().await;
        client
            .shutdown(how)
            .unwrap_or_else(|e| panic!("shutdown({how:?}) after a reset: {e}"));
        // Again, on the now fully closed socket.
        client.shutdown(how).unwrap();
    }
    let (_reader, writer) = client_of_a_reset_connection().await.into_split();
    writer.shutdown().unwrap();
    drop(writer); // shutdown on drop hits the same case

    // A healthy connection still shuts down for real: the peer reads EOF.
    let (client, mut server) = integration_tests::stream_with_std_peer().await;
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[runtime::test]
async fn std_conversions_and_options() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let std_listener = listener.into_std().unwrap();
    let listener = TcpListener::from_std(std_listener);
    let std_client = std::net::TcpStream::connect(addr).unwrap();
    let (mut server, peer) = listener.accept().await.unwrap();
    assert_eq!(peer, std_client.local_addr().unwrap());
    server.set_nodelay(true).unwrap();
    assert!(server.nodelay().unwrap());
    let (res, _) = server.write_all("from the ring").await;
    res.unwrap();
    // Written behind: the blocking read below stops the loop, so hand the bytes over first.
    server.flush().await.unwrap();
    let mut std_client = std_client;
    let mut buf = [0u8; 13];
    std_client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the ring");
    // And back: an io_uring stream made from a std one, then turned into std again.
    let mut client = TcpStream::from_std(std_client);
    let (res, _) = client.write_all("ok").await;
    res.unwrap();
    client.flush().await.unwrap();
    let mut std_server = server.into_std().unwrap();
    let mut buf = [0u8; 2];
    std_server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}

/// `close` cancels a pending accept in another task instead of leaving it hanging.
#[runtime::test]
async fn closing_a_listener_wakes_its_pending_accepts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut incoming = listener.incoming();
    let waiter = spawn(async move {
        let first = incoming.next().await;
        let after = incoming.next().await;
        (first.map(|r| r.map(drop)), after.is_none())
    });
    if integration_tests::epoll_selected() {
        // Nothing is in a kernel queue on epoll: a few turns let the accept start waiting.
        for _ in 0..10 {
            runtime::yield_now().await;
        }
    } else {
        assert!(turns_until(10, || metrics().ops_in_flight >= 1).await);
    }
    listener.close().await.unwrap();
    let (first, ended) = runtime::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the pending accept hung")
        .unwrap();
    let err = first.expect("an error item").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECANCELED), "{err}");
    assert!(ended, "the stream ends after the listener is closed");
}

/// Buffers that are not `Vec`: static strings, boxed arrays, slices of those.
#[runtime::test]
async fn other_buffer_types_work() {
    let addr = echo_server();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (res, _) = stream.write_all("static str").await;
    res.unwrap();
    let (res, _) = stream.write_all(&b" + bytes"[..]).await;
    res.unwrap();
    let (res, boxed) = stream.read_exact(Box::new([0u8; 18])).await;
    res.unwrap();
    assert_eq!(&boxed[..], b"static str + bytes");
}

/// With a tiny completion queue a burst of connections overflows it, which ends the multishot
/// accept; `incoming` re-arms it and still yields every connection.
#[test]
fn incoming_rearms_when_the_kernel_ends_the_multishot() {
    if integration_tests::skip_on_epoll(
        "tcp::incoming_rearms_when_the_kernel_ends_the_multishot",
        "CQ overflow ending a multishot accept",
    ) {
        return;
    }
    let rt = runtime::Builder::new()
        .entries(2)
        .cq_entries(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = listener.incoming();
        // Arm the multishot accept before the burst.
        assert!(poll_once(&mut Box::pin(incoming.next())).await.is_pending());
        runtime::yield_now().await;
        let clients = std::thread::spawn(move || {
            (0..64)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        });
        // Do not reap while the burst arrives, so CQEs pile up past the 2-entry CQ.
        std::thread::sleep(Duration::from_millis(200));
        let mut accepted = 0;
        while accepted < 64 {
            let stream = timeout(Duration::from_secs(5), incoming.next())
                .await
                .expect("a connection was lost")
                .unwrap()
                .unwrap();
            drop(stream);
            accepted += 1;
        }
        let _clients = clients.join().unwrap();
        let m = metrics();
        assert!(m.cq_overflows > 0, "the CQ never overflowed: {m:?}");
        assert!(
            m.ops_submitted >= 2,
            "the multishot accept was never re-armed: {m:?}"
        );
    });
}

/// `bytes::Bytes` and `BytesMut` work as buffers (the `bytes` feature).
#[runtime::test]
async fn bytes_buffers() {
    let addr = echo_server();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (res, _) = stream.write_all(bytes::Bytes::from_static(b"bytes!")).await;
    res.unwrap();
    let (res, buf) = stream.read_exact(bytes::BytesMut::with_capacity(6)).await;
    res.unwrap();
    assert_eq!(&buf[..], b"bytes!");
}

/// Socket buffer sizes: set on a stream, and on a listener so that accepted connections
/// inherit them.
#[runtime::test]
async fn socket_buffer_sizes_are_set_and_inherited() {
    let mut options = net::ListenerOptions::new();
    // Below the default `net.core.{w,r}mem_max` (208 KiB), which caps what is granted.
    options
        .send_buffer_size(96 * 1024)
        .recv_buffer_size(80 * 1024);
    let listener = TcpListener::bind_with("127.0.0.1:0", &options).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    // Linux reports twice the value set.
    assert_eq!(server.send_buffer_size().unwrap(), 2 * 96 * 1024);
    assert_eq!(server.recv_buffer_size().unwrap(), 2 * 80 * 1024);
    client.set_send_buffer_size(64 * 1024).unwrap();
    client.set_recv_buffer_size(32 * 1024).unwrap();
    assert_eq!(client.send_buffer_size().unwrap(), 2 * 64 * 1024);
    assert_eq!(client.recv_buffer_size().unwrap(), 2 * 32 * 1024);
}

/// Reads once, into a fresh 64-byte buffer, within five seconds.
async fn read(server: &mut TcpStream) -> Vec<u8> {
    let (res, buf) = timeout(Duration::from_secs(5), server.read(Vec::with_capacity(64)))
        .await
        .expect("the read saw bytes the socket held");
    assert_eq!(res.unwrap(), buf.len());
    buf
}

/// After a read that drained the socket, the next read waits for data before its first try
/// (`IORING_RECVSEND_POLL_FIRST` on io_uring). Bytes that arrived before that read was even
/// submitted complete it at once, bytes that come later wake it, and a dropped one loses
/// nothing: the stream stays whole and in order.
#[runtime::test]
async fn reads_after_a_draining_read_get_bytes_already_there_and_later_ones() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    client.write_all(b"first").unwrap();
    assert_eq!(read(&mut server).await, b"first", "a short read: drained");
    // Already in the socket when the next read is submitted.
    client.write_all(b"second").unwrap();
    runtime::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(read(&mut server).await, b"second");
    // Arriving while it waits.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        client.write_all(b"third").unwrap();
        client
    });
    assert_eq!(read(&mut server).await, b"third");
    let mut client = writer.join().unwrap();
    // A read dropped while it waits takes nothing the next one misses.
    let mut pending = Box::pin(server.read(Vec::with_capacity(64)));
    assert!(poll_once(&mut pending).await.is_pending());
    drop(pending);
    client.write_all(b"fourth").unwrap();
    assert_eq!(read(&mut server).await, b"fourth");
}
