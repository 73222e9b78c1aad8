//! The examples' programs, compiled into this test binary. `tcp_echo` runs in a child process
//! (this binary re-executed), which gets a real `SIGTERM`; `chat` and `udp_rpc` run their
//! server and client logic on loopback.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[allow(dead_code)] // its `main` is not called here
#[path = "../examples/tcp_echo.rs"]
mod tcp_echo;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

#[allow(dead_code)]
#[path = "../examples/udp_rpc.rs"]
mod udp_rpc;

/// Set in the child: run the echo server with these arguments instead of the test.
const SERVER_ARGS: &str = "EXAMPLES_TEST_TCP_ECHO_ARGS";

/// Runs `tcp_echo` with `args` in a child process; returns it and the address it printed.
#[allow(clippy::zombie_processes)] // the child is returned; the caller waits for it
fn start_tcp_echo(
    test: &str,
    args: &str,
) -> (
    std::process::Child,
    String,
    BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(SERVER_ARGS, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("tcp_echo exited ({status}) before listening");
        }
        if let Some(rest) = line.strip_prefix("tcp_echo listening on ") {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            return (child, addr, stderr);
        }
    }
}

/// In the child: the example's program, exiting as its `main` would.
fn child_mode() -> bool {
    let Ok(args) = std::env::var(SERVER_ARGS) else {
        return false;
    };
    let res = tcp_echo::run(args.split_whitespace().map(str::to_owned));
    if let Err(e) = &res {
        eprintln!("tcp_echo failed: {e}");
    }
    std::process::exit(if res.is_ok() { 0 } else { 1 });
}

/// Waits up to `limit` for the child to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tcp_echo did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm(child: &std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) of our own child, which is still running (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// `tcp_echo` on two workers echoes, then on SIGTERM stops accepting, closes the connection
/// that stays open after the grace period, and exits with status 0.
#[test]
fn tcp_echo_exits_0_on_sigterm() {
    const NAME: &str = "tcp_echo_exits_0_on_sigterm";
    if child_mode() {
        return;
    }
    // A free port for both workers' reuse-port listeners.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, addr, mut stderr) =
        start_tcp_echo(NAME, &format!("127.0.0.1:{port} --threads 2"));
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");

    let signalled = Instant::now();
    sigterm(&child);
    // The idle connection is closed once the grace period is over.
    let mut rest = Vec::new();
    let n = conn.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "end of file, nothing more");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    assert!(status.success(), "exit status {status:?}; stderr: {log}");
    assert!(log.contains("SIGTERM"), "stderr: {log}");
    assert!(
        signalled.elapsed() >= tcp_echo::GRACE,
        "an open connection gets the grace period"
    );
    // Nothing listens any more.
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still accepting after exit"
    );
}

/// `tcp_echo --direct` on two workers accepts into the workers' file tables, echoes on
/// every connection, and exits with status 0 on SIGTERM.
#[test]
fn tcp_echo_direct_echoes() {
    const NAME: &str = "tcp_echo_direct_echoes";
    if child_mode()
        || integration_tests::skip_on_epoll(NAME, "direct descriptors (registered files)")
    {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, addr, mut stderr) =
        start_tcp_echo(NAME, &format!("127.0.0.1:{port} --threads 2 --direct"));
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("direct descriptors"), "stderr: {line}");
    // Several connections, so both workers' listeners get some.
    let mut conns: Vec<_> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("hello {i}");
        conn.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    drop(conns);
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    assert!(status.success(), "exit status {status:?}; stderr: {log}");
    assert!(!log.contains("failed"), "stderr: {log}");
}

/// A connection that ends during the grace period lets the server exit at once.
#[test]
fn tcp_echo_exits_early_when_connections_end() {
    const NAME: &str = "tcp_echo_exits_early_when_connections_end";
    if child_mode() {
        return;
    }
    let (mut child, addr, _stderr) = start_tcp_echo(NAME, "127.0.0.1:0");
    let conn = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let signalled = Instant::now();
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(50));
    drop(conn);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < tcp_echo::GRACE,
        "waited {:?} although the connection had ended",
        signalled.elapsed()
    );
}

/// Reads one `\n`-terminated line from a chat connection.
async fn read_line(stream: &mut net::TcpStream, pending: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return String::from_utf8(line).unwrap();
        }
        let (res, buf) = runtime::time::timeout(
            Duration::from_secs(5),
            stream.read(Vec::with_capacity(1024)),
        )
        .await
        .expect("a chat line within 5 s");
        let n = res.unwrap();
        assert!(n > 0, "connection closed; had {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    }
}

