//! `net::compat::Compat`: sockets as tokio and futures-io streams. Lines and codecs work over
//! it (the `lines` example runs here), large writes go out whole and `flush` waits for the
//! kernel, and dropping an adapter in the middle of a read or a write loses no byte, frees no
//! buffer early and leaks no fd.

use std::{
    future::Future,
    io::{Read, Write},
    pin::pin,
    task::{Context, Poll, Waker},
    thread,
    time::Duration,
};

use integration_tests::{describe_fds, exclusive, open_fds, pattern, stream_with_std_peer};
use net::{TcpListener, TcpStream, UnixStream};
use runtime::{
    buf::BufRing,
    time::{sleep, timeout},
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

#[allow(dead_code)] // its `main` is not called here
#[path = "../examples/lines.rs"]
mod lines;

/// Runs `test` on a fresh runtime while no other test of this binary runs: some count the
/// process's fds, which the others (and their runtimes) open and close.
fn serial(test: impl Future<Output = ()>) {
    let _serial = exclusive();
    runtime::Runtime::new().unwrap().block_on(test);
}

/// Polls `fut` once, without a waker that does anything.
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    pin!(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Waits (on the runtime, so operations go on) until `peer` has finished.
async fn join<T>(peer: thread::JoinHandle<T>) -> T {
    for _ in 0..1000 {
        if peer.is_finished() {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert!(peer.is_finished(), "the peer thread did not finish in 10 s");
    peer.join().expect("the peer thread panicked")
}

#[test]
fn tokio_lines_and_writes_over_a_compat_stream() {
    serial(async {
        let (stream, mut peer) = stream_with_std_peer().await;
        peer.write_all(b"one\ntwo\r\nthree\n").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut lines = BufReader::new(stream.compat()).lines();
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            got.push(line);
        }
        assert_eq!(got, ["one", "two", "three"]);
        let mut stream = lines.into_inner();
        stream.write_all(b"bye\n").await.unwrap();
        stream.flush().await.unwrap();
        let mut answer = [0; 4];
        peer.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"bye\n");
    });
}

/// futures-io's traits, on the halves of a Unix stream, a reader and a writer in two tasks.
#[test]
fn futures_io_halves_of_a_unix_stream_carry_a_mebibyte() {
    serial(async {
        let (a, b) = UnixStream::pair().unwrap();
        let data = pattern(1 << 20, 7);
        let (_a_read, a_write) = a.into_split();
        let (b_read, _b_write) = b.into_split();
        let sent = data.clone();
        let writer = runtime::spawn(async move {
            let mut w = a_write.compat();
            for chunk in sent.chunks(100_000) {
                futures_util::io::AsyncWriteExt::write_all(&mut w, chunk)
                    .await
                    .unwrap();
            }
            futures_util::io::AsyncWriteExt::close(&mut w)
                .await
                .unwrap();
        });
        let mut r = b_read.compat();
        let mut got = Vec::new();
        futures_util::io::AsyncReadExt::read_to_end(&mut r, &mut got)
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(got == data, "the bytes read differ from those written");
    });
}

/// A write larger than what is written behind goes out whole, and once `flush` returns the
/// kernel has every byte: the thread may block right after (here, on the peer) and the peer
/// still gets them all.
#[test]
fn flush_returns_once_the_kernel_has_taken_every_byte() {
    serial(async {
        let (stream, mut peer) = stream_with_std_peer().await;
        let data = pattern(8 << 20, 3);
        let len = data.len() + 4;
        let reader = thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = vec![0; len];
            peer.read_exact(&mut got).map(|()| got)
        });
        let mut stream = stream.compat();
        stream.write_all(&data).await.unwrap();
        stream.write_all(b"tail").await.unwrap();
        stream.flush().await.unwrap();
        // Nothing may wait in the runtime now: block the thread until the peer has read.
        let got = reader
            .join()
            .unwrap()
            .expect("the peer did not get every byte written before flush returned");
        assert!(
            got[..len - 4] == data[..],
            "the bytes read differ from those written"
        );
        assert_eq!(&got[len - 4..], b"tail");
    });
}

/// A read polled once and abandoned keeps its receive in flight; when the adapter is
/// dropped (here by `into_inner`), the receive's bytes are kept for the stream's next read.
#[test]
fn a_receive_abandoned_with_the_adapter_keeps_its_bytes_for_the_next_read() {
    serial(async {
        let (stream, mut peer) = stream_with_std_peer().await;
        let mut compat = stream.compat();
        let mut buf = [0; 64];
        assert!(poll_once(compat.read(&mut buf)).is_pending());
        peer.write_all(b"hello world").unwrap();
        // The receive completes into the adapter's buffer meanwhile; nobody polls it.
        sleep(Duration::from_millis(50)).await;
        let mut stream = compat.into_inner();
        let (res, buf) = stream.read(Vec::with_capacity(64)).await;
        assert_eq!(&buf[..res.unwrap()], b"hello world");
    });
}

