//! Socket options by tokio's names on `TcpStream`, `TcpListener` and `UdpSocket`: each one
//! round-trips through the kernel, bad values give the kernel's error (or `InvalidInput` for
//! values the kernel's `int` cannot hold), and the options act: linger 0 resets, multicast
//! groups deliver. The round-trips follow tokio's option tests (`tokio/tests/tcp_socket.rs`
//! `basic_linger`, `tokio/tests/udp.rs`, and the `set_ttl`/`ttl` doc examples of tokio's
//! `TcpStream`, `TcpListener` and `UdpSocket`).

use std::{
    io::{self, Read},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use integration_tests::{skip, stream_with_std_peer, tcp_pair};
use net::{TcpKeepalive, TcpListener, TcpStream, UdpSocket};
use runtime::time::timeout;

fn have_ipv6(test: &str) -> bool {
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            skip(test, &format!("no IPv6 loopback ([::1]: {e})"));
            false
        }
    }
}

/// `set_ttl(v)` then `ttl()` gives `v`, and the kernel's range (1 to 255) is enforced with
/// its `EINVAL`.
fn check_ttl(name: &str, set: impl Fn(u32) -> io::Result<()>, get: impl Fn() -> io::Result<u32>) {
    set(77).unwrap();
    assert_eq!(get().unwrap(), 77, "{name}");
    set(255).unwrap();
    assert_eq!(get().unwrap(), 255, "{name}");
    for bad in [0, 256] {
        let err = set(bad).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EINVAL),
            "{name} ttl {bad}: {err}"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    // Cast to the kernel's int, this would be -1, "the default": refused instead.
    for bad in [u32::MAX, 1 << 31] {
        let err = set(bad).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "{name} ttl {bad}: {err}"
        );
        assert!(err.to_string().contains("1 to 255"), "{err}");
    }
    assert_eq!(
        get().unwrap(),
        255,
        "{name}: a refused value changed the TTL"
    );
}

#[runtime::test]
async fn ttl_round_trips_on_every_socket_type() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    check_ttl("listener", |v| listener.set_ttl(v), || listener.ttl());
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    check_ttl("stream", |v| stream.set_ttl(v), || stream.ttl());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    check_ttl("udp", |v| udp.set_ttl(v), || udp.ttl());
}

/// On an IPv6 socket the TTL is the hop limit (`IPV6_UNICAST_HOPS`), and the IPv4 TTL of
/// mapped traffic follows it.
#[runtime::test]
async fn ttl_on_ipv6_sockets_is_the_hop_limit() {
    if !have_ipv6("socket_options::ttl_on_ipv6_sockets_is_the_hop_limit") {
        return;
    }
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    check_ttl("udp6", |v| udp.set_ttl(v), || udp.ttl());
    udp.set_ttl(33).unwrap();
    let sock = socket2::SockRef::from(&udp);
    assert_eq!(sock.unicast_hops_v6().unwrap(), 33);
    assert_eq!(sock.ttl_v4().unwrap(), 33);
    let listener = TcpListener::bind("[::1]:0").unwrap();
    check_ttl("listener6", |v| listener.set_ttl(v), || listener.ttl());
}

/// The TTL reaches the wire: a datagram's `IP_RECVTTL` control message carries it.
#[runtime::test]
async fn ttl_is_what_the_peer_sees() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one `c_int` from the live local `on`.
    let ret = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "{}", io::Error::last_os_error());
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.set_ttl(42).unwrap();
    let (res, _) = tx.send_to(b"ttl", rx.local_addr().unwrap()).await;
    res.unwrap();
    let (res, _, control) = rx
        .recv_msg(Vec::with_capacity(16), Vec::with_capacity(64))
        .await;
    res.unwrap();
    // One cmsghdr (16 bytes on 64-bit Linux) followed by the TTL as an int.
    assert!(control.len() >= 20, "no control message: {control:?}");
    let level = i32::from_ne_bytes(control[8..12].try_into().unwrap());
    let kind = i32::from_ne_bytes(control[12..16].try_into().unwrap());
    let ttl = i32::from_ne_bytes(control[16..20].try_into().unwrap());
    assert_eq!((level, kind, ttl), (libc::IPPROTO_IP, libc::IP_TTL, 42));
}

