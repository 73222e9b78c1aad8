//! Conveniences: every address form tokio's `ToSocketAddrs` takes (references included) is
//! accepted by `bind`, `connect` and `send_to`; byte-string literals are buffers; vectored
//! UDP sends and receives gather and scatter one datagram over owned buffers. The address
//! forms follow tokio's `tokio/tests/net_lookup_host.rs` and the impls listed on tokio's
//! `ToSocketAddrs`; `bind_without_a_runtime` follows `tokio/tests/net_bind_resource.rs`.

// Passing references where values would do is what these tests check.
#![allow(clippy::needless_borrows_for_generic_args)]

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use integration_tests::{poll_once, stream_with_std_peer};
use net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket, udp::Truncated};
use runtime::{buf::IoBuf, time::timeout};

/// Compiles only if `A` is an address form.
fn is_address<A: ToSocketAddrs>(_: A) {}

/// Each form compiles, by value and by reference (what tokio accepts).
#[test]
fn every_form_is_an_address() {
    let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let string = String::from("127.0.0.1:80");
    let list = [addr, addr];
    is_address(addr);
    is_address(&addr);
    is_address(v4);
    is_address(&v4);
    is_address((ip, 80));
    is_address(&(ip, 80));
    is_address((Ipv4Addr::LOCALHOST, 80));
    is_address(&(Ipv4Addr::LOCALHOST, 80));
    is_address("127.0.0.1:80");
    is_address(&"127.0.0.1:80");
    is_address(string.clone());
    is_address(&string);
    is_address(("localhost", 80));
    is_address(&("localhost", 80));
    is_address((string.clone(), 80));
    is_address(&list[..]);
    is_address(list.to_vec());
}

// After tokio/tests/net_bind_resource.rs: there, converting a std listener outside a runtime
// panics; here binding and converting need no runtime at all.
#[test]
fn bind_without_a_runtime() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = TcpListener::from_std(std_listener);
    assert_ne!(listener.local_addr().unwrap().port(), 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_ne!(udp.local_addr().unwrap().port(), 0);
}

/// `bind`, `connect` and `send_to` take references and strings of every kind, and the
/// connections and datagrams they make work.
#[runtime::test]
async fn references_and_strings_bind_connect_and_send() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = TcpListener::bind(&any).unwrap();
    let addr = listener.local_addr().unwrap();
    let text = addr.to_string();
    let ip = addr.ip();
    let port = addr.port();
    let streams = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&(ip, port)).await.unwrap(),
        TcpStream::connect(&text).await.unwrap(),
        TcpStream::connect(text.as_str()).await.unwrap(),
        TcpStream::connect(text.clone()).await.unwrap(),
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        TcpStream::connect(&("localhost", port)).await.unwrap(),
        TcpStream::connect(&[addr][..]).await.unwrap(),
    ];
    for stream in &streams {
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
    }
    drop(TcpListener::bind(&(Ipv4Addr::LOCALHOST, 0)).unwrap());
    drop(TcpListener::bind(&String::from("127.0.0.1:0")).unwrap());

    let rx = UdpSocket::bind(&"127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let to_text = to.to_string();
    let tx = UdpSocket::bind(String::from("127.0.0.1:0")).unwrap();
    for (i, sent) in [
        tx.send_to(b"0", &to).await,
        tx.send_to(b"1", &(to.ip(), to.port())).await,
        tx.send_to(b"2", &to_text).await,
        tx.send_to(b"3", to_text.as_str()).await,
        tx.send_to(b"4", ("127.0.0.1", to.port())).await,
    ]
    .into_iter()
    .enumerate()
    {
        sent.0.unwrap_or_else(|e| panic!("send {i}: {e}"));
        let (res, buf) = rx.recv_from(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap().0, 1);
        assert_eq!(buf, i.to_string().as_bytes());
    }
    tx.connect(&to).await.unwrap();
    assert_eq!(tx.peer_addr().unwrap(), to);
}

