//! Unix domain socket echo server: sends every byte back to its connection.
//!
//! ```text
//! cargo run --release --example uds_echo [PATH]   # default /tmp/runtime-uds-echo.sock
//! socat - UNIX-CONNECT:/tmp/runtime-uds-echo.sock   # type lines, they come back
//! ```
//!
//! A socket file left by an earlier run that nobody listens on any more is removed first;
//! a path that is not a socket, or one a live server answers on, is left alone.

use std::{io, os::unix::fs::FileTypeExt, path::Path};

use net::UnixListener;
use runtime::buf::IoBuf;

const DEFAULT_PATH: &str = "/tmp/runtime-uds-echo.sock";

/// Removes a stale socket file at `path`; errors if the path is something else or in use.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: choose another path",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "a server already listens on {}: stop it or choose another path",
                path.display()
            ),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

#[runtime::main]
async fn main() -> io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_PATH.to_owned());
    remove_stale(Path::new(&path))?;
    let listener = UnixListener::bind(&path)?;
    eprintln!("uds_echo listening on {path}");

    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors, say: `incoming` pauses before it retries.
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        runtime::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
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
                buf.clear();
                if let Err(e) = res {
                    eprintln!("write failed: {e}");
                    return;
                }
            }
        });
    }
    Ok(())
}
