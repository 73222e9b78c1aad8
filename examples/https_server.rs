//! HTTPS server: the `http_server` service (HTTP/1.1 and HTTP/2, chosen by ALPN) behind TLS,
//! with tokio-rustls over the compat stream and a self-signed certificate for `localhost`
//! made at start (rcgen).
//!
//! ```text
//! cargo run --release --example https_server [ADDR]   # default 127.0.0.1:8443
//! curl -k https://localhost:8443/                      # Hello, world! (-k: self-signed)
//! curl -k --data-binary @some-file https://localhost:8443/echo
//! ```

use net::{ListenerOptions, TcpListener};

const DEFAULT_ADDR: &str = "127.0.0.1:8443";

#[runtime::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let (cert, key) = examples::tls::self_signed(&["localhost", "127.0.0.1"])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(examples::tls::server_config(cert, key)?);
    let listener = TcpListener::bind_with(addr.as_str(), ListenerOptions::new().nodelay(true))?;
    eprintln!(
        "https_server listening on https://{}",
        listener.local_addr()?
    );
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(stream) => {
                let acceptor = acceptor.clone();
                runtime::spawn(async move {
                    if let Err(e) = examples::tls::serve_connection(&acceptor, stream).await {
                        eprintln!("connection ended: {e}");
                    }
                });
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    Ok(())
}
