//! HTTP server with hyper: HTTP/1.1 and HTTP/2 (prior knowledge, `h2c`) on one port. Every
//! request gets `Hello, world!`, except `POST /echo`, whose body is streamed back.
//!
//! ```text
//! cargo run --release --example http_server [ADDR] [--ring]   # default 127.0.0.1:8080
//! curl http://127.0.0.1:8080/                                  # Hello, world!
//! curl --http2-prior-knowledge http://127.0.0.1:8080/          # the same over HTTP/2
//! curl --data-binary @some-file http://127.0.0.1:8080/echo     # the file comes back
//! ```
//!
//! Each connection is a `net::TcpStream` made into tokio's I/O traits by `compat()` (feature
//! `tokio-io` of `net`) and handed to hyper through hyper-util's `TokioIo`; hyper's executor
//! and timer are `runtime::compat::{HyperExecutor, HyperTimer}` (feature `hyper` of
//! `runtime`). With `--ring`, reads take buffers from one shared `BufRing` only when data
//! arrives (`compat_with_ring`), so idle keep-alive connections hold no receive buffer.

use hyper_util::rt::TokioIo;
use net::{ListenerOptions, TcpListener};
use runtime::buf::BufRing;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    examples::export_metrics();
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut ring = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            // 4096 buffers of 4 KiB: only the ones in circulation become resident memory.
            "--ring" => ring = Some(BufRing::builder().entries(4096).buf_len(4096).build()?),
            _ if arg.starts_with('-') => {
                eprintln!("unknown option {arg}\nusage: http_server [ADDR] [--ring]");
                std::process::exit(2);
            }
            _ => addr = arg,
        }
    }
    let listener = TcpListener::bind_with(addr.as_str(), ListenerOptions::new().nodelay(true))?;
    eprintln!("http_server listening on http://{}", listener.local_addr()?);
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        let stream = match conn {
            Ok(stream) => stream,
            // Out of descriptors and the like: `incoming` already waits before retrying.
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let io = match &ring {
            Some(ring) => stream.compat_with_ring(ring),
            None => stream.compat(),
        };
        runtime::spawn(async move {
            // A peer that goes away mid-request is its own business; the server carries on.
            if let Err(e) = examples::http::serve_connection(TokioIo::new(io)).await {
                eprintln!("connection ended: {e}");
            }
        });
    }
    Ok(())
}
