//! Writes of up to 4 KiB return before the kernel took their bytes (`net/src/behind.rs`):
//! the byte stream keeps the order of the calls whatever mix of writes makes it, nothing is
//! lost when the stream is dropped or shut down right after, a failure surfaces on the next
//! operation, and a peer that reads nothing holds writers back instead of growing memory.

use std::{io::Read, net::Shutdown, time::Duration};

use integration_tests::{pattern, stream_with_std_peer};
use runtime::buf::IoBuf;

/// Reads `peer` to EOF on a thread.
fn read_to_end(mut peer: std::net::TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    })
}

/// Joins `thread` without blocking the runtime's thread (the loop must keep running to send
/// what was written behind).
async fn join<T>(thread: std::thread::JoinHandle<T>) -> T {
    while !thread.is_finished() {
        runtime::time::sleep(Duration::from_millis(1)).await;
    }
    thread.join().unwrap()
}

#[runtime::test]
async fn mixed_writes_keep_their_order() {
    let (mut stream, peer) = stream_with_std_peer().await;
    let reader = read_to_end(peer);
    let data = pattern(3 << 20, 7);
    let mut at = 0;
    let mut step = 0usize;
    while at < data.len() {
        // Small (written behind), large (sent directly) and vectored writes, interleaved.
        let len =
            [1, 100, 4 * 1024, 4 * 1024 + 1, 70_000, 16 * 1024][step % 6].min(data.len() - at);
        let chunk = data[at..at + len].to_vec();
        match step % 4 {
            0 | 1 => stream.write_all(chunk).await.0.unwrap(),
            2 => {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let (res, buf) = stream.write(rest).await;
                    let n = res.unwrap();
                    rest = buf[n..].to_vec();
                }
            }
            _ => {
                let half = len / 2;
                let bufs = vec![chunk[..half].to_vec(), chunk[half..].to_vec()];
                let (res, bufs) = stream.writev(bufs).await;
                let n = res.unwrap();
                let sent: Vec<u8> = bufs.concat();
                stream.write_all(sent[n..].to_vec()).await.0.unwrap();
            }
        }
        at += len;
        step += 1;
        if step % 7 == 0 {
            runtime::yield_now().await;
        }
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let got = join(reader).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the byte stream was reordered");
}

/// Bytes written behind still go out, before the FIN, when the stream is shut down or
/// dropped right after the write returned.
#[runtime::test]
async fn shutdown_and_drop_right_after_a_write_lose_nothing() {
    for drop_it in [false, true] {
        let (mut stream, peer) = stream_with_std_peer().await;
        let reader = read_to_end(peer);
        let mut expected = Vec::new();
        for i in 0..50u64 {
            let chunk = pattern(1000 + i as usize, i);
            expected.extend_from_slice(&chunk);
            stream.write_all(chunk).await.0.unwrap();
        }
        if drop_it {
            drop(stream);
        } else {
            stream.shutdown(Shutdown::Write).unwrap();
        }
        let got = join(reader).await;
        assert!(got == expected, "drop {drop_it}: bytes lost or reordered");
    }
}

/// A staged send that fails (the peer reset the connection) is reported by a later write or
/// by `flush`, never swallowed.
#[runtime::test]
async fn a_failed_write_behind_is_reported_later() {
    let (mut stream, peer) = stream_with_std_peer().await;
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    runtime::time::sleep(Duration::from_millis(20)).await;
    let mut failure = None;
    for _ in 0..100 {
        if let Err(e) = stream.write_all(vec![1u8; 512]).await.0 {
            failure = Some(e);
            break;
        }
        runtime::yield_now().await;
    }
    let e = match failure {
        Some(e) => e,
        None => stream
            .flush()
            .await
            .expect_err("writes to a reset peer must fail"),
    };
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{e:?}"
    );
}

/// A peer that reads nothing: writes behind stop returning once a bounded amount is staged
/// (they wait like any send), and every byte arrives once the peer reads.
#[runtime::test]
async fn a_peer_that_reads_nothing_holds_writers_back() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    // Small kernel buffers on both sides, so that what the kernel can hold is far less than
    // what is written.
    socket2::SockRef::from(&peer)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    socket2::SockRef::from(&stream)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let written = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let counter = written.clone();
    let writer = runtime::spawn(async move {
        for i in 0..4000u64 {
            stream.write_all(pattern(1024, i)).await.0.unwrap();
            counter.set(counter.get() + 1024);
        }
        stream.flush().await.unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    });
    runtime::time::sleep(Duration::from_millis(100)).await;
    // The kernel holds a few hundred KiB at most; the runtime stages 256 KiB more.
    let accepted = written.get();
    assert!(
        accepted < 2 << 20,
        "{accepted} bytes accepted by a peer that reads nothing: writes behind must be bounded"
    );
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    writer.await.unwrap();
    let got = join(reader).await;
    let expected: Vec<u8> = (0..4000u64).flat_map(|i| pattern(1024, i)).collect();
    assert_eq!(got.len(), written.get());
    assert!(got == expected, "bytes lost or reordered");
}

/// Messages each enter-counting test echoes.
const MESSAGES: u64 = 2000;

/// A `std` client on a thread: `MESSAGES` ping-pongs of 64 bytes, each checked.
fn ping_pong_client(addr: std::net::SocketAddr) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..MESSAGES {
            buf[0] = i as u8;
            s.write_all(&buf).unwrap();
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf[0], i as u8);
        }
    })
}

