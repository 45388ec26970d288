//! Peak memory of the writing commands as the data grows: `cairn put` of
//! 2, 8 and 32 GiB of incompressible bytes (generated here, BLAKE3's
//! output stream, and piped in: no disk read), each into a new store, and
//! `cairn backup` of a generated tree of a million small files, then
//! `cairn dedupe assess` of that tree against the store, and `cairn
//! restore` of it into a new directory beside it. For each:
//! peak RSS of the cairn process (its `VmHWM`, read from /proc while it
//! runs) and throughput. Issue "Flat memory" wants the peak at 32 GiB no
//! more than 1.25x the peak at 2 GiB, and under 300 MiB.
//!
//! A put's peak moves by 10-20% from one run of the same build to the next
//! (2 GiB: 81.8, 96.5 and 93.0 MiB in one session), so the sizes take
//! turns for CAIRN_BENCH_ROUNDS rounds (3 by default) and the ratio is
//! taken between medians.
//!
//! `cargo bench --bench memory`. CAIRN_BENCH_GIB (comma-separated sizes,
//! default 2,8,32) and CAIRN_BENCH_FILES (default 1000000) scale it;
//! CAIRN_BENCH_TREE_DIR puts the tree elsewhere (a tmpfs makes it quick to
//! make). Under `cargo test` it runs one small put and tree as a smoke
//! test.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use std::time::Instant;

/// Runs `command`, feeding its stdin from `feed` if given; returns the
/// seconds it took and its peak RSS.
fn measured(mut command: Command, feed: Option<&dyn Fn(&mut dyn Write)>) -> (f64, u64) {
    let (output, seconds, peak) = common::peak::run_watched(&mut command, feed);
    assert!(output.status.success(), "{:?}: {}", command, String::from_utf8_lossy(&output.stderr));
    (seconds, peak)
}

fn cairn(store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--store").arg(store).arg("--no-progress").args(args);
    command
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
    let rounds: usize =
        if benchmarking { env("CAIRN_BENCH_ROUNDS").and_then(|v| v.parse().ok()).unwrap_or(3).max(1) } else { 1 };
    // Each size's peaks, over the rounds.
    let mut peaks: Vec<Vec<u64>> = vec![Vec::new(); sizes.len()];
    for round in 1..=rounds {
        for (i, gib) in sizes.iter().enumerate() {
            // The smoke run puts 16 MiB.
            let bytes = if *gib == 0 { 16 << 20 } else { gib << 30 };
            let store = work.path().join(format!("put-{round}-{i}"));
            let (seconds, peak) = measured(
                cairn(&store, &["put", "big", "-"]),
                Some(&|out| common::incompressible(out, bytes, i as u64)),
            );
            println!(
                "put {:>6.0} MiB incompressible   round {round}   peak RSS {:7.1} MiB   {:7.1} MiB/s",
                mib(bytes),
                mib(peak),
                mib(bytes) / seconds
            );
            peaks[i].push(peak);
            std::fs::remove_dir_all(&store).unwrap();
        }
    }
    let medians: Vec<u64> = peaks.into_iter().map(median).collect();
    for (gib, peak) in sizes.iter().zip(&medians) {
        println!(
            "put {:>6} GiB: median peak RSS {:7.1} MiB ({:.2}x the first size's)",
            gib,
            mib(*peak),
            *peak as f64 / medians[0] as f64
        );
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
    // What a first backup into that store would add: every chunk already
    // there. Without a store it would count all of them as new; with one
    // it also looks each distinct chunk up.
    let (seconds, peak) = measured(cairn(&store, &["dedupe", "assess", tree.path().to_str().unwrap()]), None);
    println!(
        "dedupe assess of the same files            peak RSS {:7.1} MiB   {:7.0} files/s",
        mib(peak),
        files as f64 / seconds
    );
    // And back: the restore plans its walk in batches, so it too holds a
    // batch of entries and not the whole tree.
    let tree_parent = tree.path().parent().unwrap().to_path_buf();
    drop(tree);
    let target = tempfile::tempdir_in(tree_parent).unwrap();
    let to = target.path().join("restored");
    let (seconds, peak) = measured(cairn(&store, &["restore", "latest", "--to", to.to_str().unwrap()]), None);
    println!(
        "restore of the same files                  peak RSS {:7.1} MiB   {:7.0} files/s",
        mib(peak),
        files as f64 / seconds
    );
}

/// The middle value (the lower of the middle two for an even count).
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}