/// Malformed strings are `InvalidInput`, by reference too.
#[runtime::test]
async fn malformed_references_are_invalid_input() {
    let bad = String::from("127.0.0.1");
    let err = TcpStream::connect(&bad).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let err = UdpSocket::bind(&bad).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

/// A byte-string literal (`&'static [u8; N]`) is a buffer: `write_all(b"...")` compiles and
/// sends it, and the literal comes back.
#[runtime::test]
async fn byte_string_literals_are_buffers() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    let (res, literal) = stream.write_all(b"ping\n").await;
    res.unwrap();
    assert_eq!(literal, b"ping\n");
    let (res, _) = stream.write_all(b"abcdef".slice(2..4)).await;
    res.unwrap();
    stream.flush().await.unwrap();
    let mut buf = [0u8; 7];
    std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
    assert_eq!(&buf, b"ping\ncd");
}

/// `send_vectored` gathers the buffers into one datagram; `recv_vectored` scatters one over
/// several buffers, each filled from its start in order.
#[runtime::test]
async fn vectored_datagrams_gather_and_scatter() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).await.unwrap();
    let parts = vec![
        b"head:".to_vec(),
        Vec::new(),
        b"body".to_vec(),
        b"!".to_vec(),
    ];
    let (res, parts) = tx.send_vectored(parts).await;
    assert_eq!(res.unwrap(), 10);
    assert_eq!(parts[2], b"body", "the buffers come back");
    let (res, buf) = rx.recv_from(Vec::with_capacity(64)).await;
    assert_eq!(res.unwrap().0, 10);
    assert_eq!(buf, b"head:body!");

    let (res, _) = tx
        .send_to_vectored(vec![&b"to "[..], &b"addr"[..]], rx.local_addr().unwrap())
        .await;
    assert_eq!(res.unwrap(), 7);
    let bufs = vec![
        Vec::with_capacity(2),
        Vec::with_capacity(3),
        Vec::with_capacity(64),
    ];
    let caps: Vec<usize> = bufs.iter().map(Vec::capacity).collect();
    let (res, bufs) = rx.recv_vectored(bufs).await;
    let (n, from) = res.unwrap();
    assert_eq!((n, from), (7, tx.local_addr().unwrap()));
    let joined: Vec<u8> = bufs.concat();
    assert_eq!(joined, b"to addr");
    assert_eq!(
        bufs[0].len(),
        caps[0].min(7),
        "the first buffer is filled first"
    );
}

/// A datagram larger than the buffers together is `Truncated`; the buffers hold its start.
#[runtime::test]
async fn vectored_receive_reports_truncation() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let data: Vec<u8> = (0..100).collect();
    let (res, _) = tx.send_to(data.clone(), rx.local_addr().unwrap()).await;
    res.unwrap();
    let bufs = vec![
        vec![0u8; 8].into_boxed_slice(),
        vec![0u8; 8].into_boxed_slice(),
    ];
    let (res, bufs) = rx.recv_vectored(bufs).await;
    let err = res.unwrap_err();
    let truncated = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Truncated>())
        .copied()
        .expect("a Truncated error");
    assert_eq!((truncated.len, truncated.capacity), (100, 16));
    assert_eq!(bufs.concat(), &data[..16]);
}

/// A dropped vectored receive loses no datagram: the next receive returns it.
#[runtime::test]
async fn dropped_vectored_receive_keeps_its_datagram() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut recv = Box::pin(rx.recv_vectored(vec![Vec::with_capacity(4), Vec::with_capacity(64)]));
    assert!(poll_once(&mut recv).await.is_pending());
    let (res, _) = tx.send_to(b"kept datagram", rx.local_addr().unwrap()).await;
    res.unwrap();
    runtime::time::sleep(Duration::from_millis(20)).await;
    drop(recv);
    let (res, buf) = timeout(Duration::from_secs(5), rx.recv_from(Vec::with_capacity(64)))
        .await
        .expect("the dropped receive's datagram was lost");
    let (n, from) = res.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"kept datagram"[..], tx.local_addr().unwrap())
    );
}

/// Without a connected peer, `send_vectored` is the kernel's error.
#[runtime::test]
async fn send_vectored_needs_a_peer() {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (res, bufs) = tx.send_vectored(vec![b"x".to_vec()]).await;
    let err = res.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDESTADDRREQ), "{err}");
    assert_eq!(bufs, [b"x".to_vec()]);
}
