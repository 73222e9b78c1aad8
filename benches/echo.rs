//! Echo servers compared: the runtime's `tcp_echo` / `udp_echo` examples (owned-buffer reads)
//! and `tcp_echo_ring` / `udp_echo_ring` examples (receives from a provided-buffer ring)
//! against tokio (`current_thread`) and monoio echo servers written like those projects' own
//! examples, all with `TCP_NODELAY` on accepted sockets and the same buffer sizes (16 KiB TCP
//! reads, 64 KiB UDP datagrams), all built with the bench profile (release + fat LTO).
//!
//! # How it measures
//!
//! Each measurement starts a fresh server process pinned to CPU 0; the client, this process,
//! runs on CPU 1. With `SERVER_THREADS=N` (or `--threads N` after `--`), the runtime's TCP
//! servers run N workers (`tcp_echo --threads N`) and the server is pinned to CPUs 0..N, the
//! client to CPU N (the peers and the UDP servers stay single-threaded). For every workload and every round, each server is measured once, in an order
//! that rotates from round to round, so a slow phase of the machine hits all servers alike.
//! Reported per server are medians over rounds, and every ratio to a peer is paired: per
//! round, server X / peer Y, then the median of those per-round ratios.
//!
//! Workloads (`WORKLOADS=tcp,udp,stream,idle,rss`):
//! - `tcp`: ping-pong on `CONNS` connections (1, 64, 512) with `SIZES`-byte messages (64,
//!   1024): each connection sends one message, waits for the whole echo, repeats.
//! - `udp`: the same with `UDP_CLIENTS` sockets (1, 64), one datagram each, against one
//!   server socket.
//! - `stream`: `STREAM_CONNS` connections (16) each writing a 64 KiB chunk and reading its echo
//!   back, repeatedly; the figures are per chunk.
//! - `idle`: `IDLE_CONNS` connections (10,000), each exchanging one 64-byte message and then
//!   idle; the server's resident memory growth (`VmRSS`) per connection.
//! - `rss`: the server's peak resident memory (`VmHWM`) after a ping-pong window on 64
//!   connections with 1 KiB messages.
//!
//! Ring modes: `runtime-sqpoll` is `tcp_echo`/`udp_echo` with a kernel submission thread
//! (`RUNTIME_SQPOLL=<SQPOLL_IDLE_MS, default 50>`) on CPU `SQ_CORE` (or `--sq-core C`; default
//! the first CPU after the server's and the client's, or the client's CPU when there is none,
//! as on 2 cores, where SQPOLL is expected to lose: its thread competes with the client);
//! `runtime-napi` is the same servers with NAPI busy polling (`RUNTIME_NAPI=<NAPI_US, default
//! 50>`, `,prefer` with `NAPI_PREFER=1`), which loopback cannot use (no NAPI device), so that
//! row shows what registering it costs; `runtime-direct` is `tcp_echo` accepting into direct
//! descriptors (`TCP_ECHO_DIRECT=1`: registered files, `IOSQE_FIXED_FILE` on every op);
//! `runtime-sockbuf` is `tcp_echo` with `SO_RCVBUF` = `SO_SNDBUF` = 4 MiB on its accepted
//! sockets (`TCP_ECHO_SOCKBUF`) instead of autotuned buffers. The SQ thread is a thread of the server process, so
//! its CPU time is in the server's CPU per message (the sum over `/proc/<pid>/task/*`).
//! `runtime-epoll` is the same servers on the epoll backend (`RUNTIME_BACKEND=epoll`), whose
//! target is tokio's server CPU per message within 5%.
//!
//! Per row: echoed messages per second; p50 and p99 round-trip time (every echo's time, sorted);
//! the server's CPU time per message (the sum over its threads of the first field of
//! `/proc/<pid>/task/*/schedstat`, nanoseconds on CPU, read at the window's edges); the client's
//! CPU time per message (to show it is the same for every server); `io_uring_enter` calls,
//! SQEs and inline calls (socket system calls made in place of an op: on io_uring a large
//! write or a bulk stream's read tried at once) per message for the runtime's servers (from
//! `runtime::metrics()`, which the examples
//! export to the file named by `RUNTIME_METRICS_FILE`; see `examples/lib.rs`); the server's
//! peak RSS (`VmHWM`, the process is fresh so this is the run's own peak).
//!
//! # Why an epoll client
//!
//! The client shares the machine with the server, so its own cost decides where the pair
//! saturates. A client built on an async runtime adds wakers, task polls and its own ring or
//! epoll bookkeeping per message, and the server with the cheapest echo then waits on the
//! client. The client here is a single-threaded edge-triggered epoll loop over non-blocking
//! sockets (`epoll_client.rs`): per message one `send`, one `recv`, a share of one `epoll_wait`,
//! no allocation. Its CPU per message is reported; it is the same for every server. Every echo
//! is checked (sequence numbers at both ends of each message), and the window opens only once
//! every connection has had an echo (up to 5 s more warm-up), so a server that accepts slowly
//! is measured at the load it was given; the report says if some never were answered.
//!
//! On loopback the server's CPU also pays for waking the client: a send that finds the
//! client asleep in `epoll_wait` wakes it from the server's CPU (`sock_def_readable`), and on
//! a virtual machine that wake-up can cost more than the echo itself. How often the client is
//! asleep depends on timing, which is most of why one-connection and stream rows swing between
//! runs. `CLIENT_SPIN=1` makes the client poll without sleeping (`epoll_wait` with a zero
//! timeout, a whole CPU spent on it): no send ever wakes it, so the server's figure is its own
//! work and the network stack's. It is not the default: real peers sleep, and the default
//! figures are what a server pays for them.
//!
//! # Why server CPU per message
//!
//! With two cores, one for the server and one for the client, both saturate from about 64
//! connections on: ops/s then measure the slower side and the loopback path as much as the
//! server, and crowd together. The CPU time the server spends per echoed message is what it
//! costs to serve one, independent of who waits on whom, and is what separates runtimes.
//!
//! ```text
//! cargo bench -p benches --bench echo                  # ROUNDS=3 MEASURE_MS=2000, all workloads
//! ROUNDS=1 MEASURE_MS=200 WARMUP_MS=100 IDLE_CONNS=2000 cargo bench -p benches --bench echo
//! DOCS=1 cargo bench -p benches --bench echo           # also writes docs/bench/echo.{md,svg}
//! ```
//!
//! Output: the Markdown tables on stdout and in `target/bench/echo.md`, the chart of server CPU
//! per message in `target/bench/echo.svg`. More in `docs/benchmarks.md`.

