//! What `cairn repair` costs on a large store: time and peak memory (RSS)
//! of rebuilding the index of a store of about a million blobs from its
//! containers alone, with `cairn check` on the rebuilt index beside it.
//!
//! `cargo bench --bench repair` (CAIRN_BENCH_BLOBS=1000000 by default).
//! Under `cargo test` it runs on 20,000 blobs as a smoke test. The data is
//! unique (every chunk is new) but compressible (decimal counters), so a
//! million 8 KiB chunks take about 2 GiB of disk, not 8.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Set in the child that measures one command's peak RSS.
const MEASURE: &str = "CAIRN_BENCH_MEASURE_RSS";

fn main() {
    if std::env::var_os(MEASURE).is_some() {
        return measure_child();
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let blobs: u64 = if benchmarking {
        std::env::var("CAIRN_BENCH_BLOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
    } else {
        20_000
    };
    let work = common::work_dir();
    let store = work.path().join("store");
    let cairn = env!("CARGO_BIN_EXE_cairn");
    run(cairn, &store, &["init"]);
    let bytes = blobs * 8192;
    let started = Instant::now();
    let mut put = Command::new(cairn)
        .arg("--store")
        .arg(&store)
        .args(["--no-progress", "put", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    feed(put.stdin.take().unwrap(), bytes);
    assert!(put.wait().unwrap().success(), "cairn put failed");
    let stats = json(cairn, &store, &["stats"]);
    let total: u64 = stats["kinds"].as_array().unwrap().iter().map(|k| k["blobs"].as_u64().unwrap()).sum();
    println!(
        "store: {total} blobs in {} containers, {} on disk ({:.0} s to put {} MiB)",
        stats["containers"],
        common::tools::du(&store) >> 20,
        started.elapsed().as_secs_f64(),
        bytes >> 20
    );
    std::fs::remove_dir_all(store.join("index")).unwrap();
    let (seconds, rss) = measured(cairn, &store, &["repair"]);
    println!("repair (index deleted): {seconds:.1} s, peak RSS {} MiB", rss >> 10);
    let (seconds, rss) = measured(cairn, &store, &["check"]);
    println!("check (rebuilt index):  {seconds:.1} s, peak RSS {} MiB", rss >> 10);
    let after = json(cairn, &store, &["stats"]);
    assert_eq!(after["kinds"], stats["kinds"], "the rebuilt index counts the same blobs");
}

/// Writes `bytes` of unique, compressible text: decimal counters.
fn feed(mut to: impl Write, bytes: u64) {
    let mut written = 0u64;
    let mut n = 0u64;
    let mut buffer = String::with_capacity(1 << 20);
    while written < bytes {
        buffer.clear();
        while buffer.len() < (1 << 20) - 32 {
            n += 1;
            buffer.push_str(&n.to_string());
            buffer.push(if n % 16 == 0 { '\n' } else { ' ' });
        }
        let take = (bytes - written).min(buffer.len() as u64) as usize;
        to.write_all(&buffer.as_bytes()[..take]).unwrap();
        written += take as u64;
    }
}

fn run(cairn: &str, store: &Path, args: &[&str]) {
    let status = Command::new(cairn).arg("--store").arg(store).arg("--no-progress").args(args).status().unwrap();
    assert!(status.success(), "cairn {args:?} failed");
}

fn json(cairn: &str, store: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(cairn).arg("--store").arg(store).arg("--json").args(args).output().unwrap();
    assert!(output.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `cairn ARGS` under a child of this program whose only child it is,
/// so that child's `RUSAGE_CHILDREN` is the command's own peak RSS.
/// Returns wall seconds and peak RSS in KiB.
fn measured(cairn: &str, store: &Path, args: &[&str]) -> (f64, u64) {
    let started = Instant::now();
    let output = Command::new(std::env::current_exe().unwrap())
        .env(MEASURE, "1")
        .arg(cairn)
        .arg("--store")
        .arg(store)
        .arg("--no-progress")
        .args(args)
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let rss = String::from_utf8_lossy(&output.stdout).lines().last().and_then(|l| l.parse().ok()).unwrap();
    (seconds, rss)
}

/// In the measuring child: runs the command, prints its peak RSS (KiB).
fn measure_child() {
    let mut args = std::env::args().skip(1);
    let program = args.next().unwrap();
    let status = Command::new(program).args(args).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("{}", usage.max_rss());
}