/// `io_uring_enter` calls per echoed message, counted after the first 100 messages (which
/// settle the connection).
#[derive(Default)]
struct EnterMeter {
    echoed: u64,
    start: Option<(u64, u64)>,
}

impl EnterMeter {
    fn echoed_one(&mut self) {
        self.echoed += 1;
        if self.echoed == 100 {
            self.start = Some((runtime::metrics().enters, self.echoed));
        }
    }

    fn assert_one_per_message(&self) {
        let (enters0, echoed0) = self.start.expect("at least 100 messages echoed");
        let per_message =
            (runtime::metrics().enters - enters0) as f64 / (self.echoed - echoed0) as f64;
        assert!(
            per_message < 1.1,
            "{per_message:.2} io_uring_enter calls per echoed message"
        );
    }
}

/// A request/response loop costs one `io_uring_enter` per message: the echo's send is
/// written behind, so it reaches the kernel in the same enter that waits for the next request.
#[test]
fn an_echo_loop_costs_one_enter_per_message() {
    let rt = runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = ping_pong_client(listener.local_addr().unwrap());
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = Vec::with_capacity(4096);
        let mut meter = EnterMeter::default();
        loop {
            let (res, b) = stream.read(buf).await;
            let n = res.unwrap();
            if n == 0 {
                break;
            }
            let (res, b) = stream.write_all(b.slice(..n)).await;
            res.unwrap();
            buf = b.into_inner();
            buf.clear();
            meter.echoed_one();
        }
        client.join().unwrap();
        meter.assert_one_per_message();
    });
}

/// The ring path echo, written behind too: one enter per message.
#[test]
fn a_ring_echo_loop_costs_one_enter_per_message() {
    let rt = runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ring = runtime::buf::BufRing::builder()
            .entries(64)
            .buf_len(4096)
            .build()
            .unwrap();
        let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = ping_pong_client(listener.local_addr().unwrap());
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut rd, mut wr) = stream.split();
        let mut received = rd.recv_stream(&ring);
        let mut meter = EnterMeter::default();
        while let Some(buf) = received.next().await {
            let buf = buf.unwrap();
            wr.write_all(buf.slice(..)).await.0.unwrap();
            meter.echoed_one();
        }
        client.join().unwrap();
        meter.assert_one_per_message();
    });
}

/// Bytes written behind just before the runtime ends still go out: shutdown lets sends that
/// finish inside an enter run to the end of their chain before it cancels anything.
#[test]
fn writes_just_before_the_runtime_ends_go_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = runtime::Runtime::new().unwrap();
    let expected: Vec<u8> = (0..50u64).flat_map(|i| pattern(1000, i)).collect();
    let (peer, stream) = rt.block_on(async {
        let mut stream = net::TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().unwrap();
        for i in 0..50u64 {
            stream.write_all(pattern(1000, i)).await.0.unwrap();
        }
        (peer, stream)
    });
    drop(stream);
    drop(rt);
    let reader = read_to_end(peer);
    let got = reader.join().unwrap();
    assert!(
        got == expected,
        "{} of {} bytes arrived",
        got.len(),
        expected.len()
    );
}

/// A flush with no other task ready learns the staged send's outcome in the same poll: one
/// enter that does not wait (`runtime::submit_now`), instead of a loop turn and a second poll
/// (hyper flushes after every response).
#[runtime::test]
async fn a_flush_with_nothing_else_ready_completes_in_its_first_poll() {
    let (mut stream, mut peer) = stream_with_std_peer().await;
    // With SQPOLL (CI runs this binary with `RUNTIME_SQPOLL` too) the kernel thread takes the
    // send, not that enter: its outcome is known once the thread has moved the SQ head past
    // it (docs/ring-modes.md), usually a loop turn later, so the flush is only awaited.
    let sqpoll = runtime::capabilities().sqpoll();
    // On epoll the send behind went out inside `write_all` (no enter at all).
    let epoll = integration_tests::epoll_selected();
    for round in 0..3u8 {
        stream.write_all(vec![round; 100]).await.0.unwrap();
        let enters = runtime::metrics().enters;
        let mut flush = std::pin::pin!(stream.flush());
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(flush.as_mut().poll(cx))).await;
        if sqpoll {
            match first {
                std::task::Poll::Ready(done) => done.unwrap(),
                std::task::Poll::Pending => flush.await.unwrap(),
            }
        } else {
            assert!(
                matches!(first, std::task::Poll::Ready(Ok(()))),
                "round {round}: the first poll of the flush was {first:?}"
            );
            if !epoll {
                assert_eq!(runtime::metrics().enters, enters + 1, "round {round}");
            }
        }
        let mut got = [0u8; 100];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [round; 100]);
    }
    // With another task ready, the send waits for the loop's enter: the flush is pending.
    stream.write_all(vec![9; 10]).await.0.unwrap();
    let other = runtime::spawn(async {});
    let mut flush = std::pin::pin!(stream.flush());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(flush.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(done) if epoll => done.unwrap(),
        _ => {
            assert!(first.is_pending(), "with a task ready: {first:?}");
            flush.await.unwrap();
        }
    }
    other.await.unwrap();
}
