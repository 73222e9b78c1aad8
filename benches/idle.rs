//! Server memory with many idle connections, each waiting to receive: the `tcp_echo_ring`
//! example (receives draw from one shared provided-buffer ring only when data arrives)
//! against the `tcp_echo` example, monoio and tokio (each connection owns a buffer while it
//! waits), in the same run.
//!
//! For each server (a fresh process), the client opens N connections and sends nothing; once
//! the server has accepted them all and settled, the growth of its resident memory (`VmRSS`)
//! divided by N is its memory per idle connection. Connections close with RST (`SO_LINGER` 0)
//! so no TIME_WAIT state piles up between servers.
//!
//! ```text
//! cargo bench -p benches --bench idle           # CONNS=10000 ROUNDS=3
//! ```

use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use benches::{ServerProcess, env_or, median};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open fds of `pid` (to know when the server has accepted every connection).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read and write one `rlimit`.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Returns the server's RSS growth per idle connection, in KiB.
fn measure(exe: &str, port: u16, conns: usize) -> f64 {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = ServerProcess::start(Command::new(exe).arg(addr.to_string()), addr);
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let base_fds = fds(pid);
    let before = rss_kib(pid);
    let clients: Vec<TcpStream> = (0..conns)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Wait until every connection is accepted (one fd each) and memory has settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fds(pid) < base_fds + conns {
        assert!(
            Instant::now() < deadline,
            "{exe} accepted only {}",
            fds(pid) - base_fds
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    for c in &clients {
        let _ = socket2::SockRef::from(c).set_linger(Some(Duration::ZERO));
    }
    drop(clients);
    (after.saturating_sub(before)) as f64 / conns as f64
}

fn main() {
    raise_nofile();
    let conns = env_or("CONNS", 10_000) as usize;
    let rounds = env_or("ROUNDS", 3) as usize;
    let servers = [
        ("runtime (tcp_echo_ring)", env!("CARGO_BIN_EXE_echo_ring")),
        ("runtime (tcp_echo)", env!("CARGO_BIN_EXE_echo_runtime")),
        ("monoio", env!("CARGO_BIN_EXE_echo_monoio")),
        ("tokio", env!("CARGO_BIN_EXE_echo_tokio")),
    ];
    let mut samples: Vec<Vec<f64>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let port = 19000 + (round * servers.len() + i) as u16;
            samples[i].push(measure(servers[i].1, port, conns));
        }
    }
    let med: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    println!(
        "server RSS growth with {conns} idle connections waiting to receive ({rounds} rounds, median)\n"
    );
    println!("| server | KiB per idle connection | vs monoio |");
    println!("|---|---|---|");
    for (i, (name, _)) in servers.iter().enumerate() {
        println!("| {name} | {:.2} | {:.3} |", med[i], med[i] / med[2]);
    }
}
