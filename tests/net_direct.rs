//! Direct descriptors (`TcpListener::set_direct_descriptors`): connections that live only in the
//! ring's file table. Serving past `RLIMIT_NOFILE` runs in a child process (it lowers the
//! limit); the client side runs in this process, with its own, higher limit.

use std::{
    cell::Cell,
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use integration_tests::{open_fds, raise_fd_limit, run_in_child, thread_cpu_time};
use net::{ListenerOptions, TcpListener, TcpStream};
use runtime::{Builder, Runtime, time::timeout};

const CASE: &str = "NET_DIRECT_CASE";
const OK: &str = "child-checks-passed";
/// Connections the child serves at once, and its soft `RLIMIT_NOFILE` while it does.
const CONNECTIONS: usize = 1000;
const NOFILE: u64 = 256;

fn in_child() -> bool {
    std::env::var(CASE).is_ok()
}

/// What every test here starts with: `None` on the epoll backend (the test is skipped,
/// logged with the reason: direct descriptors live in io_uring's file table), otherwise the
/// lock that runs one test at a time, since fd counts are process-wide.
fn direct_test(name: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    integration_tests::exclusive_on_io_uring(name, "direct descriptors (registered files)")
}

/// A one-worker runtime with a table of `slots` direct descriptors.
fn runtime_with_table(slots: u32) -> Runtime {
    Builder::new()
        .worker_threads(1)
        .direct_descriptors(slots)
        .build()
        .unwrap()
}

fn direct_listener() -> TcpListener {
    TcpListener::bind_with(
        "127.0.0.1:0",
        ListenerOptions::new().direct_descriptors(true),
    )
    .unwrap()
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

/// Echoes one message per read until EOF.
async fn echo(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(64);
    loop {
        let (res, b) = stream.read(buf).await;
        let n = match res {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (res, b) = stream.write_all(runtime::buf::IoBuf::slice(b, ..n)).await;
        buf = b.into_inner();
        if res.is_err() {
            return;
        }
    }
}

/// With the soft `RLIMIT_NOFILE` at 256, a server accepting into direct descriptors serves
/// 1,000 connections held open at once (with ordinary fds it serves about 248 of them: the rest
/// of the limit is taken by the process's own descriptors), and none is left in the table
/// once they close.
#[test]
fn direct_descriptors_serve_1000_connections_under_nofile_256() {
    let Some(_serial) = direct_test("direct_descriptors_serve_1000_connections_under_nofile_256")
    else {
        return;
    };
    if in_child() {
        return serve_past_the_fd_limit();
    }
    raise_fd_limit(CONNECTIONS as u64 + 256);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "direct_descriptors_serve_1000_connections_under_nofile_256",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE, "serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the child prints its address").unwrap();
        // libtest may print the test's name on the same line first.
        if let Some((_, addr)) = line.split_once("listening on ") {
            break addr.trim().parse().unwrap();
        }
    };
    // Every connection is opened, then each gets an echo while all stay open.
    let mut clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut echoed = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let msg = format!("{i:06}");
        client.write_all(msg.as_bytes()).unwrap();
        let mut back = [0u8; 6];
        if client.read_exact(&mut back).is_ok() && back == msg.as_bytes() {
            echoed += 1;
        }
    }
    drop(clients);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    let out = rest.join("\n");
    assert_eq!(
        echoed, CONNECTIONS,
        "connections served; child said:\n{out}"
    );
    assert!(
        status.success() && out.contains(OK),
        "child: {status:?}\n{out}"
    );
}

