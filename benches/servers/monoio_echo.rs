//! The monoio reference echo server for `benches/echo.rs`: io_uring driver, one task per
//! connection, 16 KiB owned buffer, read then `write_all` (monoio's own echo example).
//!
//! Usage: `echo_monoio ADDR`

use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::{TcpListener, TcpStream},
};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr.as_str())?;
        eprintln!("echo_monoio listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            monoio::spawn(echo(stream));
        }
    })
}

async fn echo(mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
        buf.clear();
    }
}
