//! HTTP/1.1 keep-alive servers compared: hyper on this runtime (the `http_server` example,
//! reading into the adapter's buffers, and with `--ring`, from a shared `BufRing`) against
//! hyper on tokio's `current_thread` runtime (`servers/tokio_http.rs`): the same handler
//! (`examples::http::handle`, a 13-byte `Hello, world!`), the same hyper-util builder, the
//! same load client, all built with the bench profile.
//!
//! # How it measures
//!
//! As `benches/echo.rs` does (`docs/benchmarks.md`): each measurement is a fresh server
//! process pinned to CPU 0, this process (the client) pinned to CPU 1; per workload and round
//! every server is measured once, in an order that rotates from round to round; reported are
//! medians over rounds, and ratios are medians of per-round ratios.
//!
//! Workloads (`WORKLOADS=keepalive,idle`):
//! - `keepalive`: `CONNS` keep-alive connections (1, 64), each with one `GET /` in flight at
//!   a time. Requests per second, p50/p99 latency (every request's time in the window), the
//!   server's CPU per request (`/proc/<pid>/task/*/schedstat` at the window's edges), the
//!   client's CPU per request (the same for every server).
//! - `idle`: `IDLE_CONNS` connections (10,000), each making one request and then staying
//!   open: the server's resident memory growth (`VmRSS`) per connection.
//!
//! The client (`http/client.rs`, `benches::http_client`) is one edge-triggered epoll loop: per request one `send`,
//! one or two `recv`s, a share of one `epoll_wait`, so it costs every server the same.
//!
//! ```text
//! cargo bench -p benches --bench http                       # ROUNDS=3 MEASURE_MS=2000
//! ROUNDS=1 MEASURE_MS=300 WARMUP_MS=100 IDLE_CONNS=1000 cargo bench -p benches --bench http
//! BASELINE_DIR=../base/target/release SERVERS=runtime,runtime-base,tokio cargo bench -p benches --bench http
//! (several comma-separated folders add `runtime-base-<name>` rows: bisecting in one run)
//! ```
//!
//! Output: the Markdown tables on stdout and in `target/bench/http.md`.

use std::{
    error::Error,
    fmt::Write as _,
    net::SocketAddr,
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use benches::{
    ServerProcess, env_or, http_client as client, median, out_dir, pin_client, pin_to, process_cpu,
    raise_nofile, status_kib,
};

/// One contender.
#[derive(Debug)]
struct Server {
    /// Its name in `SERVERS`.
    key: &'static str,
    label: &'static str,
    exe: &'static str,
    args: &'static [&'static str],
}

const SERVERS: [Server; 3] = [
    Server {
        key: "runtime",
        label: "hyper on runtime (http_server)",
        exe: env!("CARGO_BIN_EXE_http_runtime"),
        args: &[],
    },
    Server {
        key: "runtime-ring",
        label: "hyper on runtime, ring reads (http_server --ring)",
        exe: env!("CARGO_BIN_EXE_http_runtime"),
        args: &["--ring"],
    },
    Server {
        key: "tokio",
        label: "hyper on tokio current_thread",
        exe: env!("CARGO_BIN_EXE_http_tokio"),
        args: &[],
    },
];

#[derive(Debug, Clone, Copy)]
enum Workload {
    KeepAlive { conns: usize },
    Idle { conns: usize },
}