#[path = "echo/report.rs"]
mod report;
#[path = "echo/workload.rs"]
mod workload;

use std::{
    error::Error,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use benches::{
    ServerProcess, env_or,
    epoll_client::{Client, Proto},
    out_dir, pin_client, pin_to, process_cpu, raise_nofile, status_kib,
};
use workload::{Workload, names, workloads};

/// One contender: its TCP and UDP echo servers.
#[derive(Debug)]
pub(crate) struct Server {
    /// Its name in `SERVERS` and in the chart.
    pub(crate) key: &'static str,
    /// One of the runtime's own servers (which export `runtime::metrics()`), not a peer.
    pub(crate) ours: bool,
    tcp: (&'static str, &'static str),
    udp: (&'static str, &'static str),
    /// The ring mode its process is switched to through the environment.
    mode: Mode,
}

/// A runtime server's ring mode, set through `runtime::Builder::new`'s variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Default,
    SqPoll,
    Napi,
    /// `tcp_echo` accepting into direct descriptors (`TCP_ECHO_DIRECT=1`).
    Direct,
    /// The epoll backend (`RUNTIME_BACKEND=epoll`).
    Epoll,
    /// `tcp_echo` with fixed 4 MiB socket buffers (`TCP_ECHO_SOCKBUF`).
    SockBuf,
}

impl Server {
    /// The row label for a workload over `proto`.
    pub(crate) fn label(&self, proto: Proto) -> &'static str {
        match proto {
            Proto::Tcp => self.tcp.0,
            Proto::Udp => self.udp.0,
        }
    }
}

