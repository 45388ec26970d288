//! Peak memory of the writing commands as the data grows: `cairn put` of
//! 2, 8 and 32 GiB of incompressible bytes (generated here, BLAKE3's
//! output stream, and piped in: no disk read), each into a new store, and
//! `cairn backup` of a generated tree of a million small files. For each:
//! peak RSS of the cairn process (its `VmHWM`, read from /proc while it
//! runs) and throughput. Issue "Flat memory" wants the peak at 32 GiB no
//! more than 1.25x the peak at 2 GiB, and under 300 MiB.
//!
//! `cargo bench --bench memory`. CAIRN_BENCH_GIB (comma-separated sizes,
//! default 2,8,32) and CAIRN_BENCH_FILES (default 1000000) scale it;
//! CAIRN_BENCH_TREE_DIR puts the tree elsewhere (a tmpfs makes it quick to
//! make). Under `cargo test` it runs one small put and tree as a smoke
//! test.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The high-water mark of a process's resident memory, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `command`, feeding its stdin from `feed` if given; returns the
/// seconds it took and its peak RSS.
fn measured(mut command: Command, feed: Option<&dyn Fn(&mut dyn Write)>) -> (f64, u64) {
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
        // The mark only rises; reading it every 20 ms misses at most what
        // the last 20 ms added.
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
        let output = child.wait_with_output().unwrap();
        done.store(true, Ordering::Relaxed);
        output
    });
    assert!(output.status.success(), "{:?}: {}", command, String::from_utf8_lossy(&output.stderr));
    (started.elapsed().as_secs_f64(), peak.into_inner())
}

fn cairn(store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--store").arg(store).arg("--no-progress").args(args);
    command
}

/// `bytes` of BLAKE3's output stream (incompressible, unique per `seed`).
fn incompressible(out: &mut dyn Write, bytes: u64, seed: u64) {
    let mut stream = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.fill(&mut block[..n]);
        out.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
}

/// `files` small files (100 B to 4 KiB, text-like) in directories of 1000.
fn small_files(root: &Path, files: usize) -> u64 {
    let mut total = 0;
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let len = 100 + (i * 7919) % 4000;
        let bytes = common::text_like(len, i as u64);
        std::fs::write(dir.join(format!("f{i:07}.txt")), &bytes).unwrap();
        total += len as u64;
    }
    total
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let env = |name: &str| std::env::var(name).ok();
    let sizes: Vec<u64> = if benchmarking {
        env("CAIRN_BENCH_GIB")
            .unwrap_or_else(|| "2,8,32".into())
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect()
    } else {
        vec![0]
    };
    let files: usize =
        if benchmarking { env("CAIRN_BENCH_FILES").and_then(|v| v.parse().ok()).unwrap_or(1_000_000) } else { 2000 };
    let work = common::work_dir();
    println!("{} cores", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut first_peak = None;
    for (i, gib) in sizes.iter().enumerate() {
        // The smoke run puts 16 MiB.
        let bytes = if *gib == 0 { 16 << 20 } else { gib << 30 };
        let store = work.path().join(format!("put-{i}"));
        let (seconds, peak) =
            measured(cairn(&store, &["put", "big", "-"]), Some(&|out| incompressible(out, bytes, i as u64)));
        let ratio = *first_peak.get_or_insert(peak) as f64;
        println!(
            "put {:>6.0} MiB incompressible   peak RSS {:7.1} MiB ({:.2}x the first)   {:7.1} MiB/s",
            mib(bytes),
            mib(peak),
            peak as f64 / ratio,
            mib(bytes) / seconds
        );
        std::fs::remove_dir_all(&store).unwrap();
    }
    let tree_parent = env("CAIRN_BENCH_TREE_DIR").map_or_else(|| work.path().to_path_buf(), Into::into);
    let tree = tempfile::tempdir_in(tree_parent).unwrap();
    let made = Instant::now();
    let bytes = small_files(tree.path(), files);
    let made = made.elapsed().as_secs_f64();
    let store = work.path().join("backup");
    let (seconds, peak) = measured(cairn(&store, &["backup", tree.path().to_str().unwrap()]), None);
    println!(
        "backup of {files} small files ({:.0} MiB, made in {made:.0} s)   peak RSS {:7.1} MiB   {:7.0} files/s",
        mib(bytes),
        mib(peak),
        files as f64 / seconds
    );
}
