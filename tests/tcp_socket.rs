//! `TcpSocket`: options before connecting or listening, binding, connecting with the io_uring
//! connect, listening, fd conversions. The first tests are ports of tokio's
//! `tokio/tests/tcp_socket.rs`; the bad-input cases come from the behaviour tokio's
//! `TcpSocket` documents (the OS error, unchanged).

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd},
    task::Poll,
    time::Duration,
};

use integration_tests::{poll_once, skip, turns_until};
use net::{TcpListener, TcpSocket, TcpStream};
use runtime::{metrics, time::timeout};

/// What fd `fd` refers to (`socket:[inode]`), or `None` once it is closed.
fn fd_target(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// Whether the socket that `fd` was (`target`) is closed: the number is free or reused by
/// another file (tests run in parallel).
fn closed(fd: i32, target: &std::path::Path) -> bool {
    fd_target(fd).as_deref() != Some(target)
}

fn any_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Whether this machine has an IPv6 loopback address; records a skip when not.
fn have_ipv6(test: &str) -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            skip(test, &format!("no IPv6 loopback ([::1]: {e})"));
            false
        }
    }
}

// From tokio/tests/tcp_socket.rs `basic_usage_v4`.
#[runtime::test]
async fn basic_usage_v4() {
    let srv = TcpSocket::new_v4().unwrap();
    srv.bind(any_v4()).unwrap();
    let srv = srv.listen(128).unwrap();

    let addr = srv.local_addr().unwrap();
    let cli = TcpSocket::new_v4().unwrap();
    let mut cli = cli.connect(addr).await.unwrap();

    let (mut accepted, peer) = srv.accept().await.unwrap();
    assert_eq!(peer, cli.local_addr().unwrap());
    // The connection works both ways.
    let (res, _) = cli.write_all(b"ping").await;
    res.unwrap();
    let (res, buf) = accepted.read_exact(Vec::with_capacity(4)).await;
    res.unwrap();
    assert_eq!(buf, b"ping");
}

// From tokio/tests/tcp_socket.rs `basic_usage_v6`.
#[runtime::test]
async fn basic_usage_v6() {
    if !have_ipv6("tcp_socket::basic_usage_v6") {
        return;
    }
    let srv = TcpSocket::new_v6().unwrap();
    srv.bind("[::1]:0".parse().unwrap()).unwrap();
    let srv = srv.listen(128).unwrap();

    let addr = srv.local_addr().unwrap();
    let cli = TcpSocket::new_v6().unwrap();
    let _cli = cli.connect(addr).await.unwrap();
    let (_, peer) = srv.accept().await.unwrap();
    assert!(peer.is_ipv6());
}

// From tokio/tests/tcp_socket.rs `bind_before_connect`.
#[runtime::test]
async fn bind_before_connect() {
    let srv = TcpSocket::new_v4().unwrap();
    srv.bind(any_v4()).unwrap();
    let srv = srv.listen(128).unwrap();
    let addr = srv.local_addr().unwrap();

    let cli = TcpSocket::new_v4().unwrap();
    cli.bind(any_v4()).unwrap();
    let bound = cli.local_addr().unwrap();
    assert_ne!(bound.port(), 0);
    let cli = cli.connect(addr).await.unwrap();
    assert_eq!(cli.local_addr().unwrap(), bound);
    let (_, peer) = srv.accept().await.unwrap();
    assert_eq!(peer, bound);
}

// From tokio/tests/tcp_socket.rs `basic_linger`.
#[runtime::test]
async fn basic_linger() {
    let srv = TcpSocket::new_v4().unwrap();
    srv.bind(any_v4()).unwrap();
    assert!(srv.linger().unwrap().is_none());
    srv.set_linger(Some(Duration::new(0, 0))).unwrap();
    assert_eq!(srv.linger().unwrap(), Some(Duration::new(0, 0)));
    // Sub-second parts are dropped: the kernel keeps whole seconds.
    srv.set_linger(Some(Duration::from_millis(2500))).unwrap();
    assert_eq!(srv.linger().unwrap(), Some(Duration::from_secs(2)));
    srv.set_linger(None).unwrap();
    assert!(srv.linger().unwrap().is_none());
}

