//! TCP echo ping-pong: the `tcp_echo` example (owned-buffer reads) and the `tcp_echo_ring`
//! example (multishot receives from a shared provided-buffer ring) against tokio
//! (`current_thread`) and monoio echo servers, with the same client, in the same run.
//!
//! Every server runs as its own process pinned to CPU 0; the client (a tokio `current_thread`
//! loop in this process) is pinned to CPU 1. For each (connections, message size) pair and
//! each round, every server is measured once, in an order that rotates between rounds. Each
//! connection sends a message, waits for the whole echo, and repeats. Reported per server,
//! as medians over rounds: echoed messages per second, p50/p99 round-trip latency, and the
//! server's CPU time per echoed message (from `/proc/<pid>/task/*/schedstat` over the measured
//! window). With two cores both sides saturate at 64+ connections, so ops/s crowd together and
//! CPU per message is what separates the servers.
//!
//! ```text
//! cargo bench -p benches --bench echo
//! ROUNDS=5 MEASURE_MS=3000 CONNS=1,64,512 SIZES=64,1024 cargo bench -p benches --bench echo
//! ```

use std::{
    cell::Cell,
    net::SocketAddr,
    os::unix::process::CommandExt,
    process::Command,
    rc::Rc,
    time::{Duration, Instant},
};

use benches::{ServerProcess, env_or, median, pin_to, process_cpu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    name: &'static str,
    process: ServerProcess,
    addr: SocketAddr,
}

fn start_server(name: &'static str, exe: &str, port: u16, pin: bool) -> Server {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(exe);
    cmd.arg(addr.to_string());
    if pin {
        // SAFETY: the closure only calls `sched_setaffinity`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| pin_to(0));
        }
    }
    Server {
        name,
        process: ServerProcess::start(&mut cmd, addr),
        addr,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_msg: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Stop,
}

/// Runs the ping-pong client against `server` and measures one sample.
fn run_client(
    server: &Server,
    conns: usize,
    size: usize,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = server.process.0.id();
    let addr = server.addr;
    rt.block_on(async move {
        let phase = Rc::new(Cell::new(Phase::Warmup));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let mut streams = Vec::with_capacity(conns);
                for _ in 0..conns {
                    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    streams.push(s);
                }
                let tasks: Vec<_> = streams
                    .into_iter()
                    .map(|mut stream| {
                        let phase = phase.clone();
                        tokio::task::spawn_local(async move {
                            let msg = vec![0x5au8; size];
                            let mut buf = vec![0u8; size];
                            let mut latencies = Vec::new();
                            loop {
                                let started = Instant::now();
                                stream.write_all(&msg).await.unwrap();
                                stream.read_exact(&mut buf).await.unwrap();
                                match phase.get() {
                                    Phase::Warmup => {}
                                    Phase::Measure => {
                                        latencies.push(started.elapsed().as_nanos() as u32)
                                    }
                                    Phase::Stop => return latencies,
                                }
                            }
                        })
                    })
                    .collect();
                tokio::time::sleep(warmup).await;
                let cpu_start = process_cpu(pid);
                let start = Instant::now();
                phase.set(Phase::Measure);
                tokio::time::sleep(measure).await;
                let cpu = process_cpu(pid) - cpu_start;
                let elapsed = start.elapsed();
                phase.set(Phase::Stop);
                let mut all: Vec<u32> = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all.sort_unstable();
                let pct = |p: f64| {
                    all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                        .map_or(f64::NAN, |&ns| f64::from(ns) / 1000.0)
                };
                let msgs = all.len().max(1) as f64;
                Sample {
                    ops_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
                    p50_us: pct(0.50),
                    p99_us: pct(0.99),
                    cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / msgs,
                }
            })
            .await
    })
}

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let rounds = env_or("ROUNDS", 3) as usize;
    let warmup = Duration::from_millis(env_or("WARMUP_MS", 300));
    let measure = Duration::from_millis(env_or("MEASURE_MS", 2000));
    let conns_list = list("CONNS", &[1, 64, 512]);
    let sizes = list("SIZES", &[64, 1024]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cpus >= 2;
    if pin {
        pin_to(1).expect("pin the client to CPU 1");
    }

    // tokio and monoio stay at indexes 1 and 2: the ratio columns refer to them.
    let servers = [
        start_server(
            "runtime (tcp_echo)",
            env!("CARGO_BIN_EXE_echo_runtime"),
            18080,
            pin,
        ),
        start_server("tokio", env!("CARGO_BIN_EXE_echo_tokio"), 18081, pin),
        start_server("monoio", env!("CARGO_BIN_EXE_echo_monoio"), 18082, pin),
        start_server(
            "runtime (tcp_echo_ring)",
            env!("CARGO_BIN_EXE_echo_ring"),
            18083,
            pin,
        ),
    ];
    println!(
        "echo ping-pong: {rounds} rounds, {warmup:?} warm-up + {measure:?} measured per run, \
         servers pinned to CPU 0 and client to CPU 1: {pin} ({cpus} CPUs)"
    );

    for &size in &sizes {
        for &conns in &conns_list {
            let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
            for round in 0..rounds {
                for k in 0..servers.len() {
                    let i = (k + round) % servers.len();
                    let s = run_client(&servers[i], conns, size, warmup, measure);
                    samples[i].push(s);
                }
            }
            let med: Vec<Sample> = samples
                .iter()
                .map(|runs| {
                    let m = |f: fn(&Sample) -> f64| {
                        let mut v: Vec<f64> = runs.iter().map(f).collect();
                        median(&mut v)
                    };
                    Sample {
                        ops_per_sec: m(|s| s.ops_per_sec),
                        p50_us: m(|s| s.p50_us),
                        p99_us: m(|s| s.p99_us),
                        cpu_us_per_msg: m(|s| s.cpu_us_per_msg),
                    }
                })
                .collect();
            println!("\n### {conns} connection(s), {size} B messages\n");
            println!(
                "| server | ops/s | p50 µs | p99 µs | server CPU µs/msg | CPU vs tokio | CPU vs monoio | p50 vs tokio |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for (server, s) in servers.iter().zip(&med) {
                println!(
                    "| {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.3} | {:.3} | {:.3} |",
                    server.name,
                    s.ops_per_sec,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_msg,
                    s.cpu_us_per_msg / med[1].cpu_us_per_msg,
                    s.cpu_us_per_msg / med[2].cpu_us_per_msg,
                    s.p50_us / med[1].p50_us,
                );
            }
        }
    }
}
