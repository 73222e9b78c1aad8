//! The load generator of the echo benchmark (`echo.rs`): one thread, one epoll instance, non-blocking
//! sockets, no async runtime.
//!
//! Every connection (or UDP client socket) has one message in flight at a time: it writes a
//! message, waits until the whole echo is back, checks it, and writes the next. Sockets are
//! registered once, edge-triggered, for input and output, so the steady state costs per message
//! one `write`/`send`, one `read`/`recv` (a read that fills what is missing ends the message
//! without a second read to see `EAGAIN`: with edge triggering the next arrival raises a new
//! event anyway) and a share of one `epoll_wait`. No `epoll_ctl` after setup, no allocation,
//! no waker, no task: the same small cost whichever server answers.
//!
//! Each message carries its sequence number in its first and last 8 bytes, so an echo that
//! returns other bytes (or, for UDP, a late duplicate) is caught. A UDP message whose echo has
//! not come back within [`UDP_RESEND`] is sent again (datagrams may be dropped) and counted.

use std::{
    io,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

/// How long a UDP message may go unanswered before it is sent again.
pub const UDP_RESEND: Duration = Duration::from_millis(200);

/// How long the whole client may go without a single completed echo before it gives up.
const STALL: Duration = Duration::from_secs(5);

/// How much longer than asked the warm-up may last while waiting for every socket's first echo
/// (a server may accept connections slowly while it serves the first ones).
pub const WARMUP_EXTRA: Duration = Duration::from_secs(5);

/// How often the client looks for overdue UDP messages and for a stall.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Bytes at each end of a message that carry its sequence number.
const STAMP: usize = 8;

/// The transport the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Connections, each a byte stream.
    Tcp,
    /// Connected datagram sockets, one message per datagram.
    Udp,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    /// The message being sent; stamped with `seq` at both ends.
    msg: Vec<u8>,
    /// Where its echo arrives.
    echo: Vec<u8>,
    sent: usize,
    received: usize,
    seq: u64,
    started: Instant,
    /// When the message was last sent (a UDP message may be sent again).
    last_sent: Instant,
    in_flight: bool,
    /// Echoes completed so far, and as counted when the measured window began.
    echoes: u64,
    echoes_at_window: u64,
}

/// What one measured window saw.
#[derive(Debug, Clone)]
pub struct Window {
    /// Echoes completed inside the window.
    pub messages: u64,
    /// Wall time of the window.
    pub elapsed: Duration,
    /// Round-trip time of each of those echoes, in nanoseconds, sorted.
    pub latencies_ns: Vec<u32>,
    /// CPU time of the client's thread during the window.
    pub client_cpu: Duration,
    /// UDP messages sent again because their echo did not come back in time.
    pub resent: u64,
    /// Sockets that completed at least one echo inside the window (all of them, unless the
    /// server left some unserved, e.g. not yet accepted).
    pub sockets_served: usize,
}

impl Window {
    /// The `p`-quantile (0..=1) of the round-trip times, in microseconds.
    pub fn quantile_us(&self, p: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * p) as usize).min(n - 1);
        f64::from(self.latencies_ns[i]) / 1000.0
    }
}

/// The client: its sockets and its epoll instance.
#[derive(Debug)]
pub struct Client {
    epoll: OwnedFd,
    proto: Proto,
    size: usize,
    conns: Vec<Conn>,
    events: Vec<libc::epoll_event>,
    resent: u64,
    /// `epoll_wait`'s timeout in milliseconds: 0 when spinning, else 10.
    wait_ms: libc::c_int,
}