impl Workload {
    fn title(self) -> String {
        match self {
            Workload::KeepAlive { conns } => {
                format!("HTTP/1.1 keep-alive, {conns} connection(s), `GET /` → 13 bytes")
            }
            Workload::Idle { conns } => {
                format!("{conns} idle keep-alive connections: server memory")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    server_us_per_req: f64,
    client_us_per_req: f64,
    idle_kib_per_conn: f64,
}

impl Default for Sample {
    fn default() -> Sample {
        Sample {
            rps: f64::NAN,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            server_us_per_req: f64::NAN,
            client_us_per_req: f64::NAN,
            idle_kib_per_conn: f64::NAN,
        }
    }
}

struct Config {
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    pinned: bool,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Measures `server` once on `workload`, in a fresh server process.
fn measure(server: &Server, workload: Workload, cfg: &Config) -> Result<Sample, Box<dyn Error>> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut cmd = Command::new(server.exe);
    cmd.arg(addr.to_string()).args(server.args);
    if cfg.pinned {
        // SAFETY: the closure only calls `sched_setaffinity`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| pin_to(0));
        }
    }
    let process = ServerProcess::start(&mut cmd, addr);
    let pid = process.0.id();
    let result = match workload {
        Workload::KeepAlive { conns } => keep_alive(pid, addr, conns, cfg),
        Workload::Idle { conns } => idle(pid, addr, conns),
    };
    drop(process);
    result.map_err(|e| format!("{} on {}: {e}", server.key, workload.title()).into())
}

fn keep_alive(
    pid: u32,
    addr: SocketAddr,
    conns: usize,
    cfg: &Config,
) -> Result<Sample, Box<dyn Error>> {
    let mut client = client::Client::connect(addr, conns)?;
    let (mut cpu0, mut cpu1) = (Duration::ZERO, Duration::ZERO);
    let window = client.run(
        cfg.warmup,
        cfg.measure,
        &mut || cpu0 = process_cpu(pid),
        &mut || cpu1 = process_cpu(pid),
    )?;
    if window.requests == 0 {
        return Err("no request completed in the measured window".into());
    }
    let reqs = window.requests as f64;
    Ok(Sample {
        rps: reqs / window.elapsed.as_secs_f64(),
        p50_us: window.quantile_us(0.50),
        p99_us: window.quantile_us(0.99),
        server_us_per_req: (cpu1 - cpu0).as_secs_f64() * 1e6 / reqs,
        client_us_per_req: window.client_cpu.as_secs_f64() * 1e6 / reqs,
        ..Sample::default()
    })
}

/// Resident memory growth per connection: `conns` connections, one request each, then idle.
fn idle(pid: u32, addr: SocketAddr, conns: usize) -> Result<Sample, Box<dyn Error>> {
    let rss = || status_kib(pid, "VmRSS").ok_or("cannot read the server's VmRSS");
    // One connection first, so that what every server sets up once (buffer pools, the ring's
    // first buffers, hyper's first allocations) is not counted per connection.
    let warm = client::idle_connections(addr, 1)?;
    std::thread::sleep(Duration::from_millis(200));
    let before = rss()?;
    let open = client::idle_connections(addr, conns)?;
    // Let the server finish its side (re-arming receives) before reading its memory.
    std::thread::sleep(Duration::from_millis(300));
    let after = rss()?;
    drop((warm, open));
    Ok(Sample {
        idle_kib_per_conn: after.saturating_sub(before) as f64 / conns as f64,
        ..Sample::default()
    })
}

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Median over rounds of `f`, and the median of the per-round ratios of `f` to the tokio row.
fn cell(rows: &[Vec<Sample>], i: usize, tokio: usize, f: fn(&Sample) -> f64) -> (f64, f64) {
    let mut own: Vec<f64> = rows[i].iter().map(f).collect();
    let mut ratios: Vec<f64> = rows[i]
        .iter()
        .zip(&rows[tokio])
        .map(|(a, b)| f(a) / f(b))
        .collect();
    (median(&mut own), median(&mut ratios))
}

fn report(cfg: &Config, sections: &[(Workload, Vec<Vec<Sample>>)], servers: &[&Server]) -> String {
    let mut md = String::new();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        md,
        "# HTTP benchmark\n\n{} round(s), {:?} warm-up + {:?} measured per server; servers on \
         CPU 0, client on CPU 1: {}; load average at the end: {}\n",
        cfg.rounds,
        cfg.warmup,
        cfg.measure,
        cfg.pinned,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let tokio = servers.iter().position(|s| s.key == "tokio");
    for (workload, rows) in sections {
        let _ = writeln!(md, "## {}\n", workload.title());
        match workload {
            Workload::KeepAlive { .. } => {
                let _ = writeln!(
                    md,
                    "| server | req/s | p50 µs | p99 µs | server CPU µs/req | client CPU µs/req | \
                     server CPU / tokio |\n|---|---:|---:|---:|---:|---:|---:|"
                );
                for (i, server) in servers.iter().enumerate() {
                    let t = tokio.unwrap_or(i);
                    let (rps, _) = cell(rows, i, t, |s| s.rps);
                    let (p50, _) = cell(rows, i, t, |s| s.p50_us);
                    let (p99, _) = cell(rows, i, t, |s| s.p99_us);
                    let (cpu, ratio) = cell(rows, i, t, |s| s.server_us_per_req);
                    let (client, _) = cell(rows, i, t, |s| s.client_us_per_req);
                    let _ = writeln!(
                        md,
                        "| {} | {rps:.0} | {p50:.1} | {p99:.1} | {cpu:.2} | {client:.2} | \
                         {ratio:.2} |",
                        server.label
                    );
                }
            }
            Workload::Idle { .. } => {
                let _ = writeln!(
                    md,
                    "| server | server memory KiB/connection | / tokio |\n|---|---:|---:|"
                );
                for (i, server) in servers.iter().enumerate() {
                    let t = tokio.unwrap_or(i);
                    let (kib, ratio) = cell(rows, i, t, |s| s.idle_kib_per_conn);
                    let _ = writeln!(md, "| {} | {kib:.2} | {ratio:.2} |", server.label);
                }
            }
        }
        md.push('\n');
    }
    md
}

/// The servers to choose from: [`SERVERS`], plus, for each folder `BASELINE_DIR` names that
/// holds another build of `http_runtime` (e.g. `target/release` of a checkout of the previous
/// commit built with `cargo build --profile bench -p benches --bins`), that build as
/// `runtime-base` and `runtime-ring-base` (`-base-<name>` from the second folder on): a
/// change's before and after, measured in one run.
fn all_servers() -> Result<Vec<Server>, Box<dyn Error>> {
    let mut all: Vec<Server> = SERVERS.into_iter().collect();
    for base in benches::baselines() {
        let exe = base.exe("http_runtime")?;
        all.push(Server {
            key: base.key("runtime"),
            label: leak_label(base.label("http_server")),
            exe,
            args: &[],
        });
        all.push(Server {
            key: base.key("runtime-ring"),
            label: leak_label(base.label("http_server --ring")),
            exe,
            args: &["--ring"],
        });
    }
    Ok(all)
}

/// "hyper on runtime, baseline … (…)" for a baseline build's row.
fn leak_label(baseline: &str) -> &'static str {
    Box::leak(format!("hyper on runtime, {baseline}").into_boxed_str())
}

fn main() -> Result<(), Box<dyn Error>> {
    let nofile = raise_nofile() as usize;
    let (pinned, cpus) = pin_client()?;
    let cfg = Config {
        rounds: env_or("ROUNDS", 3) as usize,
        warmup: Duration::from_millis(env_or("WARMUP_MS", 300)),
        measure: Duration::from_millis(env_or("MEASURE_MS", 2000)),
        pinned,
    };
    let wanted: Option<Vec<String>> = std::env::var("SERVERS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let all = all_servers()?;
    let servers: Vec<&Server> = all
        .iter()
        .filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == s.key)))
        .collect();
    if servers.is_empty() {
        return Err(
            "SERVERS: choose from runtime,runtime-ring,tokio (runtime-base, runtime-ring-base \
             with BASELINE_DIR)"
                .into(),
        );
    }
    let kinds = std::env::var("WORKLOADS").unwrap_or_else(|_| "keepalive,idle".into());
    let mut workloads = Vec::new();
    if kinds.contains("keepalive") {
        for conns in list("CONNS", &[1, 64]) {
            workloads.push(Workload::KeepAlive { conns });
        }
    }
    if kinds.contains("idle") {
        // The client and the server each hold one descriptor per connection.
        let limit = nofile.saturating_sub(100) / 2;
        let conns = (env_or("IDLE_CONNS", 10_000) as usize).min(limit);
        workloads.push(Workload::Idle { conns });
    }
    let started = Instant::now();
    eprintln!(
        "http: {} workload(s) × {} server(s) × {} round(s); pinned: {pinned} ({cpus} CPUs)",
        workloads.len(),
        servers.len(),
        cfg.rounds
    );
    let mut sections = Vec::new();
    for &workload in &workloads {
        let mut rows: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..cfg.rounds {
            for k in 0..servers.len() {
                let i = (k + round) % servers.len();
                rows[i].push(measure(servers[i], workload, &cfg)?);
            }
        }
        eprintln!("  {} done ({:.0?})", workload.title(), started.elapsed());
        sections.push((workload, rows));
    }
    let md = report(&cfg, &sections, &servers);
    print!("{md}");
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("http.md"), &md)?;
    eprintln!("wrote {}", dir.join("http.md").display());
    Ok(())
}
