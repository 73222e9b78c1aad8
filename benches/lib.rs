//! Shared helpers for the benchmarks: repeated, alternating measurement and table output.
//!
//! Every benchmark runs each contender once per round, in an order that rotates from round to
//! round, and reports the median over rounds, so a slow phase of the machine hits all
//! contenders alike.

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
        let exe = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {exe}: {e}"));
        // Killed by `drop` if it never listens.
        let server = ServerProcess(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{exe} did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
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
