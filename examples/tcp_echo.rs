//! TCP echo server: one task per connection, echoing every byte until the peer closes.
//!
//! ```text
//! cargo run --release --example tcp_echo [ADDR]     # default 127.0.0.1:8080
//! nc 127.0.0.1 8080                                  # type lines, they come back
//! ```

use net::{TcpListener, TcpStream};
use runtime::buf::IoBuf;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let listener = TcpListener::bind(addr.as_str())?;
    eprintln!("tcp_echo listening on {}", listener.local_addr()?);

    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                runtime::spawn(echo(stream));
            }
            // Out of descriptors and the like: `incoming` already waits before retrying.
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

async fn echo(stream: TcpStream) {
    // Reads fill the capacity; pages are touched only as data arrives.
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = stream.read(buf).await;
        let n = match res {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                eprintln!("read failed: {e}");
                return;
            }
        };
        let (res, b) = stream.write_all(b.slice(..n)).await;
        buf = b.into_inner();
        if let Err(e) = res {
            eprintln!("write failed: {e}");
            return;
        }
    }
}
