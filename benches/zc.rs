//! Bulk transfer with zero-copy sends on loopback: plain `write_all`, `send_zc_all` waiting for
//! every notification (`ZeroCopy::On`), the pipelined form (`send_zc_pipelined`, 4 buffers in
//! flight, `On`), and the default `ZeroCopy::Auto`, in the same run, alternating.
//!
//! The sender (this runtime) is pinned to CPU 0 and a blocking reader thread to CPU 1; each
//! run sends back-to-back writes of one size for a fixed time on a fresh connection. Reported
//! per mode, as medians over rounds: throughput, the sender thread's CPU time per MiB, and the
//! sender's plus the reader's CPU per MiB (on loopback the receive path runs partly on the
//! sending core, so the split between the two moves with timing; the sum is the stable cost),
//! with ratios to plain sends. Loopback always copies (`docs/kernel-notes.md` §3), so
//! zero copy cannot win here; the point is that `Auto` notices and costs no more than plain
//! sends, and the `On` rows are the numbers to compare on a real NIC.
//!
//! ```text
//! cargo bench -p benches --bench zc                 # ROUNDS=5 MEASURE_MS=1500
//! ```

use std::{
    io::Read,
    net::TcpListener as StdListener,
    time::{Duration, Instant},
};

use benches::{env_or, median, pin_to};
use net::{TcpStream, ZeroCopy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    ZcWait,
    ZcPipelined,
    Auto,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "write_all (plain send)",
            Mode::ZcWait => "send_zc_all, On (wait per notification)",
            Mode::ZcPipelined => "send_zc_pipelined, On (4 in flight)",
            Mode::Auto => "send_zc_all, Auto",
        }
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed local.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One run: returns (bytes per second, sender CPU µs per MiB, sender + reader CPU µs per MiB).
fn run(
    rt: &runtime::Runtime,
    mode: Mode,
    size: usize,
    measure: Duration,
    pin: bool,
) -> (f64, f64, f64) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        if pin {
            // Unpinned (only noisier) if the CPU is not available.
            let _ = pin_to(1);
        }
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let cpu_start = thread_cpu();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return (total, thread_cpu() - cpu_start),
                Ok(n) => total += n as u64,
            }
        }
    });
    let (bytes, elapsed, cpu) = rt.block_on(async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_zero_copy(match mode {
            Mode::Plain => ZeroCopy::Off,
            Mode::ZcWait | Mode::ZcPipelined => ZeroCopy::On,
            Mode::Auto => ZeroCopy::Auto,
        });
        let start = Instant::now();
        let cpu_start = thread_cpu();
        let mut sent = 0u64;
        let mut buf = vec![0xabu8; size];
        let mut spare: Vec<Vec<u8>> = (0..3).map(|_| vec![0xabu8; size]).collect();
        let mut in_flight = std::collections::VecDeque::new();
        while start.elapsed() < measure {
            match mode {
                Mode::Plain => {
                    let (res, b) = stream.write_all(buf).await;
                    res.unwrap();
                    buf = b;
                }
                Mode::ZcWait | Mode::Auto => {
                    let (res, b) = stream.send_zc_all(buf).await;
                    res.unwrap();
                    buf = b;
                }
                Mode::ZcPipelined => {
                    let (res, release) = stream.send_zc_pipelined(buf).await;
                    assert_eq!(res.unwrap(), size);
                    in_flight.push_back(release);
                    buf = match spare.pop() {
                        Some(b) => b,
                        None => in_flight.pop_front().unwrap().await,
                    };
                }
            }
            sent += size as u64;
        }
        for release in in_flight {
            drop(release.await);
        }
        let cpu = thread_cpu() - cpu_start;
        let elapsed = start.elapsed();
        if mode == Mode::Auto {
            assert!(
                stream.zero_copy_stats().switched_to_copy.is_some(),
                "Auto did not notice that loopback copies"
            );
        }
        drop(stream);
        (sent, elapsed, cpu)
    });
    let (received, reader_cpu) = reader.join().unwrap();
    assert_eq!(received, bytes);
    let mib = bytes as f64 / (1 << 20) as f64;
    (
        bytes as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / mib,
        (cpu + reader_cpu).as_secs_f64() * 1e6 / mib,
    )
}

fn main() {
    let rounds = env_or("ROUNDS", 5) as usize;
    let measure = Duration::from_millis(env_or("MEASURE_MS", 1500));
    let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pin {
        let _ = pin_to(0);
    }
    let rt = runtime::Runtime::new().unwrap();
    let modes = [Mode::Plain, Mode::ZcWait, Mode::ZcPipelined, Mode::Auto];
    println!(
        "bulk send on loopback: {rounds} rounds x {measure:?} per mode and size, pinned: {pin}"
    );
    for size in [64 << 10, 1 << 20] {
        let mut tput: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
        let mut cpu: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
        let mut total: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..modes.len() {
                let i = (k + round) % modes.len();
                let (t, c, both) = run(&rt, modes[i], size, measure, pin);
                tput[i].push(t);
                cpu[i].push(c);
                total[i].push(both);
            }
        }
        let tput: Vec<f64> = tput.iter_mut().map(|v| median(v)).collect();
        let cpu: Vec<f64> = cpu.iter_mut().map(|v| median(v)).collect();
        let total: Vec<f64> = total.iter_mut().map(|v| median(v)).collect();
        println!("\n### {} KiB writes\n", size >> 10);
        println!(
            "| mode | GB/s | sender CPU µs/MiB | sender+reader CPU µs/MiB | throughput vs plain | \
             total CPU/byte vs plain |"
        );
        println!("|---|---|---|---|---|---|");
        for (i, mode) in modes.iter().enumerate() {
            println!(
                "| {} | {:.2} | {:.1} | {:.1} | {:.3} | {:.3} |",
                mode.name(),
                tput[i] / 1e9,
                cpu[i],
                total[i],
                tput[i] / tput[0],
                total[i] / total[0]
            );
        }
    }
}