fn serve_past_the_fd_limit() {
    // The table is registered while the limit allows its size (the kernel caps a table at the
    // soft limit when it is registered), then the limit goes down to 256.
    raise_fd_limit(4096);
    let rt = runtime_with_table(2048);
    let listener = direct_listener();
    set_nofile(NOFILE);
    println!("listening on {}", listener.local_addr().unwrap());
    rt.block_on(async move {
        let live = Rc::new(Cell::new(0usize));
        let most = Rc::new(Cell::new(0usize));
        let served = Rc::new(Cell::new(0usize));
        let mut incoming = listener.incoming();
        let run = async {
            while served.get() < CONNECTIONS {
                let stream = incoming.next().await.unwrap().unwrap();
                assert!(stream.is_direct(), "accepted as a direct descriptor");
                served.set(served.get() + 1);
                live.set(live.get() + 1);
                most.set(most.get().max(live.get()));
                let live = live.clone();
                runtime::spawn(async move {
                    echo(stream).await;
                    live.set(live.get() - 1);
                });
            }
            while live.get() > 0 {
                runtime::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let finished = timeout(Duration::from_secs(60), run).await;
        assert!(
            finished.is_ok(),
            "served {}, {} still open, at most {} at once",
            served.get(),
            live.get(),
            most.get()
        );
        assert_eq!(most.get(), CONNECTIONS, "held open at once");
        // Every slot was closed through the ring.
        runtime::yield_now().await;
        assert_eq!(runtime::direct::usage().map(|u| u.0), Some(0));
    });
    println!("{OK}");
}

/// Options, addresses, `as_raw_fd` and `into_std` get a real fd installed on demand; options
/// and addresses borrow one for the call only.
#[test]
fn real_fd_installed_on_demand() {
    let Some(_serial) = direct_test("real_fd_installed_on_demand") else {
        return;
    };
    let rt = runtime_with_table(64);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(stream.is_direct());
        assert_eq!(runtime::direct::usage().unwrap().0, 1);

        let before = open_fds();
        stream.set_nodelay(true).unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), peer.local_addr().unwrap());
        assert_eq!(stream.local_addr().unwrap(), addr);
        assert_eq!(open_fds(), before, "options borrow an fd for the call only");

        // as_raw_fd keeps one: a real socket, the same connection.
        let fd = stream.as_raw_fd();
        assert!(fd >= 0);
        assert_eq!(open_fds(), before + 1);
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.tcp_nodelay().unwrap());
        assert_eq!(stream.as_raw_fd(), fd, "installed once");

        // into_std: a std stream over the same connection; the slot is closed.
        let mut std_stream = stream.into_std().unwrap();
        runtime::yield_now().await;
        assert_eq!(runtime::direct::usage().unwrap().0, 0);
        std_stream.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    });
}

/// A full table fails the accept with an error that says how to raise it, `incoming` backs
/// off instead of spinning, and closing connections makes room again (no slot leaks).
#[test]
fn full_table_reports_backs_off_and_recovers() {
    let Some(_serial) = direct_test("full_table_reports_backs_off_and_recovers") else {
        return;
    };
    const SLOTS: usize = 8;
    let rt = runtime_with_table(SLOTS as u32);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let _peers: Vec<_> = (0..SLOTS + 4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut incoming = listener.incoming();
        let mut held = Vec::new();
        for _ in 0..SLOTS {
            held.push(incoming.next().await.unwrap().unwrap());
        }
        assert_eq!(runtime::direct::usage(), Some((SLOTS as u32, SLOTS as u32)));
        let err = incoming.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::QuotaExceeded, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("full") && msg.contains("Builder::direct_descriptors"),
            "{msg}"
        );

        // Retrying at once is paced by the stream's backoff.
        let cpu = thread_cpu_time();
        let start = Instant::now();
        let mut errors = 0;
        while start.elapsed() < Duration::from_millis(300) {
            match timeout(Duration::from_millis(300), incoming.next()).await {
                Ok(Some(Err(_))) => errors += 1,
                Ok(other) => panic!("the table is still full: {other:?}"),
                Err(_) => {}
            }
        }
        let used = thread_cpu_time() - cpu;
        assert!(errors < 20, "{errors} errors in 300 ms: the stream spins");
        assert!(used < Duration::from_millis(100), "{used:?} CPU in 300 ms");

        // Room again: the waiting connections are accepted into the freed slots.
        held.truncate(SLOTS - 4);
        for _ in 0..4 {
            let s = timeout(Duration::from_secs(5), incoming.next())
                .await
                .expect("accepted after slots were freed")
                .unwrap()
                .unwrap();
            held.push(s);
        }
        assert_eq!(runtime::direct::usage(), Some((SLOTS as u32, SLOTS as u32)));
        drop(held);
        runtime::yield_now().await;
        assert_eq!(runtime::direct::usage(), Some((0, SLOTS as u32)));
    });
}

/// Dropping a direct stream closes the connection through the ring (the peer reads EOF), and
/// `shutdown` reaches the socket through `IORING_OP_SHUTDOWN`.
#[test]
fn close_and_shutdown_go_through_the_ring() {
    let Some(_serial) = direct_test("close_and_shutdown_go_through_the_ring") else {
        return;
    };
    let rt = runtime_with_table(16);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let (res, _) = stream.write_all(b"x".to_vec()).await;
        res.unwrap();
        stream.flush().await.unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"x", "data, then EOF from the shutdown");
        drop(stream);

        // A shutdown while a write behind is on its way is done once the bytes went out.
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let (res, _) = stream.write(b"behind".to_vec()).await;
        assert_eq!(res.unwrap(), 6);
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        runtime::time::sleep(Duration::from_millis(5)).await;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"behind");
        drop(stream);

        let fds = open_fds();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert_eq!(open_fds(), fds + 1, "only the peer holds an fd");
        drop(stream);
        // The close is submitted with the next enter.
        runtime::time::sleep(Duration::from_millis(1)).await;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut [0u8; 8]).unwrap(), 0, "EOF after the close");
        assert_eq!(runtime::direct::usage(), Some((0, 16)));
    });
}

