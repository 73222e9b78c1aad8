//! Descriptor passing over Unix sockets (`SCM_RIGHTS`) and fd leak checks: received
//! descriptors are owned and close-on-exec, surplus ones are closed and flagged, a receive
//! dropped mid-flight leaks nothing, and connect/close cycles leave no fd behind.
//!
//! Every test counts the process's fds, so they run under `exclusive()`, each on its own
//! runtime.

use std::{
    future::Future,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use integration_tests::{describe_fds, exclusive, open_fds, pipe, poll_once, raise_fd_limit};
use net::{UnixDatagram, UnixListener, UnixStream, unix::MAX_FDS};
use runtime::metrics;

fn run<F: Future>(f: F) -> F::Output {
    runtime::Runtime::new().unwrap().block_on(f)
}

fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0, "{}", io::Error::last_os_error());
    flags & libc::FD_CLOEXEC != 0
}

/// Writes `data` into `w` and reads it back from `r`: the two are ends of one pipe.
fn pipe_round_trip(r: &OwnedFd, w: &OwnedFd, data: &[u8]) {
    // SAFETY: write/read use the live local buffers with their lengths on open fds.
    unsafe {
        assert_eq!(
            libc::write(w.as_raw_fd(), data.as_ptr().cast(), data.len()),
            data.len() as isize
        );
        let mut buf = vec![0u8; data.len()];
        assert_eq!(
            libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()),
            data.len() as isize
        );
        assert_eq!(buf, data);
    }
}

/// Runs loop turns until no operation is in flight (the parked ones got their completions).
async fn settle() {
    for _ in 0..1000 {
        if metrics().ops_in_flight == 0 {
            return;
        }
        runtime::yield_now().await;
    }
    panic!("operations still in flight: {}", metrics().ops_in_flight);
}

#[test]
fn a_stream_passes_descriptors_that_arrive_owned_and_close_on_exec() {
    let _serial = exclusive();
    run(async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let baseline = open_fds();
        let (r, w) = pipe().unwrap();
        let (res, _) = a
            .send_with_fds(b"fds".to_vec(), &[r.as_fd(), w.as_fd()])
            .await;
        assert_eq!(res.unwrap(), 3);
        // The receiver gets its own references: the sender's may go at once.
        drop((r, w));
        let (res, buf) = b.recv_with_fds(Vec::with_capacity(16), 4).await;
        let got = res.unwrap();
        assert_eq!(&buf[..got.len], b"fds");
        assert_eq!(got.fds.len(), 2);
        assert!(!got.fds_truncated && !got.truncated);
        assert!(
            got.fds.iter().all(|fd| is_cloexec(fd.as_fd())),
            "MSG_CMSG_CLOEXEC missing"
        );
        pipe_round_trip(&got.fds[0], &got.fds[1], b"through the passed pipe");
        assert_eq!(open_fds(), baseline + 2);
        drop(got);
        assert_eq!(open_fds(), baseline, "{}", describe_fds());
        // Plain data after the descriptors still flows, and the stream stays in order.
        let (res, _) = a.write_all(b"more".to_vec()).await;
        res.unwrap();
        let (res, buf) = b.recv_with_fds(Vec::with_capacity(16), 4).await;
        let got = res.unwrap();
        assert_eq!((&buf[..got.len], got.fds.len()), (&b"more"[..], 0));
    });
}

#[test]
fn a_datagram_passes_descriptors_even_without_payload() {
    let _serial = exclusive();
    run(async {
        let name = format!("\0rt-uds-fds-{}", std::process::id());
        let server = UnixDatagram::bind(&name).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let baseline = open_fds();
        let (r, w) = pipe().unwrap();
        let (res, _) = client
            .send_to_with_fds(Vec::new(), &[w.as_fd()], &name)
            .await;
        assert_eq!(res.unwrap(), 0);
        drop(w);
        let (res, _) = server.recv_from_with_fds(Vec::with_capacity(8), 2).await;
        let (got, peer) = res.unwrap();
        assert!(peer.is_unnamed());
        assert_eq!((got.len, got.fds.len()), (0, 1));
        assert!(is_cloexec(got.fds[0].as_fd()));
        pipe_round_trip(&r, &got.fds[0], b"dgram");
        drop((got, r));
        assert_eq!(open_fds(), baseline, "{}", describe_fds());

        let (a, b) = UnixDatagram::pair().unwrap();
        let (r, w) = pipe().unwrap();
        let (res, _) = a.send_with_fds(b"x".to_vec(), &[r.as_fd()]).await;
        res.unwrap();
        let (res, _) = b.recv_with_fds(Vec::with_capacity(8), 1).await;
        let got = res.unwrap();
        pipe_round_trip(&got.fds[0], &w, b"pair");
    });
}

