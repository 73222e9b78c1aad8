//! The echo benchmark's output: Markdown tables (medians over rounds, paired ratios) and an SVG
//! chart of server CPU per message.

use std::{error::Error, fmt::Write as _, path::Path, time::Duration};

use benches::median;
use plotters::{coord::combinators::BindKeyPoints, prelude::*};

use benches::epoll_client::Proto;

use crate::{Sample, Server, Workload};

/// What the report says about the run.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) command: String,
    pub(crate) machine: String,
    pub(crate) rounds: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// Where the server, the client and the SQPOLL threads run.
    pub(crate) layout: String,
}

/// One server's samples on one workload, one per round.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub(crate) server: &'a Server,
    pub(crate) samples: Vec<Sample>,
}

impl Row<'_> {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .map(f)
            .filter(|x| x.is_finite())
            .collect();
        median(&mut v)
    }

    /// `f(self) / f(peer)` per round, pairing the two rows round by round.
    fn ratios(&self, peer: &Row<'_>, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples
            .iter()
            .zip(&peer.samples)
            .map(|(a, b)| f(a) / f(b))
            .filter(|x| x.is_finite())
            .collect()
    }

    /// The median over rounds of `f(self) / f(peer)`, pairing the two rows round by round.
    fn ratio(&self, peer: &Row<'_>, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&mut self.ratios(peer, f))
    }

    /// The smallest and largest per-round ratio, as "min–max": how far one round can be from
    /// the median on this machine.
    fn ratio_range(&self, peer: &Row<'_>, f: impl Fn(&Sample) -> f64) -> String {
        let v = self.ratios(peer, f);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if v.is_empty() {
            "-".into()
        } else {
            format!("{}–{}", num(min, 2), num(max, 2))
        }
    }
}

/// One workload: every server's row.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    pub(crate) workload: Workload,
    pub(crate) rows: Vec<Row<'a>>,
}

impl Section<'_> {
    /// "msg", or "chunk" for the stream workload.
    fn unit(&self) -> &'static str {
        match self.workload {
            Workload::Stream { .. } => "chunk",
            _ => "msg",
        }
    }

    fn label(&self, row: &Row<'_>) -> &'static str {
        row.server.label(self.workload.proto())
    }

    /// Every (server, peer) pair: each row against each peer that is not itself, and each of
    /// ours against its own baseline builds (`BASELINE_DIR`: `runtime` / `runtime-base`), the
    /// before-and-after of a change.
    fn pairs(&self) -> Vec<(&Row<'_>, &Row<'_>)> {
        let mut out = Vec::new();
        for row in &self.rows {
            let is_peer = |p: &Row<'_>| {
                !p.server.ours
                    || p.server
                        .key
                        .strip_prefix(row.server.key)
                        .is_some_and(|rest| rest == "-base" || rest.starts_with("-base-"))
            };
            for peer in self.rows.iter().filter(|p| is_peer(p)) {
                if peer.server.key != row.server.key {
                    out.push((row, peer));
                }
            }
        }
        out
    }
}

fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

