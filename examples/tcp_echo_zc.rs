//! TCP echo server that sends with zero copy (`IORING_OP_SEND_ZC`) from registered buffers.
//!
//! ```text
//! cargo run --release --example tcp_echo_zc [ADDR] [auto|on|off]   # default 127.0.0.1:8080 auto
//! ```
//!
//! Each connection reads into a buffer checked out of a registered `FixedBufPool` and echoes
//! it with `send_zc_all`, which returns the buffer only after the kernel's notification. Under
//! the default `auto` policy a socket switches to ordinary sends once the kernel reports that
//! it copied the data (loopback always does); `on` forces zero copy, `off` disables it. When a
//! connection closes, its zero-copy counters are printed.

use net::{TcpListener, TcpStream, ZeroCopy};
use runtime::buf::{FixedBufPool, IoBuf};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let policy = match args.next().as_deref() {
        None | Some("auto") => ZeroCopy::Auto,
        Some("on") => ZeroCopy::On,
        Some("off") => ZeroCopy::Off,
        Some(other) => {
            eprintln!("unknown policy {other:?}: use auto, on or off");
            std::process::exit(2);
        }
    };
    // 256 buffers of 16 KiB, registered once with the ring.
    let pool = FixedBufPool::new(256, 16 * 1024)?;
    let listener = TcpListener::bind(addr.as_str())?;
    eprintln!(
        "tcp_echo_zc listening on {} (policy {policy:?}, registered buffers: {})",
        listener.local_addr()?,
        pool.is_registered()
    );
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                stream.set_zero_copy(policy);
                runtime::spawn(echo(stream, pool.clone()));
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

async fn echo(mut stream: TcpStream, pool: FixedBufPool) {
    loop {
        // Waits for a free buffer if all are in use.
        let buf = pool.get().await;
        let (res, buf) = stream.read(buf).await;
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                eprintln!("read failed: {e}");
                break;
            }
        };
        let (res, _buf) = stream.send_zc_all(buf.slice(..n)).await;
        if let Err(e) = res {
            eprintln!("send failed: {e}");
            break;
        }
    }
    eprintln!("connection closed: {:?}", stream.zero_copy_stats());
}
