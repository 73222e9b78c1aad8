//! A first look at the runtime: what the kernel offers, tasks, timers and a kernel operation.
//!
//! ```text
//! cargo run --example hello
//! ```

use std::time::{Duration, Instant};

#[runtime::main]
async fn main() -> std::io::Result<()> {
    println!("{}", runtime::capabilities());

    let start = Instant::now();
    let tasks: Vec<_> = (1..=3u64)
        .map(|i| {
            runtime::spawn(async move {
                runtime::time::sleep(Duration::from_millis(10 * i)).await;
                println!("task {i} woke after {:?}", start.elapsed());
                i
            })
        })
        .collect();
    let mut sum = 0;
    for task in tasks {
        sum += task.await?;
    }
    println!("tasks returned {sum}");

    runtime::op::nop().await?;
    println!("a NOP made the round trip through the ring");

    let mut ticks = runtime::time::interval(Duration::from_millis(5));
    for n in 0..3 {
        ticks.tick().await;
        println!("tick {n} at {:?}", start.elapsed());
    }
    println!("{:?}", runtime::metrics());
    Ok(())
}
