//! hyper on this runtime, driven by hyper's own clients over loopback: HTTP/1.1 keep-alive
//! over 1,000 requests, a 16 MiB body streamed back byte-exact, a client that disconnects
//! mid-body (the server stays up and leaks no fd), and 100 concurrent HTTP/2 streams on one
//! connection. The server is the `http_server` example's service (`examples::http`).

use std::{cell::Cell, convert::Infallible, future::Future, net::SocketAddr, rc::Rc};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::{Request, StatusCode, body::Frame, client::conn};
use hyper_util::rt::TokioIo;
use integration_tests::{describe_fds, exclusive, join_all, open_fds, pattern};
use net::{TcpListener, TcpStream};
use runtime::{
    buf::BufRing,
    compat::HyperExecutor,
    time::{Duration, sleep, timeout},
};

/// Runs `test` on a fresh runtime while no other test of this binary runs: one counts the
/// process's fds, which the others (and their runtimes) open and close.
fn serial(test: impl Future<Output = ()>) {
    let _serial = exclusive();
    runtime::Runtime::new().unwrap().block_on(test);
}

/// What the server saw.
#[derive(Debug, Default)]
struct Counts {
    accepted: Cell<usize>,
    /// Connections whose `serve_connection` returned (with an error or not).
    ended: Cell<usize>,
    failed: Cell<usize>,
}

/// Starts the examples' HTTP server on a loopback port, reading through `ring` if given.
fn start_server(ring: Option<BufRing>) -> (SocketAddr, Rc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Rc::new(Counts::default());
    let seen = counts.clone();
    runtime::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true).unwrap();
            seen.accepted.set(seen.accepted.get() + 1);
            let io = match &ring {
                Some(ring) => stream.compat_with_ring(ring),
                None => stream.compat(),
            };
            let seen = seen.clone();
            runtime::spawn(async move {
                let res = examples::http::serve_connection(TokioIo::new(io)).await;
                seen.failed
                    .set(seen.failed.get() + usize::from(res.is_err()));
                seen.ended.set(seen.ended.get() + 1);
            });
        }
    });
    (addr, counts)
}

/// An HTTP/1.1 client connection to `addr` (its connection task spawned).
async fn http1_client<B>(addr: SocketAddr) -> conn::http1::SendRequest<B>
where
    B: hyper::body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = conn::http1::handshake(TokioIo::new(stream.compat()))
        .await
        .unwrap();
    runtime::spawn(async move {
        let _ = connection.await;
    });
    sender
}

async fn keep_alive_over_1000_requests(ring: Option<BufRing>) {
    let (addr, counts) = start_server(ring);
    let mut sender = http1_client::<Empty<Bytes>>(addr).await;
    for i in 0..1000 {
        sender.ready().await.unwrap();
        let res = sender
            .send_request(Request::get("/").body(Empty::new()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], examples::http::HELLO, "request {i}");
    }
    assert_eq!(
        counts.accepted.get(),
        1,
        "the connection was not kept alive"
    );
}

#[test]
fn http1_keep_alive_over_1000_requests() {
    serial(async {
        keep_alive_over_1000_requests(None).await;
    });
}

#[test]
fn http1_keep_alive_over_1000_requests_with_ring_backed_reads() {
    serial(async {
        let ring = BufRing::builder()
            .entries(64)
            .buf_len(4096)
            .build()
            .unwrap();
        keep_alive_over_1000_requests(Some(ring)).await;
    });
}

/// A 16 MiB request body, sent in 64 KiB frames as the client produces them, comes back
/// byte-exact while it is still being sent.
async fn echoes_16_mib(ring: Option<BufRing>) {
    const LEN: usize = 16 << 20;
    const FRAME: usize = 64 * 1024;
    let (addr, _) = start_server(ring);
    let data = Bytes::from(pattern(LEN, 16));
    let frames =
        {
            let data = data.clone();
            futures_util::stream::iter((0..LEN / FRAME).map(move |i| {
                Ok::<_, Infallible>(Frame::data(data.slice(i * FRAME..(i + 1) * FRAME)))
            }))
        };
    let mut sender = http1_client(addr).await;
    let req = Request::post("/echo")
        .header("content-length", LEN)
        .body(StreamBody::new(frames))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), LEN);
    assert!(body == data, "the echoed body differs from the one sent");
}

#[test]
fn http1_streams_a_16_mib_body_back_byte_exact() {
    serial(async {
        echoes_16_mib(None).await;
    });
}

#[test]
fn http1_streams_a_16_mib_body_back_with_ring_backed_reads() {
    serial(async {
        let ring = BufRing::builder()
            .entries(256)
            .buf_len(16 * 1024)
            .build()
            .unwrap();
        echoes_16_mib(Some(ring)).await;
    });
}

