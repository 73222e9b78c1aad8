//! The epoll backend chosen explicitly (`Builder::backend(Backend::Epoll)`), in either CI
//! pass: what it says about itself, how io_uring-only features behave on it (unsupported or
//! falling back, per their policy), and the guarantees that are its own (fds registered once
//! and forgotten when closed, timers driving `epoll_wait`, wakes between workers without
//! `MSG_RING`, zero-copy sends through `MSG_ZEROCOPY`, pool-backed receive streams).

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use integration_tests::{TrackedBuf, eventually};
use net::{TcpListener, TcpStream, ZeroCopy};
use runtime::{
    Backend, Builder, Runtime,
    buf::{BufRing, IoBuf},
};

fn epoll() -> Runtime {
    Builder::new()
        .backend(Backend::Epoll)
        .worker_threads(1)
        .build()
        .unwrap()
}

#[test]
fn capabilities_name_the_backend_and_why() {
    let rt = epoll();
    let caps = rt.capabilities();
    assert_eq!(caps.backend(), Backend::Epoll);
    assert!(caps.notes()[0].contains("Builder::backend"), "{caps}");
    assert!(caps.to_string().contains("backend: epoll"), "{caps}");
    assert!(!caps.defer_taskrun() && caps.sq_entries() == 0, "{caps}");
    // An explicit choice wins over the environment.
    let rt = Builder::new().backend(Backend::IoUring).build();
    if let Ok(rt) = rt {
        assert_eq!(rt.capabilities().backend(), Backend::IoUring);
    }
}

/// An op that has only an io_uring form (here `IORING_OP_TIMEOUT`) completes with an
/// `Unsupported` error that names the backend.
#[test]
fn an_op_without_a_nonblocking_form_says_unsupported_naming_the_backend() {
    let rt = epoll();
    rt.block_on(async {
        let op = runtime::op::Op::new(runtime::op::Timeout::new(Duration::from_millis(1)));
        let err = op.await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("epoll backend"), "{err}");
        // A NOP has a non-blocking form.
        runtime::op::nop().await.unwrap();
    });
}

/// Fixed buffers follow their policy: not registered, they work as ordinary buffers, with a
/// note that says why.
#[test]
fn fixed_buffers_fall_back_to_ordinary_buffers() {
    let rt = epoll();
    rt.block_on(async {
        let pool = runtime::buf::FixedBufPool::new(2, 4096).unwrap();
        assert!(!pool.is_registered());
        let note = runtime::capabilities()
            .notes()
            .iter()
            .find(|n| n.contains("fixed buffers"))
            .cloned()
            .expect("a note about fixed buffers");
        assert!(note.contains("epoll backend"), "{note}");
        // Its buffers are still handed out, as ordinary memory.
        assert!(pool.try_get().is_some());
    });
}

/// ZCRX: `On` is an error naming the feature and the backend; `Auto` falls back with a note.
#[test]
fn zero_copy_receive_is_unsupported_or_falls_back() {
    let mut config = runtime::zcrx::ZcrxConfig::new("lo", 0);
    config.mode(runtime::zcrx::ZcrxMode::On);
    let err = Builder::new()
        .backend(Backend::Epoll)
        .zcrx(config.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("zero-copy receive"), "{err}");
    assert!(err.to_string().contains("epoll backend"), "{err}");
    config.mode(runtime::zcrx::ZcrxMode::Auto);
    let rt = Builder::new()
        .backend(Backend::Epoll)
        .zcrx(config)
        .build()
        .unwrap();
    let caps = rt.capabilities();
    assert!(caps.zcrx().is_none());
    assert!(
        caps.notes()
            .iter()
            .any(|n| n.contains("zero-copy receive off") && n.contains("epoll backend")),
        "{caps}"
    );
}

