//! Tasks, under tokio's names: [`spawn`], [`yield_now`], [`JoinHandle`], [`JoinError`], and
//! [`JoinSet`], a collection of tasks awaited in the order they finish.
//!
//! [`spawn`] and [`JoinSet::spawn`] run the future on the current worker, so it need not be
//! `Send`; [`spawn_on`](crate::spawn_on) and [`JoinSet::spawn_on`] hand it to another worker.
//!
//! ```
//! # runtime::Runtime::new().unwrap().block_on(async {
//! use runtime::task::JoinSet;
//!
//! let mut set = JoinSet::new();
//! for i in 0..10u64 {
//!     set.spawn(async move { i * i });
//! }
//! let mut sum = 0;
//! while let Some(res) = set.join_next().await {
//!     sum += res.unwrap();
//! }
//! assert_eq!(sum, 285);
//! # });
//! ```

mod join_set;

pub use join_set::{AbortHandle, JoinSet};

pub use crate::executor::{JoinError, JoinHandle, spawn, yield_now};
