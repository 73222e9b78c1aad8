//! Unix domain sockets end to end: streams, listeners, datagrams, abstract names, credentials,
//! split halves, receive streams, zero-copy policy, conversions and bad input.
//!
//! Tests marked "tokio:" are ports of tokio's own (`tokio/tests/uds_stream.rs`,
//! `uds_datagram.rs`, `uds_split.rs`, `uds_cred.rs`), rewritten for owned buffers.

use std::{
    io::{self, Read, Write},
    net::Shutdown,
    os::{
        fd::{AsRawFd, FromRawFd, IntoRawFd},
        linux::net::SocketAddrExt,
        unix::net::SocketAddr,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use integration_tests::{pattern, poll_once};
use net::{UnixDatagram, UnixListener, UnixStream, ZeroCopy, udp::Truncated};
use runtime::{buf::BufRing, spawn, time::timeout};

/// A fresh directory for one test's socket files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rt-uds-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique abstract name, so parallel test runs do not collide.
fn abstract_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "\0rt-uds-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const GUARD: Duration = Duration::from_secs(10);

/// tokio: uds_stream.rs `accept_read_write`.
#[runtime::test]
async fn accept_read_write() {
    let dir = TempDir::new();
    let path = dir.path("connect.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let accept = spawn(async move { listener.accept().await.unwrap() });
    let mut client = UnixStream::connect(&path).await.unwrap();
    let (mut server, peer) = accept.await.unwrap();
    assert!(peer.is_unnamed(), "{peer:?}");
    assert_eq!(
        client.peer_addr().unwrap().as_pathname(),
        Some(path.as_path())
    );
    assert_eq!(
        server.local_addr().unwrap().as_pathname(),
        Some(path.as_path())
    );

    let (res, _) = client.write_all(b"hello".to_vec()).await;
    res.unwrap();
    let (res, buf) = server.read_exact(Vec::with_capacity(5)).await;
    res.unwrap();
    assert_eq!(buf, b"hello");
    let (res, _) = server.write_all(b"world".to_vec()).await;
    res.unwrap();
    let (res, buf) = client.read_exact(Vec::with_capacity(5)).await;
    res.unwrap();
    assert_eq!(buf, b"world");

    drop(client);
    let (res, _) = server.read(Vec::with_capacity(16)).await;
    assert_eq!(res.unwrap(), 0, "EOF after the client closed");
}

/// tokio: uds_stream.rs `shutdown`. Bytes written behind go out before the FIN.
#[runtime::test]
async fn shutdown_write_gives_the_peer_eof_after_the_bytes() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (res, _) = a.write_all(b"last words".to_vec()).await;
    res.unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let (res, buf) = b.read_exact(Vec::with_capacity(10)).await;
    res.unwrap();
    assert_eq!(buf, b"last words");
    let (res, _) = b.read(Vec::with_capacity(16)).await;
    assert_eq!(res.unwrap(), 0);
    // The other direction still works.
    let (res, _) = b.write_all(b"ok".to_vec()).await;
    res.unwrap();
    let (res, buf) = a.read_exact(Vec::with_capacity(2)).await;
    res.unwrap();
    assert_eq!(buf, b"ok");
}

/// tokio: uds_stream.rs `abstract_socket_name`, plus the addresses both ends report.
#[runtime::test]
async fn abstract_socket_name() {
    let name = abstract_name("stream");
    let listener = UnixListener::bind(&name).unwrap();
    let local = listener.local_addr().unwrap();
    assert_eq!(local.as_abstract_name(), Some(&name.as_bytes()[1..]));
    // The same name through `SocketAddr` is taken while the listener lives.
    let addr = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let other = UnixListener::bind_addr(&addr);
    assert_eq!(other.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    let accept = spawn(async move { listener.accept().await.unwrap().0 });
    let mut client = UnixStream::connect(&name).await.unwrap();
    let mut server = accept.await.unwrap();
    assert_eq!(
        client.peer_addr().unwrap().as_abstract_name(),
        Some(&name.as_bytes()[1..])
    );
    let (res, _) = client.write_all(b"x".to_vec()).await;
    res.unwrap();
    let (res, buf) = server.read(Vec::with_capacity(1)).await;
    assert_eq!((res.unwrap(), &buf[..]), (1, &b"x"[..]));

    let name2 = abstract_name("addr");
    let addr2 = SocketAddr::from_abstract_name(&name2.as_bytes()[1..]).unwrap();
    let listener2 = UnixListener::bind_addr(&addr2).unwrap();
    let _client2 = UnixStream::connect_addr(&addr2).await.unwrap();
    let (_, _) = listener2.accept().await.unwrap();
}

/// tokio: uds_split.rs `split`: both directions through borrowed halves of a pair at once.
#[runtime::test]
async fn split_halves_carry_both_directions_at_once() {
    const MSG: &[u8] = b"split";
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let read_a = a_read.read_exact(Vec::with_capacity(MSG.len()));
    let read_b = b_read.read_exact(Vec::with_capacity(MSG.len()));
    let (res, _) = a_write.write_all(MSG.to_vec()).await;
    res.unwrap();
    let (res, _) = b_write.write_all(MSG.to_vec()).await;
    res.unwrap();
    let (res, got_b) = read_b.await;
    res.unwrap();
    let (res, got_a) = read_a.await;
    res.unwrap();
    assert_eq!((&got_a[..], &got_b[..]), (MSG, MSG));
}

/// Owned halves in different tasks, a megabyte each way, then reunited; dropping an owned
/// write half shuts the direction down.
#[runtime::test]
async fn owned_halves_stream_in_both_directions_and_reunite() {
    let (a, b) = UnixStream::pair().unwrap();
    let (a_read, mut a_write) = a.into_split();
    let (mut b_read, mut b_write) = b.into_split();
    let data = pattern(1 << 20, 7);
    let sent = data.clone();
    let writer = spawn(async move {
        let (res, _) = a_write.write_all(sent).await;
        res.unwrap();
        a_write
    });
    let (res, got) = b_read.read_exact(Vec::with_capacity(data.len())).await;
    res.unwrap();
    assert!(got == data, "the stream arrived changed");
    let a_write = writer.await.unwrap();
    let a = a_read.reunite(a_write).unwrap();
    let (res, _) = b_write.write_all(b"back".to_vec()).await;
    res.unwrap();
    drop(b_write); // shuts b's write direction
    let mut a = a;
    let (res, buf) = a.read_exact(Vec::with_capacity(4)).await;
    res.unwrap();
    assert_eq!(buf, b"back");
    let (res, _) = a.read(Vec::with_capacity(4)).await;
    assert_eq!(res.unwrap(), 0);
    let (c, d) = UnixStream::pair().unwrap();
    let (c_read, _) = c.into_split();
    let (_, d_write) = d.into_split();
    assert!(c_read.reunite(d_write).is_err());
}

/// tokio: uds_cred.rs `test_socket_pair`, plus the credentials of an accepted connection.
#[runtime::test]
async fn peer_cred_names_this_process() {
    let (a, b) = UnixStream::pair().unwrap();
    // SAFETY: getuid/getgid/getpid cannot fail.
    let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
    for s in [&a, &b] {
        let cred = s.peer_cred().unwrap();
        assert_eq!((cred.uid(), cred.gid(), cred.pid()), (uid, gid, Some(pid)));
    }
    let name = abstract_name("cred");
    let listener = UnixListener::bind(&name).unwrap();
    let client = UnixStream::connect(&name).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    assert_eq!(server.peer_cred().unwrap().pid(), Some(pid));
    assert_eq!(client.peer_cred().unwrap().uid(), uid);
    let (d1, _d2) = UnixDatagram::pair().unwrap();
    assert_eq!(d1.peer_cred().unwrap().pid(), Some(pid));
}

/// Many clients through `incoming` (multishot accept), each echoed by its own task.
#[runtime::test]
async fn incoming_accepts_many_connections() {
    let dir = TempDir::new();
    let path = dir.path("echo.sock");
    let listener = UnixListener::bind(&path).unwrap();
    spawn(async move {
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            let mut stream = conn.unwrap();
            spawn(async move {
                let (res, buf) = stream.read(Vec::with_capacity(64)).await;
                let n = res.unwrap();
                let (res, _) = stream.write_all(buf).await;
                res.unwrap();
                assert!(n > 0);
            });
        }
    });
    for i in 0..100u32 {
        let mut client = UnixStream::connect(&path).await.unwrap();
        let msg = format!("hello {i}").into_bytes();
        let (res, _) = client.write_all(msg.clone()).await;
        res.unwrap();
        let (res, buf) = client.read_exact(Vec::with_capacity(msg.len())).await;
        res.unwrap();
        assert_eq!(buf, msg);
    }
}

/// tokio: uds_datagram.rs `echo`: a bound client connects to a bound server and back.
#[runtime::test]
async fn datagram_echo() {
    let dir = TempDir::new();
    let server_path = dir.path("server.sock");
    let client_path = dir.path("client.sock");
    let server = UnixDatagram::bind(&server_path).unwrap();
    let echo = spawn(async move {
        let (res, buf) = server.recv_from(Vec::with_capacity(1024)).await;
        let (n, peer) = res.unwrap();
        let (res, _) = server.send_to(buf, peer.as_pathname().unwrap()).await;
        assert_eq!(res.unwrap(), n);
        peer
    });
    let client = UnixDatagram::bind(&client_path).unwrap();
    client.connect(&server_path).unwrap();
    assert_eq!(
        client.peer_addr().unwrap().as_pathname(),
        Some(server_path.as_path())
    );
    let (res, _) = client.send(b"ECHO".to_vec()).await;
    assert_eq!(res.unwrap(), 4);
    let (res, buf) = client.recv(Vec::with_capacity(64)).await;
    assert_eq!(&buf[..res.unwrap()], b"ECHO");
    let peer = echo.await.unwrap();
    assert_eq!(peer.as_pathname(), Some(client_path.as_path()));
}

/// tokio: uds_datagram.rs `echo_from`: `send_to`/`recv_from` without connecting; an unbound
/// sender shows up as unnamed.
#[runtime::test]
async fn datagram_send_to_and_recv_from() {
    let dir = TempDir::new();
    let path = dir.path("dgram.sock");
    let server = UnixDatagram::bind(&path).unwrap();
    let client = UnixDatagram::unbound().unwrap();
    let (res, _) = client.send_to(b"from nowhere".to_vec(), &path).await;
    assert_eq!(res.unwrap(), 12);
    let (res, buf) = server.recv_from(Vec::with_capacity(64)).await;
    let (n, peer) = res.unwrap();
    assert_eq!(&buf[..n], b"from nowhere");
    assert!(peer.is_unnamed(), "{peer:?}");

    let name = abstract_name("dgram");
    let abs = UnixDatagram::bind(&name).unwrap();
    let addr = abs.local_addr().unwrap();
    let (res, _) = client.send_to_addr(b"abstract".to_vec(), &addr).await;
    res.unwrap();
    let (res, buf) = abs.recv(Vec::with_capacity(64)).await;
    assert_eq!(&buf[..res.unwrap()], b"abstract");
}

/// Unix datagrams are ordered: a burst larger than the receive queue arrives in order while
/// the receiver drains it (sends wait for room, none is reordered or dropped).
#[runtime::test]
async fn datagrams_arrive_in_order_even_when_the_queue_fills() {
    let (a, b) = UnixDatagram::pair().unwrap();
    const N: u32 = 2000;
    let reader = spawn(async move {
        let mut buf = Vec::with_capacity(64);
        for i in 0..N {
            let (res, b2) = b.recv(buf).await;
            let n = res.unwrap();
            assert_eq!(&b2[..n], &i.to_le_bytes()[..], "datagram {i}");
            buf = b2;
            buf.clear();
            if i % 100 == 0 {
                runtime::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    for i in 0..N {
        let (res, _) = a.send(i.to_le_bytes().to_vec()).await;
        assert_eq!(res.unwrap(), 4);
    }
    timeout(GUARD, reader).await.unwrap().unwrap();
}

/// A datagram delivered to a dropped receive is returned by the next one, with its sender.
#[runtime::test]
async fn a_dropped_datagram_receive_keeps_the_datagram_and_its_sender() {
    if integration_tests::skip_on_epoll(
        "unix::a_dropped_datagram_receive_keeps_the_datagram_and_its_sender",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let dir = TempDir::new();
    let server = UnixDatagram::bind(dir.path("s.sock")).unwrap();
    let client = UnixDatagram::bind(dir.path("c.sock")).unwrap();
    let (res, _) = client.send_to(b"kept".to_vec(), dir.path("s.sock")).await;
    res.unwrap();
    {
        let mut recv = Box::pin(server.recv_from(Vec::with_capacity(64)));
        // Submitted with its cancel in the same enter: the datagram is there, the receive wins.
        assert!(poll_once(&mut recv).await.is_pending());
    }
    let (res, buf) = server.recv_from(Vec::with_capacity(64)).await;
    let (n, peer) = res.unwrap();
    assert_eq!(&buf[..n], b"kept");
    assert_eq!(peer.as_pathname(), Some(dir.path("c.sock").as_path()));
}

/// tokio: uds_datagram.rs `split`: one socket shared by a sending and a receiving task.
#[runtime::test]
async fn one_datagram_socket_shared_by_two_tasks() {
    let dir = TempDir::new();
    let path = dir.path("shared.sock");
    let socket = std::rc::Rc::new(UnixDatagram::bind(&path).unwrap());
    let receiver = {
        let socket = socket.clone();
        spawn(async move {
            let (res, buf) = socket.recv_from(Vec::with_capacity(64)).await;
            let (n, _) = res.unwrap();
            buf[..n].to_vec()
        })
    };
    let sender = {
        let socket = socket.clone();
        spawn(async move {
            let (res, _) = socket.send_to(b"to myself".to_vec(), &path).await;
            res.unwrap();
        })
    };
    sender.await.unwrap();
    assert_eq!(
        timeout(GUARD, receiver).await.unwrap().unwrap(),
        b"to myself"
    );
}

/// A datagram larger than the buffer is an error that says so, never a silent loss.
#[runtime::test]
async fn truncated_datagrams_are_reported() {
    let (a, b) = UnixDatagram::pair().unwrap();
    let (res, _) = a.send(vec![7u8; 100]).await;
    res.unwrap();
    let (res, buf) = b.recv(Vec::with_capacity(10)).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let t = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Truncated>())
        .unwrap();
    assert_eq!((t.len, t.capacity, buf.len()), (100, 10, 10));
    let (res, _) = a.send(vec![8u8; 100]).await;
    res.unwrap();
    let (res, _) = b.recv_with_fds(Vec::with_capacity(10), 0).await;
    let got = res.unwrap();
    assert!(got.truncated && !got.fds_truncated);
    assert_eq!(got.len, 10);
}

/// A receive dropped after the kernel delivered data to it loses nothing: the next read
/// gets those bytes first, in order.
#[runtime::test]
async fn a_dropped_read_loses_no_bytes() {
    if integration_tests::skip_on_epoll(
        "unix::a_dropped_read_loses_no_bytes",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (res, _) = a.write_all(b"first".to_vec()).await;
    res.unwrap();
    a.flush().await.unwrap();
    {
        let mut read = Box::pin(b.read(Vec::with_capacity(64)));
        // Submitted with its cancel in the same enter: the data is there, the read wins.
        assert!(poll_once(&mut read).await.is_pending());
    }
    let (res, _) = a.write_all(b" second".to_vec()).await;
    res.unwrap();
    let (res, buf) = b.read_exact(Vec::with_capacity(12)).await;
    res.unwrap();
    assert_eq!(buf, b"first second");
}

/// `recv_stream` (multishot receive over a provided-buffer ring) works on a Unix stream.
#[runtime::test]
async fn recv_stream_over_a_buf_ring() {
    let ring = BufRing::builder().entries(8).buf_len(4096).build().unwrap();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let data = pattern(256 * 1024, 3);
    let sent = data.clone();
    let writer = spawn(async move {
        let (res, _) = a.write_all(sent).await;
        res.unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        a
    });
    let mut got = Vec::new();
    let mut stream = b.recv_stream(&ring);
    while let Some(item) = timeout(GUARD, stream.next()).await.unwrap() {
        got.extend_from_slice(&item.unwrap());
    }
    assert!(
        got == data,
        "{} of {} bytes, or changed",
        got.len(),
        data.len()
    );
    drop(writer.await.unwrap());
}

/// Zero-copy sends keep the TCP policy: `Auto` falls back to copying (Unix sockets have no
/// zero-copy send), `On` fails with `Unsupported` and a message naming the fix.
#[runtime::test]
async fn zero_copy_policy_on_a_unix_stream() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (res, _) = a.send_zc(b"zc".to_vec()).await;
    assert_eq!(res.unwrap(), 2);
    let (res, buf) = b.read_exact(Vec::with_capacity(2)).await;
    res.unwrap();
    assert_eq!(buf, b"zc");
    assert!(a.zero_copy_stats().switched_to_copy.is_some());
    let (mut c, _d) = UnixStream::pair().unwrap();
    c.set_zero_copy(ZeroCopy::On);
    let (res, _) = c.send_zc(b"zc".to_vec()).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("ZeroCopy::Auto"), "{err}");
}

/// `from_std`, `into_std`, `IntoRawFd`/`FromRawFd` hand the same socket over.
#[runtime::test]
async fn conversions_keep_the_connection() {
    let (std_a, mut std_b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut a = UnixStream::from_std(std_a);
    let (res, _) = a.write_all(b"std".to_vec()).await;
    res.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 3];
    std_b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"std");
    let fd = a.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is owned by nothing else.
    let a = unsafe { UnixStream::from_raw_fd(fd) };
    assert_eq!(a.as_raw_fd(), fd);
    let mut std_a = a.into_std().unwrap();
    std_a.write_all(b"back").unwrap();
    let mut buf = [0u8; 4];
    std_b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    let _ = &mut std_a;

    let dir = TempDir::new();
    let listener = UnixListener::bind(dir.path("l.sock")).unwrap();
    let std_listener = listener.into_std().unwrap();
    let listener = UnixListener::from_std(std_listener);
    let _c = UnixStream::connect(dir.path("l.sock")).await.unwrap();
    let (_s, _) = listener.accept().await.unwrap();
    let (d, _e) = UnixDatagram::pair().unwrap();
    let d = UnixDatagram::from_std(d.into_std().unwrap());
    drop(d);
}

/// Bad input: a missing path is `NotFound`, an over-long one `InvalidInput` with a reason,
/// an existing one `AddrInUse`; each message says what to do.
#[runtime::test]
async fn bad_addresses_give_errors_that_say_what_to_do() {
    let dir = TempDir::new();
    let missing = dir.path("missing.sock");
    let err = UnixStream::connect(&missing).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("is the server running"), "{err}");

    let long = Path::new("/tmp").join("x".repeat(120));
    let err = UnixStream::connect(&long).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("at most 107"), "{err}");
    assert_eq!(
        UnixListener::bind(&long).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        UnixDatagram::bind(&long).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );

    let path = dir.path("taken.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let err = UnixListener::bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("remove the file"), "{err}");
    let err = UnixDatagram::bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

    let err = UnixListener::bind(dir.path("no/such/dir.sock")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

    let d = UnixDatagram::unbound().unwrap();
    assert_eq!(
        d.connect(&missing).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    let (res, _) = d.send_to(b"x".to_vec(), &missing).await;
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
    let (res, _) = d.send_to(b"x".to_vec(), &long).await;
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let unnamed = SocketAddr::from_pathname("").unwrap();
    let err = UnixStream::connect_addr(&unnamed).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // Empty path.
    let err = UnixStream::connect("").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
