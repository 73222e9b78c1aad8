//! No file descriptor leaks across many connections, including ones dropped mid-operation.
//! Each test counts the process's fds, so they run under `exclusive()`.

use std::time::Duration;

use integration_tests::{exclusive, open_fds, raise_fd_limit};
use net::{TcpListener, TcpStream, UdpSocket};

#[test]
fn ten_thousand_connect_close_cycles_leak_nothing() {
    let _serial = exclusive();
    raise_fd_limit(4096);
    let before = open_fds();
    {
        let rt = runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = runtime::spawn(async move {
                let mut incoming = listener.incoming();
                for _ in 0..10_000 {
                    // The server closes first, so TIME_WAIT stays on its side and client ports
                    // are reusable at once.
                    drop(incoming.next().await.unwrap().unwrap());
                }
            });
            let during = open_fds();
            for _ in 0..10_000 {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let (res, _) = stream.read(vec![0u8; 1]).await;
                assert_eq!(res.unwrap(), 0);
            }
            server.await.unwrap();
            let after = open_fds();
            assert!(
                after <= during,
                "fds grew while cycling connections: {during} -> {after}: {}",
                integration_tests::describe_fds()
            );
        });
    }
    // At most as many as before: an fd that was closing when `before` was counted (seen once
    // under load: a descriptor of the test harness) is gone by now, and a leak of 10,000 cycles
    // would show as thousands.
    let after = open_fds();
    assert!(
        after <= before,
        "file descriptors leaked: {before} -> {after}: {}",
        integration_tests::describe_fds()
    );
}

/// Sockets dropped while operations are in flight on them (a pending read, accept, receive)
/// are closed once those operations finish; dropping the runtime finishes them.
#[test]
fn sockets_dropped_with_operations_in_flight_are_closed() {
    let _serial = exclusive();
    let before = open_fds();
    {
        let rt = runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for _ in 0..50 {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let mut client = TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap();
                let (server, _) = listener.accept().await.unwrap();
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                runtime::spawn(async move {
                    let _ = client.read(vec![0u8; 16]).await;
                });
                runtime::spawn(async move {
                    let _ = udp.recv_from(vec![0u8; 16]).await;
                });
                runtime::spawn(async move {
                    let _ = listener.accept().await;
                });
                drop(server);
            }
            runtime::time::sleep(Duration::from_millis(10)).await;
        });
    }
    assert_eq!(open_fds(), before, "file descriptors leaked");
}

/// An accept that completed in the kernel but whose future was dropped before it saw the
/// result: the new connection's fd is closed, not leaked.
#[test]
fn a_dropped_accept_closes_the_connection_it_got() {
    let Some(_serial) = integration_tests::exclusive_on_io_uring(
        "net_fd_leaks::a_dropped_accept_closes_the_connection_it_got",
        "an operation the kernel still holds after its future is dropped; on epoll none is in the kernel",
    ) else {
        return;
    };
    let rt = runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..20 {
            let before = open_fds();
            let mut accept = Box::pin(listener.accept());
            assert!(integration_tests::poll_once(&mut accept).await.is_pending());
            runtime::yield_now().await;
            let client = std::net::TcpStream::connect(addr).unwrap();
            // Let the accept complete in the kernel, then drop its future unread.
            runtime::time::sleep(Duration::from_millis(2)).await;
            drop(accept);
            runtime::yield_now().await;
            drop(client);
            assert!(
                integration_tests::turns_until(100, || open_fds() == before).await,
                "the accepted fd leaked"
            );
        }
    });
}
