//! The echo benchmark's workloads: what the client does in each row, and which rows the
//! knobs (`WORKLOADS`, `SIZES`, `CONNS`, `UDP_CLIENTS`, `STREAM_CONNS`, `IDLE_CONNS`) select.

use benches::env_or;
use benches::epoll_client::Proto;

/// One row of the benchmark: what the client does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload {
    Tcp { conns: usize, size: usize },
    Udp { clients: usize, size: usize },
    Stream { conns: usize, chunk: usize },
    Idle { conns: usize },
    Rss { conns: usize, size: usize },
}

impl Workload {
    pub(crate) fn proto(self) -> Proto {
        match self {
            Workload::Udp { .. } => Proto::Udp,
            _ => Proto::Tcp,
        }
    }

    /// The section title.
    pub(crate) fn title(self) -> String {
        match self {
            Workload::Tcp { conns, size } => {
                format!(
                    "TCP ping-pong: {conns} connection(s) × {} messages",
                    bytes(size)
                )
            }
            Workload::Udp { clients, size } => {
                format!(
                    "UDP ping-pong: {clients} client(s) × {} datagrams",
                    bytes(size)
                )
            }
            Workload::Stream { conns, chunk } => format!(
                "TCP stream: {conns} connections × {} chunks each way (figures per chunk)",
                bytes(chunk)
            ),
            Workload::Idle { conns } => format!(
                "Idle: server memory per connection, {conns} connections after one 64 B exchange"
            ),
            Workload::Rss { conns, size } => format!(
                "Peak RSS (VmHWM) after ping-pong on {conns} connections × {} messages",
                bytes(size)
            ),
        }
    }

    /// A short name, for the summary and the chart.
    pub(crate) fn short(self) -> String {
        match self {
            Workload::Tcp { conns, size } => format!("tcp {conns}×{}", bytes(size)),
            Workload::Udp { clients, size } => format!("udp {clients}×{}", bytes(size)),
            Workload::Stream { conns, chunk } => format!("stream {conns}×{}", bytes(chunk)),
            Workload::Idle { conns } => format!("idle {conns}"),
            Workload::Rss { conns, size } => format!("rss {conns}×{}", bytes(size)),
        }
    }

    /// Whether it is measured as a ping-pong window (every workload but `idle`).
    pub(crate) fn is_pingpong(self) -> bool {
        !matches!(self, Workload::Idle { .. })
    }
}

/// "64 B", "1 KiB", "64 KiB".
pub(crate) fn bytes(n: usize) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

pub(crate) fn list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

pub(crate) fn names(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().to_owned()).collect())
}

/// The workloads selected by `WORKLOADS` and the size knobs, in report order.
pub(crate) fn workloads(idle_limit: usize) -> Result<Vec<Workload>, String> {
    let known = ["tcp", "udp", "stream", "idle", "rss"];
    let selected = names("WORKLOADS").unwrap_or_else(|| known.map(String::from).to_vec());
    if let Some(bad) = selected.iter().find(|w| !known.contains(&w.as_str())) {
        return Err(format!(
            "WORKLOADS: unknown workload {bad:?}; choose from {}",
            known.join(",")
        ));
    }
    let on = |w: &str| selected.iter().any(|s| s == w);
    let sizes = list("SIZES", &[64, 1024]);
    let mut out = Vec::new();
    if on("tcp") {
        for &size in &sizes {
            for &conns in &list("CONNS", &[1, 64, 512]) {
                out.push(Workload::Tcp { conns, size });
            }
        }
    }
    if on("udp") {
        for &size in &sizes {
            for &clients in &list("UDP_CLIENTS", &[1, 64]) {
                out.push(Workload::Udp { clients, size });
            }
        }
    }
    if on("stream") {
        out.push(Workload::Stream {
            conns: env_or("STREAM_CONNS", 16) as usize,
            chunk: 64 * 1024,
        });
    }
    if on("idle") {
        let conns = (env_or("IDLE_CONNS", 10_000) as usize).min(idle_limit);
        out.push(Workload::Idle { conns });
    }
    if on("rss") {
        out.push(Workload::Rss {
            conns: 64,
            size: 1024,
        });
    }
    Ok(out)
}