/// More descriptors than the receive has room for: `fds_truncated` says so, the caller gets
/// at most `max_fds`, and every other descriptor that arrived is closed.
#[test]
fn surplus_descriptors_are_flagged_and_closed() {
    let _serial = exclusive();
    run(async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (da, db) = UnixDatagram::pair().unwrap();
        let (r, w) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        let baseline = open_fds();
        let three = [r.as_fd(), w.as_fd(), r2.as_fd()];
        for max_fds in [0, 1, 2] {
            let (res, _) = a.send_with_fds(b"abc".to_vec(), &three).await;
            res.unwrap();
            let (res, buf) = b.recv_with_fds(Vec::with_capacity(8), max_fds).await;
            let got = res.unwrap();
            assert_eq!(&buf[..got.len], b"abc");
            assert_eq!(got.fds.len(), max_fds, "max_fds {max_fds}");
            assert!(
                got.fds_truncated,
                "max_fds {max_fds}: truncation not reported"
            );
            assert_eq!(
                open_fds(),
                baseline + max_fds,
                "max_fds {max_fds}: {}",
                describe_fds()
            );
            drop(got);

            let (res, _) = da.send_with_fds(b"abc".to_vec(), &three).await;
            res.unwrap();
            let (res, _) = db.recv_with_fds(Vec::with_capacity(8), max_fds).await;
            let got = res.unwrap();
            assert_eq!((got.fds.len(), got.fds_truncated), (max_fds, true));
            assert_eq!(
                open_fds(),
                baseline + max_fds,
                "datagram: {}",
                describe_fds()
            );
        }
        // Exactly enough room: nothing flagged.
        let (res, _) = a.send_with_fds(b"abc".to_vec(), &three).await;
        res.unwrap();
        let (res, _) = b.recv_with_fds(Vec::with_capacity(8), 3).await;
        let got = res.unwrap();
        assert_eq!((got.fds.len(), got.fds_truncated), (3, false));
        drop(got);
        assert_eq!(open_fds(), baseline, "{}", describe_fds());
        drop((w2, r, w, r2));
    });
}

/// A `recv_with_fds` whose future is dropped after its request reached the kernel, before
/// the peer sent anything: the request is cancelled, the descriptors sent afterwards reach
/// the next receive, and nothing leaks.
#[test]
fn a_receive_dropped_in_flight_leaks_no_descriptor() {
    let _serial = exclusive();
    run(async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        let baseline = open_fds();
        {
            let mut recv = Box::pin(b.recv_with_fds(Vec::with_capacity(16), 4));
            assert!(poll_once(&mut recv).await.is_pending());
            // Let the request reach the kernel and wait there.
            for _ in 0..10 {
                runtime::yield_now().await;
            }
            assert!(poll_once(&mut recv).await.is_pending());
        }
        settle().await;
        let (res, _) = a
            .send_with_fds(b"late".to_vec(), &[r.as_fd(), w.as_fd()])
            .await;
        res.unwrap();
        assert_eq!(open_fds(), baseline, "{}", describe_fds());
        let (res, buf) = b.recv_with_fds(Vec::with_capacity(16), 4).await;
        let got = res.unwrap();
        assert_eq!((&buf[..got.len], got.fds.len()), (&b"late"[..], 2));
        drop(got);
        assert_eq!(open_fds(), baseline, "{}", describe_fds());
    });
}

/// A `recv_with_fds` dropped while its completion is still due: the message is already
/// waiting, so the receive (submitted together with its cancel) takes it, and its completion
/// arrives after the drop. The descriptors in its parked control buffer are closed then, and
/// its bytes are kept for the next read.
#[test]
fn descriptors_of_a_completion_after_the_drop_are_closed() {
    if integration_tests::skip_on_epoll(
        "unix_fds::descriptors_of_a_completion_after_the_drop_are_closed",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let _serial = exclusive();
    run(async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        let (res, _) = a
            .send_with_fds(b"orphan".to_vec(), &[r.as_fd(), w.as_fd()])
            .await;
        res.unwrap();
        drop((r, w));
        let baseline = open_fds();
        {
            let mut recv = Box::pin(b.recv_with_fds(Vec::with_capacity(16), 4));
            assert!(poll_once(&mut recv).await.is_pending());
        }
        settle().await;
        assert_eq!(
            open_fds(),
            baseline,
            "passed descriptors leaked: {}",
            describe_fds()
        );
        // The receive did take the message: its bytes were rescued.
        let (res, buf) = b.read(Vec::with_capacity(16)).await;
        assert_eq!(&buf[..res.unwrap()], b"orphan");
    });
}

