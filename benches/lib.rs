//! Shared helpers for the benchmarks: repeated, alternating measurement and table output.
//!
//! Every benchmark runs each contender once per round, in an order that rotates from round to
//! round, and reports the median over rounds, so a slow phase of the machine hits all
//! contenders alike.

pub mod epoll_client;
#[path = "http/client.rs"]
pub mod http_client;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// One contender: a name and a function that performs `n` operations.
pub struct Contender<'a> {
    /// Printed in the table.
    pub name: &'a str,
    /// Runs `n` operations; the harness times it.
    pub run: Box<dyn FnMut(u64) + 'a>,
}

impl std::fmt::Debug for Contender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish()
    }
}

/// Median of the samples.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Runs every contender `rounds` times (rotating the order) with `n` operations per run and
/// returns the median operations per second of each, in the contenders' order.
pub fn measure(contenders: &mut [Contender<'_>], rounds: usize, n: u64) -> Vec<f64> {
    for c in contenders.iter_mut() {
        // Warm-up run, not recorded.
        (c.run)(n / 10 + 1);
    }
    let mut samples: Vec<Vec<f64>> = contenders.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (k + round) % contenders.len();
            let start = Instant::now();
            (contenders[i].run)(n);
            let elapsed = start.elapsed();
            samples[i].push(n as f64 / elapsed.as_secs_f64());
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

/// A server process, killed and reaped on drop.
#[derive(Debug)]
pub struct ServerProcess(pub std::process::Child);

impl ServerProcess {
    /// Starts `cmd`, a server that listens on `addr` (its output discarded), and waits up to
    /// 10 s until it accepts connections.
    ///
    /// # Panics
    ///
    /// Panics if it cannot be started or does not listen in time.
    pub fn start(cmd: &mut Command, addr: SocketAddr) -> ServerProcess {
        ServerProcess::start_until(cmd, || std::net::TcpStream::connect(addr).is_ok())
    }

    /// Starts `cmd`, a UDP echo server on `addr` (its output discarded), and waits up to 10 s
    /// until it echoes a datagram.
    ///
    /// # Panics
    ///
    /// Panics if it cannot be started or does not answer in time.
    pub fn start_udp(cmd: &mut Command, addr: SocketAddr) -> ServerProcess {
        let probe = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("bind a UDP probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set the probe's timeout");
        ServerProcess::start_until(cmd, || {
            let mut buf = [0u8; 8];
            probe.send_to(b"probe", addr).is_ok()
                && matches!(probe.recv_from(&mut buf), Ok((5, from)) if from == addr)
        })
    }

    /// Starts `cmd` (its output discarded) and waits up to 10 s until `ready` returns true.
    fn start_until(cmd: &mut Command, mut ready: impl FnMut() -> bool) -> ServerProcess {
        let exe = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {exe}: {e}"));
        // Killed by `drop` if it never becomes ready.
        let mut server = ServerProcess(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("{exe} exited before it was ready ({status}); run it by hand to see why");
            }
            assert!(
                Instant::now() < deadline,
                "{exe} did not become ready in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

/// Of the connected TCP sockets of process `pid`: how many there are, and how many have
/// `TCP_NODELAY` on. Each socket is copied out of the process with `pidfd_getfd(2)` (Linux 5.6;
/// needs the right to ptrace it, which a parent running as the same user, or root, has) and
/// asked with `getsockopt`.
///
/// # Errors
///
/// Fails when the process cannot be opened or its descriptors copied (another user's process,
/// `kernel.yama.ptrace_scope` 3, an older kernel).
pub fn tcp_nodelay_census(pid: u32) -> std::io::Result<(usize, usize)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let int_opt = |fd: &OwnedFd, level: libc::c_int, name: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for the writes `getsockopt` makes (one int).
        let r =
            unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut v).cast(), &mut len) };
        (r == 0).then_some(v)
    };
    // SAFETY: plain syscall; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `pidfd` is a descriptor the call just opened, owned from here on.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as libc::c_int) };
    let (mut sockets, mut nodelay) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Some(target) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBADF) {
                continue; // closed since the listing
            }
            return Err(e);
        }
        // SAFETY: `fd` is a descriptor the call just opened in this process, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let tcp = int_opt(&fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP);
        let listening = int_opt(&fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) != Some(0);
        if tcp && !listening {
            sockets += 1;
            if int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).is_some_and(|v| v != 0) {
                nodelay += 1;
            }
        }
    }
    Ok((sockets, nodelay))
}

/// A field of `/proc/<pid>/status` that is counted in KiB (`VmRSS`, `VmHWM`, ...).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Raises the soft limit on open files to the hard limit (children inherit it) and returns
/// the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write one `rlimit`, which `lim` is.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// Pins the calling thread (or, in `pre_exec`, a child about to exec) to one CPU.
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads it. All async-signal-safe, so this may run in `pre_exec`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time of every thread of process `pid`, from `/proc/<pid>/task/*/schedstat`
/// (nanosecond resolution).
pub fn process_cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
            }
        }
    }
    Duration::from_nanos(total)
}