/// `MSG_RING` is io_uring's: workers wake each other through their eventfds, and no wake-up
/// is lost.
#[test]
fn workers_wake_each_other_without_msg_ring() {
    let rt = Builder::new()
        .backend(Backend::Epoll)
        .worker_threads(2)
        .pin_cores(false)
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = runtime::sync::mpsc::channel::<u32>(8);
        let producer = runtime::spawn_on(1, async move {
            for i in 0..2000 {
                tx.send(i).await.unwrap();
            }
            runtime::metrics().msg_ring_kicks
        });
        let mut sum = 0u64;
        for _ in 0..2000 {
            let v = runtime::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a wake-up was lost")
                .unwrap();
            sum += u64::from(v);
        }
        assert_eq!(sum, 1999 * 2000 / 2);
        assert_eq!(producer.await.unwrap(), 0);
        assert_eq!(runtime::metrics().msg_ring_kicks, 0);
    });
}

/// The timer wheel bounds `epoll_wait`: an idle loop wakes for its sleeps, on time.
#[test]
fn timers_drive_the_wait() {
    let rt = epoll();
    rt.block_on(async {
        for ms in [1u64, 20, 50] {
            let start = Instant::now();
            runtime::time::sleep(Duration::from_millis(ms)).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(ms), "{took:?}");
            assert!(took < Duration::from_millis(ms + 500), "{took:?}");
        }
    });
}

/// A bound no loopback round takes. An op waiting for readiness that is never reported only
/// completes when something else wakes its task (the timeout's own timer, which makes it try
/// again), so a round then takes this long; the test measures each round against a quarter.
const STUCK: Duration = Duration::from_secs(1);

/// Fd numbers are reused as sockets come and go, inside and outside `block_on`: each new
/// socket is registered afresh, so none waits for readiness that is never reported.
#[test]
fn reused_fd_numbers_are_registered_afresh() {
    let rt = epoll();
    let listener = rt.block_on(async { TcpListener::bind("127.0.0.1:0").unwrap() });
    let addr = listener.local_addr().unwrap();
    for round in 0..50u8 {
        let start = Instant::now();
        // The previous round's sockets were dropped outside the runtime's `block_on`.
        let (client, server) = rt.block_on(async {
            let connect = TcpStream::connect(addr);
            let client = runtime::time::timeout(STUCK, connect)
                .await
                .expect("connect on a reused fd number never completed")
                .unwrap();
            let accept = listener.accept();
            let (server, _) = runtime::time::timeout(STUCK, accept)
                .await
                .expect("accept never completed")
                .unwrap();
            (client, server)
        });
        let (mut client, mut server) = (client, server);
        rt.block_on(async {
            let echo = runtime::spawn(async move {
                let (res, buf) = server.read(Vec::with_capacity(8)).await;
                res.unwrap();
                let (res, _) = server.write_all(buf).await;
                res.unwrap();
                server.flush().await.unwrap();
                server
            });
            let (res, _) = client.write_all(vec![round; 4]).await;
            res.unwrap();
            let read = client.read_exact(vec![0u8; 4]);
            let (res, got) = runtime::time::timeout(STUCK, read)
                .await
                .expect("a reused fd number never became readable");
            res.unwrap();
            assert_eq!(got, vec![round; 4]);
            drop(echo.await.unwrap());
        });
        drop(client);
        let took = start.elapsed();
        assert!(
            took < STUCK / 4,
            "round {round} took {took:?}: an op waited for readiness never reported"
        );
    }
}

/// Multishot accept maps to repeated accepts on readiness.
#[test]
fn incoming_accepts_every_connection() {
    let rt = epoll();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = std::thread::spawn(move || {
            (0..20)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        });
        let mut incoming = listener.incoming();
        for _ in 0..20 {
            let stream = runtime::time::timeout(Duration::from_secs(5), incoming.next())
                .await
                .expect("a connection was not accepted")
                .unwrap();
            drop(stream.unwrap());
        }
        drop(clients.join().unwrap());
    });
}

