//! The client against small blocking servers on threads: honest ones, and ones that corrupt,
//! hang up, drop or duplicate, each of which the client must report or survive as documented;
//! and the `TCP_NODELAY` census the benchmark runs on its servers.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use super::{Client, Window};

/// A TCP server on a thread: every accepted connection is handled by `serve` on its own thread.
fn tcp_server(serve: fn(std::net::TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Echoes every byte, passing on whatever `change` does to each chunk read.
fn echo_with(mut stream: std::net::TcpStream, change: fn(&mut [u8])) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        change(&mut buf[..n]);
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn echo(stream: std::net::TcpStream) {
    echo_with(stream, |_| {});
}

fn run(client: &mut Client) -> io::Result<Window> {
    let (mut starts, mut ends) = (0, 0);
    let w = client.run(
        Duration::from_millis(30),
        Duration::from_millis(100),
        &mut || starts += 1,
        &mut || ends += 1,
    );
    if w.is_ok() {
        assert_eq!((starts, ends), (1, 1), "each window edge is reported once");
    }
    w
}

#[test]
fn tcp_pingpong_counts_every_echo_once() {
    let addr = tcp_server(echo);
    let mut client = Client::tcp(addr, 4, 64).unwrap();
    let w = run(&mut client).unwrap();
    assert!(w.messages > 0, "no echo completed");
    assert_eq!(w.latencies_ns.len() as u64, w.messages);
    assert!(w.latencies_ns.is_sorted());
    assert!(w.quantile_us(0.5) > 0.0 && w.quantile_us(0.5) <= w.quantile_us(0.99));
    assert!(w.elapsed >= Duration::from_millis(100));
}

#[test]
fn tcp_chunks_larger_than_socket_buffers_complete() {
    // 1 MiB chunks cannot go out in one write: partial writes and reads must resume.
    let addr = tcp_server(echo);
    let mut client = Client::tcp(addr, 2, 1 << 20).unwrap();
    client.exchange_once().unwrap();
    client.exchange_once().unwrap();
}

#[test]
fn tcp_corrupted_echo_is_an_error() {
    let addr = tcp_server(|s| {
        echo_with(s, |b| {
            if let Some(last) = b.last_mut() {
                *last ^= 1;
            }
        })
    });
    let mut client = Client::tcp(addr, 1, 64).unwrap();
    let err = client.exchange_once().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn tcp_server_hanging_up_is_an_error() {
    let addr = tcp_server(|mut s| {
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    });
    let mut client = Client::tcp(addr, 1, 64).unwrap();
    assert!(run(&mut client).is_err());
}

/// A UDP server on a thread; `serve` answers each datagram (its index, its bytes) with any
/// number of datagrams.
fn udp_server(serve: fn(u64, &[u8]) -> Vec<Vec<u8>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        for i in 0u64.. {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            for reply in serve(i, &buf[..n]) {
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    addr
}

#[test]
fn udp_lost_datagram_is_sent_again() {
    // The first datagram is dropped; its resend is answered.
    let addr = udp_server(|i, d| if i == 0 { vec![] } else { vec![d.to_vec()] });
    let mut client = Client::udp(addr, 1, 64).unwrap();
    client.exchange_once().unwrap();
    assert_eq!(client.resent(), 1);
}

#[test]
fn udp_duplicate_echoes_are_ignored() {
    let addr = udp_server(|_, d| vec![d.to_vec(), d.to_vec()]);
    let mut client = Client::udp(addr, 2, 64).unwrap();
    let w = run(&mut client).unwrap();
    assert!(w.messages > 0);
    assert_eq!(w.resent, 0);
}

#[test]
fn udp_echo_of_another_length_is_an_error() {
    let addr = udp_server(|_, d| {
        let mut longer = d.to_vec();
        longer.push(0);
        vec![longer]
    });
    let mut client = Client::udp(addr, 1, 64).unwrap();
    let err = client.exchange_once().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn messages_too_small_to_stamp_are_refused() {
    let addr = tcp_server(echo);
    let err = Client::tcp(addr, 1, 8).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// With `CENSUS_CHILD` set, the body of [`nodelay_census_reads_another_process`]'s child: a
/// listener and one connection, `TCP_NODELAY` on its client end only; then it waits for stdin
/// to close. Without it, nothing.
#[test]
fn census_child() {
    if std::env::var_os("CENSUS_CHILD").is_none() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    accepted.set_nodelay(false).unwrap();
    println!("ready");
    let _ = io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn nodelay_census_reads_another_process() {
    use std::{
        io::BufRead,
        process::{Command, Stdio},
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "epoll_client::tests::census_child",
            "--nocapture",
        ])
        .env("CENSUS_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains("ready") {
        line.clear();
    }
    let census = crate::tcp_nodelay_census(child.id());
    drop(child.stdin.take());
    child.wait().unwrap();
    // Two connected ends (the listener does not count), one of them with TCP_NODELAY.
    assert_eq!(census.unwrap(), (2, 1));
}
