//! Running a command while watching its peak resident memory.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The high-water mark of a process's resident memory, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sets its flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `command` (stdout discarded, stderr kept), feeding its stdin from
/// `feed` if given; returns its output, the seconds it took and its peak
/// RSS (its `VmHWM`, read every 20 ms while it runs: the mark only rises,
/// so at most the last 20 ms's growth is missed).
pub fn run_watched(command: &mut Command, feed: Option<&dyn Fn(&mut dyn Write)>) -> (Output, f64, u64) {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    if feed.is_some() {
        command.stdin(Stdio::piped());
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let output = std::thread::scope(|scope| {
        // The watcher stops however this thread leaves the scope: a feed
        // that panics must not leave the scope waiting on it forever.
        let _stop = Stop(&done);
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(hwm) = vm_hwm(pid) {
                    peak.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        if let Some(feed) = feed {
            let mut stdin = child.stdin.take().unwrap();
            feed(&mut stdin);
        }
        child.wait_with_output().unwrap()
    });
    (output, started.elapsed().as_secs_f64(), peak.into_inner())
}
