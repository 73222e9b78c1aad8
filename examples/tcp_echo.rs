//! TCP echo server: one task per connection, echoing every byte until the peer closes.
//!
//! ```text
//! cargo run --release --example tcp_echo [ADDR] [--threads N]   # default 127.0.0.1:8080, 1
//! nc 127.0.0.1 8080                                              # type lines, they come back
//! ```
//!
//! With `--threads N`, N workers (one per core, pinned) each bind their own `SO_REUSEPORT`
//! listener on the address and serve the connections the kernel hands them, entirely on that
//! worker: nothing is shared between cores. Accepted connections have `TCP_NODELAY` on, so an
//! echo never waits for Nagle's algorithm.

use net::{ListenerOptions, TcpListener, TcpStream};
use runtime::buf::IoBuf;

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

fn main() -> std::io::Result<()> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--threads" {
            threads = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage("--threads takes a positive number"));
        } else if arg.starts_with('-') {
            usage(&format!("unknown option {arg}"));
        } else {
            addr = arg;
        }
    }
    let rt = runtime::Builder::new().worker_threads(threads).build()?;
    rt.block_on(async move {
        examples::export_metrics();
        let servers = runtime::on_each_worker(move |worker| {
            let addr = addr.clone();
            async move { serve(&addr, worker).await }
        });
        for server in servers {
            server.await??;
        }
        Ok(())
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: tcp_echo [ADDR] [--threads N]");
    std::process::exit(2)
}

/// One worker's accept loop on its own reuse-port listener.
async fn serve(addr: &str, worker: usize) -> std::io::Result<()> {
    let listener =
        TcpListener::bind_with(addr, ListenerOptions::new().reuse_port(true).nodelay(true))?;
    if worker == 0 {
        eprintln!(
            "tcp_echo listening on {} with {} worker(s)",
            listener.local_addr()?,
            runtime::worker_count()
        );
    }
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

async fn echo(mut stream: TcpStream) {
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
