//! Recording skipped tests: what a test could not check on this machine, and why.

use std::{fs, io, sync::MutexGuard};

use crate::exclusive;

/// The environment variable that names the file [`skip`] appends to (CI sets it and lists the
/// file's lines at the end of the run).
pub const SKIP_LOG_VAR: &str = "RUNTIME_SKIP_LOG";

/// Records that `test` skipped some or all of its checks because this machine or kernel lacks
/// something, and why. Call it at every early return (or skipped check) that depends on the
/// environment, with the test's name as `binary::test`.
///
/// It prints `skipped test: reason` (shown by `--nocapture` and in failure output) and, when
/// [`SKIP_LOG_VAR`] names a file, appends the line `test: reason` to it. The file is opened
/// with `O_APPEND` and the line goes out in one `write`, so tests running in parallel threads
/// or processes do not interleave their lines. Line breaks in `reason` become spaces.
///
/// # Panics
///
/// Panics if the log file cannot be opened or written: CI would otherwise lose the record.
pub fn skip(test: &str, reason: &str) {
    let line = skip_line(test, reason);
    println!("skipped {line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        let path = std::path::Path::new(&path);
        if let Err(e) = append_line(path, &line) {
            panic!(
                "could not append to {SKIP_LOG_VAR}={}: {e}; point it at a writable file or \
                 unset it",
                path.display()
            );
        }
    }
}

/// Whether this process runs its runtimes on the epoll backend: `RUNTIME_BACKEND=epoll`, as
/// `.ci/run`'s second pass sets it.
pub fn epoll_selected() -> bool {
    std::env::var(runtime::BACKEND_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("epoll"))
}

/// For a test of an io_uring-only behaviour (`what`): on the epoll backend, records a
/// [`skip`] and returns true, and the test returns at once.
pub fn skip_on_epoll(test: &str, what: &str) -> bool {
    if !epoll_selected() {
        return false;
    }
    skip(
        test,
        &format!("io_uring only ({what}); this pass runs on epoll"),
    );
    true
}

/// [`skip_on_epoll`] for a test that runs under [`exclusive`] (it counts the process's fds,
/// threads, ...): takes the lock first, so the skip record's file, which [`skip`] opens and
/// closes, is never open while another test counts. `None` on the epoll backend (skipped and
/// recorded), otherwise the lock.
pub fn exclusive_on_io_uring(test: &str, what: &str) -> Option<MutexGuard<'static, ()>> {
    let serial = exclusive();
    if skip_on_epoll(test, what) {
        return None;
    }
    Some(serial)
}

/// `test: reason` on one line.
fn skip_line(test: &str, reason: &str) -> String {
    format!("{test}: {reason}").replace(['\n', '\r'], " ")
}

/// Appends `line` and a newline to `path` (created if missing) in a single `O_APPEND` write.
fn append_line(path: &std::path::Path, line: &str) -> io::Result<()> {
    use std::io::Write;

    let mut record = String::with_capacity(line.len() + 1);
    record.push_str(line);
    record.push('\n');
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let written = file.write(record.as_bytes())?;
    if written != record.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "short write: {written} of {} bytes (is the disk full?)",
                record.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A path in the temporary directory that no other test uses.
    fn scratch(name: &str) -> std::path::PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "runtime-skip-log-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&path);
        path
    }

    #[test]
    fn skip_lines_append_whole_from_parallel_threads() {
        let path = scratch("threads");
        fs::write(&path, "earlier: kept\n").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let reason = format!("{}{i}", "x".repeat(200));
                        append_line(&path, &skip_line(&format!("t{t}"), &reason)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 801);
        assert_eq!(lines[0], "earlier: kept");
        let mut seen = std::collections::HashSet::new();
        for line in &lines[1..] {
            let (test, reason) = line.split_once(": ").expect("test: reason");
            let i: usize = reason.trim_start_matches('x').parse().expect("intact line");
            assert_eq!(reason.len(), 200 + i.to_string().len(), "{line}");
            assert!(seen.insert((test.to_owned(), i)), "duplicate {line}");
        }
    }

    #[test]
    fn skip_line_is_one_line() {
        assert_eq!(
            skip_line("zcrx::a", "no NIC\nhere\r\n"),
            "zcrx::a: no NIC here  "
        );
    }

    /// `skip` itself, with the log named by the environment: run in a child process so the
    /// variable is set only there.
    #[test]
    fn skip_appends_to_the_file_named_by_the_environment() {
        const CASE: &str = "SKIP_HELPER_CHILD";
        if std::env::var_os(CASE).is_some() {
            skip("support::child", "first");
            skip("support::child", "second\nline");
            println!("child-done");
            return;
        }
        let path = scratch("env");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "skip::tests::skip_appends_to_the_file_named_by_the_environment",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASE, "1")
            .env(SKIP_LOG_VAR, &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("child-done"),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("skipped support::child: first"), "{stdout}");
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(text, "support::child: first\nsupport::child: second line\n");
    }
}
