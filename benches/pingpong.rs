//! A blocking one-connection ping-pong client for `benches/instructions.sh`: sends `N`
//! messages of `SIZE` bytes to an echo server, one at a time, each after the whole echo of
//! the previous one came back, so the server handles exactly `N` messages.
//!
//! ```text
//! pingpong ADDR N SIZE [udp]
//! ```
//!
//! It waits up to 30 s for the server to answer first (a server under valgrind starts
//! slowly). Exits non-zero, saying why, when the server does not answer or echoes wrong bytes.

use std::{
    io::{self, Read, Write},
    net::{TcpStream, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

const STARTUP: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(n), Some(size)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: pingpong ADDR N SIZE [udp]");
        return ExitCode::from(2);
    };
    let udp = args.get(3).is_some_and(|a| a == "udp");
    let res = if udp {
        udp_pingpong(addr, n, size)
    } else {
        tcp_pingpong(addr, n, size)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The message of round `i`: its bytes differ from round to round, so a stale echo shows.
fn message(i: u64, size: usize) -> Vec<u8> {
    (0..size).map(|k| (i as usize + k) as u8).collect()
}

fn tcp_pingpong(addr: &str, n: u64, size: usize) -> io::Result<()> {
    let start = Instant::now();
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(_) if start.elapsed() < STARTUP => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e),
        }
    };
    stream.set_nodelay(true)?;
    let mut echo = vec![0; size];
    for i in 0..n {
        let msg = message(i, size);
        stream.write_all(&msg)?;
        stream.read_exact(&mut echo)?;
        if echo != msg {
            return Err(io::Error::other(format!("message {i} came back altered")));
        }
    }
    Ok(())
}

fn udp_pingpong(addr: &str, n: u64, size: usize) -> io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(addr)?;
    let mut echo = vec![0; size + 1];
    // Until the server answers, the first datagram is sent again (it may not listen yet).
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let first = message(0, size);
    loop {
        let _ = socket.send(&first);
        match socket.recv(&mut echo) {
            Ok(len) if echo[..len] == first[..] => break,
            Ok(_) => return Err(io::Error::other("the first datagram came back altered")),
            Err(_) if start.elapsed() < STARTUP => {}
            Err(e) => return Err(e),
        }
    }
    // Echoes of the repeated first datagram still on their way are not answers to later ones.
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    while let Ok(len) = socket.recv(&mut echo) {
        if echo[..len] != first[..] {
            return Err(io::Error::other("an unexpected datagram came back"));
        }
    }
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    for i in 1..n {
        let msg = message(i, size);
        socket.send(&msg)?;
        let len = socket.recv(&mut echo)?;
        if echo[..len] != msg[..] {
            return Err(io::Error::other(format!("datagram {i} came back altered")));
        }
    }
    Ok(())
}
