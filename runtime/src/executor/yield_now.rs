//! `yield_now`: give other tasks and I/O a turn.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// Yields to the executor once: the current task goes to the back of the run queue, so every
/// other ready task runs (and, for the `block_on` future, the ring is entered) before it
/// resumes.
///
/// # Examples
///
/// ```
/// # runtime::Runtime::new().unwrap().block_on(async {
/// runtime::yield_now().await;
/// # });
/// ```
pub async fn yield_now() {
    YieldNow { yielded: false }.await
}

struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