/// The inode behind `fd`.
fn inode(fd: BorrowedFd<'_>) -> u64 {
    // SAFETY: fstat writes one `stat` into the zeroed local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(fd.as_raw_fd(), &mut st), 0);
        st.st_ino
    }
}

/// A send dropped after it was polled still reaches the kernel (with its cancel, in the next
/// enter). Meanwhile the caller closed its descriptor and the process reused the number for
/// another file; the send must still pass the descriptor it was given, not whatever now has
/// that number: it owns duplicates until its final completion.
#[test]
fn a_dropped_send_passes_the_descriptor_it_was_given() {
    if integration_tests::skip_on_epoll(
        "unix_fds::a_dropped_send_passes_the_descriptor_it_was_given",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) {
        return;
    }
    let _serial = exclusive();
    run(async {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        let number = w.as_raw_fd();
        {
            let fds = [w.as_fd()];
            let mut send = Box::pin(a.send_with_fds(b"x".to_vec(), &fds));
            assert!(poll_once(&mut send).await.is_pending());
        }
        drop(w);
        let (other, _other_w) = pipe().unwrap();
        assert_eq!(
            other.as_raw_fd(),
            number,
            "the number was not reused; the test proves nothing"
        );
        settle().await;
        // A plain byte after it, so the receive below never waits for nothing.
        let (res, _) = a.write_all(b"y".to_vec()).await;
        res.unwrap();
        let (res, buf) = b.recv_with_fds(Vec::with_capacity(8), 2).await;
        let got = res.unwrap();
        assert_eq!(&buf[..got.len], b"x", "the dropped send did not go out");
        assert_eq!(got.fds.len(), 1);
        assert_eq!(
            inode(got.fds[0].as_fd()),
            inode(r.as_fd()),
            "a reused number was passed"
        );
        assert_ne!(inode(got.fds[0].as_fd()), inode(other.as_fd()));
    });
}

#[test]
fn descriptor_passing_rejects_bad_input() {
    let _serial = exclusive();
    run(async {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let (r, _w) = pipe().unwrap();
        let (res, _) = a.send_with_fds(Vec::new(), &[r.as_fd()]).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at least one byte"), "{err}");
        let many = vec![r.as_fd(); MAX_FDS + 1];
        let (res, _) = a.send_with_fds(b"x".to_vec(), &many).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let (d, _e) = UnixDatagram::pair().unwrap();
        let (res, _) = d.send_with_fds(b"x".to_vec(), &many).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        // At the limit it goes through.
        let (res, _) = d.send_with_fds(b"x".to_vec(), &many[..MAX_FDS]).await;
        assert_eq!(res.unwrap(), 1);
    });
}

/// Like the TCP leak test: thousands of connect/accept/close cycles over `incoming` leave no
/// fd behind, and the runtime closes everything when it is dropped.
#[test]
fn connect_close_cycles_leak_nothing() {
    let _serial = exclusive();
    raise_fd_limit(4096);
    let before = open_fds();
    run(async {
        let name = format!("\0rt-uds-cycles-{}", std::process::id());
        let listener = UnixListener::bind(&name).unwrap();
        let server = runtime::spawn(async move {
            let mut incoming = listener.incoming();
            for _ in 0..3000 {
                drop(incoming.next().await.unwrap().unwrap());
            }
        });
        let during = open_fds();
        for _ in 0..3000 {
            let mut stream = UnixStream::connect(&name).await.unwrap();
            let (res, _) = stream.read(vec![0u8; 1]).await;
            assert_eq!(res.unwrap(), 0);
        }
        server.await.unwrap();
        let after = open_fds();
        assert!(
            after <= during,
            "fds grew: {during} -> {after}: {}",
            describe_fds()
        );
    });
    assert_eq!(
        open_fds(),
        before,
        "file descriptors leaked: {}",
        describe_fds()
    );
}
