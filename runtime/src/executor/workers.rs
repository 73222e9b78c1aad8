//! Thread-per-core: a runtime of several workers, each a thread with its own ring and task
//! queue, pinned to a core. Nothing on the hot path is shared: a worker only touches another
//! worker through its `Remote` (task queue + kick), to hand it work (`spawn_on`) or wake it.
//!
//! # Invariants
//!
//! - Worker 0 is the thread that built the runtime and calls `block_on`; workers 1.. are
//!   threads the runtime owns and joins when it is dropped.
//! - A task sent to a worker with `spawn_on` is polled only on that worker. Its future may be
//!   created there (`spawn_on_with`), so it need not be `Send`; only the closure that creates
//!   it and the output cross threads.
//! - Shutdown: worker 0 tells every other worker to stop and joins them (each drops its tasks
//!   and drains its ring, as a single runtime does), then shuts itself down.

use std::{
    fmt,
    future::Future,
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    task::{Context, Poll},
    thread::JoinHandle as ThreadHandle,
};

use crate::{
    Builder, JoinHandle, Runtime,
    executor::context::{self, Handle},
    executor::{ActiveGuard, Panic, poll_catching_panic},
    wake::Remote,
};

/// What the workers of one runtime share.
pub(crate) struct Group {
    pub(crate) remotes: Vec<Arc<Remote>>,
    /// Graceful shutdown began: `shutdown_requested` futures resolve.
    draining: AtomicBool,
    /// Workers 1.. leave their loop and shut down.
    stop: AtomicBool,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("workers", &self.remotes.len())
            .field("draining", &self.draining.load(SeqCst))
            .finish()
    }
}