/// Every option round-trips through the kernel before the socket is used.
#[runtime::test]
async fn options_round_trip() {
    let s = TcpSocket::new_v4().unwrap();
    assert!(!s.reuseaddr().unwrap());
    s.set_reuseaddr(true).unwrap();
    assert!(s.reuseaddr().unwrap());
    assert!(!s.reuseport().unwrap());
    s.set_reuseport(true).unwrap();
    assert!(s.reuseport().unwrap());
    assert!(!s.nodelay().unwrap());
    s.set_nodelay(true).unwrap();
    assert!(s.nodelay().unwrap());
    assert!(!s.keepalive().unwrap());
    s.set_keepalive(true).unwrap();
    assert!(s.keepalive().unwrap());
    // Linux doubles buffer sizes for its bookkeeping (`man 7 socket`).
    s.set_send_buffer_size(64 * 1024).unwrap();
    assert_eq!(s.send_buffer_size().unwrap(), 128 * 1024);
    s.set_recv_buffer_size(32 * 1024).unwrap();
    assert_eq!(s.recv_buffer_size().unwrap(), 64 * 1024);
    s.set_tos(0x20).unwrap();
    assert_eq!(s.tos().unwrap(), 0x20);
    assert_eq!(s.take_error().unwrap().map(|e| e.to_string()), None);
}

/// `SO_BINDTODEVICE` takes the loopback interface, and an unknown one is the kernel's error.
#[runtime::test]
async fn bind_device_to_loopback() {
    let s = TcpSocket::new_v4().unwrap();
    assert_eq!(s.device().unwrap(), None);
    match s.bind_device(Some(b"lo")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            skip("tcp_socket::bind_device_to_loopback", &format!("{e}"));
            return;
        }
        Err(e) => panic!("bind_device(lo): {e}"),
    }
    assert_eq!(s.device().unwrap().as_deref(), Some(&b"lo"[..]));
    let err = s.bind_device(Some(b"no-such-if0")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
    s.bind_device(None).unwrap();
    assert_eq!(s.device().unwrap(), None);
}

/// Options set before `listen` are the listener's, and accepted connections inherit
/// `TCP_NODELAY`.
#[runtime::test]
async fn listen_keeps_options() {
    let srv = TcpSocket::new_v4().unwrap();
    srv.set_reuseaddr(true).unwrap();
    srv.set_nodelay(true).unwrap();
    srv.bind(any_v4()).unwrap();
    let fd = srv.as_raw_fd();
    let listener = srv.listen(16).unwrap();
    assert_eq!(listener.as_raw_fd(), fd, "listen keeps the socket");
    assert!(socket2::SockRef::from(&listener).reuse_address().unwrap());
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert!(accepted.nodelay().unwrap());
}

/// `listen` on an unbound socket binds it to a free port first, as `listen(2)` does.
#[runtime::test]
async fn listen_without_bind_picks_a_port() {
    let listener = TcpSocket::new_v4().unwrap().listen(8).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_ne!(port, 0);
    let _client = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    listener.accept().await.unwrap();
}

/// Binding to an address a listener holds is `AddrInUse`, with or without `SO_REUSEADDR`
/// (Linux lets sockets share an address only while none of them listens).
#[runtime::test]
async fn binding_an_address_in_use_is_addr_in_use() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap();
    for reuse in [false, true] {
        let s = TcpSocket::new_v4().unwrap();
        s.set_reuseaddr(reuse).unwrap();
        let err = s.bind(taken).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::AddrInUse,
            "reuseaddr {reuse}: {err}"
        );
    }
    // Without SO_REUSEADDR, an address an established connection uses is taken too.
    let client = TcpStream::connect(taken).await.unwrap();
    let s = TcpSocket::new_v4().unwrap();
    let err = s.bind(client.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
}