const SERVERS: [Server; 9] = [
    Server {
        key: "runtime",
        ours: true,
        tcp: ("runtime (tcp_echo)", env!("CARGO_BIN_EXE_echo_runtime")),
        udp: ("runtime (udp_echo)", env!("CARGO_BIN_EXE_udp_echo_runtime")),
        mode: Mode::Default,
    },
    Server {
        key: "runtime-sqpoll",
        ours: true,
        tcp: (
            "runtime SQPOLL (tcp_echo)",
            env!("CARGO_BIN_EXE_echo_runtime"),
        ),
        udp: (
            "runtime SQPOLL (udp_echo)",
            env!("CARGO_BIN_EXE_udp_echo_runtime"),
        ),
        mode: Mode::SqPoll,
    },
    Server {
        key: "runtime-napi",
        ours: true,
        tcp: (
            "runtime NAPI (tcp_echo)",
            env!("CARGO_BIN_EXE_echo_runtime"),
        ),
        udp: (
            "runtime NAPI (udp_echo)",
            env!("CARGO_BIN_EXE_udp_echo_runtime"),
        ),
        mode: Mode::Napi,
    },
    Server {
        key: "runtime-direct",
        ours: true,
        tcp: (
            "runtime direct descriptors (tcp_echo --direct)",
            env!("CARGO_BIN_EXE_echo_runtime"),
        ),
        udp: (
            "runtime (udp_echo; UDP has no direct mode)",
            env!("CARGO_BIN_EXE_udp_echo_runtime"),
        ),
        mode: Mode::Direct,
    },
    Server {
        key: "runtime-epoll",
        ours: true,
        tcp: (
            "runtime on epoll (tcp_echo)",
            env!("CARGO_BIN_EXE_echo_runtime"),
        ),
        udp: (
            "runtime on epoll (udp_echo)",
            env!("CARGO_BIN_EXE_udp_echo_runtime"),
        ),
        mode: Mode::Epoll,
    },
    Server {
        key: "runtime-sockbuf",
        ours: true,
        tcp: (
            "runtime 4 MiB socket buffers (tcp_echo --sockbuf 4194304)",
            env!("CARGO_BIN_EXE_echo_runtime"),
        ),
        udp: (
            "runtime (udp_echo; the socket buffers are TCP's)",
            env!("CARGO_BIN_EXE_udp_echo_runtime"),
        ),
        mode: Mode::SockBuf,
    },
    Server {
        key: "runtime-ring",
        ours: true,
        tcp: ("runtime (tcp_echo_ring)", env!("CARGO_BIN_EXE_echo_ring")),
        udp: (
            "runtime (udp_echo_ring)",
            env!("CARGO_BIN_EXE_udp_echo_ring"),
        ),
        mode: Mode::Default,
    },
    Server {
        key: "tokio",
        ours: false,
        tcp: ("tokio", env!("CARGO_BIN_EXE_echo_tokio")),
        udp: ("tokio", env!("CARGO_BIN_EXE_udp_echo_tokio")),
        mode: Mode::Default,
    },
    Server {
        key: "monoio",
        ours: false,
        tcp: ("monoio", env!("CARGO_BIN_EXE_echo_monoio")),
        udp: ("monoio", env!("CARGO_BIN_EXE_udp_echo_monoio")),
        mode: Mode::Default,
    },
];

/// The servers to choose from: [`SERVERS`], plus, for each folder `BASELINE_DIR` names that
/// holds another build of the runtime's four example servers (`echo_runtime`,
/// `udp_echo_runtime`, `echo_ring`, `udp_echo_ring`, e.g. `target/release` of a checkout of the
/// previous commit built with `cargo build --profile bench -p benches --bins`), those as
/// `runtime-base`, `runtime-epoll-base` and `runtime-ring-base` (`-base-<name>` for the
/// second folder on): a refactor's before and after, measured in one run.
fn all_servers() -> Result<Vec<Server>, Box<dyn std::error::Error>> {
    let mut all: Vec<Server> = SERVERS.into_iter().collect();
    for base in benches::baselines() {
        all.push(Server {
            key: base.key("runtime"),
            ours: true,
            tcp: (base.label("tcp_echo"), base.exe("echo_runtime")?),
            udp: (base.label("udp_echo"), base.exe("udp_echo_runtime")?),
            mode: Mode::Default,
        });
        all.push(Server {
            key: base.key("runtime-epoll"),
            ours: true,
            tcp: (base.label("tcp_echo on epoll"), base.exe("echo_runtime")?),
            udp: (
                base.label("udp_echo on epoll"),
                base.exe("udp_echo_runtime")?,
            ),
            mode: Mode::Epoll,
        });
        all.push(Server {
            key: base.key("runtime-ring"),
            ours: true,
            tcp: (base.label("tcp_echo_ring"), base.exe("echo_ring")?),
            udp: (base.label("udp_echo_ring"), base.exe("udp_echo_ring")?),
            mode: Mode::Default,
        });
    }
    Ok(all)
}

