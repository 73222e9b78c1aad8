//! The HTTP benchmark's load client: one thread, an edge-triggered epoll loop over
//! non-blocking keep-alive connections, each with one `GET /` in flight at a time. Per request
//! one `send`, one or two `recv`s and a share of one `epoll_wait`; no allocation once warm.
//! The same for every server, so the servers' CPU per request compares their own costs.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// The request every connection sends, again and again (HTTP/1.1: kept alive by default).
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";

/// What one measured window saw.
#[derive(Debug)]
pub struct Window {
    /// Responses received in the window.
    pub requests: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Every request's latency in the window, in nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// The client thread's CPU time in the window.
    pub client_cpu: Duration,
}

impl Window {
    /// The `q` quantile of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i] as f64 / 1e3
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: Instant,
}

/// Keep-alive connections to one server.
#[derive(Debug)]
pub struct Client {
    epoll: OwnedFd,
    conns: Vec<Conn>,
}

/// The length of the first complete response in `buf`, if there is one: headers, then a body
/// of `content-length` bytes.
pub fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 response head"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected response: {head:?}"),
        ));
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    let total = end + 4 + len;
    Ok((buf.len() >= total).then_some(total))
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid `timespec` for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Client {
    /// Opens `conns` connections to `addr`.
    pub fn connect(addr: SocketAddr, conns: usize) -> io::Result<Client> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened, owned from here on.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut list = Vec::with_capacity(conns);
        for i in 0..conns {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; `event` is valid for the call to read.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    stream.as_raw_fd(),
                    &mut event,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            list.push(Conn {
                stream,
                buf: Vec::with_capacity(4096),
                sent: Instant::now(),
            });
        }
        Ok(Client { epoll, conns: list })
    }

    fn send(conn: &mut Conn) -> io::Result<()> {
        conn.sent = Instant::now();
        // A 32-byte request always fits an empty socket buffer: one response per request.
        let n = conn.stream.write(REQUEST)?;
        if n != REQUEST.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short request send",
            ));
        }
        Ok(())
    }

    /// Drives every connection for `warmup`, calls `on_start`, measures for `measure`, calls
    /// `on_end`.
    pub fn run(
        &mut self,
        warmup: Duration,
        measure: Duration,
        on_start: &mut dyn FnMut(),
        on_end: &mut dyn FnMut(),
    ) -> io::Result<Window> {
        for conn in &mut self.conns {
            Client::send(conn)?;
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut tmp = [0u8; 4096];
        let start = Instant::now();
        let mut measuring = false;
        let (mut t0, mut cpu0) = (start, Duration::ZERO);
        let mut latencies = Vec::with_capacity(1 << 20);
        let mut requests = 0u64;
        loop {
            let now = Instant::now();
            if !measuring && now >= start + warmup {
                on_start();
                measuring = true;
                t0 = Instant::now();
                cpu0 = thread_cpu();
            }
            if measuring && now >= t0 + measure {
                let elapsed = t0.elapsed();
                let client_cpu = thread_cpu() - cpu0;
                on_end();
                latencies.sort_unstable();
                return Ok(Window {
                    requests,
                    elapsed,
                    latencies,
                    client_cpu,
                });
            }
            // SAFETY: `events` has room for its length in entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    50,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in &events[..n as usize] {
                let conn = &mut self.conns[event.u64 as usize];
                loop {
                    match conn.stream.read(&mut tmp) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed a keep-alive connection",
                            ));
                        }
                        Ok(k) => conn.buf.extend_from_slice(&tmp[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                while let Some(len) = response_len(&conn.buf)? {
                    if !conn.buf[..len].ends_with(examples::http::HELLO) {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong body"));
                    }
                    conn.buf.drain(..len);
                    if measuring {
                        requests += 1;
                        latencies.push(conn.sent.elapsed().as_nanos() as u64);
                    }
                    Client::send(conn)?;
                }
            }
        }
    }
}

/// Opens `conns` connections and has each make one request and read its response, then
/// leaves them open and idle; for the memory measurement.
pub fn idle_connections(addr: SocketAddr, conns: usize) -> io::Result<Vec<TcpStream>> {
    let mut list = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(REQUEST)?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 1024];
        while response_len(&buf)?.is_none() {
            let n = stream.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed early"));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        list.push(stream);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::response_len;

    #[test]
    fn a_response_is_complete_with_its_whole_body() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\ndate: x\r\n\r\nHello, world!";
        assert_eq!(response_len(r).unwrap(), Some(r.len()));
        assert_eq!(response_len(&r[..r.len() - 1]).unwrap(), None);
        let mut two = r.to_vec();
        two.extend_from_slice(r);
        assert_eq!(response_len(&two).unwrap(), Some(r.len()));
        assert!(response_len(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n").is_err());
    }
}