/// Bytes the adapter received but did not hand out go back to the stream, in order, with
/// the adapter's own buffer and with a ring.
#[test]
fn bytes_the_adapter_holds_go_back_to_the_stream() {
    serial(async {
        let ring = BufRing::builder()
            .entries(16)
            .buf_len(4096)
            .build()
            .unwrap();
        for with_ring in [false, true] {
            let (stream, mut peer) = stream_with_std_peer().await;
            let mut compat = if with_ring {
                stream.compat_with_ring(&ring)
            } else {
                stream.compat()
            };
            peer.write_all(b"0123456789").unwrap();
            let mut first = [0; 4];
            compat.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"0123");
            let mut stream = compat.into_inner();
            peer.write_all(b"abc").unwrap();
            let mut rest = Vec::new();
            while rest.len() < 9 {
                let read = timeout(Duration::from_secs(5), stream.read(Vec::with_capacity(64)));
                let (res, buf) = read.await.unwrap_or_else(|_| {
                    panic!("bytes lost: got only {rest:?} (ring: {with_ring})")
                });
                let n = res.unwrap();
                assert_ne!(n, 0, "early EOF after {rest:?} (ring: {with_ring})");
                rest.extend_from_slice(&buf[..n]);
            }
            assert_eq!(rest, b"456789abc", "ring: {with_ring}");
        }
    });
}

/// With a ring, an idle adapter holds no buffer: every buffer is back in the ring between
/// reads.
#[test]
fn an_idle_ring_backed_adapter_holds_no_buffer() {
    serial(async {
        let ring = BufRing::builder().entries(4).buf_len(4096).build().unwrap();
        let (stream, mut peer) = stream_with_std_peer().await;
        let mut compat = stream.compat_with_ring(&ring);
        for round in 0..16u8 {
            peer.write_all(&[round; 100]).unwrap();
            let mut got = [0; 100];
            compat.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 100]);
            // Read to its end: the buffer is back in the ring, none is held between reads.
            assert_eq!(
                ring.stats().in_use,
                0,
                "round {round}: a buffer is still held"
            );
        }
        // The receive stays armed without a buffer.
        assert!(poll_once(compat.read(&mut [0; 8])).is_pending());
        assert_eq!(ring.stats().in_use, 0);
    });
}

/// Writes polled until the socket is full, then the adapter (and the stream) dropped: every
/// byte a write reported taken reaches the peer, intact and in order, and then EOF; the fd
/// is closed after that.
#[test]
fn dropping_the_adapter_mid_write_loses_no_byte() {
    serial(async {
        let fds = open_fds();
        let (stream, mut peer) = stream_with_std_peer().await;
        let data = pattern(64 << 20, 11);
        let mut compat = stream.compat();
        let mut accepted = 0;
        while accepted < data.len() {
            let chunk = &data[accepted..(accepted + 200_000).min(data.len())];
            match poll_once(std::future::poll_fn(|cx| {
                std::pin::Pin::new(&mut compat).poll_write(cx, chunk)
            })) {
                Poll::Ready(Ok(n)) => accepted += n,
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                // The socket is full and a copy waits behind it.
                Poll::Pending => break,
            }
        }
        assert!(accepted < data.len(), "64 MiB fit in the socket buffers");
        drop(compat);
        let reader = thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).map(|_| got)
        });
        let got = join(reader).await.expect("the peer saw no EOF");
        assert_eq!(got.len(), accepted, "bytes reported written were lost");
        assert!(
            got == data[..accepted],
            "the bytes sent differ from those written"
        );
        assert_eq!(open_fds(), fds, "fds leaked: {}", describe_fds());
    });
}

/// Many adapters dropped with receives in flight, bytes held or writes behind: no fd stays
/// open.
#[test]
fn adapters_dropped_mid_operation_leak_no_fd() {
    serial(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ring = BufRing::builder()
            .entries(64)
            .buf_len(4096)
            .build()
            .unwrap();
        let fds = open_fds();
        for i in 0..32 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let mut client = client.compat();
            let mut server = if i % 2 == 0 {
                server.compat_with_ring(&ring)
            } else {
                server.compat()
            };
            let mut buf = [0; 16];
            assert!(poll_once(server.read(&mut buf)).is_pending());
            client.write_all(&[1; 100]).await.unwrap();
            client.write_all(&pattern(100_000, i)).await.unwrap();
            if i % 3 == 0 {
                sleep(Duration::from_millis(1)).await;
                let _ = poll_once(server.read(&mut buf));
            }
            drop(server);
            drop(client);
        }
        let mut open = open_fds();
        for _ in 0..200 {
            if open == fds {
                break;
            }
            sleep(Duration::from_millis(10)).await;
            open = open_fds();
        }
        assert_eq!(open, fds, "fds leaked: {}", describe_fds());
    });
}