/// One measurement of one server on one workload. NaN or `None` where it does not apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) server_us_per_msg: f64,
    pub(crate) client_us_per_msg: f64,
    pub(crate) enters_per_msg: Option<f64>,
    pub(crate) sqes_per_msg: Option<f64>,
    /// Socket system calls the server made in place of an op (`Metrics::inline_calls`).
    pub(crate) inline_per_msg: Option<f64>,
    pub(crate) peak_rss_kib: f64,
    pub(crate) idle_kib_per_conn: f64,
    pub(crate) resent: u64,
    /// The server's connected TCP sockets at the window's start, and how many had
    /// `TCP_NODELAY` on (`None` for UDP, or when they could not be inspected).
    pub(crate) nodelay: Option<(usize, usize)>,
    /// Sockets the client opened, and how many had an echo inside the window.
    pub(crate) sockets: usize,
    pub(crate) sockets_served: usize,
}

impl Default for Sample {
    fn default() -> Sample {
        Sample {
            ops_per_sec: f64::NAN,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            server_us_per_msg: f64::NAN,
            client_us_per_msg: f64::NAN,
            enters_per_msg: None,
            sqes_per_msg: None,
            inline_per_msg: None,
            peak_rss_kib: f64::NAN,
            idle_kib_per_conn: f64::NAN,
            resent: 0,
            nodelay: None,
            sockets: 0,
            sockets_served: 0,
        }
    }
}

/// The knobs, from the environment.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) rounds: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    pub(crate) pinned: bool,
    out_dir: PathBuf,
    /// Workers of the runtime's TCP servers (`SERVER_THREADS`, `--threads`); the server runs
    /// on CPUs `0..threads`, the client on CPU `threads`.
    threads: usize,
    /// The CPU of `runtime-sqpoll`'s SQ threads (`SQ_CORE`, `--sq-core`).
    sq_core: usize,
    /// `runtime-sqpoll`'s SQ thread idle time in ms (`SQPOLL_IDLE_MS`).
    sqpoll_idle_ms: u64,
    /// `runtime-napi`'s busy-poll window in µs (`NAPI_US`) and preference (`NAPI_PREFER=1`).
    napi_us: u64,
    napi_prefer: bool,
    /// Whether the client polls without sleeping (`CLIENT_SPIN=1`).
    spin: bool,
}

impl Config {
    /// Where server, client and SQ threads run, for the report.
    fn layout(&self) -> String {
        if !self.pinned {
            return "not pinned (fewer than 2 CPUs)".into();
        }
        let server = match self.threads {
            1 => "CPU 0".to_owned(),
            n => format!(
                "CPUs 0-{} ({n} workers for the runtime's TCP servers)",
                n - 1
            ),
        };
        format!(
            "server on {server}, client on CPU {}, SQPOLL threads on CPU {}",
            self.threads, self.sq_core
        )
    }
}

/// A `--name N` argument of this bench binary (`cargo bench -p benches --bench echo -- --threads
/// 4`), else the variable `var`, else `default`.
fn arg_or_env(flag: &str, var: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == flag)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| env_or(var, default))
}

/// Pins the calling process to CPUs `0..n`.
fn pin_to_first(n: usize) -> std::io::Result<()> {
    if n <= 1 {
        return pin_to(0);
    }
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads it. All async-signal-safe, so this may run in `pre_exec`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in 0..n {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A port the kernel reports free (for a fresh server; it binds it a moment later).
fn free_port(proto: Proto) -> std::io::Result<u16> {
    Ok(match proto {
        Proto::Tcp => std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port(),
        Proto::Udp => std::net::UdpSocket::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port(),
    })
}

/// The server's counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    cpu: Duration,
    /// `enters ops_submitted completions unix_time_ns inline_calls` from the metrics file
    /// (ours only; a build from before `inline_calls` writes four numbers: none made).
    metrics: Option<[u64; 5]>,
}

fn snapshot(pid: u32, metrics: Option<&Path>) -> Snapshot {
    let metrics = metrics.and_then(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        let mut v: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() == 4 {
            v.push(0);
        }
        v.try_into().ok()
    });
    Snapshot {
        cpu: process_cpu(pid),
        metrics,
    }
}

