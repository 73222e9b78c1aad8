//! Example support: what the examples share that is not part of their lesson, and the HTTP
//! service ([`http`]) and TLS setup ([`tls`]) that the examples, tests and benchmarks share.

pub mod http;
pub mod tls;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The environment variable that names the file [`export_metrics`] keeps up to date.
pub const METRICS_FILE_VAR: &str = "RUNTIME_METRICS_FILE";

/// How often [`export_metrics`] rewrites its file.
pub const METRICS_PERIOD: Duration = Duration::from_millis(50);

/// The file [`export_metrics`] writes beside `path` before renaming it over `path`.
pub fn metrics_tmp_path(path: &std::path::Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// For the benchmarks (`benches/echo.rs`): when the environment variable
/// `RUNTIME_METRICS_FILE` is set, keeps the file it names up to date with the runtime's
/// counters; when it is not set, does nothing, so the example behaves exactly as written.
///
/// Every [`METRICS_PERIOD`] the file is replaced (written beside it, then renamed over it, so a
/// reader never sees half a line) by one line of five numbers:
///
/// ```text
/// enters ops_submitted completions unix_time_ns inline_calls
/// ```
///
/// the [`runtime::Metrics`] counters `enters` (`io_uring_enter` calls), `ops_submitted`
/// (SQEs) and `completions` (CQEs), summed over every worker, the wall-clock time at which
/// they were read, in nanoseconds since the Unix epoch (a clock every process shares, so a
/// reader can tell exactly what interval two snapshots span), and `inline_calls` (socket
/// system calls made in place of an op). The export itself costs one timer
/// wake-up per worker per period (20 enters a second) and a file write on worker 0.
///
/// Call it inside the runtime: the first line of a `#[runtime::main]` function, or of the
/// future given to `block_on`. If the file cannot be written, it says so once on stderr and
/// stops exporting.
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn export_metrics() {
    if let Some(path) = std::env::var_os(METRICS_FILE_VAR) {
        export_metrics_to(PathBuf::from(path));
    }
}

/// What [`export_metrics`] does when `RUNTIME_METRICS_FILE` is set, to the file `path`.
///
/// # Panics
///
/// Panics when called outside a runtime.
pub fn export_metrics_to(path: PathBuf) {
    let workers = runtime::worker_count();
    // Per worker: enters, ops_submitted, completions, inline_calls, as last read there.
    let counters: Arc<Vec<[AtomicU64; 4]>> = Arc::new(
        (0..workers)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect(),
    );
    for worker in 1..workers {
        let counters = counters.clone();
        runtime::spawn_on_with(worker, move || async move {
            loop {
                publish(&counters[worker]);
                runtime::time::sleep(METRICS_PERIOD).await;
            }
        });
    }
    runtime::spawn(async move {
        let tmp = metrics_tmp_path(&path);
        loop {
            publish(&counters[0]);
            let sum = |i: usize| {
                counters
                    .iter()
                    .map(|c| c[i].load(Ordering::Relaxed))
                    .sum::<u64>()
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let line = format!("{} {} {} {now} {}\n", sum(0), sum(1), sum(2), sum(3));
            if let Err(e) = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &path)) {
                eprintln!(
                    "cannot write the metrics file {} ({e}); set {METRICS_FILE_VAR} to a \
                     writable path. Metrics export stopped",
                    path.display()
                );
                return;
            }
            runtime::time::sleep(METRICS_PERIOD).await;
        }
    });
}

/// Stores the current worker's counters in its slot.
fn publish(slot: &[AtomicU64; 4]) {
    let m = runtime::metrics();
    slot[0].store(m.enters, Ordering::Relaxed);
    slot[1].store(m.ops_submitted, Ordering::Relaxed);
    slot[2].store(m.completions, Ordering::Relaxed);
    slot[3].store(m.inline_calls, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::{METRICS_PERIOD, export_metrics_to};

    fn read(path: &Path) -> [u64; 5] {
        let text = std::fs::read_to_string(path).expect("the metrics file exists");
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|x| x.parse().expect("numbers"))
            .collect();
        v.try_into().expect("five numbers on one line")
    }

    /// UDP round trips through the ring on the current worker.
    async fn round_trips(n: usize) {
        let a = net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut buf = vec![0u8; 16];
        for _ in 0..n {
            let (res, _) = a.send_to(b"ping".to_vec(), to).await;
            res.unwrap();
            let (res, back) = b.recv_from(buf).await;
            res.unwrap();
            buf = back;
        }
    }

    #[test]
    fn metrics_file_sums_every_workers_counters() {
        let dir = std::env::temp_dir().join(format!("examples-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.txt");
        let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
        let file = path.clone();
        rt.block_on(async move {
            export_metrics_to(file.clone());
            runtime::time::sleep(METRICS_PERIOD * 3).await;
            let before = read(&file);
            // The work happens on worker 1 only: the file must count it all the same.
            runtime::spawn_on_with(1, || round_trips(100))
                .await
                .unwrap();
            runtime::time::sleep(METRICS_PERIOD * 3).await;
            let after = read(&file);
            assert!(
                after[1] >= before[1] + 200,
                "100 sends and 100 receives on worker 1 must show in ops_submitted: \
                 {before:?} -> {after:?}"
            );
            assert!(after[0] > before[0], "enters: {before:?} -> {after:?}");
            assert!(after[2] > before[2], "completions: {before:?} -> {after:?}");
            // The two reads are 3 periods apart, but the writes they saw can be late on a
            // loaded machine (CI saw 108 ms between them for 3 × 50 ms): the file was
            // rewritten since, at least one period later.
            let elapsed = Duration::from_nanos(after[3] - before[3]);
            assert!(
                elapsed >= METRICS_PERIOD,
                "timestamps at least a period apart: {elapsed:?}"
            );
        });
        drop(rt);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
