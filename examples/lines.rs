//! Line chat over tokio-util's `LinesCodec`: every line a client sends goes to every other
//! connected client, prefixed with the sender's address.
//!
//! ```text
//! cargo run --release --example lines [ADDR]   # default 127.0.0.1:8082
//! nc 127.0.0.1 8082                            # in two terminals: type lines in one
//! ```
//!
//! `compat()` makes each `net::TcpStream` a tokio `AsyncRead + AsyncWrite`, which `Framed`
//! turns into a stream of lines and a sink for them. Each connection's task waits for a line
//! from its client or one from the room (a `runtime::channel` per client). A line longer than
//! 8 KiB ends its connection instead of growing a buffer without bound.

use std::{cell::RefCell, collections::HashMap, net::SocketAddr, pin::pin, rc::Rc};

use futures_util::{
    SinkExt, StreamExt,
    future::{Either, select},
};
use net::{TcpListener, TcpStream};
use runtime::channel::{Sender, unbounded};
use tokio_util::codec::{Framed, LinesCodec};

const DEFAULT_ADDR: &str = "127.0.0.1:8082";

/// The longest line accepted.
pub(crate) const MAX_LINE: usize = 8 * 1024;

/// Every connected client's queue of lines to send it.
type Room = Rc<RefCell<HashMap<SocketAddr, Sender<String>>>>;

#[runtime::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let listener = TcpListener::bind(addr.as_str())?;
    eprintln!("lines listening on {}", listener.local_addr()?);
    serve(listener).await;
    Ok(())
}

/// Serves every connection `listener` accepts, each in its own task, in one room.
pub(crate) async fn serve(listener: TcpListener) {
    let room = Room::default();
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                runtime::spawn(client(stream, room.clone()));
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

async fn client(stream: TcpStream, room: Room) {
    let Ok(peer) = stream.peer_addr() else { return };
    let mut lines = Framed::new(stream.compat(), LinesCodec::new_with_max_length(MAX_LINE));
    let (sender, inbox) = unbounded();
    room.borrow_mut().insert(peer, sender);
    if lines.send(format!("welcome, {peer}")).await.is_ok() {
        loop {
            // Both are cancel-safe: the losing side loses no line.
            let next = match select(pin!(inbox.recv()), lines.next()).await {
                Either::Left((line, _)) => Either::Left(line),
                Either::Right((line, _)) => Either::Right(line),
            };
            match next {
                Either::Left(Ok(line)) => {
                    if lines.send(line).await.is_err() {
                        break;
                    }
                }
                Either::Left(Err(_)) => break,
                Either::Right(Some(Ok(line))) => {
                    let line = format!("{peer}: {line}");
                    for (addr, queue) in room.borrow().iter() {
                        if *addr != peer {
                            // Unbounded: fails only when that client is gone.
                            let _ = queue.try_send(line.clone());
                        }
                    }
                }
                // Closed, too long a line, or an I/O error: this client is done.
                Either::Right(_) => break,
            }
        }
    }
    room.borrow_mut().remove(&peer);
}