/// Per message, from the counter `i` of two metrics snapshots: the counter's rate over the
/// snapshots' own interval divided by the message rate of the window. (The file is rewritten
/// every 50 ms, so its snapshots do not fall exactly on the window's edges; rates do not mind.)
fn per_message(s0: &Snapshot, s1: &Snapshot, i: usize, ops_per_sec: f64) -> Option<f64> {
    let (m0, m1) = (s0.metrics?, s1.metrics?);
    let dt = m1[3].checked_sub(m0[3])? as f64 / 1e9;
    if dt < 0.02 || ops_per_sec.is_nan() || ops_per_sec <= 0.0 {
        return None;
    }
    Some(m1[i].checked_sub(m0[i])? as f64 / dt / ops_per_sec)
}

/// Measures `server` once on `workload`, in a fresh server process.
fn measure(server: &Server, workload: Workload, cfg: &Config) -> Result<Sample, Box<dyn Error>> {
    let proto = workload.proto();
    let exe = match proto {
        Proto::Tcp => server.tcp.1,
        Proto::Udp => server.udp.1,
    };
    let port = free_port(proto)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics_file = server.ours.then(|| {
        benches::metrics_dir(&cfg.out_dir).join(format!(
            "runtime-echo-metrics-{}-{}-{port}.txt",
            std::process::id(),
            server.key
        ))
    });
    let mut cmd = Command::new(exe);
    cmd.arg(addr.to_string());
    if let Some(path) = &metrics_file {
        cmd.env("RUNTIME_METRICS_FILE", path);
    }
    // The bench's own environment must not switch the other servers' modes.
    for var in [
        "RUNTIME_SQPOLL",
        "RUNTIME_SQPOLL_CPU",
        "RUNTIME_NAPI",
        "TCP_ECHO_DIRECT",
        "TCP_ECHO_SOCKBUF",
        "RUNTIME_BACKEND",
    ] {
        cmd.env_remove(var);
    }
    match server.mode {
        Mode::Default => {}
        Mode::SqPoll => {
            cmd.env("RUNTIME_SQPOLL", cfg.sqpoll_idle_ms.to_string());
            cmd.env("RUNTIME_SQPOLL_CPU", cfg.sq_core.to_string());
        }
        Mode::Napi => {
            let prefer = if cfg.napi_prefer { ",prefer" } else { "" };
            cmd.env("RUNTIME_NAPI", format!("{}{prefer}", cfg.napi_us));
        }
        Mode::Direct => {
            cmd.env("TCP_ECHO_DIRECT", "1");
        }
        Mode::Epoll => {
            cmd.env("RUNTIME_BACKEND", "epoll");
        }
        Mode::SockBuf => {
            cmd.env("TCP_ECHO_SOCKBUF", (4 << 20).to_string());
        }
    }
    let threads = if server.ours && proto == Proto::Tcp {
        cfg.threads
    } else {
        1
    };
    if threads > 1 {
        cmd.args(["--threads", &threads.to_string()]);
    }
    if cfg.pinned {
        let cpus = cfg.threads;
        // SAFETY: the closure only calls `sched_setaffinity`, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || pin_to_first(cpus));
        }
    }
    let process = match proto {
        Proto::Tcp => ServerProcess::start(&mut cmd, addr),
        Proto::Udp => ServerProcess::start_udp(&mut cmd, addr),
    };
    let pid = process.0.id();
    let result = match workload {
        Workload::Idle { conns } => idle(pid, addr, conns),
        Workload::Tcp { conns, size } | Workload::Rss { conns, size } => pingpong(
            pid,
            metrics_file.as_deref(),
            Client::tcp(addr, conns, size)?.spin(cfg.spin),
            cfg,
        ),
        Workload::Stream { conns, chunk } => pingpong(
            pid,
            metrics_file.as_deref(),
            Client::tcp(addr, conns, chunk)?.spin(cfg.spin),
            cfg,
        ),
        Workload::Udp { clients, size } => pingpong(
            pid,
            metrics_file.as_deref(),
            Client::udp(addr, clients, size)?.spin(cfg.spin),
            cfg,
        ),
    };
    drop(process);
    if let Some(path) = &metrics_file {
        let _ = std::fs::remove_file(path);
        // Left behind if the server was stopped between its write and its rename.
        let _ = std::fs::remove_file(examples::metrics_tmp_path(path));
    }
    result.map_err(|e| format!("{} on {}: {e}", server.label(proto), workload.short()).into())
}