/// `poll_shutdown` sends what was written first, then EOF; the read side stays open.
#[test]
fn shutdown_sends_the_written_bytes_then_eof() {
    serial(async {
        let (stream, mut peer) = stream_with_std_peer().await;
        let mut compat = stream.compat();
        compat.write_all(b"last words").await.unwrap();
        compat.shutdown().await.unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        peer.write_all(b"reply").unwrap();
        let mut reply = [0; 5];
        compat.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    });
}

/// A compat write half reports a reset peer as an error, not a panic or a hang.
#[test]
fn a_reset_peer_is_an_error() {
    serial(async {
        let (stream, peer) = stream_with_std_peer().await;
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        sleep(Duration::from_millis(20)).await;
        let (_read, write) = stream.into_split();
        let mut write = write.compat();
        let data = pattern(1 << 20, 5);
        let mut failed = false;
        for _ in 0..8 {
            if write.write_all(&data).await.is_err() || write.flush().await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writes to a reset peer kept succeeding");
        // `AsyncWrite` is implemented for the write half's adapter.
        fn is_async_write<W: AsyncWrite>(_: &W) {}
        is_async_write(&write);
    });
}

type Lines =
    tokio_util::codec::Framed<net::compat::Compat<TcpStream>, tokio_util::codec::LinesCodec>;

/// The next line from `framed`, or `None` after 5 s.
async fn next_line(
    framed: &mut Lines,
) -> Option<Option<Result<String, tokio_util::codec::LinesCodecError>>> {
    use futures_util::StreamExt;
    timeout(Duration::from_secs(5), framed.next()).await.ok()
}

/// The `lines` example (tokio-util's `LinesCodec` over compat streams): each client is
/// greeted, a line goes to every other client and not back to its sender, and a line longer
/// than the limit ends only its own connection.
#[test]
fn the_lines_example_relays_lines_and_drops_overlong_ones() {
    serial(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_util::codec::{Framed, LinesCodec};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        runtime::spawn(lines::serve(listener));
        let mut clients = Vec::new();
        for _ in 0..3 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let me = stream.local_addr().unwrap();
            let mut framed = Framed::new(stream.compat(), LinesCodec::new());
            let hello = framed.next().await.unwrap().unwrap();
            assert_eq!(hello, format!("welcome, {me}"));
            clients.push((me, framed));
        }
        let sender = clients[0].0;
        clients[0].1.send("hi all").await.unwrap();
        for (_, framed) in &mut clients[1..] {
            let line = next_line(framed).await.expect("a line was not relayed");
            assert_eq!(line.unwrap().unwrap(), format!("{sender}: hi all"));
        }
        // Too long a line: that client is cut off, the others carry on.
        let long = "x".repeat(lines::MAX_LINE + 1);
        clients[1].1.send(long).await.unwrap();
        let end = next_line(&mut clients[1].1)
            .await
            .expect("not disconnected");
        assert!(end.is_none(), "the overlong line's sender got {end:?}");
        clients[2].1.send("still here").await.unwrap();
        let line = next_line(&mut clients[0].1)
            .await
            .expect("the room stopped relaying");
        assert_eq!(
            line.unwrap().unwrap(),
            format!("{}: still here", clients[2].0)
        );
        // The sender never hears its own line.
        assert!(poll_once(clients[2].1.next()).is_pending());
    });
}

/// Ring-backed adapters one after another on one stream: the bytes each left behind (those it
/// had not handed out, and those that reached its receive after the last read) all reach the
/// next reader, in order, even when an adapter goes away after taking only part of them.
#[test]
fn ring_backed_adapters_in_turn_lose_no_byte() {
    serial(async {
        let ring = BufRing::builder()
            .entries(16)
            .buf_len(4096)
            .build()
            .unwrap();
        let (stream, mut peer) = stream_with_std_peer().await;
        peer.write_all(b"0123456789").unwrap();
        let mut first = stream.compat_with_ring(&ring);
        let mut got = [0; 3];
        first.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"012");
        // These reach the first adapter's receive, which nobody polls any more.
        peer.write_all(b"abc").unwrap();
        sleep(Duration::from_millis(20)).await;
        let mut second = first.into_inner().compat_with_ring(&ring);
        let mut got = [0; 7];
        second.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"3456789");
        let mut stream = second.into_inner();
        let read = timeout(Duration::from_secs(5), stream.read(Vec::with_capacity(64)));
        let (res, buf) = read.await.expect("the last bytes were lost");
        assert_eq!(&buf[..res.unwrap()], b"abc");
    });
}
