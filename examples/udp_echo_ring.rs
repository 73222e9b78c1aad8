//! UDP echo server receiving through a provided-buffer ring (multishot `recvmsg`).
//!
//! ```text
//! cargo run --release --example udp_echo_ring [ADDR]     # default 127.0.0.1:8081
//! ```

use net::UdpSocket;
use runtime::buf::BufRing;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    examples::export_metrics();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    // 2 KiB buffers: 112 bytes of header (address, control), the rest for the payload.
    let ring = BufRing::builder().entries(1024).buf_len(2048).build()?;
    let socket = UdpSocket::bind(addr.as_str())?;
    eprintln!("udp_echo_ring listening on {}", socket.local_addr()?);
    let mut datagrams = socket.recv_msg_stream(&ring);
    while let Some(item) = datagrams.next().await {
        let datagram = match item {
            Ok(d) => d,
            Err(e) => {
                eprintln!("receive failed: {e}");
                continue;
            }
        };
        if datagram.is_truncated() {
            eprintln!(
                "dropping a {}-byte datagram: larger than the ring's buffers",
                datagram.len()
            );
            continue;
        }
        let Some(peer) = datagram.peer() else {
            continue;
        };
        let (res, _) = socket.send_to(datagram.into_payload(), peer).await;
        if let Err(e) = res {
            eprintln!("send to {peer} failed: {e}");
        }
    }
    Ok(())
}