/// One warm-up and one measured ping-pong window.
fn pingpong(
    pid: u32,
    metrics: Option<&Path>,
    mut client: Client,
    cfg: &Config,
) -> Result<Sample, Box<dyn Error>> {
    let mut s0 = None;
    let mut s1 = None;
    let mut hwm = None;
    let mut nodelay = None;
    let tcp = client.proto() == Proto::Tcp;
    let sockets = client.sockets();
    let window = client.run(
        cfg.warmup,
        cfg.measure,
        &mut || {
            if tcp {
                nodelay = benches::tcp_nodelay_census(pid).ok();
            }
            s0 = Some(snapshot(pid, metrics));
        },
        &mut || {
            s1 = Some(snapshot(pid, metrics));
            hwm = status_kib(pid, "VmHWM");
        },
    )?;
    drop(client);
    let (Some(s0), Some(s1)) = (s0, s1) else {
        return Err("the measured window never started".into());
    };
    if window.messages == 0 {
        return Err("no echo completed in the measured window".into());
    }
    let msgs = window.messages as f64;
    let ops = msgs / window.elapsed.as_secs_f64();
    Ok(Sample {
        ops_per_sec: ops,
        p50_us: window.quantile_us(0.50),
        p99_us: window.quantile_us(0.99),
        server_us_per_msg: (s1.cpu - s0.cpu).as_secs_f64() * 1e6 / msgs,
        client_us_per_msg: window.client_cpu.as_secs_f64() * 1e6 / msgs,
        enters_per_msg: per_message(&s0, &s1, 0, ops),
        sqes_per_msg: per_message(&s0, &s1, 1, ops),
        inline_per_msg: per_message(&s0, &s1, 4, ops),
        peak_rss_kib: hwm.map_or(f64::NAN, |k| k as f64),
        idle_kib_per_conn: f64::NAN,
        resent: window.resent,
        nodelay,
        sockets,
        sockets_served: window.sockets_served,
    })
}

/// Resident memory growth per connection: `conns` connections, one exchange each, then idle.
fn idle(pid: u32, addr: SocketAddr, conns: usize) -> Result<Sample, Box<dyn Error>> {
    let rss = || status_kib(pid, "VmRSS").ok_or("cannot read the server's VmRSS");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss()?;
    let mut client = Client::tcp(addr, conns, 64)?;
    client.exchange_once()?;
    // Let the server finish its side (re-arming receives) before reading its memory.
    std::thread::sleep(Duration::from_millis(300));
    let after = rss()?;
    let hwm = status_kib(pid, "VmHWM");
    drop(client);
    Ok(Sample {
        idle_kib_per_conn: after.saturating_sub(before) as f64 / conns as f64,
        peak_rss_kib: hwm.map_or(f64::NAN, |k| k as f64),
        ..Sample::default()
    })
}

/// The command that reproduces this run: the knobs that were set, then the cargo command.
fn command_line() -> String {
    let knobs = [
        "ROUNDS",
        "WARMUP_MS",
        "MEASURE_MS",
        "CONNS",
        "SIZES",
        "UDP_CLIENTS",
        "STREAM_CONNS",
        "IDLE_CONNS",
        "WORKLOADS",
        "SERVERS",
        "SERVER_THREADS",
        "SQ_CORE",
        "SQPOLL_IDLE_MS",
        "NAPI_US",
        "NAPI_PREFER",
        "CLIENT_SPIN",
    ];
    let mut parts: Vec<String> = knobs
        .iter()
        .filter_map(|k| Some(format!("{k}={}", std::env::var(k).ok()?)))
        .collect();
    if std::env::var_os("DOCS").is_some() {
        parts.push("DOCS=1".into());
    }
    parts.push("cargo bench -p benches --bench echo".into());
    parts.join(" ")
}

