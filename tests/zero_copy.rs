//! Zero-copy sends: the buffer is handed back (or dropped) only after the kernel's notification,
//! on success, on error, and when futures or handles are dropped at any stage.
//!
//! A notification comes once no packet references the buffer's pages. On loopback that is when
//! the data has been acknowledged, so the tests choke the connection: the peer's receive buffer
//! is tiny and the peer does not read, so most of a large send waits in our send queue and its
//! notification is held back until the peer starts reading.

use std::{
    io::Read,
    net::Shutdown,
    os::fd::{FromRawFd, IntoRawFd},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use integration_tests::{DropFlag, TrackedBuf, drain, exclusive, pattern, poll_once, turns_until};
use net::{SwitchReason, TcpStream, UdpSocket, ZeroCopy};
use runtime::{
    Builder, Runtime,
    buf::{FixedBufPool, IoBuf},
    metrics, spawn,
    time::{sleep, timeout},
};

/// Large enough that most of it stays queued behind the choked peer.
const HELD: usize = 1 << 20;

/// A connected pair: our stream and a std peer with a tiny receive buffer that reads only when
/// told to.
async fn pair(policy: ZeroCopy) -> (TcpStream, std::net::TcpStream) {
    pair_with(policy, true).await
}

/// A connected pair, choked (tiny peer receive buffer) or not.
async fn pair_with(policy: ZeroCopy, choke: bool) -> (TcpStream, std::net::TcpStream) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if choke {
        listener.set_recv_buffer_size(64 * 1024).unwrap();
    }
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(8).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    stream.set_zero_copy(policy);
    (stream, peer)
}

/// Starts reading everything the peer receives, until EOF, on a thread.
fn read_all(mut peer: std::net::TcpStream) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    })
}

/// Waits (sleeping between checks) until `check` holds, at most 5 s.
async fn within(mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if check() {
            return true;
        }
        sleep(Duration::from_millis(1)).await;
    }
    check()
}

