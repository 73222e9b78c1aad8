//! The tokio reference UDP echo server for `benches/echo.rs`, written like tokio's own
//! `echo-udp` example: `current_thread` runtime, one socket, `recv_from` into a 64 KiB buffer
//! (the size `examples/udp_echo.rs` uses), then `send_to` the sender.
//!
//! Usage: `udp_echo_tokio ADDR`

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let socket = tokio::net::UdpSocket::bind(&addr).await?;
        eprintln!("udp_echo_tokio listening on {}", socket.local_addr()?);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(_) => continue,
            };
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    })
}