impl Group {
    pub(crate) fn new(remotes: Vec<Arc<Remote>>) -> Arc<Group> {
        Arc::new(Group {
            remotes,
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    /// Starts graceful shutdown on every worker.
    pub(crate) fn drain(&self) {
        self.draining.store(true, SeqCst);
        for remote in &self.remotes {
            remote.wake_main();
        }
    }

    /// Tells workers 1.. to stop.
    fn stop(&self) {
        self.stop.store(true, SeqCst);
        for remote in &self.remotes[1..] {
            remote.wake_main();
        }
    }

    /// Tasks alive over all workers.
    pub(crate) fn tasks_alive(&self) -> usize {
        self.remotes.iter().map(|r| r.tasks_alive()).sum()
    }
}

/// The threads of workers 1.., owned by worker 0's `Runtime`.
pub(crate) struct Workers {
    group: Arc<Group>,
    threads: Vec<ThreadHandle<()>>,
    /// Worker 0's CPU affinity before it was pinned, restored on shutdown.
    saved_affinity: Option<libc::cpu_set_t>,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Workers {
    /// Stops and joins workers 1.., then restores this thread's affinity.
    pub(crate) fn shut_down(self) {
        self.group.stop();
        for thread in self.threads {
            // A worker that panicked has already unwound; nothing more to do.
            let _ = thread.join();
        }
        if let Some(set) = self.saved_affinity {
            set_affinity(&set);
        }
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    let Some(set) = current_affinity() else {
        return Vec::new();
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `cpu < CPU_SETSIZE` of a live `cpu_set_t`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The calling thread's CPU affinity, if it can be read.
fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is plain data, zeroed here; sched_getaffinity writes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity reads one `cpu_set_t` from a live reference. A failure (a CPU
    // went offline) leaves the thread unpinned, which is only slower.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

/// The default CPU of a worker's SQ thread: the one after `cpu` (the worker's pinned CPU, or
/// where the calling thread runs now) among the `allowed` ones, wrapping around.
fn sq_cpu_after(cpu: Option<usize>, allowed: &[usize]) -> Option<u32> {
    let cpu = cpu.or_else(|| {
        // SAFETY: sched_getcpu takes no arguments; -1 means it failed.
        let here = unsafe { libc::sched_getcpu() };
        usize::try_from(here).ok()
    })?;
    let next = match allowed.iter().position(|&c| c == cpu) {
        Some(i) => allowed[(i + 1) % allowed.len()],
        None => *allowed.first()?,
    };
    u32::try_from(next).ok()
}

/// Pins the calling thread to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO/CPU_SET write inside it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&set);
}

/// Builds a runtime of `n` workers: worker 0 on this thread, the others on new threads.
pub(crate) fn build(builder: &Builder, n: usize, pin: bool) -> io::Result<Runtime> {
    let remotes = (0..n)
        .map(|_| Remote::new())
        .collect::<io::Result<Vec<_>>>()?;
    let group = Group::new(remotes);
    let allowed = allowed_cpus();
    let cpus = if pin { allowed.clone() } else { Vec::new() };
    let cpu_of = |worker: usize| (!cpus.is_empty()).then(|| cpus[worker % cpus.len()]);
    let saved_affinity = if pin && n > 1 {
        let saved = current_affinity();
        if let Some(cpu) = cpu_of(0) {
            pin_to(cpu);
        }
        saved
    } else {
        None
    };
    // A single worker is not pinned: its SQ thread goes next to where it runs now.
    let pinned = |worker: usize| if pin && n > 1 { cpu_of(worker) } else { None };
    let mut rt = match builder.build_worker(0, group.clone(), sq_cpu_after(pinned(0), &allowed)) {
        Ok(rt) => rt,
        Err(e) => {
            if let Some(set) = &saved_affinity {
                set_affinity(set);
            }
            return Err(e);
        }
    };
    let mut threads = Vec::with_capacity(n - 1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    for worker in 1..n {
        let builder = builder.clone();
        let group = group.clone();
        let ready = ready_tx.clone();
        let cpu = if pin { cpu_of(worker) } else { None };
        let allowed = allowed.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("runtime-worker-{worker}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                let sq_cpu = sq_cpu_after(cpu, &allowed);
                let rt = match builder.build_worker(worker, group.clone(), sq_cpu) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                drop(ready);
                rt.block_on(WorkerMain {
                    group,
                    drain_announced: false,
                });
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                let _ = ready_tx.send(Err(io::Error::other(format!(
                    "could not start worker thread {worker}: {e}"
                ))));
                break;
            }
        }
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..n - 1 {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    rt.workers = Some(Workers {
        group,
        threads,
        saved_affinity,
    });
    match failure {
        // Dropping `rt` stops and joins the workers that did start.
        Some(e) => Err(e),
        None => Ok(rt),
    }
}

/// What workers 1.. run: idle until told to stop, announcing graceful shutdown to their tasks.
struct WorkerMain {
    group: Arc<Group>,
    drain_announced: bool,
}

impl Future for WorkerMain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.group.stop.load(SeqCst) {
            return Poll::Ready(());
        }
        if self.group.is_draining() && !self.drain_announced {
            self.drain_announced = true;
            context::current().announce_drain();
        }
        // Woken through the runtime's main waker (`Group::stop`, `Group::drain`).
        Poll::Pending
    }
}

/// Index of the worker this code runs on (0 for `block_on`'s thread).
///
/// # Panics
///
/// Panics outside a runtime.
pub fn worker_id() -> usize {
    context::current().worker
}

/// Number of workers of the current runtime.
///
/// # Panics
///
/// Panics outside a runtime.
pub fn worker_count() -> usize {
    context::current().group.remotes.len()
}

/// Runs `future` on worker `worker` and returns a handle to await its output from anywhere.
///
/// # Panics
///
/// Panics outside a runtime, or if `worker >= worker_count()`.
pub fn spawn_on<F>(worker: usize, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_on_with(worker, move || future)
}

/// Runs the future that `make` creates on worker `worker`. `make` runs on that worker, so the
/// future need not be `Send` (it may own sockets of that worker); only `make` and the output
/// cross threads.
///
/// # Panics
///
/// Panics outside a runtime, or if `worker >= worker_count()`.
pub fn spawn_on_with<M, Fut>(worker: usize, make: M) -> JoinHandle<Fut::Output>
where
    M: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let handle = context::current();
    let count = handle.group.remotes.len();
    assert!(
        worker < count,
        "spawn_on: worker {worker} does not exist (the runtime has {count})"
    );
    let remote = handle.group.remotes[worker].clone();
    let launch = Launch {
        state: LaunchState::Init(Some(make)),
    };
    let target = remote.clone();
    let (task, join) =
        async_task::spawn(launch, move |task| crate::executor::schedule(&target, task));
    if worker == handle.worker {
        handle.scheduler.push(task);
    } else {
        remote.push(task);
    }
    JoinHandle::new(join)
}

/// Runs the future `f(worker)` on every worker (the SO_REUSEPORT pattern: each binds its own
/// listener and serves its own connections) and returns their handles, in worker order.
///
/// ```no_run
/// # let rt = runtime::Builder::new().worker_threads(2).build().unwrap();
/// # rt.block_on(async {
/// let servers = runtime::on_each_worker(|worker| async move {
///     // e.g. bind a reuse-port listener and accept on this worker
///     worker
/// });
/// for s in servers {
///     s.await.unwrap();
/// }
/// # });
/// ```
///
/// # Panics
///
/// Panics outside a runtime.
pub fn on_each_worker<F, Fut>(f: F) -> Vec<JoinHandle<Fut::Output>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let f = Arc::new(f);
    (0..worker_count())
        .map(|worker| {
            let f = f.clone();
            spawn_on_with(worker, move || f(worker))
        })
        .collect()
}

/// Resolves when graceful shutdown begins ([`Runtime::shutdown_graceful`]): the signal for
/// accept loops to stop accepting and for long-lived tasks to wind down.
///
/// # Panics
///
/// Panics outside a runtime.
pub async fn shutdown_requested() {
    let handle = context::current();
    std::future::poll_fn(|cx| {
        if handle.group.is_draining() {
            Poll::Ready(())
        } else {
            handle.drain_waiters.register(cx.waker());
            Poll::Pending
        }
    })
    .await
}

impl Handle {
    /// Wakes the tasks waiting in `shutdown_requested` on this worker.
    pub(crate) fn announce_drain(&self) {
        self.drain_waiters.wake_all();
    }
}

/// A task sent to another worker: the closure until its first poll there, then the future it
/// made, registered with that worker's task registry.
struct Launch<M, Fut> {
    state: LaunchState<M, Fut>,
}

enum LaunchState<M, Fut> {
    Init(Option<M>),
    Running {
        future: Pin<Box<Fut>>,
        _guard: ActiveGuard,
        /// `Remote::id` of the worker the future lives on.
        owner: u64,
    },
}

// SAFETY: the only non-`Send` part, `Running`'s future and guard, is created during the first
// poll, which happens on the target worker, and is only ever polled or dropped there: the task's
// schedule function queues it on that worker alone, a task in `Running` state is in the worker's
// registry so its shutdown drops it there, and until then nothing else runs or drops the task's
// future (cancelling from a `JoinHandle` elsewhere only schedules it onto that worker). Moving the
// value to the target thread happens in `Init` state, which holds only the `Send` closure.
unsafe impl<M: Send, Fut> Send for Launch<M, Fut> {}

impl<M, Fut> Drop for Launch<M, Fut> {
    fn drop(&mut self) {
        // The `Send` impl above relies on a running future being dropped only on its worker,
        // which the scheduler guarantees (shutdown waits for every such task). Should that ever
        // fail, leaking the future is sound; dropping it here would not be.
        if let LaunchState::Running { owner, .. } = self.state
            && context::with_runtime(owner, |_| ()).is_none()
        {
            let state = std::mem::replace(&mut self.state, LaunchState::Init(None));
            std::mem::forget(state);
        }
    }
}

impl<M, Fut> Future for Launch<M, Fut>
where
    M: FnOnce() -> Fut,
    Fut: Future,
{
    type Output = Result<Fut::Output, Panic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `Launch` is never moved out of its pin: the closure is taken by value and the
        // future lives in its own `Box`, so no field is structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if let LaunchState::Init(make) = &mut this.state {
            let make = make.take().expect("launched once");
            let handle: Rc<Handle> = context::current();
            let guard = ActiveGuard::register(&handle, cx.waker().clone());
            match catch_unwind(AssertUnwindSafe(make)) {
                Ok(future) => {
                    this.state = LaunchState::Running {
                        future: Box::pin(future),
                        _guard: guard,
                        owner: handle.remote.id,
                    }
                }
                Err(panic) => return Poll::Ready(Err(panic)),
            }
        }
        let LaunchState::Running { future, .. } = &mut this.state else {
            unreachable!("state set to running just above")
        };
        poll_catching_panic(future.as_mut(), cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex, mpsc},
        task::{Poll, Waker},
        thread::ThreadId,
        time::Duration,
    };

    use crate::{Builder, spawn_on_with, wake::test_hooks};

    /// Records the thread that drops it.
    struct DropThread(Arc<Mutex<Option<ThreadId>>>);

    impl Drop for DropThread {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }

    /// A `!Send` task of a worker is woken from a thread outside the runtime just as the
    /// worker shuts down; the waking thread is held (test hook) between taking the `Runnable`
    /// from the schedule callback and pushing it. The task's future must still be dropped on
    /// its worker, never by the waking thread.
    #[test]
    fn a_task_woken_from_outside_during_shutdown_is_dropped_on_its_worker() {
        for round in 0..20u64 {
            let rt = Builder::new().worker_threads(1).build().unwrap();
            let dropped_on = Arc::new(Mutex::new(None));
            let (waker_tx, waker_rx) = mpsc::channel::<Waker>();
            let recorder = dropped_on.clone();
            rt.block_on(async move {
                let _task = spawn_on_with(0, move || {
                    // `Rc` makes the future `!Send`, as a worker's sockets and ops do.
                    let guard = (std::rc::Rc::new(()), DropThread(recorder));
                    async move {
                        let _guard = guard;
                        std::future::poll_fn(|cx| {
                            let _ = waker_tx.send(cx.waker().clone());
                            Poll::<()>::Pending
                        })
                        .await
                    }
                });
                for _ in 0..10 {
                    crate::yield_now().await;
                }
            });
            let waker = waker_rx.recv().unwrap();
            let delay = Duration::from_millis(5 + round % 4 * 5);
            let waking = std::thread::spawn(move || {
                test_hooks::delay_pushes(Some(delay));
                waker.wake();
            });
            // The waking thread now holds the `Runnable`, asleep before its push.
            std::thread::sleep(Duration::from_millis(2));
            let worker = std::thread::current().id();
            drop(rt);
            waking.join().unwrap();
            assert_eq!(
                *dropped_on.lock().unwrap(),
                Some(worker),
                "round {round}: a worker's task was dropped by the thread that woke it"
            );
        }
    }
}