/// Kernel, CPU and commit, for the report's header.
fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    format!(
        "Linux {}, {cpu} × {cpus}, commit {commit}, {}, load average {load}",
        kernel.trim(),
        report::civil_date(days)
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let nofile = raise_nofile() as usize;
    let (pinned, cpus) = pin_client()?;
    let threads = (arg_or_env("--threads", "SERVER_THREADS", 1) as usize).max(1);
    if pinned && threads >= cpus {
        return Err(format!(
            "SERVER_THREADS={threads} leaves no CPU for the client on this {cpus}-CPU machine"
        )
        .into());
    }
    if pinned && threads > 1 {
        pin_to(threads).map_err(|e| format!("pinning the client to CPU {threads}: {e}"))?;
    }
    // The first CPU nobody else uses, else the client's: on 2 cores SQPOLL competes with it.
    let spare = if threads + 1 < cpus {
        threads + 1
    } else {
        threads
    };
    let sq_core = arg_or_env("--sq-core", "SQ_CORE", u64::MAX);
    let cfg = Config {
        rounds: env_or("ROUNDS", 3) as usize,
        warmup: Duration::from_millis(env_or("WARMUP_MS", 300)),
        measure: Duration::from_millis(env_or("MEASURE_MS", 2000)),
        pinned,
        out_dir: out_dir(),
        threads,
        sq_core: if sq_core == u64::MAX {
            spare
        } else {
            sq_core as usize
        },
        sqpoll_idle_ms: env_or("SQPOLL_IDLE_MS", 50),
        napi_us: env_or("NAPI_US", 50),
        napi_prefer: std::env::var("NAPI_PREFER").is_ok_and(|v| v == "1"),
        spin: std::env::var("CLIENT_SPIN").is_ok_and(|v| v == "1"),
    };
    std::fs::create_dir_all(&cfg.out_dir)?;
    let all = all_servers()?;
    let wanted = names("SERVERS");
    if let Some(bad) = wanted
        .iter()
        .flatten()
        .find(|w| !all.iter().any(|s| s.key == w.as_str()))
    {
        let keys: Vec<&str> = all.iter().map(|s| s.key).collect();
        return Err(format!(
            "SERVERS: unknown server {bad:?}; choose from {}",
            keys.join(",")
        )
        .into());
    }
    let servers: Vec<&Server> = all
        .iter()
        .filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == s.key)))
        .collect();
    // The client holds one descriptor per connection, and so does the server.
    let workloads = workloads(nofile.saturating_sub(100))?;
    let started = Instant::now();
    eprintln!(
        "echo: {} workload(s) × {} server(s) × {} round(s), {:?} warm-up + {:?} measured; \
         {} ({cpus} CPUs)",
        workloads.len(),
        servers.len(),
        cfg.rounds,
        cfg.warmup,
        cfg.measure,
        cfg.layout()
    );
    let mut sections = Vec::new();
    for &workload in &workloads {
        let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..cfg.rounds {
            for k in 0..servers.len() {
                let i = (k + round) % servers.len();
                samples[i].push(measure(servers[i], workload, &cfg)?);
            }
        }
        eprintln!("  {} done ({:.0?})", workload.short(), started.elapsed());
        sections.push(report::Section {
            workload,
            rows: servers
                .iter()
                .zip(samples)
                .map(|(&server, samples)| report::Row { server, samples })
                .collect(),
        });
    }
    let header = report::Header {
        command: command_line(),
        machine: machine(),
        rounds: cfg.rounds,
        warmup: cfg.warmup,
        measure: cfg.measure,
        layout: cfg.layout(),
    };
    let markdown = report::markdown(&header, &sections);
    print!("{markdown}");
    let md = cfg.out_dir.join("echo.md");
    let svg = cfg.out_dir.join("echo.svg");
    std::fs::write(&md, &markdown)?;
    report::chart(&svg, &sections)?;
    eprintln!("wrote {} and {}", md.display(), svg.display());
    if std::env::var_os("DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
        std::fs::create_dir_all(&docs)?;
        std::fs::copy(&md, docs.join("echo.md"))?;
        std::fs::copy(&svg, docs.join("echo.svg"))?;
        eprintln!("copied both to {}", docs.display());
    }
    Ok(())
}