/// Two sockets sharing a local address (both `SO_REUSEADDR`) cannot both connect to the same
/// peer: the second connection's address pair is in use, and the io_uring connect reports the
/// kernel's `EADDRNOTAVAIL` (`__inet_hash_connect` in `net/ipv4/inet_hashtables.c`).
#[runtime::test]
async fn connecting_a_socket_bound_to_an_address_in_use_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let first = TcpSocket::new_v4().unwrap();
    first.set_reuseaddr(true).unwrap();
    first.bind(any_v4()).unwrap();
    let local = first.local_addr().unwrap();
    let _first = first.connect(server).await.unwrap();

    let second = TcpSocket::new_v4().unwrap();
    second.set_reuseaddr(true).unwrap();
    second.bind(local).unwrap();
    let err = second.connect(server).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable, "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
}

/// Nothing listening: the io_uring connect's `ECONNREFUSED`.
#[runtime::test]
async fn connect_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = TcpSocket::new_v4()
        .unwrap()
        .connect((Ipv4Addr::LOCALHOST, port).into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

/// An IPv4 socket cannot bind or connect to an IPv6 address: the kernel's error.
#[runtime::test]
async fn wrong_family_is_an_error() {
    let s = TcpSocket::new_v4().unwrap();
    let err = s.bind("[::1]:0".parse().unwrap()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT), "{err}");
    let err = s.connect("[::1]:9".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT), "{err}");
}

/// Dropping a connect in flight cancels it and closes the socket.
#[runtime::test]
async fn dropped_connect_closes_the_socket() {
    // A full backlog makes the kernel drop the SYN, so the connect stays in flight.
    let listener = TcpSocket::new_v4().unwrap();
    listener.bind(any_v4()).unwrap();
    let listener = listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    let mut pending = None;
    for _ in 0..8 {
        let socket = TcpSocket::new_v4().unwrap();
        let fd = socket.as_raw_fd();
        let target = fd_target(fd).unwrap();
        let mut connect = Box::pin(socket.connect(addr));
        match poll_once(&mut connect).await {
            Poll::Ready(res) => filling.push(res.unwrap()),
            Poll::Pending => {
                // Give the kernel time to answer; a connect still pending then is stuck.
                match timeout(Duration::from_millis(50), &mut connect).await {
                    Ok(res) => filling.push(res.unwrap()),
                    Err(_) => {
                        pending = Some((connect, fd, target));
                        break;
                    }
                }
            }
        }
    }
    let Some((connect, fd, target)) = pending else {
        skip(
            "tcp_socket::dropped_connect_closes_the_socket",
            "every connect completed: the kernel never left one pending",
        );
        return;
    };
    assert!(!closed(fd, &target));
    drop(connect);
    assert!(turns_until(1000, || metrics().ops_in_flight == 0).await);
    assert!(
        closed(fd, &target),
        "the cancelled connect's socket is still open"
    );
    drop((filling, listener));
}

/// `from_std_stream` adopts an unconnected socket; fds convert both ways.
#[runtime::test]
async fn std_and_raw_fd_conversions() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let std_stream: std::net::TcpStream = raw.into();
    let s = TcpSocket::from_std_stream(std_stream);
    s.set_nodelay(true).unwrap();

    let fd = s.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`, and nothing else owns it.
    let s = unsafe { TcpSocket::from_raw_fd(fd) };
    assert_eq!(s.as_fd().as_raw_fd(), fd);
    let stream = s.connect(addr).await.unwrap();
    assert_eq!(stream.as_raw_fd(), fd);
    assert!(stream.nodelay().unwrap());
    listener.accept().await.unwrap();
}

/// A connect that is never polled does nothing, and its socket closes with it.
#[runtime::test]
async fn an_unpolled_connect_is_free() {
    let socket = TcpSocket::new_v4().unwrap();
    let fd = socket.as_raw_fd();
    let target = fd_target(fd).unwrap();
    let connect = socket.connect(any_v4());
    drop(connect);
    assert!(
        closed(fd, &target),
        "the dropped connect's socket is still open"
    );
    assert_eq!(metrics().ops_in_flight, 0);
}
