//! The monoio reference TCP echo server for the benchmarks, written like monoio's own echo
//! example: io_uring driver, one task per connection, `TCP_NODELAY` on accepted streams, a
//! 16 KiB owned buffer (the size `examples/tcp_echo.rs` reads into), read then `write_all`.
//!
//! Usage: `echo_monoio ADDR [--threads N]`. With N threads, each runs its own monoio runtime,
//! pinned to CPU i, with its own `SO_REUSEPORT` listener (monoio's default), like the
//! runtime's `tcp_echo --threads N`.

use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::{TcpListener, TcpStream},
};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8091".into());
    let threads: usize = match args.next().as_deref() {
        Some("--threads") => args.next().and_then(|n| n.parse().ok()).unwrap_or(1),
        _ => 1,
    };
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                if threads > 1 {
                    pin(i);
                }
                serve(&addr)
            })
        })
        .collect();
    for h in handles {
        h.join().expect("server thread panicked")?;
    }
    Ok(())
}

fn pin(i: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(i % cpus, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn serve(addr: &str) -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr)?;
        eprintln!("echo_monoio listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
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
