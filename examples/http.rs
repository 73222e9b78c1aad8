//! The HTTP service of the `http_server` and `https_server` examples, shared with the tests
//! and the HTTP benchmark so that all of them serve the same handler.
//!
//! - `POST /echo` streams the request body back as it arrives (no buffering of the whole body).
//! - Anything else answers `Hello, world!` (13 bytes).

use std::{convert::Infallible, error::Error};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{
    Method, Request, Response,
    body::Incoming,
    rt::{Read, Write},
    service::service_fn,
};
use hyper_util::server::conn::auto;
use runtime::compat::{HyperExecutor, HyperTimer};

/// The fixed body of every request but `POST /echo`.
pub const HELLO: &[u8] = b"Hello, world!";

/// A response body: the fixed `hello`, or the request's own body streamed back.
pub type Body = Either<Full<Bytes>, Incoming>;

/// The handler: `POST /echo` streams the request body back, anything else gets [`HELLO`].
pub async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::POST && req.uri().path() == "/echo" {
        return Ok(Response::new(Either::Right(req.into_body())));
    }
    Ok(Response::new(Either::Left(Full::new(Bytes::from_static(
        HELLO,
    )))))
}

/// A builder that serves HTTP/1.1 and HTTP/2 (told apart by the HTTP/2 preface) on this
/// runtime: its executor spawns HTTP/2 streams on the current worker, its timer runs hyper's
/// timeouts.
pub fn builder() -> auto::Builder<HyperExecutor> {
    let mut builder = auto::Builder::new(HyperExecutor);
    builder.http1().timer(HyperTimer);
    builder
        .http2()
        .timer(HyperTimer)
        .max_concurrent_streams(1024);
    builder
}

/// Serves one connection (HTTP/1.1 or HTTP/2) with [`handle`] until the peer closes it.
///
/// # Errors
///
/// What hyper reports: an I/O error, a malformed request, a peer gone mid-body.
pub async fn serve_connection<I>(io: I) -> Result<(), Box<dyn Error + Send + Sync>>
where
    I: Read + Write + Unpin + 'static,
{
    builder().serve_connection(io, service_fn(handle)).await
}
