//! Line-based chat over TCP: every line a client sends goes to every other client, and a
//! client that sends nothing for a while is disconnected.
//!
//! ```text
//! cargo run --release --example chat [ADDR] [--idle SECS]   # default 127.0.0.1:8090, 300 s
//! nc 127.0.0.1 8090                                          # in several terminals
//! ```
//!
//! One task per client reads its lines (each read bounded by the idle timeout with
//! `CancelExt::timeout`, which hands the buffer back) and publishes them on a
//! `runtime::sync::broadcast` channel; a second task per client writes the others' lines to
//! it. A client too slow to keep up is told how many lines it missed.

use std::{io, sync::Arc, time::Duration};

use net::{TcpListener, TcpStream, tcp::OwnedWriteHalf};
use runtime::{
    op::CancelExt,
    sync::broadcast::{self, error::RecvError},
};

const DEFAULT_ADDR: &str = "127.0.0.1:8090";

/// Lines kept for clients that fall behind.
const BACKLOG: usize = 256;

/// The longest line accepted; a longer one disconnects its client.
pub(crate) const MAX_LINE: usize = 4096;

/// One chat line: who sent it and the text to deliver (ending in `\n`).
type Line = (u64, Arc<str>);

fn main() -> io::Result<()> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut idle = Duration::from_secs(300);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--idle" {
            idle = args
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or_else(|| usage("--idle takes a number of seconds"));
        } else if arg.starts_with('-') {
            usage(&format!("unknown option {arg}"));
        } else {
            addr = arg;
        }
    }
    runtime::Runtime::new()?.block_on(async move {
        let listener = TcpListener::bind(addr.as_str())?;
        eprintln!("chat listening on {}", listener.local_addr()?);
        serve(listener, idle).await
    })
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: chat [ADDR] [--idle SECS]");
    std::process::exit(2)
}

/// Accepts clients until the listener fails; each client is disconnected after `idle`
/// without a byte from it.
pub(crate) async fn serve(listener: TcpListener, idle: Duration) -> io::Result<()> {
    let (lines, _) = broadcast::channel::<Line>(BACKLOG);
    let mut incoming = listener.incoming();
    let mut next_id = 0u64;
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                runtime::spawn(client(stream, next_id, lines.clone(), idle));
                next_id += 1;
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}

/// Serves one client until it leaves, fails, or stays silent for `idle`.
async fn client(stream: TcpStream, id: u64, lines: broadcast::Sender<Line>, idle: Duration) {
    let (mut rd, mut wr) = stream.into_split();
    // Subscribed before the greeting: every line published after the client read it reaches it.
    let others = lines.subscribe();
    let greeting = format!("welcome, you are client {id}\n");
    if wr.write_all(greeting.into_bytes()).await.0.is_err() {
        return;
    }
    let writer = runtime::spawn(forward(others, wr, id));
    let mut buf = Vec::with_capacity(MAX_LINE);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let (res, b) = rd.read(buf).timeout(idle).await;
        buf = b;
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                eprintln!("client {id}: idle for {idle:?}, disconnected");
                break;
            }
            Err(e) => {
                eprintln!("client {id}: read failed: {e}");
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        buf.clear();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            // An error only means nobody else is connected.
            let _ = lines.send((id, format!("client {id}: {text}\n").into()));
        }
        if pending.len() > MAX_LINE {
            eprintln!("client {id}: line longer than {MAX_LINE} bytes, disconnected");
            break;
        }
    }
    // Dropping the write half (with the writer task) closes the connection.
    writer.abort();
}

/// Writes the lines of the other clients to this one.
async fn forward(mut others: broadcast::Receiver<Line>, mut wr: OwnedWriteHalf, id: u64) {
    loop {
        let text = match others.recv().await {
            Ok((from, _)) if from == id => continue,
            Ok((_, text)) => text.as_bytes().to_vec(),
            Err(RecvError::Lagged(missed)) => format!("({missed} lines missed)\n").into_bytes(),
            Err(RecvError::Closed) => return,
        };
        if wr.write_all(text).await.0.is_err() {
            return;
        }
    }
}