/// `MSG_ZEROCOPY`: the buffer comes back only after the kernel's notification, loopback
/// reports copying, and `Auto` then switches the socket to ordinary sends.
#[test]
fn zero_copy_sends_wait_for_the_notification_and_auto_switches_on_loopback() {
    let rt = epoll();
    rt.block_on(async {
        let (mut stream, peer) = integration_tests::stream_with_std_peer().await;
        stream.set_zero_copy(ZeroCopy::On);
        let reader = std::thread::spawn(move || {
            let mut peer = peer;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let (buf, flag) = TrackedBuf::new(vec![7u8; 64 * 1024]);
        let (res, buf) = stream.send_zc_all(buf).await;
        res.unwrap();
        let stats = stream.zero_copy_stats();
        assert!(stats.zc_requests >= 1, "{stats:?}");
        assert_eq!(stats.notifications, stats.zc_requests, "{stats:?}");
        assert!(stats.copied >= 1, "loopback copies: {stats:?}");
        assert!(!flag.dropped());
        drop(buf);
        assert!(flag.dropped());

        stream.set_zero_copy(ZeroCopy::Auto);
        let (res, _) = stream.send_zc_all(vec![8u8; 4096]).await;
        res.unwrap();
        let (res, _) = stream.send_zc_all(vec![9u8; 4096]).await;
        res.unwrap();
        let stats = stream.zero_copy_stats();
        assert_eq!(
            stats.switched_to_copy,
            Some(net::SwitchReason::KernelCopied),
            "{stats:?}"
        );
        assert!(stats.copy_sends >= 1, "{stats:?}");
        drop(stream);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 64 * 1024 + 8192);
    });
}

/// Pool-backed receive streams: an idle connection holds no buffer, each `RxBuf` goes back
/// to the pool on drop, and an empty pool applies backpressure without losing data.
#[test]
fn pool_backed_streams_hold_no_buffer_while_idle_and_lose_nothing() {
    let rt = epoll();
    rt.block_on(async {
        let ring = BufRing::builder().entries(4).buf_len(1024).build().unwrap();
        assert!(ring.is_user_space());
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        let mut received = stream.recv_stream(&ring);
        runtime::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ring.stats().in_use, 0, "idle: no buffer taken");
        let data: Vec<u8> = (0..16 * 1024u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).unwrap();
        drop(peer);
        let mut got = Vec::new();
        let mut held = Vec::new();
        while let Some(buf) = received.next().await {
            let buf = buf.unwrap();
            got.extend_from_slice(&buf);
            held.push(buf);
            if held.len() == 4 {
                // All four held: the next receive finds the pool dry and waits for a buffer.
                let next = runtime::time::timeout(Duration::from_millis(20), received.next());
                if let Ok(Some(_)) = next.await {
                    panic!("a fifth buffer out of a pool of four");
                }
                held.clear();
            }
        }
        assert_eq!(got, data);
        assert!(
            ring.stats().exhausted > 0,
            "all four held: the pool ran dry"
        );
        assert!(
            received.rearms() > 0,
            "the stream waited for a buffer and went on"
        );
        drop(held);
        assert!(eventually(Duration::from_secs(1), || ring.stats().in_use == 0));
    });
}

/// Writes `bytes` on `peer` from another thread after a pause, so a receive that starts now
/// finds the socket empty.
fn write_later(
    mut peer: std::net::TcpStream,
    bytes: &'static [u8],
) -> std::thread::JoinHandle<std::net::TcpStream> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(bytes).unwrap();
        peer
    })
}

#[test]
fn a_read_that_emptied_the_socket_waits_for_the_next_event_without_trying() {
    let rt = epoll();
    rt.block_on(async {
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        peer.write_all(b"first").unwrap();
        let (res, buf) = stream.read(vec![0u8; 64]).await;
        assert_eq!(&buf[..res.unwrap()], b"first");
        // That read filled 5 of 64 bytes: the socket is empty, so the next read waits for
        // the peer's write without a system call that could only say EAGAIN: one try.
        let writer = write_later(peer, b"second");
        let before = runtime::metrics().ops_submitted;
        let (res, buf) = stream.read(buf).await;
        assert_eq!(&buf[..res.unwrap()], b"second");
        assert_eq!(
            runtime::metrics().ops_submitted - before,
            1,
            "one try per read"
        );
        // A read that filled its buffer says nothing about what is left: the next one tries.
        let mut peer = writer.join().unwrap();
        peer.write_all(b"0123456789").unwrap();
        let (res, small) = stream.read(vec![0u8; 4]).await;
        assert_eq!(&small[..res.unwrap()], b"0123");
        let (res, rest) = stream.read(vec![0u8; 64]).await;
        assert_eq!(&rest[..res.unwrap()], b"456789");
    });
}