/// Runs loop turns for `d`, asserting the buffer stays alive throughout.
async fn stays_alive(flag: &DropFlag, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(
            !flag.dropped(),
            "the buffer was released before its notification"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

#[runtime::test]
async fn send_zc_returns_the_buffer_only_after_the_notification() {
    let (stream, peer) = pair(ZeroCopy::On).await;
    // The write half sends in its own task; the read half watches the socket's counters.
    let (stream, mut writer) = stream.into_split();
    let data = pattern(HELD, 1);
    let (buf, flag) = TrackedBuf::new(data.clone());
    let task = spawn(async move { writer.send_zc(buf).await });
    assert!(turns_until(100, || stream.zero_copy_stats().zc_requests == 1).await);
    stays_alive(&flag, Duration::from_millis(100)).await;
    assert!(
        !task.is_finished(),
        "send_zc resolved before the notification"
    );
    assert_eq!(stream.zero_copy_stats().notifications, 0);

    let reader = read_all(peer);
    let (res, buf) = timeout(Duration::from_secs(5), task)
        .await
        .expect("the notification never came")
        .unwrap();
    let n = res.unwrap();
    assert!(n > 0);
    assert_eq!(stream.zero_copy_stats().notifications, 1);
    assert!(!flag.dropped(), "the buffer is handed back, not dropped");
    drop(buf);
    assert!(flag.dropped());
    // The write half went with its task: dropping it shut the write direction down.
    let received = reader.join().unwrap();
    assert_eq!(&received[..], &data[..n]);
}

/// A send on a reset connection fails with F_MORE: the buffer still waits for the notification
/// that follows.
#[runtime::test]
async fn failed_sends_release_the_buffer_after_their_notification() {
    let (mut stream, peer) = pair(ZeroCopy::On).await;
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    sleep(Duration::from_millis(10)).await;
    let mut failed = None;
    for _ in 0..10 {
        let (buf, flag) = TrackedBuf::new(vec![3u8; 64 * 1024]);
        let (res, buf) = stream.send_zc(buf).await;
        let stats = stream.zero_copy_stats();
        assert_eq!(
            stats.notifications, stats.zc_requests,
            "a buffer came back before its notification: {stats:?}"
        );
        assert!(!flag.dropped());
        drop(buf);
        if let Err(e) = res {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("sending to a reset peer must fail");
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

/// Dropping at every stage: before submission, in flight, after the result (handle dropped),
/// and after the notification arrived but before anyone looked.
#[runtime::test]
async fn dropping_at_any_stage_never_releases_early() {
    // Unpolled: nothing reached the kernel, the buffer goes at once.
    let (mut stream, _peer) = pair(ZeroCopy::On).await;
    let (buf, flag) = TrackedBuf::new(vec![1u8; 4096]);
    drop(stream.send_zc_pipelined(buf));
    assert!(flag.dropped());
    assert_eq!(stream.zero_copy_stats().zc_requests, 0);

    // Submitted, future dropped before the result: the request is cancelled, but what it
    // queued still references the buffer. (On epoll the send runs at the first poll, so there
    // is no "before the result".)
    // Nor does that short send stay held: its bytes are all the socket takes at once.
    let epoll = integration_tests::epoll_selected();
    if !epoll {
        let (mut stream, peer) = pair(ZeroCopy::On).await;
        let (buf, flag) = TrackedBuf::new(vec![2u8; HELD]);
        let mut fut = Box::pin(stream.send_zc_pipelined(buf));
        assert!(poll_once(&mut fut).await.is_pending());
        runtime::yield_now().await;
        drop(fut);
        stays_alive(&flag, Duration::from_millis(100)).await;
        let reader = read_all(peer);
        assert!(
            within(|| flag.dropped()).await,
            "never released after the notification"
        );
        drop(stream);
        reader.join().unwrap();
    }

    // Result seen, release handle dropped while the notification is pending.
    let (mut stream, peer) = pair(ZeroCopy::On).await;
    let (buf, flag) = TrackedBuf::new(vec![3u8; 256 * 1024]);
    let (res, release) = stream.send_zc_pipelined(buf).await;
    assert_eq!(res.unwrap(), 256 * 1024);
    assert!(!release.is_released());
    drop(release);
    stays_alive(&flag, Duration::from_millis(100)).await;
    let reader = read_all(peer);
    assert!(within(|| flag.dropped()).await);
    // Released by the send when it read the notification (parked on epoll), not before.
    assert_eq!(stream.zero_copy_stats().notifications, 1);
    drop(stream);
    reader.join().unwrap();

    // Notification arrived, handle dropped without being polled: released during the drop.
    let (mut stream, peer) = pair(ZeroCopy::On).await;
    let reader = read_all(peer);
    let (buf, flag) = TrackedBuf::new(vec![4u8; 256 * 1024]);
    let (res, release) = stream.send_zc_pipelined(buf).await;
    res.unwrap();
    // The final CQE reached the driver (nothing in flight), but nobody polled the handle.
    assert!(within(|| metrics().ops_in_flight == 0).await);
    assert!(!flag.dropped());
    drop(release);
    // On epoll the notification is read when someone looks: the dropped handle does, on
    // readiness of the error queue.
    assert!(flag.dropped() || epoll && within(|| flag.dropped()).await);
    drop(stream);
    reader.join().unwrap();
    assert_eq!(metrics().ops_in_flight, 0);
}

/// Stream zero-copy sends can be short; `send_zc_all` resubmits the tail and 16 MiB arrive
/// complete and in order.
#[runtime::test]
async fn send_zc_all_delivers_16_mib_byte_exact() {
    for policy in [ZeroCopy::On, ZeroCopy::Auto] {
        let (mut stream, mut peer) = pair_with(policy, false).await;
        let data = pattern(16 << 20, 7);
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 16 << 20];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let (res, buf) = stream.send_zc_all(data).await;
        res.unwrap();
        assert_eq!(buf.len(), 16 << 20);
        let got = reader.join().unwrap();
        assert!(got == expected, "bytes differ under {policy:?}");
        let stats = stream.zero_copy_stats();
        assert_eq!(stats.notifications, stats.zc_requests, "{stats:?}");
    }
}

/// Loopback always copies: `Auto` notices from the first notification and switches the socket
/// to ordinary sends; `On` keeps zero-copy; `Off` never uses it.
#[runtime::test]
async fn auto_policy_switches_to_copy_on_loopback() {
    let (mut stream, mut peer) = pair_with(ZeroCopy::Auto, false).await;
    let mut sink = Vec::new();
    for i in 0..5u8 {
        let reader = async {
            while sink.len() < (i as usize + 1) * 1000 {
                drain(&mut peer, &mut sink);
                sleep(Duration::from_millis(1)).await;
            }
        };
        let ((res, _), ()) = join2(stream.send_zc(vec![i; 1000]), reader).await;
        assert_eq!(res.unwrap(), 1000);
    }
    let stats = stream.zero_copy_stats();
    assert_eq!(
        stats.switched_to_copy,
        Some(SwitchReason::KernelCopied),
        "{stats:?}"
    );
    assert_eq!(
        (stats.zc_requests, stats.copied, stats.copy_sends),
        (1, 1, 4),
        "{stats:?}"
    );

    let (mut on, _peer) = pair(ZeroCopy::On).await;
    let (mut off, _peer2) = pair(ZeroCopy::Off).await;
    for _ in 0..3 {
        let (res, _) = off.send_zc(vec![0u8; 100]).await;
        res.unwrap();
    }
    assert_eq!(off.zero_copy_stats().zc_requests, 0);
    assert_eq!(off.zero_copy_stats().copy_sends, 3);
    let (res, release) = on.send_zc_pipelined(vec![0u8; 100]).await;
    res.unwrap();
    drop(release);
    assert_eq!(on.zero_copy_stats().zc_requests, 1);
    assert_eq!(on.zero_copy_stats().switched_to_copy, None);
}

/// Awaits two futures concurrently.
async fn join2<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// A socket type without zero-copy support (a Unix stream, adopted through its fd): `Auto`
/// falls back to ordinary sends and says why; `On` reports `Unsupported`.
#[runtime::test]
async fn sockets_without_zero_copy_fall_back_or_report_unsupported() {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: the fd comes from a live UnixStream whose ownership moves into the TcpStream.
    let mut stream = unsafe { TcpStream::from_raw_fd(a.into_raw_fd()) };
    let (res, _) = stream.send_zc(b"over a unix socket".to_vec()).await;
    assert_eq!(res.unwrap(), 18);
    let mut got = [0u8; 18];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over a unix socket");
    let stats = stream.zero_copy_stats();
    assert_eq!(
        stats.switched_to_copy,
        Some(SwitchReason::Unsupported),
        "{stats:?}"
    );

    stream.set_zero_copy(ZeroCopy::On);
    let (buf, flag) = TrackedBuf::new(b"again".to_vec());
    let (res, buf) = stream.send_zc(buf).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("EOPNOTSUPP"), "{err}");
    assert!(!flag.dropped());
    assert_eq!(buf.data(), b"again");
    let _ = b.shutdown(Shutdown::Both);
}

#[runtime::test]
async fn udp_zero_copy_sends() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.set_zero_copy(ZeroCopy::On);
    let rx_addr = rx.local_addr().unwrap();
    for i in 0..3u8 {
        let (buf, flag) = TrackedBuf::new(vec![i; 1200]);
        let (res, buf) = tx.send_to_zc(buf, rx_addr).await;
        assert_eq!(res.unwrap(), 1200);
        assert!(!flag.dropped());
        drop(buf);
        let (res, got) = rx.recv_from(vec![0u8; 2000]).await;
        let (n, from) = res.unwrap();
        assert_eq!(from, tx.local_addr().unwrap());
        assert!(got[..n].iter().all(|&b| b == i) && n == 1200);
    }
    tx.connect(rx_addr).await.unwrap();
    let (res, _) = tx.send_zc(vec![9u8; 500]).await;
    assert_eq!(res.unwrap(), 500);
    let (res, got) = rx.recv(vec![0u8; 1000]).await;
    assert_eq!(&got[..res.unwrap()], &[9u8; 500][..]);
    let stats = tx.zero_copy_stats();
    assert_eq!(stats.zc_requests, 4);
    assert_eq!(stats.notifications, 4);
}

/// Registered buffers go out by index (`IORING_RECVSEND_FIXED_BUF`) and return to their pool.
#[runtime::test]
async fn fixed_buffers_send_by_index() {
    if integration_tests::skip_on_epoll(
        "zero_copy::fixed_buffers_send_by_index",
        "registered (fixed) buffers; on epoll FixedBufPool buffers are ordinary ones",
    ) {
        return;
    }
    let pool = FixedBufPool::new(4, 64 * 1024).unwrap();
    assert!(pool.is_registered(), "{}", runtime::capabilities());
    let (mut stream, peer) = pair(ZeroCopy::On).await;
    let reader = read_all(peer);
    let mut expected = Vec::new();
    for i in 0..8u8 {
        let mut buf = pool.get().await;
        buf.capacity_mut()[..1000].fill(i);
        buf.set_len(1000);
        expected.extend_from_slice(&[i; 1000]);
        let (res, release) = stream.send_zc_pipelined(buf.slice(..1000)).await;
        assert_eq!(res.unwrap(), 1000);
        drop(release.await);
    }
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reader.join().unwrap(), expected);
    assert_eq!(pool.available(), 4);
    assert_eq!(stream.zero_copy_stats().zc_requests, 8);
}

/// Dropping the runtime with notifications outstanding waits for them (bounded by the shutdown
/// deadline) and never frees a buffer the kernel still references.
#[test]
fn shutdown_waits_for_outstanding_notifications() {
    let _serial = exclusive();
    // The peer reads after 200 ms: shutdown must wait for the notification that follows.
    let rt = Runtime::new().unwrap();
    let (flag, reader) = rt.block_on(async {
        let (mut stream, peer) = pair(ZeroCopy::On).await;
        let (buf, flag) = TrackedBuf::new(vec![5u8; 256 * 1024]);
        let (res, release) = stream.send_zc_pipelined(buf).await;
        res.unwrap();
        drop(release);
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut peer = peer;
            let mut sink = vec![0u8; 256 * 1024];
            peer.read_exact(&mut sink).unwrap();
            peer
        });
        std::mem::forget(stream); // keep the socket open past the runtime
        (flag, reader)
    });
    let start = Instant::now();
    drop(rt);
    let waited = start.elapsed();
    assert!(flag.dropped(), "shutdown returned before the notification");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    drop(reader.join().unwrap());

    // The peer never reads: shutdown gives up at its deadline and leaks the buffer.
    let rt = Builder::new()
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (flag, peer) = rt.block_on(async {
        let (mut stream, peer) = pair(ZeroCopy::On).await;
        let (buf, flag) = TrackedBuf::new(vec![6u8; 256 * 1024]);
        let (res, release) = stream.send_zc_pipelined(buf).await;
        res.unwrap();
        drop(release);
        std::mem::forget(stream);
        (flag, peer)
    });
    let start = Instant::now();
    drop(rt);
    let waited = start.elapsed();
    assert!(
        !flag.dropped(),
        "a buffer the kernel still references was freed"
    );
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    drop(peer);
}

