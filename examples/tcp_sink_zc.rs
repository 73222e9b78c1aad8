//! A TCP sink that receives with zero copy where it can: prints throughput and which receive
//! path is in use (the ZCRX area, or the provided-buffer ring fallback).
//!
//! ```text
//! cargo run --release --example tcp_sink_zc [ADDR] [INTERFACE QUEUE]
//! cargo run --release --example tcp_sink_zc 0.0.0.0:9000 eth1 4    # ZCRX on eth1 queue 4
//! ```
//!
//! Without an interface it uses provided buffers only. With one, ZCRX is attempted in `Auto`
//! mode: if the NIC cannot host it the reason is printed and the sink falls back. See
//! docs/zcrx.md for the NIC setup. Try it with `cat /dev/zero | nc 127.0.0.1 9000`.

use std::time::{Duration, Instant};

use net::{TcpListener, TcpStream};
use runtime::{
    Builder,
    buf::BufRing,
    zcrx::{ZcrxConfig, ZcrxMode},
};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let mut builder = Builder::new();
    if let Some(interface) = args.next() {
        let queue = args.next().and_then(|q| q.parse().ok()).unwrap_or(0);
        let mut zcrx = ZcrxConfig::new(interface, queue);
        zcrx.mode(ZcrxMode::Auto);
        builder.zcrx(zcrx);
    }
    let rt = builder.build()?;
    let caps = rt.capabilities();
    match caps.zcrx() {
        Some(zcrx) => eprintln!("zero-copy receive: {zcrx}"),
        None => eprintln!(
            "zero-copy receive not in use: {}",
            caps.notes()
                .iter()
                .find(|n| n.contains("zero-copy receive"))
                .map_or("no interface given", String::as_str)
        ),
    }
    rt.block_on(async move {
        let ring = BufRing::builder()
            .entries(1024)
            .buf_len(64 * 1024)
            .build()?;
        let listener = TcpListener::bind(addr.as_str())?;
        eprintln!("tcp_sink_zc listening on {}", listener.local_addr()?);
        let mut incoming = listener.incoming();
        while let Some(conn) = incoming.next().await {
            match conn {
                Ok(stream) => {
                    runtime::spawn(sink(stream, ring.clone()));
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
        Ok(())
    })
}

async fn sink(mut stream: TcpStream, ring: BufRing) {
    let peer = stream.peer_addr().ok();
    let mut rx = stream.recv_zero_copy(&ring);
    let path = if rx.is_zcrx() {
        "ZCRX area"
    } else {
        "provided-buffer ring"
    };
    let start = Instant::now();
    let mut window = Instant::now();
    let (mut total, mut in_window) = (0u64, 0u64);
    while let Some(item) = rx.next().await {
        match item {
            Ok(buf) => {
                total += buf.len() as u64;
                in_window += buf.len() as u64;
            }
            Err(e) => {
                eprintln!("{peer:?}: receive failed: {e}");
                break;
            }
        }
        if window.elapsed() >= Duration::from_secs(1) {
            let rate = in_window as f64 / window.elapsed().as_secs_f64() / 1e9;
            eprintln!("{peer:?}: {rate:.2} GB/s via {path}");
            window = Instant::now();
            in_window = 0;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{peer:?}: {total} bytes in {secs:.2} s ({:.2} GB/s) via {path}",
        total as f64 / secs / 1e9
    );
}