#[test]
fn a_pool_receive_that_emptied_the_socket_waits_for_the_next_event_without_trying() {
    let rt = epoll();
    rt.block_on(async {
        let ring = BufRing::builder().entries(4).buf_len(1024).build().unwrap();
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        let mut received = stream.recv_stream(&ring);
        peer.write_all(b"first").unwrap();
        assert_eq!(&received.next().await.unwrap().unwrap()[..], b"first");
        let writer = write_later(peer, b"second");
        let before = runtime::metrics().ops_submitted;
        assert_eq!(&received.next().await.unwrap().unwrap()[..], b"second");
        assert_eq!(
            runtime::metrics().ops_submitted - before,
            1,
            "one try per item"
        );
        drop(writer.join().unwrap());
        assert!(
            received.next().await.is_none(),
            "end of stream after the peer closed"
        );
    });
}

#[test]
fn the_end_of_a_stream_is_read_after_a_read_that_emptied_the_socket() {
    let rt = epoll();
    rt.block_on(async {
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        peer.write_all(b"01234567").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let (res, buf) = stream.read(vec![0u8; 4]).await;
        assert_eq!(&buf[..res.unwrap()], b"0123");
        // Let the loop read the event that reports both the data and the end (EPOLLRDHUP):
        // no later event will report the end again.
        runtime::time::sleep(Duration::from_millis(20)).await;
        let (res, buf) = stream.read(vec![0u8; 64]).await;
        assert_eq!(&buf[..res.unwrap()], b"4567");
        // That read emptied the socket, but the end stays readable.
        let eof = runtime::time::timeout(Duration::from_secs(2), stream.read(buf)).await;
        let (res, _) = eof.expect("the end of the stream was reported before the read that emptied the socket, and is still there");
        assert_eq!(res.unwrap(), 0);
    });
}

#[test]
fn a_small_write_goes_out_in_the_call_and_counts_as_one_op() {
    let rt = epoll();
    rt.block_on(async {
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        let before = runtime::metrics().ops_submitted;
        let (res, _) = stream.write_all(b"hello".to_vec()).await;
        res.unwrap();
        // Sent inline from the caller's bytes (nothing was in flight), not staged behind.
        assert_eq!(runtime::metrics().ops_submitted - before, 1);
        assert_eq!(runtime::metrics().ops_parked, 0, "nothing left behind");
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        stream.flush().await.unwrap();
    });
}

#[test]
fn a_large_write_is_one_send_call_and_one_that_finds_no_room_waits_for_some() {
    let rt = epoll();
    rt.block_on(async {
        let (mut stream, peer) = integration_tests::stream_with_std_peer().await;
        let before = runtime::metrics().ops_submitted;
        let (res, _) = stream.write_all(vec![7u8; 64 * 1024]).await;
        res.unwrap();
        // Too large to copy behind: sent from the caller's buffer, one send(2).
        assert_eq!(runtime::metrics().ops_submitted - before, 1);
        let mut written = 64 * 1024;
        // Fill the socket until a write finds no room and waits (then dropped by the timeout).
        loop {
            let write = stream.write(vec![1u8; 64 * 1024]);
            match runtime::time::timeout(Duration::from_millis(50), write).await {
                Ok((res, _)) => written += res.unwrap(),
                Err(_) => break,
            }
        }
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut got = Vec::new();
            let mut peer = peer;
            peer.read_to_end(&mut got).unwrap();
            got
        });
        // The reader makes room: this write waits for it, then takes what fits.
        let write = stream.write(vec![1u8; 64 * 1024]);
        let (res, _) = runtime::time::timeout(Duration::from_secs(5), write)
            .await
            .expect("the room the reader made woke the waiting write");
        written += res.unwrap();
        drop(stream);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), written, "every byte a write reported arrived");
        assert!(got[..64 * 1024].iter().all(|&b| b == 7));
        assert!(got[64 * 1024..].iter().all(|&b| b == 1));
    });
}