fn opt(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

fn rate(ops: f64) -> String {
    if !ops.is_finite() {
        "-".into()
    } else if ops >= 1e6 {
        format!("{:.2} M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1} k", ops / 1e3)
    } else {
        format!("{ops:.0}")
    }
}

fn mib(kib: f64) -> String {
    num(kib / 1024.0, 1)
}

/// The whole report.
pub(crate) fn markdown(header: &Header, sections: &[Section<'_>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Echo benchmark\n");
    let _ = writeln!(out, "Command: `{}`\n", header.command);
    let _ = writeln!(
        out,
        "Machine: {}. {} round(s) of {:?} warm-up + {:?} measured per server and workload; \
         {}. Figures are medians over rounds; a ratio X / Y is the median of the \
         per-round ratios (each workload's ratio table also gives their range). Each run \
         is a fresh server process. CPU is time on CPU from `/proc/<pid>/task/*/schedstat` \
         (all of the server's threads, SQPOLL's kernel thread included); `io_uring_enter` \
         SQEs and inline calls (socket system calls made in place of an op) come from \
         `runtime::metrics()` (the peers' are not observable: `-`).\n",
        header.machine, header.rounds, header.warmup, header.measure, header.layout
    );
    nodelay(&mut out, sections);
    summary(&mut out, sections);
    for section in sections {
        let _ = writeln!(out, "## {}\n", section.workload.title());
        if section.workload.is_pingpong() {
            pingpong_tables(&mut out, section);
        } else {
            idle_tables(&mut out, section);
        }
    }
    out
}

/// Whether each TCP server really had `TCP_NODELAY` on its accepted sockets, as counted in the
/// server process at each window's start.
fn nodelay(out: &mut String, sections: &[Section<'_>]) {
    let mut parts = Vec::new();
    let Some(first) = sections
        .iter()
        .find(|s| s.workload.is_pingpong() && s.workload.proto() == Proto::Tcp)
    else {
        return;
    };
    for (j, row) in first.rows.iter().enumerate() {
        let (mut sockets, mut on) = (0, 0);
        let mut unknown = false;
        for section in sections
            .iter()
            .filter(|s| s.workload.is_pingpong() && s.workload.proto() == Proto::Tcp)
        {
            for sample in &section.rows[j].samples {
                match sample.nodelay {
                    Some((n, d)) => {
                        sockets += n;
                        on += d;
                    }
                    None => unknown = true,
                }
            }
        }
        let label = row.server.label(Proto::Tcp);
        parts.push(if unknown && sockets == 0 {
            format!("{label} not checked")
        } else {
            format!("{label} {on} of {sockets}")
        });
    }
    let _ = writeln!(
        out,
        "Accepted TCP sockets with `TCP_NODELAY` on, counted inside each server (`pidfd_getfd`) \
         at every window start: {}.\n",
        parts.join(", ")
    );
}

/// Server CPU per message, every workload and server at a glance, with the ratios of ours.
fn summary(out: &mut String, sections: &[Section<'_>]) {
    let Some(first) = sections.iter().find(|s| s.workload.is_pingpong()) else {
        return;
    };
    let _ = writeln!(
        out,
        "## Server CPU µs per message (stream: per 64 KiB chunk)\n"
    );
    let mut head = String::from("| workload |");
    let mut rule = String::from("|---|");
    for row in &first.rows {
        let _ = write!(head, " {} |", row.server.key);
        rule.push_str("---:|");
    }
    for (row, peer) in first.pairs().into_iter().filter(|(r, _)| r.server.ours) {
        let _ = write!(head, " {} / {} |", row.server.key, peer.server.key);
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for section in sections.iter().filter(|s| s.workload.is_pingpong()) {
        let mut line = format!("| {} |", section.workload.short());
        for row in &section.rows {
            let _ = write!(line, " {} |", num(row.median(|s| s.server_us_per_msg), 2));
        }
        for (row, peer) in section.pairs().into_iter().filter(|(r, _)| r.server.ours) {
            let _ = write!(
                line,
                " {} |",
                num(row.ratio(peer, |s| s.server_us_per_msg), 2)
            );
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}

fn pingpong_tables(out: &mut String, section: &Section<'_>) {
    let unit = section.unit();
    let _ = writeln!(
        out,
        "| server | ops/s | p50 µs | p99 µs | server CPU µs/{unit} | client CPU µs/{unit} | \
         io_uring_enter/{unit} | SQEs/{unit} | inline calls/{unit} | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut resent = 0;
    for row in &section.rows {
        resent += row.samples.iter().map(|s| s.resent).sum::<u64>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            section.label(row),
            rate(row.median(|s| s.ops_per_sec)),
            num(row.median(|s| s.p50_us), 1),
            num(row.median(|s| s.p99_us), 1),
            num(row.median(|s| s.server_us_per_msg), 2),
            num(row.median(|s| s.client_us_per_msg), 2),
            num(row.median(|s| opt(s.enters_per_msg).unwrap_or(f64::NAN)), 2),
            num(row.median(|s| opt(s.sqes_per_msg).unwrap_or(f64::NAN)), 2),
            num(row.median(|s| opt(s.inline_per_msg).unwrap_or(f64::NAN)), 2),
            mib(row.median(|s| s.peak_rss_kib)),
        );
    }
    let _ = writeln!(out);
    if resent > 0 {
        let _ = writeln!(
            out,
            "{resent} datagram(s) went unanswered for {:?} and were sent again (their round \
             trips include the wait).\n",
            benches::epoll_client::UDP_RESEND
        );
    }
    let unserved: Vec<String> = section
        .rows
        .iter()
        .filter_map(|row| {
            let worst = row.samples.iter().min_by_key(|s| s.sockets_served)?;
            (worst.sockets_served < worst.sockets).then(|| {
                format!(
                    "{} {} of {}",
                    section.label(row),
                    worst.sockets_served,
                    worst.sockets
                )
            })
        })
        .collect();
    if !unserved.is_empty() {
        let _ = writeln!(
            out,
            "Not every socket had an echo in the window (worst round; the others were never \
             answered, e.g. never accepted, even after {:?} of extra warm-up): {}.\n",
            benches::epoll_client::WARMUP_EXTRA,
            unserved.join(", ")
        );
    }
    let pairs = section.pairs();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| ratio | ops/s | p50 | p99 | server CPU/{unit} | server CPU/{unit}, rounds' range | \
         peak RSS |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (row, peer) in pairs {
        let _ = writeln!(
            out,
            "| {} / {} | {} | {} | {} | {} | {} | {} |",
            section.label(row),
            section.label(peer),
            num(row.ratio(peer, |s| s.ops_per_sec), 2),
            num(row.ratio(peer, |s| s.p50_us), 2),
            num(row.ratio(peer, |s| s.p99_us), 2),
            num(row.ratio(peer, |s| s.server_us_per_msg), 2),
            row.ratio_range(peer, |s| s.server_us_per_msg),
            num(row.ratio(peer, |s| s.peak_rss_kib), 2),
        );
    }
    let _ = writeln!(out);
}

fn idle_tables(out: &mut String, section: &Section<'_>) {
    let _ = writeln!(
        out,
        "| server | KiB per idle connection | peak RSS MiB |\n|---|---:|---:|"
    );
    for row in &section.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            section.label(row),
            num(row.median(|s| s.idle_kib_per_conn), 3),
            mib(row.median(|s| s.peak_rss_kib)),
        );
    }
    let _ = writeln!(out);
    let pairs = section.pairs();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| ratio | KiB per idle connection | peak RSS |\n|---|---:|---:|"
    );
    for (row, peer) in pairs {
        let _ = writeln!(
            out,
            "| {} / {} | {} | {} |",
            section.label(row),
            section.label(peer),
            num(row.ratio(peer, |s| s.idle_kib_per_conn), 2),
            num(row.ratio(peer, |s| s.peak_rss_kib), 2),
        );
    }
    let _ = writeln!(out);
}

/// Bar colours, by server key.
fn colour(key: &str) -> RGBColor {
    match key {
        "runtime" => RGBColor(31, 119, 180),
        "runtime-ring" => RGBColor(23, 190, 207),
        "runtime-epoll" => RGBColor(148, 103, 189),
        "tokio" => RGBColor(255, 127, 14),
        _ => RGBColor(44, 160, 44),
    }
}

/// The chart: server CPU µs per message for every ping-pong workload (left) and per chunk for
/// the stream workload (right, its own scale), one bar per server.
pub(crate) fn chart(path: &Path, sections: &[Section<'_>]) -> Result<(), Box<dyn Error>> {
    let pingpong: Vec<&Section<'_>> = sections
        .iter()
        .filter(|s| matches!(s.workload, Workload::Tcp { .. } | Workload::Udp { .. }))
        .collect();
    let stream: Vec<&Section<'_>> = sections
        .iter()
        .filter(|s| matches!(s.workload, Workload::Stream { .. }))
        .collect();
    let left_w = 160 + 110 * pingpong.len() as u32;
    let right_w = if stream.is_empty() { 0 } else { 300 };
    let root = SVGBackend::new(path, (left_w.max(400) + right_w, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(left_w.max(400));
    if !pingpong.is_empty() {
        panel(
            &left,
            "Server CPU per echoed message (lower is better)",
            "µs per message",
            &pingpong,
        )?;
    }
    if !stream.is_empty() {
        panel(&right, "Stream (per chunk)", "µs per 64 KiB chunk", &stream)?;
    }
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    sections: &[&Section<'_>],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let servers: Vec<&Server> = sections[0].rows.iter().map(|r| r.server).collect();
    let values: Vec<Vec<f64>> = sections
        .iter()
        .map(|s| {
            s.rows
                .iter()
                .map(|r| r.median(|x| x.server_us_per_msg))
                .collect()
        })
        .collect();
    let top = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Head room for the legend above the tallest bar.
    let top = if top > 0.0 { top * 1.4 } else { 1.0 };
    let n = sections.len();
    let names: Vec<String> = sections.iter().map(|s| s.workload.short()).collect();
    // Workload i spans x in [i * SPAN, (i + 1) * SPAN): integers, so that plotters formats
    // the custom key points (one per workload, at its centre) with our labels.
    const SPAN: i32 = 100;
    let centres: Vec<i32> = (0..n as i32).map(|i| i * SPAN + SPAN / 2).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((0..n as i32 * SPAN).with_key_points(centres), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|x| names.get((x / SPAN) as usize).cloned().unwrap_or_default())
        .y_desc(y_desc)
        .draw()?;
    let width = SPAN * 8 / 10 / servers.len() as i32;
    for (j, server) in servers.iter().enumerate() {
        let c = colour(server.key);
        let bars: Vec<Rectangle<(i32, f64)>> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v[j].is_finite())
            .map(|(i, v)| {
                let x0 = i as i32 * SPAN + SPAN / 10 + j as i32 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 9 / 10, v[j])], c.filled())
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(server.key)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
