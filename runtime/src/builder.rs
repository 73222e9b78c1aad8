//! `Builder`: every knob of a runtime, with its default and the kernel it needs.

use std::{cell::RefCell, io, rc::Rc, sync::Arc, time::Duration};

use crate::{
    BACKEND_ENV, Backend, Runtime,
    capabilities::Capabilities,
    driver::{Driver, Napi, RingConfig, RingMode, SqPoll},
    executor::Scheduler,
    executor::context::Handle,
    executor::workers::Group,
    time::Timers,
    wake::Remote,
    zcrx::{ZcrxConfig, ZcrxMode},
};

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = runtime::Builder::new().entries(512).build().unwrap();
/// assert_eq!(rt.block_on(async { 7 }), 7);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    cq_entries: Option<u32>,
    mode: RingMode,
    register_ring_fd: bool,
    task_budget: usize,
    shutdown_timeout: Duration,
    zcrx: Option<ZcrxConfig>,
    worker_threads: Option<usize>,
    pin_cores: bool,
    direct_descriptors: u32,
    sqpoll: Option<Duration>,
    sqpoll_cpu: Option<u32>,
    napi: Option<(Duration, bool)>,
    /// A malformed `RUNTIME_SQPOLL*` / `RUNTIME_NAPI` variable, reported by `build`.
    env_error: Option<String>,
    backend: Backend,
}

