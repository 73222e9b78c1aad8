//! Micro-benchmarks of the runtime's core paths, against tokio's `current_thread` runtime:
//!
//! - NOP ops/s through `Op<T>`: one at a time (one `io_uring_enter` per op) and 64 in flight
//!   (one enter per batch). tokio has no equivalent; the numbers stand alone.
//! - spawn + join: spawn a task and await its `JoinHandle`, one at a time and 1,000 at a time,
//!   against tokio `current_thread` (`tokio::spawn`, its fastest spawn path) doing the same in
//!   the same run.
//!
//! ```text
//! cargo bench -p benches --bench ops            # ROUNDS=7 N=200000 to change
//! ```

use benches::{Contender, env_or, join_all, measure, per_op, rate};

fn main() {
    let rounds = env_or("ROUNDS", 7) as usize;
    let n = env_or("N", 200_000);

    let ours = runtime::Runtime::new().expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");

    println!("rounds: {rounds}, operations per round: {n}");
    println!("{}", ours.capabilities());

    let mut nop = [
        Contender {
            name: "runtime NOP, 1 in flight",
            run: Box::new(|n| {
                ours.block_on(async {
                    for _ in 0..n {
                        runtime::op::nop().await.unwrap();
                    }
                })
            }),
        },
        Contender {
            name: "runtime NOP, 64 in flight",
            run: Box::new(|n| {
                ours.block_on(async {
                    let mut left = n;
                    while left > 0 {
                        let batch = left.min(64);
                        let ops: Vec<_> = (0..batch).map(|_| runtime::op::nop()).collect();
                        for r in join_all(ops).await {
                            r.unwrap();
                        }
                        left -= batch;
                    }
                })
            }),
        },
    ];
    let nop_rates = measure(&mut nop, rounds, n);
    println!("\n| operation | ops/s | per op |");
    println!("|---|---|---|");
    for (c, r) in nop.iter().zip(&nop_rates) {
        println!("| {} | {} | {:?} |", c.name, rate(*r), per_op(*r));
    }

    let mut spawn = [
        Contender {
            name: "runtime spawn+join, sequential",
            run: Box::new(|n| {
                ours.block_on(async {
                    for _ in 0..n {
                        runtime::spawn(async {}).await.unwrap();
                    }
                })
            }),
        },
        Contender {
            name: "tokio spawn+join, sequential",
            run: Box::new(|n| {
                tokio.block_on(async {
                    for _ in 0..n {
                        tokio::spawn(async {}).await.unwrap();
                    }
                })
            }),
        },
        Contender {
            name: "runtime spawn+join, 1000 at a time",
            run: Box::new(|n| {
                ours.block_on(async {
                    let mut left = n;
                    while left > 0 {
                        let batch = left.min(1000);
                        let hs: Vec<_> = (0..batch).map(|_| runtime::spawn(async {})).collect();
                        for h in hs {
                            h.await.unwrap();
                        }
                        left -= batch;
                    }
                })
            }),
        },
        Contender {
            name: "tokio spawn+join, 1000 at a time",
            run: Box::new(|n| {
                tokio.block_on(async {
                    let mut left = n;
                    while left > 0 {
                        let batch = left.min(1000);
                        let hs: Vec<_> = (0..batch).map(|_| tokio::spawn(async {})).collect();
                        for h in hs {
                            h.await.unwrap();
                        }
                        left -= batch;
                    }
                })
            }),
        },
    ];
    let spawn_rates = measure(&mut spawn, rounds, n);
    println!("\n| spawn + join | ops/s | per op | runtime / tokio |");
    println!("|---|---|---|---|");
    for (i, (c, r)) in spawn.iter().zip(&spawn_rates).enumerate() {
        let ratio = if i % 2 == 0 {
            format!("{:.2}x", r / spawn_rates[i + 1])
        } else {
            "1.00x".to_string()
        };
        println!("| {} | {} | {:?} | {ratio} |", c.name, rate(*r), per_op(*r));
    }
}
