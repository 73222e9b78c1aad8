//! Scaling of echo ping-pong from 1 to N workers: the `tcp_echo` example with
//! `--threads N` (one ring per worker, `SO_REUSEPORT` listeners, pinned) against monoio with
//! the same number of threads (one runtime per thread, reuse-port listeners, pinned), in the
//! same run, alternating.
//!
//! The client is a tokio multi-thread runtime with `CLIENT_THREADS` threads (default: half the
//! CPUs, at least 1); each of `CONNS` connections sends a 64-byte message and waits for the echo,
//! repeatedly. Reported: echoed messages per second and the server's CPU time per message, per
//! worker count. On a 2-core machine server and client share the cores, so the ratios between
//! servers matter more than the absolute scaling.
//!
//! ```text
//! cargo bench -p benches --bench scaling               # WORKERS=1,2 CONNS=256 ROUNDS=3
//! ```

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use benches::{ServerProcess, env_or, median, process_cpu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start(exe: &str, port: u16, threads: usize) -> (ServerProcess, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(exe);
    cmd.args([addr.to_string(), "--threads".into(), threads.to_string()]);
    (ServerProcess::start(&mut cmd, addr), addr)
}

/// (messages per second, server CPU microseconds per message)
fn run(
    server: &ServerProcess,
    addr: SocketAddr,
    conns: usize,
    client_threads: usize,
    measure: Duration,
) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .unwrap();
    let pid = server.0.id();
    rt.block_on(async move {
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (measuring, stop, count) = (measuring.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let msg = [7u8; 64];
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    s.write_all(&msg).await.unwrap();
                    s.read_exact(&mut buf).await.unwrap();
                    if measuring.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu0 = process_cpu(pid);
        let t0 = Instant::now();
        measuring.store(true, Ordering::SeqCst);
        tokio::time::sleep(measure).await;
        measuring.store(false, Ordering::SeqCst);
        let cpu = process_cpu(pid) - cpu0;
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        let msgs = count.load(Ordering::SeqCst) as f64;
        (
            msgs / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / msgs.max(1.0),
        )
    })
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<usize> = std::env::var("WORKERS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| {
            [1, 2, 4, 8, 16]
                .into_iter()
                .filter(|&w| w <= cpus.max(2))
                .collect()
        });
    let conns = env_or("CONNS", 256) as usize;
    let rounds = env_or("ROUNDS", 3) as usize;
    let measure = Duration::from_millis(env_or("MEASURE_MS", 2000));
    let client_threads = env_or("CLIENT_THREADS", (cpus as u64 / 2).max(1)) as usize;
    println!(
        "echo scaling: {cpus} CPUs, {conns} connections, 64 B ping-pong, {client_threads} client \
         thread(s), {rounds} rounds x {measure:?}\n"
    );
    println!(
        "| workers | runtime ops/s | monoio ops/s | ops/s ratio | runtime CPU µs/msg | monoio CPU µs/msg | CPU ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut port = 19500;
    for &n in &workers {
        let mut ours = (Vec::new(), Vec::new());
        let mut theirs = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..2 {
                port += 1;
                let (exe, out) = if (k + round) % 2 == 0 {
                    (env!("CARGO_BIN_EXE_echo_runtime"), &mut ours)
                } else {
                    (env!("CARGO_BIN_EXE_echo_monoio"), &mut theirs)
                };
                let (server, addr) = start(exe, port, n);
                let (ops, cpu) = run(&server, addr, conns, client_threads, measure);
                out.0.push(ops);
                out.1.push(cpu);
            }
        }
        let (o_ops, o_cpu) = (median(&mut ours.0), median(&mut ours.1));
        let (m_ops, m_cpu) = (median(&mut theirs.0), median(&mut theirs.1));
        println!(
            "| {n} | {o_ops:.0} | {m_ops:.0} | {:.3} | {o_cpu:.2} | {m_cpu:.2} | {:.3} |",
            o_ops / m_ops,
            o_cpu / m_cpu
        );
    }
}