/// A client that sends half a body and goes away: the server's connection ends with an
/// error, its socket is closed, and the server serves the next client.
#[test]
fn a_client_gone_mid_body_leaves_the_server_up_and_no_fd_open() {
    serial(async {
        let (addr, counts) = start_server(None);
        // Warm up (the runtime's lazily made fds, the server's accept) before counting.
        let mut sender = http1_client::<Empty<Bytes>>(addr).await;
        let res = sender
            .send_request(Request::get("/").body(Empty::new()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        drop(sender);
        let deadline = runtime::time::Instant::now() + Duration::from_secs(5);
        while counts.ended.get() < 1 && runtime::time::Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
        }
        let fds = open_fds();

        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n".to_vec();
        let (res, _) = client.write_all(head).await;
        res.unwrap();
        let (res, _) = client.write_all(pattern(100_000, 1)).await;
        res.unwrap();
        client.flush().await.unwrap();
        sleep(Duration::from_millis(20)).await;
        drop(client);
        while counts.ended.get() < 2 && runtime::time::Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(counts.ended.get(), 2, "the server's connection did not end");
        assert_eq!(
            counts.failed.get(),
            1,
            "a body cut short must end in an error"
        );
        let mut open = open_fds();
        while open != fds && runtime::time::Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
            open = open_fds();
        }
        assert_eq!(open, fds, "fds leaked: {}", describe_fds());

        // The server is still up.
        let mut sender = http1_client::<Empty<Bytes>>(addr).await;
        let res = sender
            .send_request(Request::get("/").body(Empty::new()).unwrap())
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], examples::http::HELLO);
    });
}

/// 100 streams open at once on one HTTP/2 connection: every request body stays open until
/// all 100 response heads have arrived, then each stream's body comes back whole.
#[test]
fn http2_carries_100_concurrent_streams_on_one_connection() {
    serial(async {
        const STREAMS: usize = 100;
        let (addr, counts) = start_server(None);
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        type Frames =
            std::pin::Pin<Box<runtime::channel::Receiver<Result<Frame<Bytes>, Infallible>>>>;
        let (sender, connection) = conn::http2::handshake::<_, _, StreamBody<Frames>>(
            HyperExecutor,
            TokioIo::new(stream.compat()),
        )
        .await
        .unwrap();
        runtime::spawn(async move {
            let _ = connection.await;
        });
        let mut bodies = Vec::new();
        let mut requests = Vec::new();
        for i in 0..STREAMS {
            let (tx, rx) = runtime::channel::unbounded();
            tx.try_send(Ok(Frame::data(Bytes::from(format!("stream {i}, ")))))
                .unwrap();
            bodies.push(tx);
            let mut sender = sender.clone();
            let req = Request::post("/echo")
                .body(StreamBody::new(Box::pin(rx)))
                .unwrap();
            requests.push(async move { sender.send_request(req).await });
        }
        let heads = timeout(Duration::from_secs(10), join_all(requests))
            .await
            .expect("the 100 response heads did not all arrive while the bodies were open");
        for (i, tx) in bodies.into_iter().enumerate() {
            tx.try_send(Ok(Frame::data(Bytes::from(format!("end {i}")))))
                .unwrap();
        }
        let mut reads = Vec::new();
        for (i, head) in heads.into_iter().enumerate() {
            let res = head.unwrap_or_else(|e| panic!("stream {i}: {e}"));
            assert_eq!(res.status(), StatusCode::OK);
            reads.push(async move { (i, res.into_body().collect().await.unwrap().to_bytes()) });
        }
        for (i, body) in join_all(reads).await {
            assert_eq!(body, format!("stream {i}, end {i}"));
        }
        assert_eq!(counts.accepted.get(), 1);
        // The fixed answer over HTTP/2 too.
        let (tx, rx) = runtime::channel::unbounded();
        drop(tx);
        let mut sender = sender;
        let res = sender
            .send_request(
                Request::get("/")
                    .body(StreamBody::new(Box::pin(rx)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], examples::http::HELLO);
    });
}

/// `HyperTimer` drives hyper's own timeouts: a client that sends half a request head is
/// disconnected once the server's header read timeout passes.
#[test]
fn hypers_header_read_timeout_runs_on_the_runtime_timer() {
    serial(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        runtime::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut builder = examples::http::builder();
            builder
                .http1()
                .header_read_timeout(Duration::from_millis(100));
            let service = hyper::service::service_fn(examples::http::handle);
            let _ = builder
                .serve_connection(TokioIo::new(stream.compat()), service)
                .await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (res, _) = client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await;
        res.unwrap();
        let start = runtime::time::Instant::now();
        let read = timeout(
            Duration::from_secs(5),
            client.read(Vec::with_capacity(1024)),
        );
        let (res, buf) = read.await.expect("the header read timeout never fired");
        let n = res.unwrap_or(0);
        // hyper answers 408 or just closes; either way the connection ends.
        assert!(
            n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(80),
            "closed after {waited:?}"
        );
    });
}

/// `HyperTimer`'s sleeps are `Send + Sync` (hyper requires it), sleep as long as asked, and
/// are reset in place.
#[test]
fn hyper_timer_sleeps_and_resets() {
    use hyper::rt::Timer;
    fn send_sync<T: Send + Sync>(_: &T) {}
    serial(async {
        let timer = runtime::compat::HyperTimer;
        let start = runtime::time::Instant::now();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        send_sync(&sleep);
        timer.reset(&mut sleep, start + Duration::from_millis(20));
        timeout(Duration::from_secs(5), sleep)
            .await
            .expect("a reset sleep kept its old deadline");
        assert!(start.elapsed() >= Duration::from_millis(20));
    });
}