/// Dropping futures with direct descriptors in flight: a read (its stream closed afterwards),
/// and an `incoming` stream whose multishot accept produced a connection after it was
/// dropped; no slot is left behind.
#[test]
fn dropped_operations_leave_no_slot_behind() {
    let Some(_serial) = direct_test("dropped_operations_leave_no_slot_behind") else {
        return;
    };
    let rt = runtime_with_table(16);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let _peer = std::net::TcpStream::connect(addr).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let read = stream.read(Vec::with_capacity(64));
        assert!(timeout(Duration::from_millis(20), read).await.is_err());
        drop(stream);

        let mut incoming = listener.incoming();
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        drop(first);
        // The multishot request is still armed: connections that arrive now are accepted
        // while the stream is parked in the driver, and closed.
        drop(incoming);
        let _late: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        runtime::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runtime::direct::usage(), Some((0, 16)));
    });
}

/// A direct stream used after its runtime is gone, in another runtime, fails with `EBADF`
/// (the slot number means nothing to the new ring) instead of reaching that ring's slot.
#[test]
fn stream_off_its_ring_fails_cleanly() {
    let Some(_serial) = direct_test("stream_off_its_ring_fails_cleanly") else {
        return;
    };
    let first = runtime_with_table(16);
    let (stream, _peer) = first.block_on(async {
        let listener = direct_listener();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().await.unwrap().0, peer)
    });
    drop(first);
    let second = runtime_with_table(16);
    second.block_on(async move {
        // Occupy slot 0 of the new ring, which the old index would name.
        let listener = direct_listener();
        let _other_peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_other, _) = listener.accept().await.unwrap();
        let mut stream = stream;
        let (res, _) = stream.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        let err = stream.try_as_fd().unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
    });
}

/// Where no table can be registered (here: a size the kernel refuses, above the soft
/// `RLIMIT_NOFILE`), connections get ordinary fds and the capabilities say why.
#[test]
fn without_a_table_connections_use_real_fds() {
    // Fd counts are process-wide: one test at a time.
    let _serial = integration_tests::exclusive();
    if !in_child() {
        run_in_child(
            "without_a_table_connections_use_real_fds",
            CASE,
            "no-table",
            OK,
        );
        return;
    }
    set_nofile(1024);
    let rt = runtime_with_table(4096);
    rt.block_on(async {
        let notes = runtime::capabilities().notes().join("\n");
        // On the epoll backend there is no table to refuse: sockets are ordinary anyway.
        assert!(
            integration_tests::epoll_selected()
                || (notes.contains("direct descriptors off") && notes.contains("RLIMIT_NOFILE")),
            "{notes}"
        );
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            peer.write_all(b"ping").unwrap();
            let mut got = [0u8; 4];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let mut incoming = listener.incoming();
        let stream = incoming.next().await.unwrap().unwrap();
        assert!(!stream.is_direct());
        echo(stream).await;
        assert_eq!(&peer.join().unwrap(), b"ping");
    });
    println!("{OK}");
}

