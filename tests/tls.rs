//! TLS on this runtime: a rustls client (tokio-rustls over a compat stream) completes a
//! TLS 1.3 handshake with the `https_server` example's code (`examples::tls`) and exchanges
//! 1 MiB each way through its HTTP service, over HTTP/1.1 and HTTP/2 (chosen by ALPN).

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, client::conn};
use hyper_util::rt::TokioIo;
use integration_tests::pattern;
use net::{TcpListener, TcpStream};
use runtime::compat::HyperExecutor;
use rustls::{
    ClientConfig, ProtocolVersion, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Starts the `https_server` code on a loopback port; returns its address and certificate.
fn start_server() -> (SocketAddr, CertificateDer<'static>) {
    let (cert, key) = examples::tls::self_signed(&["localhost"]).unwrap();
    let config = examples::tls::server_config(cert.clone(), key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    runtime::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            runtime::spawn(async move {
                let _ = examples::tls::serve_connection(&acceptor, stream).await;
            });
        }
    });
    (addr, cert)
}

/// A TLS 1.3-only client connection to `addr` offering `alpn`, trusting only `cert`.
async fn connect(
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    alpn: &[u8],
) -> TlsStream<net::compat::Compat<TcpStream>> {
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, stream.compat())
        .await
        .expect("the TLS handshake failed");
    let (_, session) = tls.get_ref();
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(session.alpn_protocol(), Some(alpn));
    tls
}

fn echo_request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("/echo")
        .body(Full::new(body.clone()))
        .unwrap()
}

#[runtime::test]
async fn a_rustls_client_exchanges_a_mebibyte_each_way_over_http1() {
    let (addr, cert) = start_server();
    let tls = connect(addr, cert, b"http/1.1").await;
    let (mut sender, connection) = conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    runtime::spawn(async move {
        let _ = connection.await;
    });
    let data = Bytes::from(pattern(1 << 20, 13));
    for _ in 0..2 {
        sender.ready().await.unwrap();
        let res = sender.send_request(echo_request(&data)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body == data,
            "the echoed mebibyte differs ({} bytes)",
            body.len()
        );
    }
}

#[runtime::test]
async fn a_rustls_client_exchanges_a_mebibyte_each_way_over_http2() {
    let (addr, cert) = start_server();
    let tls = connect(addr, cert, b"h2").await;
    let (mut sender, connection) = conn::http2::handshake(HyperExecutor, TokioIo::new(tls))
        .await
        .unwrap();
    runtime::spawn(async move {
        let _ = connection.await;
    });
    let data = Bytes::from(pattern(1 << 20, 14));
    let res = sender.send_request(echo_request(&data)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        body == data,
        "the echoed mebibyte differs ({} bytes)",
        body.len()
    );
}

/// A client that does not trust the server's certificate fails the handshake with an error;
/// the server carries on.
#[runtime::test]
async fn an_untrusted_certificate_fails_the_handshake_and_the_server_carries_on() {
    let (addr, cert) = start_server();
    let (other, _) = examples::tls::self_signed(&["localhost"]).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(other).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let res = TlsConnector::from(Arc::new(config))
        .connect(name, stream.compat())
        .await;
    assert!(
        res.is_err(),
        "a certificate nobody vouches for was accepted"
    );
    // The server still completes handshakes.
    drop(connect(addr, cert, b"http/1.1").await);
}
