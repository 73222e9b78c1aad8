//! The tokio reference HTTP server for `benches/http.rs`: hyper on a tokio `current_thread`
//! runtime, serving the same handler (`examples::http::handle`) with the same hyper-util
//! builder (HTTP/1.1 and HTTP/2 on one port) as the `http_server` example, through hyper-util's
//! tokio executor and timer, with `TCP_NODELAY` on accepted sockets.
//!
//! Usage: `http_tokio ADDR`

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("http_tokio listening on http://{}", listener.local_addr()?);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(1024);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(examples::http::handle);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    eprintln!("connection ended: {e}");
                }
            });
        }
    })
}