#[test]
fn sent_datagrams_do_not_wake_the_loop() {
    let rt = epoll();
    rt.block_on(async {
        let server = net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        const MESSAGES: u64 = 200;
        let client = std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 64];
            for i in 0..MESSAGES {
                socket.send_to(&i.to_le_bytes(), addr).unwrap();
                let n = socket.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &i.to_le_bytes());
            }
        });
        let before = runtime::metrics().enters;
        let mut buf = vec![0u8; 64];
        for _ in 0..MESSAGES {
            let (res, b) = server.recv_from(buf).await;
            let (n, from) = res.unwrap();
            let (res, b) = server.send_to(b.slice(..n), from).await;
            res.unwrap();
            buf = b.into_inner();
        }
        let waits = runtime::metrics().enters - before;
        client.join().unwrap();
        // Each datagram needs one wait for the next; a socket watched for room would add a
        // second per message (the room its own send freed).
        assert!(
            waits <= MESSAGES + MESSAGES / 4,
            "{waits} epoll_waits for {MESSAGES} echoed datagrams"
        );
    });
}

#[test]
fn a_send_that_found_no_room_is_woken_when_there_is_room() {
    let rt = epoll();
    rt.block_on(async {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let ours = net::UnixDatagram::from_std(ours);
        let theirs = std::sync::Arc::new(theirs);
        // Twice: the room that a send did not wait for stops the watch, and a later send
        // that finds no room must start it again.
        for round in 0..2 {
            let mut queued = 0;
            loop {
                let send = ours.send(vec![round; 256]);
                match runtime::time::timeout(Duration::from_millis(50), send).await {
                    Ok((res, _)) => queued += usize::from(res.unwrap() == 256),
                    Err(_) => break, // the peer's queue is full: this send waits for room
                }
            }
            assert!(queued > 0, "round {round}: nothing was queued");
            let reader = theirs.clone();
            let drain = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let mut buf = [0u8; 512];
                for _ in 0..queued {
                    reader.recv(&mut buf).unwrap();
                }
            });
            let send = ours.send(vec![round; 256]);
            let (res, _) = runtime::time::timeout(Duration::from_secs(5), send)
                .await
                .expect("the room the peer made woke the waiting send");
            assert_eq!(res.unwrap(), 256);
            drain.join().unwrap();
            let mut buf = [0u8; 512];
            assert_eq!(theirs.recv(&mut buf).unwrap(), 256);
            // Sends with room are reported by no event anyone waits for.
            for _ in 0..3 {
                ours.send(vec![round; 8]).await.0.unwrap();
                assert_eq!(theirs.recv(&mut buf).unwrap(), 8);
            }
        }
    });
}

#[test]
fn a_datagram_receive_tries_once_before_it_waits_and_once_after() {
    let rt = epoll();
    rt.block_on(async {
        let socket = net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Queued already: one try takes it.
        peer.send_to(b"now", addr).unwrap();
        let before = runtime::metrics().ops_submitted;
        let (res, buf) = socket.recv_from(vec![0u8; 64]).await;
        assert_eq!(&buf[..res.unwrap().0], b"now");
        assert_eq!(runtime::metrics().ops_submitted - before, 1);
        // Not there yet: the try that says EAGAIN, then the one after the event; no second
        // EAGAIN before the wait.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            peer.send_to(b"later", addr).unwrap();
        });
        let before = runtime::metrics().ops_submitted;
        let (res, buf) = socket.recv_from(buf).await;
        assert_eq!(&buf[..res.unwrap().0], b"later");
        assert_eq!(runtime::metrics().ops_submitted - before, 2);
        sender.join().unwrap();
    });
}
