//! TCP echo server: one task per connection, echoing every byte until the peer closes.
//!
//! ```text
//! cargo run --release --example tcp_echo [ADDR] [--threads N] [--direct] [--sockbuf BYTES]
//! nc 127.0.0.1 8080                                              # type lines, they come back
//! ```
//!
//! The default address is 127.0.0.1:8080, with one worker. With `--direct` (or
//! `TCP_ECHO_DIRECT=1` in the environment, which is how a benchmark run switches it on)
//! connections are accepted as direct descriptors: they live only in each worker's io_uring
//! file table, sized to the soft `RLIMIT_NOFILE` at start, so the server holds connections
//! past that limit (see `TcpListener::set_direct_descriptors`).
//!
//! With `--sockbuf BYTES` (or `TCP_ECHO_SOCKBUF=BYTES`) accepted connections get
//! `SO_RCVBUF` and `SO_SNDBUF` of that size instead of the kernel's autotuned buffers
//! (`ListenerOptions::recv_buffer_size`, `send_buffer_size`); `docs/benchmarks.md` says what
//! that does to a bulk stream.
//!
//! With `--threads N`, N workers (one per core, pinned) each bind their own `SO_REUSEPORT`
//! listener on the address and serve the connections the kernel hands them, entirely on that
//! worker: nothing is shared between cores. Accepted connections have `TCP_NODELAY` on, so an
//! echo never waits for Nagle's algorithm.
//!
//! `SIGTERM` or Ctrl-C (`SIGINT`) shuts it down gracefully: every worker stops accepting,
//! open connections get [`GRACE`] to end on their own and are closed after that, and the
//! process exits with status 0.

use std::time::Duration;

use net::{ListenerOptions, TcpListener, TcpStream};
use runtime::{
    buf::IoBuf,
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinSet,
};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// How long open connections may go on after a shutdown signal before they are closed.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

fn main() -> std::io::Result<()> {
    run(std::env::args().skip(1))
}

/// The whole program, with its arguments (`tests/examples.rs` runs it in a child process).
pub(crate) fn run(mut args: impl Iterator<Item = String>) -> std::io::Result<()> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut threads = 1;
    let mut direct = std::env::var_os("TCP_ECHO_DIRECT").is_some_and(|v| v != "0");
    let mut sockbuf = std::env::var("TCP_ECHO_SOCKBUF").ok().map(|v| {
        parse_positive(&v).unwrap_or_else(|| usage("TCP_ECHO_SOCKBUF takes a byte count"))
    });
    while let Some(arg) = args.next() {
        if arg == "--threads" {
            threads = args
                .next()
                .and_then(|n| parse_positive(&n))
                .unwrap_or_else(|| usage("--threads takes a positive number"));
        } else if arg == "--direct" {
            direct = true;
        } else if arg == "--sockbuf" {
            let bytes = args.next().and_then(|n| parse_positive(&n));
            sockbuf = Some(bytes.unwrap_or_else(|| usage("--sockbuf takes a byte count")));
        } else if arg.starts_with('-') {
            usage(&format!("unknown option {arg}"));
        } else {
            addr = arg;
        }
    }
    let mut builder = runtime::Builder::new();
    builder.worker_threads(threads);
    if direct {
        builder.direct_descriptors(runtime::direct::slots_allowed());
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        examples::export_metrics();
        // Installed before the listeners exist, so a signal sent as soon as the address is
        // printed is not lost.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let servers = runtime::on_each_worker(move |worker| {
            let addr = addr.clone();
            let stop = stop_rx.clone();
            async move { serve(&addr, worker, direct, sockbuf, stop).await }
        });
        let mut servers = servers.into_iter();
        let Some(mut first) = servers.next() else {
            return Ok(()); // no worker: nothing to serve
        };
        runtime::select! {
            _ = terminate.recv() => eprintln!("tcp_echo: SIGTERM, shutting down"),
            _ = interrupt.recv() => eprintln!("tcp_echo: SIGINT, shutting down"),
            // A worker that could not bind ends the program with its error.
            res = &mut first => return res?,
        }
        stop_tx.send_replace(true);
        first.await??;
        for server in servers {
            server.await??;
        }
        Ok(())
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: tcp_echo [ADDR] [--threads N] [--direct] [--sockbuf BYTES]");
    std::process::exit(2)
}

/// A positive number (a worker count, a byte count).
fn parse_positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n > 0)
}

/// One worker's accept loop on its own reuse-port listener, until `stop` turns true.
async fn serve(
    addr: &str,
    worker: usize,
    direct: bool,
    sockbuf: Option<usize>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut options = ListenerOptions::new();
    options
        .reuse_port(true)
        .nodelay(true)
        .direct_descriptors(direct);
    if let Some(bytes) = sockbuf {
        // Fixed socket buffers instead of autotuned ones (see the module docs).
        options.recv_buffer_size(bytes).send_buffer_size(bytes);
    }
    let listener = TcpListener::bind_with(addr, &options)?;
    if worker == 0 {
        eprintln!(
            "tcp_echo listening on {} with {} worker(s)",
            listener.local_addr()?,
            runtime::worker_count()
        );
        if direct {
            match runtime::direct::usage() {
                Some((_, slots)) => {
                    eprintln!("tcp_echo: direct descriptors, {slots} slots per worker")
                }
                None => eprintln!(
                    "tcp_echo: {}",
                    runtime::direct::enable()
                        .err()
                        .map_or_else(String::new, |e| e.to_string())
                ),
            }
        }
    }
    let mut incoming = listener.incoming();
    let mut connections = JoinSet::new();
    loop {
        runtime::select! {
            conn = incoming.next() => match conn {
                Some(Ok(stream)) => {
                    connections.spawn(echo(stream));
                }
                // Out of descriptors and the like: `incoming` already waits before retrying.
                Some(Err(e)) => eprintln!("accept failed: {e}"),
                None => break,
            },
            // Reap connections that ended, so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    // Stop accepting: the kernel refuses new connections from now on.
    drop(incoming);
    drop(listener);
    let finished = runtime::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        // Closes the connections still open (dropping a stream closes it).
        connections.shutdown().await;
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