/// Registered memory counts against RLIMIT_MEMLOCK: when the pool does not fit, it falls back
/// to ordinary buffers, says why in the capabilities, and sends still work.
#[test]
fn fixed_buffers_fall_back_when_memlock_is_too_low() {
    const CASE: &str = "ZC_MEMLOCK_CASE";
    const OK: &str = "child-checks-passed";
    if std::env::var(CASE).is_err() {
        integration_tests::run_in_child(
            "fixed_buffers_fall_back_when_memlock_is_too_low",
            CASE,
            "memlock",
            OK,
        );
        return;
    }
    integration_tests::drop_cap_ipc_lock();
    integration_tests::set_memlock(256 * 1024);
    let rt = Runtime::new().expect("a 256-entry ring fits in 256 KiB");
    rt.block_on(async {
        let pool = FixedBufPool::new(16, 256 * 1024).unwrap();
        assert!(!pool.is_registered());
        let caps = runtime::capabilities();
        let note = caps
            .notes()
            .iter()
            .find(|n| n.contains("fixed buffers not registered"))
            .expect("a note explains the fallback");
        assert!(note.contains("RLIMIT_MEMLOCK"), "{note}");
        println!("{note}");
        let (mut stream, peer) = pair_with(ZeroCopy::Auto, false).await;
        let reader = read_all(peer);
        let mut buf = pool.get().await;
        buf.capacity_mut()[..5].copy_from_slice(b"fixed");
        buf.set_len(5);
        let (res, _) = stream.send_zc_all(buf).await;
        res.unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(reader.join().unwrap(), b"fixed");
    });
    println!("{OK}");
}