/// Reads, writes, vectored writes, `close` and splitting work on direct streams as on others.
#[test]
fn direct_streams_do_everything_streams_do() {
    let Some(_serial) = direct_test("direct_streams_do_everything_streams_do") else {
        return;
    };
    let rt = runtime_with_table(16);
    rt.block_on(async {
        let listener = direct_listener();
        let client = runtime::spawn(TcpStream::connect(listener.local_addr().unwrap()));
        let (server, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap().unwrap();
        assert!(server.is_direct() && !client.is_direct());
        runtime::spawn(echo(server));
        for round in 0..3 {
            let msg = format!("round {round}").into_bytes();
            let (res, _) = client.write_all(msg.clone()).await;
            res.unwrap();
            let (res, got) = client.read_exact(vec![0u8; msg.len()]).await;
            res.unwrap();
            assert_eq!(got, msg);
        }
        let (res, _) = client.writev(vec![b"ab".to_vec(), b"cd".to_vec()]).await;
        assert_eq!(res.unwrap(), 4);
        let (res, got) = client.read_exact(vec![0u8; 4]).await;
        res.unwrap();
        assert_eq!(got, b"abcd");
        client.close().await.unwrap();
    });
}

/// With no descriptor left in the process: a direct stream still serves, sets integer options
/// through the ring (`SOCKET_URING_OP_SETSOCKOPT` on the fixed file), and what needs a real
/// fd says why it has none.
#[test]
fn out_of_fds_options_go_through_the_ring() {
    let Some(_serial) = direct_test("out_of_fds_options_go_through_the_ring") else {
        return;
    };
    if !in_child() {
        run_in_child("out_of_fds_options_go_through_the_ring", CASE, "no-fds", OK);
        return;
    }
    let rt = runtime_with_table(16);
    rt.block_on(async {
        let listener = direct_listener();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut incoming = listener.incoming();
        let stream = incoming.next().await.unwrap().unwrap();
        assert!(stream.is_direct());
        // Take every descriptor that is left.
        let mut fillers = Vec::new();
        // SAFETY: dup takes an fd number; each result is owned by `fillers`.
        while let fd @ 0.. = unsafe { libc::dup(0) } {
            // SAFETY: `fd` was just returned by dup and is owned by nothing else.
            fillers
                .push(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        stream.set_nodelay(true).unwrap();
        stream.set_recv_buffer_size(64 * 1024).unwrap();
        let err = stream.nodelay().unwrap_err();
        assert!(err.to_string().contains("EMFILE"), "{err}");
        let err = stream.try_as_fd().unwrap_err();
        assert!(err.to_string().contains("out of descriptors"), "{err}");
        assert_eq!(stream.as_raw_fd(), -1);
        drop(fillers);
        assert!(stream.nodelay().unwrap(), "set through the ring");
        drop(peer);
    });
    println!("{OK}");
}

/// `connect_direct`: the connecting side is a direct descriptor from its `IORING_OP_SOCKET`
/// on, costs no fd, and its slot is closed through the ring like an accepted one's.
#[test]
fn connected_streams_can_be_direct_too() {
    let Some(_serial) = direct_test("connected_streams_can_be_direct_too") else {
        return;
    };
    let rt = runtime_with_table(16);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let _warm = runtime::spawn(TcpStream::connect_direct(addr))
            .await
            .unwrap();
        let (_warm_server, _) = listener.accept().await.unwrap();
        let fds = open_fds();
        let client = runtime::spawn(TcpStream::connect_direct(addr));
        let (server, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap().unwrap();
        assert!(client.is_direct() && server.is_direct());
        assert_eq!(open_fds(), fds, "neither side holds an fd");
        assert_eq!(runtime::direct::usage(), Some((4, 16)));
        runtime::spawn(echo(server));
        let (res, _) = client.write_all(b"direct".to_vec()).await;
        res.unwrap();
        let (res, got) = client.read_exact(vec![0u8; 6]).await;
        res.unwrap();
        assert_eq!(got, b"direct");
        assert_eq!(client.peer_addr().unwrap(), addr);
        drop(client);
        // The server's echo task sees EOF and drops its stream too.
        assert!(
            integration_tests::turns_until(10_000, || runtime::direct::usage() == Some((2, 16)))
                .await
        );
    });
}

/// An accept issued right after a direct stream was dropped, in the same task turn, does not
/// overtake that stream's close: it waits for the slot instead of taking a waiting
/// connection into a table that is still full (which would lose that connection).
#[test]
fn accept_right_after_a_drop_loses_no_connection() {
    // Fd counts are process-wide: one test at a time.
    let _serial = integration_tests::exclusive();
    const SLOTS: usize = 4;
    let rt = runtime_with_table(SLOTS as u32);
    rt.block_on(async {
        let listener = direct_listener();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..SLOTS {
            peers.push(std::net::TcpStream::connect(addr).unwrap());
            held.push(listener.accept().await.unwrap().0);
        }
        // One more waits in the backlog.
        let mut waiting = std::net::TcpStream::connect(addr).unwrap();
        drop(held.pop());
        let mut stream = timeout(Duration::from_secs(5), async {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => break s,
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::QuotaExceeded, "{e}"),
                }
            }
        })
        .await
        .expect("the waiting connection is accepted once the slot is closed");
        // It is the waiting connection, alive.
        waiting.write_all(b"still here").unwrap();
        let (res, got) = timeout(Duration::from_secs(5), stream.read_exact(vec![0u8; 10]))
            .await
            .expect("the peer's bytes arrive");
        res.unwrap();
        assert_eq!(got, b"still here");
    });
}