/// `Err(last_os_error)` when a libc call returned -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec`, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Client {
    /// Opens `n` TCP connections to `addr` (`TCP_NODELAY` on, closed with RST so no TIME_WAIT
    /// piles up between runs) for messages of `size` bytes.
    pub fn tcp(addr: SocketAddr, n: usize, size: usize) -> io::Result<Client> {
        let mut fds = Vec::with_capacity(n);
        for _ in 0..n {
            let s = TcpStream::connect(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("connecting to the server at {addr}: {e}"))
            })?;
            s.set_nodelay(true)?;
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
            s.set_nonblocking(true)?;
            // SAFETY: `into_raw_fd` hands over the open descriptor it owned.
            fds.push(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) });
        }
        Client::new(fds, Proto::Tcp, size)
    }

    /// Opens `n` UDP sockets, each connected to `addr`, for datagrams of `size` bytes.
    pub fn udp(addr: SocketAddr, n: usize, size: usize) -> io::Result<Client> {
        let mut fds = Vec::with_capacity(n);
        for _ in 0..n {
            let s = UdpSocket::bind(("127.0.0.1", 0))?;
            s.connect(addr)?;
            s.set_nonblocking(true)?;
            // SAFETY: `into_raw_fd` hands over the open descriptor it owned.
            fds.push(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) });
        }
        Client::new(fds, Proto::Udp, size)
    }

    fn new(fds: Vec<OwnedFd>, proto: Proto, size: usize) -> io::Result<Client> {
        if size < 2 * STAMP {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("messages must be at least {} bytes, not {size}", 2 * STAMP),
            ));
        }
        // SAFETY: plain syscall; the result is checked.
        let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `epfd` is a descriptor we just opened and own from here on.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        let now = Instant::now();
        let mut conns = Vec::with_capacity(fds.len());
        for (i, fd) in fds.into_iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; `ev` is read during the call only.
            cvt(unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd.as_raw_fd(),
                    &mut ev,
                )
            })?;
            conns.push(Conn {
                fd,
                msg: vec![0x5a; size],
                // One byte more for UDP, so a datagram longer than the message shows.
                echo: vec![0; size + usize::from(proto == Proto::Udp)],
                sent: 0,
                received: 0,
                seq: 0,
                started: now,
                last_sent: now,
                in_flight: false,
                echoes: 0,
                echoes_at_window: 0,
            });
        }
        let events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().clamp(1, 1024)];
        Ok(Client {
            epoll,
            proto,
            size,
            conns,
            events,
            resent: 0,
            wait_ms: 10,
        })
    }

    /// With `spin`, the client polls its sockets without ever sleeping (`epoll_wait` with a
    /// zero timeout), so a server's send never has a sleeping client to wake.
    pub fn spin(mut self, spin: bool) -> Client {
        self.wait_ms = if spin { 0 } else { 10 };
        self
    }

    /// How many sockets it has.
    pub fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// The transport of its sockets.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// UDP messages sent again so far because their echo did not come back in time.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Ping-pong on every socket: `warmup` (extended, by up to [`WARMUP_EXTRA`], until every
    /// socket has had an echo), then a measured window of `measure`. `at_start` and `at_end`
    /// run at the window's edges (to snapshot the server).
    pub fn run(
        &mut self,
        warmup: Duration,
        measure: Duration,
        at_start: &mut dyn FnMut(),
        at_end: &mut dyn FnMut(),
    ) -> io::Result<Window> {
        let start = Instant::now();
        for i in 0..self.conns.len() {
            self.start(i, start)?;
        }
        let mut record: Option<Vec<u32>> = None;
        let mut messages = 0u64;
        let mut window_start = start;
        let mut cpu_start = Duration::ZERO;
        let mut resent_start = 0;
        let mut deadline = start + warmup;
        let mut last_progress = start;
        let mut last_check = start;
        loop {
            let done = self.turn(true, &mut record)?;
            let now = Instant::now();
            if done > 0 {
                last_progress = now;
            }
            if now - last_check >= CHECK_EVERY {
                last_check = now;
                self.check(now, last_progress)?;
            }
            if let Some(lat) = &record {
                messages = lat.len() as u64;
            }
            if now >= deadline {
                match record {
                    None if now < start + warmup + WARMUP_EXTRA
                        && self.conns.iter().any(|c| c.echoes == 0) => {}
                    None => {
                        for c in &mut self.conns {
                            c.echoes_at_window = c.echoes;
                        }
                        at_start();
                        window_start = Instant::now();
                        cpu_start = thread_cpu();
                        resent_start = self.resent;
                        record = Some(Vec::with_capacity(1 << 20));
                        deadline = window_start + measure;
                    }
                    Some(mut latencies) => {
                        let elapsed = window_start.elapsed();
                        let client_cpu = thread_cpu() - cpu_start;
                        at_end();
                        latencies.sort_unstable();
                        return Ok(Window {
                            messages,
                            elapsed,
                            latencies_ns: latencies,
                            client_cpu,
                            resent: self.resent - resent_start,
                            sockets_served: self
                                .conns
                                .iter()
                                .filter(|c| c.echoes > c.echoes_at_window)
                                .count(),
                        });
                    }
                }
            }
        }
    }

    /// Sends one message on every socket and waits for every echo.
    pub fn exchange_once(&mut self) -> io::Result<()> {
        let start = Instant::now();
        for i in 0..self.conns.len() {
            self.start(i, start)?;
        }
        let mut left = self.conns.len();
        let mut last_progress = start;
        let mut last_check = start;
        let mut none = None;
        while left > 0 {
            let done = self.turn(false, &mut none)?;
            let now = Instant::now();
            if done > 0 {
                left -= done;
                last_progress = now;
            }
            if now - last_check >= CHECK_EVERY {
                last_check = now;
                self.check(now, last_progress)?;
            }
        }
        Ok(())
    }

    /// Resends overdue UDP messages; fails when nothing has completed for [`STALL`].
    fn check(&mut self, now: Instant, last_progress: Instant) -> io::Result<()> {
        if now - last_progress > STALL {
            let waiting = self.conns.iter().filter(|c| c.in_flight).count();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no echo for {STALL:?} ({waiting} of {} messages unanswered): the server \
                     stopped answering; run it by hand to see its errors",
                    self.conns.len()
                ),
            ));
        }
        if self.proto == Proto::Udp {
            for i in 0..self.conns.len() {
                let c = &mut self.conns[i];
                if c.in_flight && now - c.last_sent > UDP_RESEND {
                    self.resent += 1;
                    c.sent = 0;
                    c.last_sent = now;
                    self.write(i)?;
                }
            }
        }
        Ok(())
    }

    /// One `epoll_wait` and the work its events allow. Completed echoes are counted in the
    /// return value and their round-trip times pushed to `record` when it is `Some`; with
    /// `restart`, each completed socket starts its next message at once.
    fn turn(&mut self, restart: bool, record: &mut Option<Vec<u32>>) -> io::Result<usize> {
        // SAFETY: `events` has room for `events.len()` entries, which the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                self.wait_ms,
            )
        };
        if n == -1 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let mut done = 0;
        for k in 0..n as usize {
            let ev = self.events[k];
            let i = ev.u64 as usize;
            let bits = ev.events as libc::c_int;
            if bits & libc::EPOLLOUT != 0 && self.conns[i].sent < self.size {
                self.write(i)?;
            }
            if bits & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) != 0 && self.read(i)? {
                let now = Instant::now();
                let c = &mut self.conns[i];
                if let Some(lat) = record {
                    let ns = (now - c.started).as_nanos();
                    lat.push(u32::try_from(ns).unwrap_or(u32::MAX));
                }
                done += 1;
                if restart {
                    self.start(i, now)?;
                }
            }
        }
        Ok(done)
    }

    /// Stamps and sends the next message of socket `i`.
    fn start(&mut self, i: usize, now: Instant) -> io::Result<()> {
        let size = self.size;
        let c = &mut self.conns[i];
        c.seq += 1;
        let stamp = c.seq.to_le_bytes();
        c.msg[..STAMP].copy_from_slice(&stamp);
        c.msg[size - STAMP..].copy_from_slice(&stamp);
        c.sent = 0;
        c.received = 0;
        c.started = now;
        c.last_sent = now;
        c.in_flight = true;
        self.write(i)
    }

    /// Writes what socket `i` has left to send, until done or the socket is full.
    fn write(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        while c.sent < c.msg.len() {
            let rest = &c.msg[c.sent..];
            // SAFETY: `rest` is valid for `rest.len()` bytes; the descriptor is open.
            let n = unsafe {
                libc::send(
                    c.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                c.sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                // Full: edge-triggered `EPOLLOUT` comes when there is room (or, for UDP, the
                // resend check retries).
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(peer_error("sending to", c.fd.as_raw_fd(), e)),
            }
        }
        Ok(())
    }

    /// Reads what has arrived on socket `i`; true when it completed the echo in flight.
    fn read(&mut self, i: usize) -> io::Result<bool> {
        let size = self.size;
        let proto = self.proto;
        let c = &mut self.conns[i];
        loop {
            if proto == Proto::Tcp && c.received == size {
                break;
            }
            let buf = match proto {
                Proto::Tcp => &mut c.echo[c.received..size],
                Proto::Udp => &mut c.echo[..],
            };
            let want = buf.len();
            // SAFETY: `buf` is valid for writes of `want` bytes; the descriptor is open.
            let n = unsafe { libc::recv(c.fd.as_raw_fd(), buf.as_mut_ptr().cast(), want, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(false),
                    _ => return Err(peer_error("receiving from", c.fd.as_raw_fd(), e)),
                }
            }
            let n = n as usize;
            match proto {
                Proto::Tcp => {
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed a connection in the middle of an echo",
                        ));
                    }
                    c.received += n;
                    if n < want {
                        // Short read: nothing more is queued; the next arrival raises an event.
                        break;
                    }
                }
                Proto::Udp => match stamp_of(&c.echo[..n], size) {
                    Some(s) if c.in_flight && s == c.seq => {
                        c.received = n;
                        break;
                    }
                    // The second echo of a message that was sent again.
                    Some(s) if s <= c.seq => continue,
                    _ => return Err(wrong_echo(c.seq, &c.echo[..n], size)),
                },
            }
        }
        if c.received < size || !c.in_flight {
            return Ok(false);
        }
        if stamp_of(&c.echo[..size], size) != Some(c.seq) {
            return Err(wrong_echo(c.seq, &c.echo[..size], size));
        }
        c.in_flight = false;
        c.echoes += 1;
        Ok(true)
    }
}

/// The sequence number an echo carries, if both its ends agree and it has the right length.
fn stamp_of(echo: &[u8], size: usize) -> Option<u64> {
    if echo.len() != size {
        return None;
    }
    let head = u64::from_le_bytes(echo[..STAMP].try_into().ok()?);
    let tail = u64::from_le_bytes(echo[size - STAMP..].try_into().ok()?);
    (head == tail).then_some(head)
}

fn wrong_echo(seq: u64, echo: &[u8], size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the server echoed {} bytes that are not message {seq} of {size} bytes: it corrupts \
             or reorders data",
            echo.len()
        ),
    )
}

fn peer_error(what: &str, fd: RawFd, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{what} the server (client socket {fd}): {e}; did the server exit?"),
    )
}

#[cfg(test)]
mod tests;
