//! The monoio reference UDP echo server for `benches/echo.rs`: io_uring driver, one socket,
//! `recv_from` into an owned 64 KiB buffer (the size `examples/udp_echo.rs` uses), then
//! `send_to` the sender, the buffer moving in and out as in monoio's own examples.
//!
//! Usage: `udp_echo_monoio ADDR`

use monoio::net::udp::UdpSocket;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8092".into());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .build()?;
    rt.block_on(async move {
        let socket = UdpSocket::bind(addr.as_str())?;
        eprintln!("udp_echo_monoio listening on {}", socket.local_addr()?);
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            let (res, b) = socket.recv_from(buf).await;
            buf = b;
            let Ok((_, peer)) = res else {
                buf.clear();
                continue;
            };
            // `recv_from` set the length to the datagram's; `send_to` sends exactly that.
            let (_, b) = socket.send_to(buf, peer).await;
            buf = b;
            buf.clear();
        }
    })
}