/// Formats operations per second with a unit.
pub fn rate(ops_per_sec: f64) -> String {
    if ops_per_sec >= 1e6 {
        format!("{:.2} M/s", ops_per_sec / 1e6)
    } else if ops_per_sec >= 1e3 {
        format!("{:.1} k/s", ops_per_sec / 1e3)
    } else {
        format!("{ops_per_sec:.0} /s")
    }
}

/// Nanoseconds per operation.
pub fn per_op(ops_per_sec: f64) -> Duration {
    Duration::from_secs_f64(1.0 / ops_per_sec)
}

/// Reads a positive integer from the environment, or the default.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// Polls every future until all are done (each is polled once per wake-up), so that lazily
/// submitted operations all reach the ring in the same loop turn.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::{pin::Pin, task::Poll};
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Where the benchmarks write their reports: `$CARGO_TARGET_DIR/bench`, or the workspace's
/// `target/bench`.
pub fn out_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    target.join("bench")
}

/// Where a measured server writes the metrics file it rewrites every
/// `examples::METRICS_PERIOD`: `/dev/shm` (memory) where it exists, else `out_dir`.
///
/// Not the target folder: on ext4, replacing a file by renaming a new one over it starts
/// writeback of the new file at once (the `auto_da_alloc` heuristic), block I/O issued from the
/// server's own thread. On this project's virtual machine that cost 0.3-0.5% of a CPU at a
/// 50 ms period, charged to the runtime's servers only (the peers export nothing).
pub fn metrics_dir(out_dir: &std::path::Path) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        out_dir.to_path_buf()
    }
}

/// Pins the calling thread (the load client) to CPU 1 when there are at least two CPUs, so
/// servers pinned to CPU 0 have theirs to themselves. Returns whether it pinned, and the
/// number of CPUs.
///
/// # Errors
///
/// When pinning fails on a machine with two CPUs or more.
pub fn pin_client() -> Result<(bool, usize), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Ok((false, cpus));
    }
    pin_to(1).map_err(|e| format!("pinning the client to CPU 1: {e}"))?;
    Ok((true, cpus))
}

/// One build of the runtime's servers named by `BASELINE_DIR`: the folder its executables are
/// in, and the suffix its servers' keys get (`-base` for the first folder, `-base-<name>` for
/// each further one, `<name>` being the folder's name or, for a `target/release`, its
/// checkout's).
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The folder holding the build's executables.
    pub dir: std::path::PathBuf,
    /// `-base`, or `-base-<name>`.
    pub suffix: &'static str,
}

impl Baseline {
    /// The executable `name` of this build, or an error saying how to build it.
    ///
    /// # Errors
    ///
    /// When the folder does not hold `name`.
    pub fn exe(&self, name: &str) -> Result<&'static str, String> {
        let path = self.dir.join(name);
        if !path.is_file() {
            return Err(format!(
                "BASELINE_DIR: {} is missing: build the baseline with `cargo build --profile \
                 bench -p benches --bins` in its checkout",
                path.display()
            ));
        }
        Ok(leak(path.to_string_lossy().into_owned()))
    }

    /// "baseline (`what`)", or "baseline <name> (`what`)" from the second build on.
    pub fn label(&self, what: &str) -> &'static str {
        let name = self.suffix.strip_prefix("-base-");
        leak(name.map_or_else(
            || format!("baseline ({what})"),
            |n| format!("baseline {n} ({what})"),
        ))
    }

    /// `prefix` followed by this build's suffix, e.g. `runtime-ring-base-c96b264`.
    pub fn key(&self, prefix: &str) -> &'static str {
        leak(format!("{prefix}{}", self.suffix))
    }
}

/// The builds named by `BASELINE_DIR`, a comma-separated list of folders (each e.g. the
/// `target/release` of a checkout of an earlier commit), so one run can measure a change's
/// before and after, or bisect a regression across several commits.
pub fn baselines() -> Vec<Baseline> {
    let Ok(list) = std::env::var("BASELINE_DIR") else {
        return Vec::new();
    };
    let dirs: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    dirs.iter()
        .enumerate()
        .map(|(i, dir)| {
            let dir = std::path::PathBuf::from(dir);
            let suffix = if i == 0 {
                "-base"
            } else {
                leak(format!("-base-{}", build_name(&dir)))
            };
            Baseline { dir, suffix }
        })
        .collect()
}

/// The name a build folder is known by: its own, or its checkout's for `<checkout>/target/*`.
fn build_name(dir: &std::path::Path) -> String {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let in_target = dir
        .parent()
        .filter(|p| name(p).as_deref() == Some("target"));
    in_target
        .and_then(|target| target.parent().and_then(name))
        .or_else(|| name(dir))
        .unwrap_or_else(|| "?".into())
}

/// A string that lives as long as the benchmark process (server tables hold `&'static str`).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
