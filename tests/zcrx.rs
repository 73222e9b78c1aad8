//! Zero-copy receive up to the kernel boundary. This machine's interfaces (virtio_net, lo, veth,
//! ifb) cannot host an ifq, so registration must fail with `EOPNOTSUPP` and be explained;
//! `Auto` must fall back and still deliver every byte. The full data path runs in
//! `device_less_copy_mode_runs_the_whole_path` where the kernel has `ZCRX_REG_NODEV` (7.1+),
//! and otherwise skips, recording why with `integration_tests::skip`. The refill-queue
//! protocol itself is tested against a software stand-in for the kernel in
//! `runtime/src/zcrx/refill.rs`.

use std::{io::Write, net::Shutdown};

use runtime::{
    Builder,
    buf::BufRing,
    zcrx::{ZcrxConfig, ZcrxError, ZcrxMode},
};

/// The kernel's errno behind a registration error.
fn errno(err: &std::io::Error) -> Option<i32> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<ZcrxError>())
        .and_then(ZcrxError::errno)
}

/// `lo` plus every interface backed by a device (eth0 here).
fn interfaces() -> Vec<String> {
    let mut names = vec!["lo".to_owned()];
    for entry in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "lo" && entry.path().join("device").exists() {
            names.push(name);
        }
    }
    names
}

fn config(interface: &str, mode: ZcrxMode) -> ZcrxConfig {
    let mut c = ZcrxConfig::new(interface, 0);
    c.mode(mode).area_size(1 << 20).rq_entries(256);
    c
}

#[test]
fn registration_on_unsupported_interfaces_fails_with_eopnotsupp() {
    if integration_tests::skip_on_epoll(
        "zcrx::registration_on_unsupported_interfaces_fails_with_eopnotsupp",
        "ZCRX registration",
    ) {
        return;
    }
    let names = interfaces();
    assert!(
        names.len() >= 2,
        "expected a device-backed interface besides lo: {names:?}"
    );
    for name in names {
        let err = Builder::new()
            .zcrx(config(&name, ZcrxMode::On))
            .build()
            .unwrap_err();
        let msg = err.to_string();
        if errno(&err) == Some(libc::EPERM) {
            integration_tests::skip(
                "zcrx::registration_on_unsupported_interfaces_fails_with_eopnotsupp",
                &format!("interface {name} not checked: no CAP_NET_ADMIN here ({msg})"),
            );
            continue;
        }
        println!("{name}: {msg}");
        assert_eq!(errno(&err), Some(libc::EOPNOTSUPP), "{name}: {msg}");
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
        assert!(
            msg.contains(&format!("interface {name} RX queue 0")),
            "{msg}"
        );
        assert!(msg.contains("cannot host zero-copy receive"), "{msg}");
    }
}

#[test]
fn unknown_interfaces_are_named_in_the_error() {
    if integration_tests::skip_on_epoll(
        "zcrx::unknown_interfaces_are_named_in_the_error",
        "ZCRX registration",
    ) {
        return;
    }
    let err = Builder::new()
        .zcrx(config("nosuchnic0", ZcrxMode::On))
        .build()
        .unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENODEV));
    assert!(
        err.to_string()
            .contains("no interface named \"nosuchnic0\""),
        "{err}"
    );
}

/// `Auto` on an interface that cannot do it: the runtime records why, keeps the ZCRX-ready
/// ring (DEFER_TASKRUN, 32-byte CQEs), and `recv_zero_copy` delivers every byte through
/// provided buffers.
#[test]
fn auto_mode_falls_back_and_delivers_every_byte() {
    let rt = Builder::new()
        .zcrx(config("lo", ZcrxMode::Auto))
        .build()
        .unwrap();
    let caps = rt.capabilities();
    // On epoll (no ring at all) the note names the backend instead of the interface.
    let epoll = integration_tests::epoll_selected();
    assert!(epoll || caps.cqe32() && caps.defer_taskrun(), "{caps}");
    assert!(caps.zcrx().is_none());
    let note = caps
        .notes()
        .iter()
        .find(|n| n.contains("zero-copy receive off"))
        .expect("a note says why zero-copy receive is off");
    let why = if epoll {
        "epoll backend"
    } else {
        "interface lo"
    };
    assert!(note.contains(why), "{note}");
    println!("{note}");
    rt.block_on(async {
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            peer.write_all(&sent).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
        });
        let err = stream.recv_zc_stream().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
        assert!(epoll || err.to_string().contains("interface lo"), "{err}");

        let ring = BufRing::builder()
            .entries(64)
            .buf_len(16384)
            .build()
            .unwrap();
        let mut received = stream.recv_zero_copy(&ring);
        assert!(!received.is_zcrx());
        let mut got = Vec::with_capacity(data.len());
        while let Some(item) = received.next().await {
            let buf = item.unwrap();
            assert!(!buf.is_zero_copy());
            got.extend_from_slice(&buf);
        }
        writer.join().unwrap();
        assert!(got == data, "bytes lost or reordered through the fallback");
    });
}

/// With `ZCRX_REG_NODEV` (Linux 7.1) an ifq needs no NIC: every payload takes the kernel's copy
/// path into the area, exercising the whole CQE/refill protocol over loopback TCP.
#[test]
fn device_less_copy_mode_runs_the_whole_path() {
    if integration_tests::skip_on_epoll(
        "zcrx::device_less_copy_mode_runs_the_whole_path",
        "ZCRX registration",
    ) {
        return;
    }
    let mut config = ZcrxConfig::device_less();
    config
        .mode(ZcrxMode::On)
        .area_size(4 << 20)
        .rq_entries(1024);
    let rt = match Builder::new().zcrx(config).build() {
        Ok(rt) => rt,
        Err(e) => {
            assert!(
                matches!(
                    errno(&e),
                    Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
                ),
                "unexpected failure: {e}"
            );
            integration_tests::skip(
                "zcrx::device_less_copy_mode_runs_the_whole_path",
                &format!(
                    "this kernel ({}) cannot register a device-less ifq (ZCRX_REG_NODEV, \
                     Linux 7.1): {e}",
                    std::fs::read_to_string("/proc/sys/kernel/osrelease")
                        .unwrap_or_default()
                        .trim()
                ),
            );
            return;
        }
    };
    println!("{}", rt.capabilities());
    rt.block_on(async {
        let (mut stream, mut peer) = integration_tests::stream_with_std_peer().await;
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            peer.write_all(&sent).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
        });
        let mut received = stream.recv_zc_stream().unwrap();
        let mut got = Vec::with_capacity(data.len());
        while let Some(item) = received.next().await {
            let buf = item.unwrap();
            assert!(buf.is_zero_copy());
            got.extend_from_slice(&buf);
        }
        writer.join().unwrap();
        assert!(got == data);
        let stats = runtime::zcrx::Zcrx::current().unwrap().stats();
        assert_eq!(stats.in_use, 0, "{stats:?}");
    });
}