#[runtime::test]
async fn tos_round_trips_on_every_socket_type() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_tos(0x28).unwrap();
    assert_eq!(listener.tos().unwrap(), 0x28);
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    stream.set_tos(0x10).unwrap();
    assert_eq!(stream.tos().unwrap(), 0x10);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // UDP keeps all eight bits, ECN included.
    udp.set_tos(0xb9).unwrap();
    assert_eq!(udp.tos().unwrap(), 0xb9);
    let err = udp.set_tos(u32::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(udp.tos().unwrap(), 0xb9);
    if have_ipv6("socket_options::tos_round_trips_on_every_socket_type") {
        let udp6 = UdpSocket::bind("[::1]:0").unwrap();
        udp6.set_tos(0x48).unwrap();
        assert_eq!(udp6.tos().unwrap(), 0x48);
        assert_eq!(socket2::SockRef::from(&udp6).tclass_v6().unwrap(), 0x48);
        // The kernel checks the traffic class: at most 255.
        let err = udp6.set_tos(256).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}

// After tokio/tests/tcp_socket.rs `basic_linger`, on a connected stream.
#[runtime::test]
async fn linger_round_trips() {
    let (stream, _peer) = tcp_pair().await;
    assert_eq!(stream.linger().unwrap(), None);
    stream.set_linger(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(stream.linger().unwrap(), Some(Duration::from_secs(3)));
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    assert_eq!(stream.linger().unwrap(), Some(Duration::ZERO));
    // As an int this would be negative, which the kernel reads as "forever".
    let err = stream
        .set_linger(Some(Duration::from_secs(1 << 31)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(stream.linger().unwrap(), Some(Duration::ZERO));
    stream.set_linger(None).unwrap();
    assert_eq!(stream.linger().unwrap(), None);
}

/// With a linger time of zero, dropping the stream resets the connection: the peer reads
/// `ConnectionReset`, not EOF.
#[runtime::test]
async fn zero_linger_resets_on_close() {
    let (stream, mut peer) = stream_with_std_peer().await;
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
    let mut buf = [0u8; 8];
    let err = peer.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

#[runtime::test]
async fn keepalive_parameters_round_trip() {
    let (stream, _peer) = tcp_pair().await;
    assert!(!stream.keepalive().unwrap());
    let params = TcpKeepalive::new()
        .with_time(Duration::from_secs(61))
        .with_interval(Duration::from_secs(7))
        .with_retries(4);
    stream.set_tcp_keepalive(&params).unwrap();
    assert!(stream.keepalive().unwrap());
    assert_eq!(stream.keepalive_time().unwrap(), Duration::from_secs(61));
    assert_eq!(stream.keepalive_interval().unwrap(), Duration::from_secs(7));
    assert_eq!(stream.keepalive_retries().unwrap(), 4);
    stream.set_keepalive(false).unwrap();
    assert!(!stream.keepalive().unwrap());
    // The kernel's limit for TCP_KEEPCNT is 127 (`tcp_sock_set_keepcnt`).
    let err = stream
        .set_tcp_keepalive(&TcpKeepalive::new().with_retries(1000))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}

/// The buffer sizes and `TCP_NODELAY` that `TcpStream` already had keep working.
#[runtime::test]
async fn stream_buffer_sizes_and_nodelay() {
    let (stream, _peer) = tcp_pair().await;
    stream.set_send_buffer_size(48 * 1024).unwrap();
    assert_eq!(stream.send_buffer_size().unwrap(), 96 * 1024);
    stream.set_recv_buffer_size(24 * 1024).unwrap();
    assert_eq!(stream.recv_buffer_size().unwrap(), 48 * 1024);
    stream.set_nodelay(true).unwrap();
    assert!(stream.nodelay().unwrap());
    assert!(stream.take_error().unwrap().is_none());
}

#[runtime::test]
async fn broadcast_round_trips() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(!udp.broadcast().unwrap());
    udp.set_broadcast(true).unwrap();
    assert!(udp.broadcast().unwrap());
    udp.set_broadcast(false).unwrap();
    assert!(!udp.broadcast().unwrap());
}

#[runtime::test]
async fn multicast_options_round_trip() {
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    assert!(udp.multicast_loop_v4().unwrap());
    udp.set_multicast_loop_v4(false).unwrap();
    assert!(!udp.multicast_loop_v4().unwrap());
    assert_eq!(udp.multicast_ttl_v4().unwrap(), 1);
    udp.set_multicast_ttl_v4(9).unwrap();
    assert_eq!(udp.multicast_ttl_v4().unwrap(), 9);
    let err = udp.set_multicast_ttl_v4(256).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    let err = udp.set_multicast_ttl_v4(u32::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(udp.multicast_ttl_v4().unwrap(), 9);
    if have_ipv6("socket_options::multicast_options_round_trip") {
        let udp6 = UdpSocket::bind("[::]:0").unwrap();
        assert!(udp6.multicast_loop_v6().unwrap());
        udp6.set_multicast_loop_v6(false).unwrap();
        assert!(!udp6.multicast_loop_v6().unwrap());
    }
}

/// A group joined on the loopback interface delivers datagrams sent to it there; leaving it
/// twice is the kernel's `EADDRNOTAVAIL`.
#[runtime::test]
async fn joined_multicast_group_delivers() {
    const TEST: &str = "socket_options::joined_multicast_group_delivers";
    let group = Ipv4Addr::new(239, 255, 42, 99);
    let rx = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    if let Err(e) = rx.join_multicast_v4(group, Ipv4Addr::LOCALHOST) {
        skip(
            TEST,
            &format!("cannot join a group on the loopback interface: {e}"),
        );
        return;
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&tx)
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .unwrap();
    let (res, _) = tx.send_to(b"to the group", (group, port)).await;
    res.unwrap();
    let (res, buf) = timeout(Duration::from_secs(5), rx.recv_from(Vec::with_capacity(64)))
        .await
        .expect("the group's datagram never arrived");
    let (n, from) = res.unwrap();
    assert_eq!(&buf[..n], b"to the group");
    assert_eq!(from, tx.local_addr().unwrap());
    rx.leave_multicast_v4(group, Ipv4Addr::LOCALHOST).unwrap();
    let err = rx
        .leave_multicast_v4(group, Ipv4Addr::LOCALHOST)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
}

#[runtime::test]
async fn ipv6_multicast_join_and_leave() {
    const TEST: &str = "socket_options::ipv6_multicast_join_and_leave";
    if !have_ipv6(TEST) {
        return;
    }
    let group: Ipv6Addr = "ff02::1:4242".parse().unwrap();
    let udp = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).unwrap();
    // Interface 0: the kernel picks one by route; machines without one refuse.
    if let Err(e) = udp.join_multicast_v6(&group, 0) {
        skip(TEST, &format!("cannot join an IPv6 group: {e}"));
        return;
    }
    udp.leave_multicast_v6(&group, 0).unwrap();
    let err = udp.leave_multicast_v6(&group, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
}
