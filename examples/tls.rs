//! TLS for the `https_server` example (and its test): a self-signed certificate made at start
//! with rcgen, and a rustls server configuration (the `ring` provider, TLS 1.3 and 1.2, ALPN
//! `h2` and `http/1.1`).

use std::{io, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// A certificate for `names` signed by its own key, and that key.
///
/// # Errors
///
/// `InvalidInput` when a name is not a valid DNS name or IP address; `Other` when the key
/// cannot be generated.
pub fn self_signed(
    names: &[&str],
) -> io::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot make a self-signed certificate: {e}"),
        )
    })?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((certified.cert.der().clone(), PrivateKeyDer::Pkcs8(key)))
}

/// A server configuration presenting `cert` (signed by `key`), offering `h2` and `http/1.1`.
///
/// # Errors
///
/// `InvalidInput` when the key does not match the certificate or is of a kind rustls rejects.
pub fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot use the certificate and key: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves one TLS connection with the HTTP service of [`crate::http`]: the handshake over the
/// compat stream, then HTTP/1.1 or HTTP/2.
///
/// # Errors
///
/// A failed handshake (as rustls reports it), then what [`crate::http::serve_connection`]
/// reports.
pub async fn serve_connection(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: net::TcpStream,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = acceptor.accept(stream.compat()).await?;
    crate::http::serve_connection(hyper_util::rt::TokioIo::new(tls)).await
}
