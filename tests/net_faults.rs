//! Faults that change process-wide state run in child processes: SIGPIPE left at its default
//! action, and file descriptors exhausted under a listener.

use std::{
    io,
    time::{Duration, Instant},
};

use integration_tests::{run_in_child, thread_cpu_time};
use net::TcpListener;
use runtime::time::timeout;

const CASE: &str = "NET_FAULT_CASE";
const OK: &str = "child-checks-passed";

fn in_child() -> bool {
    std::env::var(CASE).is_ok()
}

/// With SIGPIPE at its default action (terminate), writing to a reset peer must return an
/// error instead of killing the process.
#[test]
fn writes_to_a_reset_peer_do_not_raise_sigpipe() {
    if !in_child() {
        run_in_child(
            "writes_to_a_reset_peer_do_not_raise_sigpipe",
            CASE,
            "sigpipe",
            OK,
        );
        return;
    }
    // SAFETY: restores the default disposition of SIGPIPE; no handler code is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let rt = runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for vectored in [false, true] {
            let (mut client, server) = integration_tests::tcp_pair().await;
            socket2::SockRef::from(&server)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(server);
            runtime::time::sleep(Duration::from_millis(10)).await;
            let mut failure = None;
            for _ in 0..20 {
                let res = if vectored {
                    client
                        .writev(vec![vec![1u8; 32 * 1024]; 2])
                        .await
                        .0
                        .map(drop)
                } else {
                    client.write_all(vec![1u8; 64 * 1024]).await.0
                };
                if let Err(e) = res {
                    failure = Some(e);
                    break;
                }
            }
            let e = failure.expect("writes to a reset peer must fail");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
        }
    });
    println!("{OK}");
}

fn set_nofile(soft: u64) {
    // SAFETY: getrlimit/setrlimit read and write one `rlimit`.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2)
}

/// Out of descriptors with connections waiting: `accept` returns `EMFILE` promptly, and
/// neither repeated `accept` calls nor `incoming` spin the CPU while it lasts.
#[test]
fn accept_under_emfile_reports_without_spinning() {
    if !in_child() {
        let out = run_in_child(
            "accept_under_emfile_reports_without_spinning",
            CASE,
            "emfile",
            OK,
        );
        print!("{out}");
        return;
    }
    let rt = runtime::Runtime::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections wait in the backlog while no descriptor is left to accept them.
    let _clients: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    set_nofile(highest_fd() + 1);
    // Fill any lower free slots so that no descriptor at all is left.
    let mut fillers = Vec::new();
    loop {
        // SAFETY: dup takes an fd number; the result, if any, is owned by `fillers`.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            break;
        }
        // SAFETY: `fd` was just returned by dup and is owned by nothing else.
        fillers.push(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    rt.block_on(async {
        let start = Instant::now();
        let err = listener.accept().await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        assert!(start.elapsed() < Duration::from_millis(100));

        // A loop that retries at once: the listener paces it.
        let cpu = thread_cpu_time();
        let start = Instant::now();
        let mut errors = 0;
        while start.elapsed() < Duration::from_millis(300) {
            let err = listener.accept().await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
            errors += 1;
        }
        let used = thread_cpu_time() - cpu;
        println!("accept loop: {errors} errors, {used:?} CPU in 300 ms");
        assert!(errors < 20, "{errors} accept attempts in 300 ms: spinning");
        assert!(
            used < Duration::from_millis(60),
            "accept loop used {used:?} CPU"
        );

        // The same through the multishot stream.
        let mut incoming = listener.incoming();
        let cpu = thread_cpu_time();
        let mut errors = 0;
        let _ = timeout(Duration::from_millis(300), async {
            while let Some(item) = incoming.next().await {
                let err = item.map(drop).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
                errors += 1;
            }
        })
        .await;
        let used = thread_cpu_time() - cpu;
        println!("incoming: {errors} errors, {used:?} CPU in 300 ms");
        assert!((1..20).contains(&errors), "{errors} errors in 300 ms");
        assert!(
            used < Duration::from_millis(60),
            "incoming used {used:?} CPU"
        );

        // Descriptors come back: accepting works again.
        set_nofile(4096);
        let (stream, _) = timeout(Duration::from_secs(3), incoming.next())
            .await
            .expect("accepting resumed")
            .unwrap()
            .map(|s| (s, ()))
            .unwrap();
        assert!(stream.peer_addr().is_ok());
    });
    println!("{OK}");
}
