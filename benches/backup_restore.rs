//! Backup and restore of a generated tree, beside restic (and borg, when
//! installed) measured in the same run on the same tree.
//!
//! The tree holds many small files and a few large ones (text-like, so it
//! compresses). Each tool makes a first backup, a second backup of the
//! unchanged tree, then eight more versions with a few percent of files
//! edited, added and removed; then restores the latest version. Printed:
//! MiB/s and files/s for the first backup and the restore, seconds for the
//! unchanged backup, and the repository size after ten versions, with
//! cairn's ratio to each other tool.
//!
//! cairn runs twice: with a default store (zstd) and with one made by
//! `init --compression lz4`, the fastest. Every restore starts from an empty page cache
//! when the bench runs as root (a restore days after the backup reads the
//! disk), so no tool restores from what its own backups left in memory;
//! each tool restores twice, in turn with the others, and its faster
//! restore counts.
//!
//! `cargo bench --bench backup_restore` (CAIRN_BENCH_MB=400 of data by
//! default; CAIRN_BENCH_TOOLS=cairn,restic for some tools only;
//! CAIRN_BENCH_KEEP=1 keeps the trees and stores). Under `cargo test` it runs cairn alone on a small tree as a
//! smoke test. restic always encrypts (cairn does not: part of the
//! difference) and compresses with zstd; borg runs with
//! `--encryption=none` and lz4.

mod common;

use common::tools::{Tool, drop_caches, du, generate, installed, mutate};

struct Result {
    name: &'static str,
    first: f64,
    unchanged: f64,
    restore: f64,
    size: u64,
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(400) } else { 4 };
    let work = common::work_dir();
    let mut tools = vec!["cairn"];
    if benchmarking {
        tools.push("cairn-lz4");
        for other in ["restic", "borg"] {
            if installed(other) {
                tools.push(other);
            } else {
                println!(
                    "{other} is not installed; not compared (apt install {})",
                    if other == "borg" { "borgbackup" } else { other }
                );
            }
        }
    }
    // CAIRN_BENCH_TOOLS=cairn,restic runs just those.
    if let Ok(only) = std::env::var("CAIRN_BENCH_TOOLS") {
        tools.retain(|t| only.split(',').any(|o| o == *t));
    }
    let last = if benchmarking { 10 } else { 3 };
    // Every tool backs up the same path through the same ten versions: the
    // tree is regenerated (deterministically) for each and changed in place,
    // as a real source is, so inode and ctime checks work as they would.
    // Nothing is deleted until the end: ext4 spends most of a restore's
    // time skipping recently freed inodes (`recently_deleted`) for minutes
    // after many files are removed, which would punish whoever runs next.
    let mut files = 0;
    let mut results = Vec::new();
    let mut repos = Vec::new();
    for name in tools {
        let tree = work.path().join(format!("tree-{name}"));
        files = generate(&tree, mb << 20);
        let tool = Tool { name, repo: work.path().join(format!("repo-{name}")) };
        tool.init();
        let mut first = 0.0;
        let mut unchanged = 0.0;
        for version in 1..=last {
            if version > 2 {
                mutate(&tree, version);
            }
            let seconds = tool.backup(&tree, version);
            match version {
                1 => first = seconds,
                2 => unchanged = seconds,
                _ => {}
            }
        }
        results.push(Result { name, first, unchanged, restore: f64::MAX, size: du(&tool.repo) });
        repos.push(tool);
    }
    // Restores come after every backup, twice per tool in turn, and the
    // faster of the two counts: ext4 without a journal makes creating files
    // slow for a few minutes after many were deleted (another bench's
    // cleanup, say), which would otherwise weigh on whoever goes first.
    for round in 0..if benchmarking { 2 } else { 1 } {
        for (tool, result) in repos.iter().zip(&mut results) {
            let target = work.path().join(format!("restored-{}-{round}", tool.name));
            result.restore = result.restore.min(tool.restore(&target, last));
        }
    }
    println!(
        "tree: {files} files, {mb} MiB; {} cores; restores {}",
        rayon::current_num_threads(),
        if drop_caches() { "from an empty page cache" } else { "with whatever is cached (not root)" }
    );
    let mib = mb as f64;
    println!(
        "{:<10} {:>14} {:>12} {:>16} {:>14} {:>12} {:>14}",
        "tool", "first MiB/s", "files/s", "unchanged (s)", "restore MiB/s", "files/s", "size (10 v.)"
    );
    for r in &results {
        println!(
            "{:<10} {:>14.1} {:>12.0} {:>16.2} {:>14.1} {:>12.0} {:>10.1} MiB",
            r.name,
            mib / r.first,
            files as f64 / r.first,
            r.unchanged,
            mib / r.restore,
            files as f64 / r.restore,
            r.size as f64 / (1 << 20) as f64
        );
    }
    for cairn in results.iter().filter(|r| r.name.starts_with("cairn")) {
        for other in results.iter().filter(|r| !r.name.starts_with("cairn")) {
            println!(
                "{} vs {}: first backup {:.2}x faster, unchanged backup {:.2}x faster, restore {:.2}x faster, store {:.2}x the size",
                cairn.name,
                other.name,
                other.first / cairn.first,
                other.unchanged / cairn.unchanged,
                other.restore / cairn.restore,
                cairn.size as f64 / other.size as f64
            );
        }
    }
}