/// `chat`: each client's lines reach every other client (not itself), in order, and a client
/// that stays silent is disconnected after the idle timeout while the others stay.
#[runtime::test]
async fn chat_broadcasts_lines_and_drops_idle_clients() {
    let idle = Duration::from_millis(400);
    let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    runtime::spawn(chat::serve(listener, idle));
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut stream = net::TcpStream::connect(addr).await.unwrap();
        let mut pending = Vec::new();
        // The greeting comes after the server subscribed this client.
        let hello = read_line(&mut stream, &mut pending).await;
        assert_eq!(hello, format!("welcome, you are client {i}\n"));
        clients.push((stream, pending));
    }
    // Client 0 sends two lines, in two writes that split the second line.
    for part in [&b"hi all\nsecond "[..], b"line\r\n"] {
        let (res, _) = clients[0].0.write_all(part.to_vec()).await;
        res.unwrap();
    }
    for (stream, pending) in &mut clients[1..] {
        assert_eq!(read_line(stream, pending).await, "client 0: hi all\n");
        assert_eq!(read_line(stream, pending).await, "client 0: second line\n");
    }
    // Client 1 answers; clients 0 and 2 see it, and client 0 never saw its own lines.
    let (res, _) = clients[1].0.write_all(b"hello 0\n".to_vec()).await;
    res.unwrap();
    for i in [0, 2] {
        let (stream, pending) = &mut clients[i];
        assert_eq!(
            read_line(stream, pending).await,
            "client 1: hello 0\n",
            "client {i}"
        );
    }
    // Client 2 keeps talking; clients 0 and 1 go silent and are disconnected.
    let started = runtime::time::Instant::now();
    for _ in 0..4 {
        runtime::time::sleep(idle / 4).await;
        let (res, _) = clients[2].0.write_all(b"still here\n".to_vec()).await;
        res.unwrap();
    }
    for i in [0, 1] {
        let (stream, pending) = &mut clients[i];
        loop {
            let (res, buf) = runtime::time::timeout(
                Duration::from_secs(5),
                stream.read(Vec::with_capacity(1024)),
            )
            .await
            .expect("the idle client is disconnected");
            match res {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            started.elapsed() >= idle / 2,
            "client {i} dropped too early"
        );
    }
    // Client 2 was not idle: it is still served.
    let (res, _) = clients[2].0.write_all(b"anyone?\n".to_vec()).await;
    res.unwrap();
    let mut late = net::TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_line(&mut late, &mut pending).await,
        "welcome, you are client 3\n"
    );
}

/// `udp_rpc`: replies match their requests, and the client's timeout and retries get through
/// a server that drops the first datagram of every request.
#[runtime::test]
async fn udp_rpc_calls_retry_until_answered() {
    // The example's server.
    let server = net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    runtime::spawn(udp_rpc::serve(server));
    let mut client = udp_rpc::Client::connect(addr, Duration::from_millis(100), 2)
        .await
        .unwrap();
    for i in 0..20 {
        let reply = client.call(format!("req {i}").as_bytes()).await.unwrap();
        assert_eq!(reply, format!("req {i}").into_bytes());
    }

    // A lossy server: ignores the first copy of each request, answers the second. It also sends
    // a stale reply (a wrong id) first, which the client must skip.
    let lossy = net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let lossy_addr = lossy.local_addr().unwrap();
    runtime::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut buf = Vec::with_capacity(2048);
        loop {
            let (res, b) = lossy.recv_from(buf).await;
            buf = b;
            let Ok((n, from)) = res else { return };
            let id = u64::from_be_bytes(buf[..8].try_into().unwrap());
            if seen.insert(id) {
                buf.clear();
                continue; // lost
            }
            let mut stale = (id + 1000).to_be_bytes().to_vec();
            stale.extend_from_slice(b"stale");
            let _ = lossy.send_to(stale, from).await;
            let _ = lossy.send_to(buf[..n].to_vec(), from).await;
            buf.clear();
        }
    });
    let mut client = udp_rpc::Client::connect(lossy_addr, Duration::from_millis(50), 2)
        .await
        .unwrap();
    let started = runtime::time::Instant::now();
    for i in 0..5 {
        let reply = client.call(format!("lossy {i}").as_bytes()).await.unwrap();
        assert_eq!(reply, format!("lossy {i}").into_bytes());
    }
    assert!(
        started.elapsed() >= Duration::from_millis(5 * 50),
        "each request needed one timeout"
    );

    // Nobody answers: the call fails with TimedOut after every attempt.
    let silent = net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut client =
        udp_rpc::Client::connect(silent.local_addr().unwrap(), Duration::from_millis(30), 2)
            .await
            .unwrap();
    let started = runtime::time::Instant::now();
    let err = client.call(b"hello?").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(err.to_string().contains("3 attempts"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(90));
    drop(silent);
}
