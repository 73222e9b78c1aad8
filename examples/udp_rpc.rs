//! UDP request/response: a server that answers each request with its id, and a client that
//! numbers its requests, waits for the matching reply with a timeout, and retries.
//!
//! ```text
//! cargo run --release --example udp_rpc [ADDR] [--requests N]   # default 127.0.0.1:8091, 10
//! ```
//!
//! Both run in one program: the server on `ADDR`, the client sending `N` requests to it. A
//! datagram is an 8-byte big-endian request id followed by the payload; the server echoes it
//! unchanged. UDP may lose or duplicate datagrams, so the client waits for each reply with
//! `CancelExt::timeout_at` (the receive is cancelled and its buffer handed back at the
//! deadline), resends on timeout, and ignores replies whose id is not the one it waits for
//! (late answers to an earlier attempt).

use std::{io, net::SocketAddr, time::Duration};

use net::UdpSocket;
use runtime::{op::CancelExt, time::Instant};

const DEFAULT_ADDR: &str = "127.0.0.1:8091";

/// The largest datagram either side reads.
const MAX_DATAGRAM: usize = 2048;

/// Bytes of the request id in front of each payload.
const ID_LEN: usize = 8;

fn main() -> io::Result<()> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut requests = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--requests" {
            requests = args
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage("--requests takes a number"));
        } else if arg.starts_with('-') {
            usage(&format!("unknown option {arg}"));
        } else {
            addr = arg;
        }
    }
    runtime::Runtime::new()?.block_on(async move {
        let server_socket = UdpSocket::bind(addr.as_str())?;
        let server_addr = server_socket.local_addr()?;
        eprintln!("udp_rpc server on {server_addr}");
        runtime::spawn(serve(server_socket));
        let mut client = Client::connect(server_addr, Duration::from_millis(200), 3).await?;
        for i in 0..requests {
            let started = Instant::now();
            let request = format!("request {i}");
            let reply = client.call(request.as_bytes()).await?;
            println!(
                "{:?} in {:?}",
                String::from_utf8_lossy(&reply),
                started.elapsed()
            );
        }
        Ok(())
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: udp_rpc [ADDR] [--requests N]");
    std::process::exit(2)
}

/// The server: answers every datagram that carries an id with the same datagram. Runs until
/// the socket fails.
pub(crate) async fn serve(socket: UdpSocket) -> io::Result<()> {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        let (res, b) = socket.recv_from(buf).await;
        buf = b;
        let (n, from) = res?;
        if n >= ID_LEN {
            let (res, _) = socket.send_to(buf[..n].to_vec(), from).await;
            if let Err(e) = res {
                eprintln!("reply to {from} failed: {e}");
            }
        }
        buf.clear();
    }
}

/// The client: one connected socket, numbered requests, a per-attempt timeout and retries.
#[derive(Debug)]
pub(crate) struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u64,
    timeout: Duration,
    retries: u32,
}

impl Client {
    /// A client of `server` that waits `timeout` for each attempt and retries `retries` times.
    pub(crate) async fn connect(
        server: SocketAddr,
        timeout: Duration,
        retries: u32,
    ) -> io::Result<Client> {
        let any: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("a valid address")
        } else {
            "[::]:0".parse().expect("a valid address")
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(server).await?;
        Ok(Client {
            socket,
            server,
            next_id: 0,
            timeout,
            retries,
        })
    }

    /// Sends `payload` as a new request and returns the reply's payload.
    ///
    /// # Errors
    ///
    /// `TimedOut` when no reply came after every attempt; the socket's error otherwise.
    pub(crate) async fn call(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = Vec::with_capacity(ID_LEN + payload.len());
        request.extend_from_slice(&id.to_be_bytes());
        request.extend_from_slice(payload);
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        for _attempt in 0..=self.retries {
            let (res, sent) = self.socket.send(request).await;
            request = sent;
            res?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let (res, b) = self.socket.recv(buf).timeout_at(deadline).await;
                buf = b;
                match res {
                    Ok(n) if n >= ID_LEN && buf[..ID_LEN] == id.to_be_bytes() => {
                        return Ok(buf[ID_LEN..n].to_vec());
                    }
                    // A late reply to an earlier request, or a stray datagram.
                    Ok(_) => buf.clear(),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                    // The server's port is closed (ICMP unreachable): it may be starting.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no reply from {} to request {id} after {} attempts of {:?}: is the server \
                 running there?",
                self.server,
                self.retries + 1,
                self.timeout
            ),
        ))
    }
}
