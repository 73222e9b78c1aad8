//! UDP echo server: sends every datagram back to its sender.
//!
//! ```text
//! cargo run --release --example udp_echo [ADDR]     # default 127.0.0.1:8081
//! nc -u 127.0.0.1 8081                               # type lines, they come back
//! ```

use net::UdpSocket;
use runtime::buf::IoBuf;

const DEFAULT_ADDR: &str = "127.0.0.1:8081";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    examples::export_metrics();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let socket = UdpSocket::bind(addr.as_str())?;
    eprintln!("udp_echo listening on {}", socket.local_addr()?);

    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (res, b) = socket.recv_from(buf).await;
        buf = b;
        let (n, peer) = match res {
            Ok(received) => received,
            Err(e) => {
                // A datagram too large for the buffer, or an ICMP error from an earlier send.
                eprintln!("receive failed: {e}");
                continue;
            }
        };
        let (res, b) = socket.send_to(buf.slice(..n), peer).await;
        buf = b.into_inner();
        if let Err(e) = res {
            eprintln!("send to {peer} failed: {e}");
        }
    }
}
