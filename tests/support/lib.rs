//! Helpers shared by the integration tests: fd counting, drop recording, pipes, joins, CPU time.

use std::{
    fs,
    future::Future,
    io,
    os::fd::{FromRawFd, OwnedFd},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

mod skip;

pub use skip::{SKIP_LOG_VAR, epoll_selected, exclusive_on_io_uring, skip, skip_on_epoll};

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Serialises tests that count fds or threads, which other tests in the same binary disturb.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's open fds and what each refers to, for failure messages.
pub fn describe_fds() -> String {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_string_lossy().parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds.iter()
        .map(|(fd, t)| format!("{fd}={t}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Records when a value is dropped, to prove the runtime released something at the right time.
#[derive(Debug, Clone, Default)]
pub struct DropFlag(Arc<AtomicBool>);

impl DropFlag {
    /// A flag and a value that sets it when dropped.
    pub fn new() -> (DropFlag, DropRecorder) {
        let flag = DropFlag::default();
        let recorder = DropRecorder(flag.0.clone());
        (flag, recorder)
    }

    /// Whether the recorder was dropped.
    pub fn dropped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sets its `DropFlag` when dropped.
#[derive(Debug)]
pub struct DropRecorder(Arc<AtomicBool>);

impl Drop for DropRecorder {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Counts how many of a set of values were dropped.
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    /// A value that increments the counter when dropped.
    pub fn token(&self) -> DropToken {
        DropToken(self.0.clone())
    }

    /// How many tokens were dropped.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Increments its `DropCounter` when dropped.
#[derive(Debug)]
pub struct DropToken(Arc<AtomicUsize>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Awaits every future, returning outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
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
    outputs.into_iter().map(|o| o.expect("all ready")).collect()
}

/// A one-shot value that can be completed from any thread; awaiting it yields the value.
#[derive(Debug)]
pub struct Oneshot<T> {
    inner: Arc<Mutex<(Option<T>, Option<Waker>)>>,
}

impl<T> Clone for Oneshot<T> {
    fn clone(&self) -> Self {
        Oneshot {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Oneshot<T> {
    fn default() -> Self {
        Oneshot {
            inner: Arc::new(Mutex::new((None, None))),
        }
    }
}

impl<T> Oneshot<T> {
    /// Stores the value and wakes the awaiting task (on whatever thread this runs).
    pub fn complete(&self, value: T) {
        let waker = {
            let mut g = self.inner.lock().unwrap();
            g.0 = Some(value);
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Oneshot<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut g = self.inner.lock().unwrap();
        match g.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// CPU time (user + system) consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed local.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Polls `check` until it is true or `limit` passes; returns whether it became true.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    check()
}

/// A `read(2)` on an fd as a runtime operation, carrying a value whose drop the test observes.
///
/// Used to prove that an operation's resources outlive its future until the final CQE.
#[derive(Debug)]
pub struct TrackedRead<T: 'static> {
    fd: Arc<OwnedFd>,
    buf: Vec<u8>,
    _tracker: T,
}

impl<T: 'static> TrackedRead<T> {
    /// A read of up to `len` bytes from `fd`; `tracker` is dropped with the operation.
    pub fn new(fd: Arc<OwnedFd>, len: usize, tracker: T) -> TrackedRead<T> {
        TrackedRead {
            fd,
            buf: vec![0; len],
            _tracker: tracker,
        }
    }
}

// SAFETY: the SQE points at `buf`'s heap allocation (stable across moves, owned by `self`) and
// at the fd kept open by the `Arc<OwnedFd>` in `self`.
unsafe impl<T: 'static> runtime::op::OpCode for TrackedRead<T> {
    type Output = (io::Result<usize>, Vec<u8>);

    fn build(&mut self) -> io_uring::squeue::Entry {
        use std::os::fd::AsRawFd;
        io_uring::opcode::Read::new(
            io_uring::types::Fd(self.fd.as_raw_fd()),
            self.buf.as_mut_ptr(),
            self.buf.len() as u32,
        )
        .offset(u64::MAX)
        .build()
    }

    fn complete(mut self, cqe: runtime::op::Completion) -> Self::Output {
        let res = cqe.into_result().map(|n| n as usize);
        if let Ok(n) = res {
            self.buf.truncate(n);
        }
        (res, self.buf)
    }

    fn readiness(&self) -> Option<(std::os::fd::RawFd, runtime::op::Interest)> {
        use std::os::fd::AsRawFd;
        Some((self.fd.as_raw_fd(), runtime::op::Interest::Readable))
    }

    fn try_nonblocking(&mut self) -> Option<runtime::op::Completion> {
        use std::os::fd::AsRawFd;
        // SAFETY: reads into `buf`, owned by `self` and borrowed mutably for the call.
        let ret = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
            )
        };
        runtime::op::Completion::from_syscall(ret)
    }
}

/// A connected loopback TCP pair of runtime streams: (client, server).
pub async fn tcp_pair() -> (net::TcpStream, net::TcpStream) {
    let listener = net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// A runtime stream connected to a `std` peer on loopback: (ours, peer).
pub async fn stream_with_std_peer() -> (net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// Reads from `stream` until the end of the stream, with buffers of `len`, appending to `got`;
/// panics if a read errs or waits longer than 10 s.
pub async fn read_to_end(stream: &mut net::TcpStream, len: usize, got: &mut Vec<u8>) {
    loop {
        let read = stream.read(Vec::with_capacity(len));
        let (res, buf) = runtime::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("the end of the stream never came");
        match res.unwrap() {
            0 => return,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Polls a future exactly once.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Waits (sleeping a millisecond at a time) until `check` is true, for at most `limit`: for
/// what the kernel finishes on its own time, such as a cancelled request's final completion
/// under SQPOLL, where loop turns can outrun the submission thread.
pub async fn settles_within(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !check() {
        if start.elapsed() > limit {
            return false;
        }
        runtime::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    true
}

/// Runs loop turns (yielding) until `check` is true, at most `turns` times.
pub async fn turns_until(turns: usize, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..turns {
        if check() {
            return true;
        }
        runtime::yield_now().await;
    }
    check()
}

/// Raises the soft RLIMIT_NOFILE to at least `wanted` (up to the hard limit).
pub fn raise_fd_limit(wanted: u64) {
    // SAFETY: getrlimit/setrlimit read and write one `rlimit`.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < wanted {
            lim.rlim_cur = wanted.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so content checks catch reordering.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Re-runs `test_name` of the current test binary in a child process with `var=case` set and
/// asserts it printed `marker` and exited successfully; returns the child's stdout.
pub fn run_in_child(test_name: &str, var: &str, case: &str, marker: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(marker),
        "child {test_name}/{case} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// A send buffer that records when it is dropped, to prove zero-copy sends release it only
/// after the kernel's notification.
#[derive(Debug)]
pub struct TrackedBuf {
    data: Vec<u8>,
    _recorder: DropRecorder,
}

impl TrackedBuf {
    /// `data` as a buffer, and the flag its drop sets.
    pub fn new(data: Vec<u8>) -> (TrackedBuf, DropFlag) {
        let (flag, recorder) = DropFlag::new();
        (
            TrackedBuf {
                data,
                _recorder: recorder,
            },
            flag,
        )
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

// SAFETY: delegates to the inner `Vec`, whose heap memory does not move with `TrackedBuf`.
unsafe impl runtime::buf::IoBuf for TrackedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.data.len()
    }

    fn bytes_total(&self) -> usize {
        self.data.capacity()
    }
}

/// Reads everything available from a non-blocking std socket; returns the byte count.
pub fn drain(stream: &mut std::net::TcpStream, into: &mut Vec<u8>) -> usize {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("drain: {e}"),
        }
    }
    total
}

/// Removes CAP_IPC_LOCK from this thread's effective and permitted sets (root is otherwise
/// exempt from RLIMIT_MEMLOCK accounting). For child-process tests only.
pub fn drop_cap_ipc_lock() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write a v3 header and two data structs, which we pass.
    unsafe {
        assert_eq!(
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut Header,
                data.as_mut_ptr()
            ),
            0
        );
        data[0].effective &= !(1 << CAP_IPC_LOCK);
        data[0].permitted &= !(1 << CAP_IPC_LOCK);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()),
            0,
            "capset: {}",
            io::Error::last_os_error()
        );
    }
}

/// Sets RLIMIT_MEMLOCK (soft and hard) for this process. For child-process tests only.
pub fn set_memlock(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);
}
