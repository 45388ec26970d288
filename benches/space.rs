//! Store size after one first backup, for cairn's default store (zstd),
//! an lz4 store and restic, on a generated tree and on real files found on
//! this machine, with each one's first-backup speed: issue "Space"'s
//! measure. The generated tree is text-like (it compresses about 2:1);
//! the real directories are whatever the machine holds (`/usr/share`,
//! `/usr/lib`; CAIRN_BENCH_SPACE_DIRS=DIR:DIR:... to choose others).
//!
//! Each tool backs up the same directory once, into a fresh store or
//! repository, after `sync` (and with the page cache dropped, as root, so
//! no tool reads what an earlier one left in memory). Printed: MiB/s of
//! the source, store bytes, and cairn's store and speed over restic's.
//!
//! These machines are noisy (one run of `/usr/lib` put cairn at 1.76x
//! restic's speed and another, a day later with the same code, at 2.35x),
//! so the tools take turns for several rounds (CAIRN_BENCH_ROUNDS, 3 by
//! default) and the comparison uses each tool's median time.
//!
//! `cargo bench --bench space` (CAIRN_BENCH_MB=400 for the generated tree;
//! CAIRN_BENCH_SPACE_CODECS=zstd:1,zstd:9 adds cairn stores of other codecs).
//! Under `cargo test` it runs cairn alone on a small generated tree.

mod common;

use std::path::PathBuf;

use common::tools::{Tool, drop_caches, du, generate, installed};

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(400) } else { 4 };
    let work = common::work_dir();
    let mut tools = vec!["cairn", "cairn-lz4"];
    // CAIRN_BENCH_SPACE_CODECS=zstd:1,zstd:9 adds stores of those codecs.
    for codec in std::env::var("CAIRN_BENCH_SPACE_CODECS").unwrap_or_default().split(',').filter(|c| !c.is_empty()) {
        tools.push(Box::leak(format!("cairn-{codec}").into_boxed_str()));
    }
    if benchmarking && installed("restic") {
        tools.push("restic");
    } else if benchmarking {
        println!("restic is not installed; not compared (apt install restic)");
    }
    let generated = work.path().join("generated");
    generate(&generated, mb << 20);
    let mut sources = vec![(format!("generated ({mb} MiB, text-like)"), generated)];
    if benchmarking {
        let dirs = std::env::var("CAIRN_BENCH_SPACE_DIRS").unwrap_or_else(|_| "/usr/share:/usr/lib".into());
        sources.extend(
            dirs.split(':').map(PathBuf::from).filter(|dir| dir.is_dir()).map(|dir| (dir.display().to_string(), dir)),
        );
    }
    let rounds: usize = if benchmarking {
        std::env::var("CAIRN_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1)
    } else {
        1
    };
    let cold = drop_caches();
    println!(
        "{} cores; every backup starts {}",
        rayon::current_num_threads(),
        if cold { "from an empty page cache" } else { "with whatever is cached (not root)" }
    );
    for (name, source) in &sources {
        let bytes = du(source);
        println!("\n{name}: {:.1} MiB", bytes as f64 / 1048576.0);
        println!("{:<10} {:>6} {:>14} {:>14}", "tool", "round", "first MiB/s", "store");
        // Each tool's times over the rounds, and its store's size.
        let mut results: Vec<(&str, Vec<f64>, u64)> = tools.iter().map(|tool| (*tool, Vec::new(), 0)).collect();
        for round in 1..=rounds {
            for (tool, times, size) in &mut results {
                let repo = work.path().join(format!("repo-{tool}"));
                let tool = Tool { name: *tool, repo };
                tool.init();
                drop_caches();
                let seconds = tool.backup(source, 1);
                *size = du(&tool.repo);
                println!(
                    "{:<10} {round:>6} {:>14.1} {:>10.1} MiB",
                    tool.name,
                    bytes as f64 / 1048576.0 / seconds,
                    *size as f64 / 1048576.0
                );
                times.push(seconds);
                std::fs::remove_dir_all(&tool.repo).unwrap();
            }
        }
        let results: Vec<(&str, f64, u64)> =
            results.into_iter().map(|(tool, times, size)| (tool, median(times), size)).collect();
        if let Some(&(_, restic_seconds, restic_size)) = results.iter().find(|(name, ..)| *name == "restic") {
            for (tool, seconds, size) in results.iter().filter(|(name, ..)| name.starts_with("cairn")) {
                println!(
                    "{tool} vs restic: store {:.3}x the size, first backup {:.2}x faster (median of {rounds})",
                    *size as f64 / restic_size as f64,
                    restic_seconds / seconds
                );
            }
        }
    }
}

/// The middle value (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 0 { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] }
}