/// `Builder::new` turns SQPOLL on with this idle time in milliseconds (as `Builder::sqpoll`).
const SQPOLL_VAR: &str = "RUNTIME_SQPOLL";
/// `Builder::new` binds the SQ thread to this CPU (as `Builder::sqpoll_cpu`).
const SQPOLL_CPU_VAR: &str = "RUNTIME_SQPOLL_CPU";
/// `Builder::new` turns NAPI busy polling on: `<window µs>` or `<window µs>,prefer`.
const NAPI_VAR: &str = "RUNTIME_NAPI";

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults listed on each setter, then the ring-mode variables of the
    /// environment applied, so a program can be switched without a rebuild:
    /// `RUNTIME_SQPOLL=<idle ms>` ([`sqpoll`](Self::sqpoll)), `RUNTIME_SQPOLL_CPU=<cpu>`
    /// ([`sqpoll_cpu`](Self::sqpoll_cpu)), `RUNTIME_NAPI=<window µs>[,prefer]`
    /// ([`napi_busy_poll`](Self::napi_busy_poll)). Setters called afterwards override them;
    /// a malformed value makes [`build`](Self::build) fail with `InvalidInput`.
    pub fn new() -> Builder {
        let mut builder = Builder::defaults();
        builder.apply_env();
        builder
    }

    fn defaults() -> Builder {
        Builder {
            entries: 256,
            cq_entries: None,
            mode: RingMode::Auto,
            register_ring_fd: true,
            task_budget: 256,
            shutdown_timeout: Duration::from_secs(5),
            zcrx: None,
            worker_threads: None,
            pin_cores: true,
            direct_descriptors: 0,
            sqpoll: None,
            sqpoll_cpu: None,
            napi: None,
            env_error: None,
            backend: Backend::Auto,
        }
    }

    /// Reads `RUNTIME_SQPOLL`, `RUNTIME_SQPOLL_CPU` and `RUNTIME_NAPI` (see [`Builder::new`]).
    fn apply_env(&mut self) {
        let mut bad = Vec::new();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var(SQPOLL_VAR) {
            match v.trim().parse::<u64>() {
                Ok(ms) => {
                    self.sqpoll(Duration::from_millis(ms));
                }
                Err(_) => bad.push(format!("{SQPOLL_VAR}={v:?} is not an idle time in ms")),
            }
        }
        if let Some(v) = var(SQPOLL_CPU_VAR) {
            match v.trim().parse::<u32>() {
                Ok(cpu) => {
                    self.sqpoll_cpu(cpu);
                }
                Err(_) => bad.push(format!("{SQPOLL_CPU_VAR}={v:?} is not a CPU number")),
            }
        }
        if let Some(v) = var(NAPI_VAR) {
            let (window, prefer) = match v.trim().split_once(',') {
                Some((w, p)) => (w, Some(p.trim())),
                None => (v.trim(), None),
            };
            match (window.trim().parse::<u64>(), prefer) {
                (Ok(us), None) => {
                    self.napi_busy_poll(Duration::from_micros(us), false);
                }
                (Ok(us), Some("prefer")) => {
                    self.napi_busy_poll(Duration::from_micros(us), true);
                }
                _ => bad.push(format!(
                    "{NAPI_VAR}={v:?} is not `<window µs>` or `<window µs>,prefer`"
                )),
            }
        }
        if !bad.is_empty() {
            self.env_error = Some(bad.join("; "));
        }
    }

    /// Submission queue size (default 256; 1..=32768, rounded up to a power of two by the
    /// kernel). More SQEs than this may be queued per loop turn: the runtime flushes a full SQ
    /// to the kernel and keeps going.
    pub fn entries(&mut self, entries: u32) -> &mut Self {
        self.entries = entries;
        self
    }

    /// Completion queue size (default 4 × `entries`; `entries..=65536`; `IORING_SETUP_CQSIZE`,
    /// Linux 5.5). Multishot operations and zero-copy notifications post CQEs without SQEs, so
    /// size it for the largest burst; a CQ that overflows still loses nothing, the kernel holds
    /// the excess until the runtime reaps it.
    pub fn cq_entries(&mut self, cq_entries: u32) -> &mut Self {
        self.cq_entries = Some(cq_entries);
        self
    }

    /// The setup-flag policy (default [`RingMode::Auto`]).
    pub fn ring_mode(&mut self, mode: RingMode) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Whether to register the ring fd so each enter skips the fd lookup (default on;
    /// `IORING_REGISTER_RING_FDS`, Linux 5.18; at most 16 rings per thread). Falls back to the
    /// plain fd, with a note in the capabilities, when registration fails.
    pub fn register_ring_fd(&mut self, enabled: bool) -> &mut Self {
        self.register_ring_fd = enabled;
        self
    }

    /// How many ready tasks run before the ring is entered again (default 256, minimum 1).
    /// Lower values favour I/O latency, higher values favour task throughput.
    pub fn task_budget(&mut self, tasks: usize) -> &mut Self {
        self.task_budget = tasks.max(1);
        self
    }

    /// How long dropping the runtime waits for the kernel to finish cancelled operations
    /// (default 5 s). Memory of operations still unfinished after that is leaked, never freed,
    /// since the kernel may still write to it.
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Number of workers (default: the number of CPUs this process may use). Each worker is a
    /// thread with its own ring and task queue; worker 0 is the thread that builds the runtime
    /// and runs [`Runtime::block_on`], the others are started by `build` and stopped when the
    /// runtime is dropped. Work reaches them through [`spawn_on`](crate::spawn_on) and
    /// [`on_each_worker`](crate::on_each_worker); [`spawn`](crate::spawn) stays on the
    /// current worker. Minimum 1.
    pub fn worker_threads(&mut self, workers: usize) -> &mut Self {
        self.worker_threads = Some(workers.max(1));
        self
    }

    /// Whether each worker is pinned to its own CPU with `sched_setaffinity` (default on;
    /// applies when there is more than one worker). Worker 0's previous affinity is restored
    /// when the runtime is dropped.
    pub fn pin_cores(&mut self, pin: bool) -> &mut Self {
        self.pin_cores = pin;
        self
    }

    /// Registers a table of `slots` direct descriptors (registered files) on each worker's
    /// ring when it is built (default 0: a table is registered on first use, with
    /// `min(4096, soft RLIMIT_NOFILE)` slots; `IORING_REGISTER_FILES2` sparse, Linux 5.19).
    /// Sockets accepted into it (see `net::TcpListener::set_direct_descriptors`) live only in
    /// the ring and do not count against `RLIMIT_NOFILE`.
    ///
    /// The kernel refuses a table larger than the soft `RLIMIT_NOFILE` at the time it is
    /// registered (`io_sqe_files_register` in `io_uring/rsrc.c`), and cannot resize one later:
    /// to hold more connections than the limit you run with, register the table while the limit
    /// is higher (it may be lowered afterwards). At most 1,048,576. A refusal is recorded in
    /// [`Capabilities::notes`], and sockets then use ordinary descriptors.
    pub fn direct_descriptors(&mut self, slots: u32) -> &mut Self {
        self.direct_descriptors = slots;
        self
    }

    /// Zero-copy receive (Linux 6.15; see [`crate::zcrx`]). With [`ZcrxMode::Auto`] or
    /// [`ZcrxMode::On`] the ring is built with `DEFER_TASKRUN` and 32-byte CQEs and an
    /// interface queue is registered; `On` makes any failure a `build` error naming the
    /// interface and the reason, `Auto` records it in the capabilities instead. Default: none.
    pub fn zcrx(&mut self, config: ZcrxConfig) -> &mut Self {
        self.zcrx = Some(config);
        self
    }

    /// Which engine runs the operations (default [`Backend::Auto`]: io_uring, or epoll where
    /// io_uring is refused or missing; the environment variable `RUNTIME_BACKEND=io_uring|epoll`
    /// overrides `Auto`). [`capabilities()`](crate::capabilities) says which one runs, and why.
    pub fn backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = backend;
        self
    }

    /// Gives each worker's ring a kernel submission thread (`IORING_SETUP_SQPOLL`; Linux 5.11,
    /// earlier only with `CAP_SYS_ADMIN`) that polls the SQ and sleeps after `idle` without
    /// work (at least 1 ms). Default: off, or `RUNTIME_SQPOLL=<idle ms>`.
    ///
    /// The worker then submits without `io_uring_enter` while the thread is awake, at the
    /// price of a CPU that thread keeps busy: it pays off when spare cores exist and the
    /// loop is syscall-bound, not on a machine whose cores are all in use (see
    /// `docs/ring-modes.md`). The kernel does not combine SQPOLL with `DEFER_TASKRUN` or
    /// `COOP_TASKRUN`, so those are off, and so is zero-copy receive, which needs
    /// `DEFER_TASKRUN`. Every guarantee of the default mode holds: a full SQ waits in a
    /// backlog (`IORING_ENTER_SQ_WAIT`), a sleeping thread is woken
    /// (`IORING_SQ_NEED_WAKEUP`), CQ overflow is flushed, shutdown drains every operation,
    /// and sends that skip their completion are known complete once the thread has moved the
    /// SQ head past them with no failure posted. Where the kernel refuses SQPOLL (a policy,
    /// RLIMIT_MEMLOCK, a CPU the process may not use), the ring is built without it and
    /// [`Capabilities::notes`] says why; [`Capabilities::sqpoll`] says which mode runs.
    pub fn sqpoll(&mut self, idle: Duration) -> &mut Self {
        self.sqpoll = Some(idle);
        self
    }

    /// The CPU of the SQ thread of [`sqpoll`](Self::sqpoll) (`IORING_SETUP_SQ_AFF`), the same
    /// for every worker. Default: the CPU after the worker's, among those the process may
    /// use (the worker's pinned CPU; for an unpinned worker, the one it ran on when it was
    /// built), or `RUNTIME_SQPOLL_CPU=<cpu>`. A CPU the process may not use makes the kernel
    /// refuse SQPOLL (noted, the ring falls back).
    pub fn sqpoll_cpu(&mut self, cpu: u32) -> &mut Self {
        self.sqpoll_cpu = Some(cpu);
        self
    }

    /// NAPI busy polling (`IORING_REGISTER_NAPI`, Linux 6.9 with `CONFIG_NET_RX_BUSY_POLL`):
    /// while the loop waits for completions (or, with [`sqpoll`](Self::sqpoll), in the SQ
    /// thread), the kernel polls the receive queues its sockets' packets came through for up
    /// to `timeout` (1 µs to 10 ms) before it sleeps; `prefer_busy_poll` also keeps the
    /// device's interrupts masked meanwhile. The ring tracks NAPI ids dynamically: each socket's
    /// is added by the kernel when a receive arms on it. Only sockets served by a NAPI device
    /// benefit (a NIC; not loopback, nor veth without GRO or XDP). It is unregistered at
    /// shutdown. Default: off, or `RUNTIME_NAPI=<window µs>[,prefer]`. A kernel that refuses
    /// it leaves a note in [`Capabilities::notes`]; see `docs/ring-modes.md`.
    pub fn napi_busy_poll(&mut self, timeout: Duration, prefer_busy_poll: bool) -> &mut Self {
        self.napi = Some((timeout, prefer_busy_poll));
        self
    }

    /// Creates the runtime on the calling thread.
    ///
    /// # Errors
    ///
    /// Invalid sizes give `InvalidInput`. When io_uring cannot be used the error names the cause
    /// and the remedy: `PermissionDenied` (sysctl `kernel.io_uring_disabled`, seccomp),
    /// `Unsupported` (kernel too old), `OutOfMemory` (RLIMIT_MEMLOCK too low, with the current
    /// limit); under [`Backend::Auto`] the first two start the epoll backend instead. A bad
    /// `RUNTIME_BACKEND` value gives `InvalidInput`.
    pub fn build(&self) -> io::Result<Runtime> {
        let workers = self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        crate::executor::workers::build(self, workers, self.pin_cores)
    }

    /// Builds the runtime of worker `worker` of `group` on the calling thread (its zero-copy
    /// receive queue is the configured base queue plus `worker`); `sq_cpu` is the default CPU
    /// of its SQ thread.
    pub(crate) fn build_worker(
        &self,
        worker: usize,
        group: Arc<Group>,
        sq_cpu: Option<u32>,
    ) -> io::Result<Runtime> {
        let mut config = self.ring_config()?;
        config.sqpoll = self.sqpoll.map(|idle| SqPoll {
            idle_ms: u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(1),
            cpu: self.sqpoll_cpu.or(sq_cpu),
        });
        let remote = group.remotes[worker].clone();
        let zcrx = self.zcrx.as_ref().filter(|z| z.mode != ZcrxMode::Off);
        let backend = self.backend.resolve()?;
        if backend == Backend::Epoll {
            let reason = match self.backend {
                Backend::Epoll => "epoll backend: chosen with Builder::backend".to_owned(),
                _ => format!("epoll backend: chosen with {BACKEND_ENV}=epoll"),
            };
            return self.build_epoll(worker, group, reason);
        }
        config.cqe32 = zcrx.is_some();
        let mut zcrx_note = None;
        let (driver, info) = match Driver::new(&config, remote.eventfd()) {
            Ok(built) => built,
            Err(e) if backend == Backend::Auto && Backend::falls_back(&e) => {
                let reason = format!(
                    "epoll backend: io_uring is not available to this process, so Backend::Auto \
                     runs on epoll (same API; io_uring-only features report Unsupported). \
                     Why: {e}"
                );
                return self.build_epoll(worker, group, reason);
            }
            Err(e) if zcrx.is_some_and(|z| z.mode == ZcrxMode::Auto) => {
                zcrx_note = Some(format!(
                    "zero-copy receive off: the ring could not be built with \
                     DEFER_TASKRUN and 32-byte CQEs ({e})"
                ));
                config.cqe32 = false;
                Driver::new(&config, remote.eventfd())?
            }
            Err(e) => return Err(e),
        };
        let mut capabilities = Capabilities::new(info);
        let mut driver = driver;
        let mut zcrx_inner = None;
        if let Some(zcrx_config) = zcrx.filter(|_| config.cqe32) {
            match crate::zcrx::register(driver.ring_fd(), zcrx_config, worker as u32) {
                Ok(inner) => {
                    capabilities.set_zcrx(inner.description().to_owned());
                    let inner = Rc::new(inner);
                    // The kernel may use the area for as long as the ring exists.
                    driver.keep_until_closed(inner.clone());
                    zcrx_inner = Some(inner);
                }
                // A queue another worker registered already (EEXIST) degrades this worker to
                // provided buffers even under `On`: the queue itself is in zero-copy use.
                Err(e) if zcrx_config.mode == ZcrxMode::On && !crate::zcrx::is_eexist(&e) => {
                    return Err(e);
                }
                Err(e) => zcrx_note = Some(format!("zero-copy receive off: {e}")),
            }
        }
        if let Some(note) = zcrx_note {
            capabilities.note(note);
        }
        if let Some((timeout, prefer)) = self.napi {
            match driver.register_napi(Napi::new(timeout, prefer)) {
                Ok(()) => {
                    capabilities.set_napi(Napi::new(timeout, prefer));
                    capabilities.note(
                        "NAPI busy polling acts only on sockets whose packets arrive through a \
                         NAPI device (a NIC queue); loopback has none, nor has veth without GRO \
                         or XDP"
                            .to_owned(),
                    );
                }
                Err(e) => capabilities.note(format!("NAPI busy polling off: {e}")),
            }
        }
        let driver = Rc::new(RefCell::new(driver));
        let ring_fd = driver.borrow().ring_fd();
        remote.set_kick_ring(ring_fd, Driver::id(&driver));
        let worker = Worker {
            index: worker,
            group,
            remote,
        };
        Ok(self.runtime(driver, worker, capabilities, zcrx_inner))
    }

    /// Builds worker `worker` on the epoll backend; `reason` becomes its first note.
    fn build_epoll(&self, worker: usize, group: Arc<Group>, reason: String) -> io::Result<Runtime> {
        let remote = group.remotes[worker].clone();
        let mut capabilities = Capabilities::epoll(reason);
        match self.zcrx.as_ref().map(|z| z.mode) {
            None | Some(ZcrxMode::Off) => {}
            Some(ZcrxMode::On) => {
                return Err(crate::driver::unsupported_on_epoll(
                    "zero-copy receive (ZcrxMode::On)",
                ));
            }
            Some(_) => capabilities.note(
                "zero-copy receive off: the epoll backend has no ZCRX (receives use \
                 provided-buffer streams from a user-space pool instead)"
                    .to_owned(),
            ),
        }
        if self.sqpoll.is_some() || self.napi.is_some() {
            capabilities.note(
                "SQPOLL and NAPI busy polling are io_uring ring modes: off on the epoll backend"
                    .to_owned(),
            );
        }
        let driver = Rc::new(RefCell::new(Driver::new_epoll(remote.eventfd())?));
        let worker = Worker {
            index: worker,
            group,
            remote,
        };
        Ok(self.runtime(driver, worker, capabilities, None))
    }

    /// The runtime of `worker` around its driver, on either backend.
    fn runtime(
        &self,
        driver: Rc<RefCell<Driver>>,
        worker: Worker,
        capabilities: Capabilities,
        zcrx: Option<Rc<crate::zcrx::ZcrxInner>>,
    ) -> Runtime {
        Runtime::from_handle(Rc::new(Handle {
            driver,
            scheduler: Scheduler::default(),
            timers: Rc::new(RefCell::new(Timers::default())),
            remote: worker.remote,
            capabilities: RefCell::new(capabilities),
            task_budget: self.task_budget,
            shutdown_timeout: self.shutdown_timeout,
            worker: worker.index,
            group: worker.group,
            coop: Rc::default(),
            drain_waiters: Default::default(),
            zcrx,
            shared_ring: Rc::default(),
        }))
    }

    fn ring_config(&self) -> io::Result<RingConfig> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if let Some(e) = &self.env_error {
            return Err(invalid(format!(
                "{e}: fix or unset the variable (see runtime::Builder::new)"
            )));
        }
        if self.entries == 0 || self.entries > 32768 {
            return Err(invalid(format!(
                "Builder::entries must be between 1 and 32768, got {}",
                self.entries
            )));
        }
        let sq = self.entries.next_power_of_two();
        let cq = self.cq_entries.unwrap_or(sq.saturating_mul(4).min(65536));
        if cq < sq || cq > 65536 {
            return Err(invalid(format!(
                "Builder::cq_entries must be between the SQ size ({sq}) and 65536, got {cq}"
            )));
        }
        Ok(RingConfig {
            entries: self.entries,
            cq_entries: cq,
            mode: self.mode,
            register_ring_fd: self.register_ring_fd,
            cqe32: false,
            direct_descriptors: self.direct_descriptors,
            sqpoll: None,
        })
    }
}

/// Which worker of which group a runtime being built is.
struct Worker {
    index: usize,
    group: Arc<Group>,
    remote: Arc<Remote>,
}
