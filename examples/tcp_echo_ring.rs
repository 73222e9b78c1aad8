//! TCP echo server receiving through one shared provided-buffer ring.
//!
//! ```text
//! cargo run --release --example tcp_echo_ring [ADDR]     # default 127.0.0.1:8080
//! ```
//!
//! Every connection's receives draw buffers from one `BufRing` only when data arrives
//! (multishot receive with buffer selection, one completion per bundle of buffers where the
//! kernel offers `IORING_RECVSEND_BUNDLE`), so an idle connection holds no buffer. What
//! arrived is written straight back, a bundle's buffers with one vectored write
//! (`next_batch`, `writev_all`), and they return to the ring when the write is done.
//! Accepted connections have `TCP_NODELAY` on, as in `tcp_echo`.

use net::{ListenerOptions, TcpListener, TcpStream};
use runtime::buf::BufRing;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    examples::export_metrics();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    // 2048 buffers of 16 KiB: only the pages the kernel writes become resident memory (one
    // per buffer for a message), and a 64 KiB chunk of a bulk stream takes 4 buffers, not 16
    // (docs/benchmarks.md: 0.85x the stream row's CPU per chunk with 4 KiB buffers).
    let ring = BufRing::builder().entries(2048).buf_len(16384).build()?;
    let listener = TcpListener::bind_with(addr.as_str(), ListenerOptions::new().nodelay(true))?;
    eprintln!("tcp_echo_ring listening on {}", listener.local_addr()?);
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                runtime::spawn(echo(stream, ring.clone()));
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

/// The connection's task. Written as a function returning an `async` block, with the stream
/// split before the block: an `async fn` keeps a second copy of its arguments next to the ones
/// it uses, and a stream split inside the block would stay in the task beside its halves
/// (every byte here is paid by every connection, idle or not).
fn echo(stream: TcpStream, ring: BufRing) -> impl Future<Output = ()> {
    // The receive stream borrows the read half, so the write half can send meanwhile.
    let (mut reader, mut writer) = stream.into_split();
    async move {
        let mut received = reader.recv_stream(&ring);
        // Shaped so that no received item outlives its `match`: a `while let Some(item)` loop
        // would keep the item's storage in the task across the write (96 more bytes per
        // connection, idle or not).
        loop {
            let bufs = match received.next_batch(BATCH).await {
                Some(Ok(bufs)) => bufs,
                Some(Err(e)) => {
                    eprintln!("receive failed: {e}");
                    return;
                }
                None => return,
            };
            // A message (one buffer) is written behind, copied, as `write_all` does; a bundle
            // of a bulk stream goes out with one vectored send straight from the ring's
            // buffers. They return to the ring when `writev_all` hands them back and they
            // are dropped.
            if let Err(e) = writer.writev_all(bufs).await.0 {
                eprintln!("write failed: {e}");
                return;
            }
        }
    }
}

/// Most received buffers echoed with one write (a 64 KiB chunk is 4 of the ring's buffers).
const BATCH: usize = 64;
