//! What garbage collection costs, against what it frees: a store of 50
//! datasets of a changing tree, copied twice; in one copy the oldest dataset
//! is forgotten and collected, in the other the oldest 25. Two shapes of
//! change: edits spread over every directory (each version rewrites every
//! directory tree), and edits in one directory per version. cairn's delete
//! job follows what reached zero, so the first should cost a small fraction
//! of the second; restic's `forget --prune` on the same versions (marking
//! from every snapshot) is timed beside it in the same run.
//!
//! `cargo bench --bench gc_cost` (CAIRN_BENCH_MB=200 of data by default).
//! Under `cargo test` it runs cairn alone on a small tree as a smoke test.
//! Printed: the gc job's own seconds (from `gc --json`) and the wall time
//! of forget + gc as processes, for cairn; wall time of
//! `forget --prune` for restic.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::tools::{Tool, du, generate, installed, mutate, mutate_local};

/// Copies a store or repository (hard links would share inodes; copy).
fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

/// The bench's scratch directory (kept with CAIRN_BENCH_KEEP, for profiling).
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Changes the tree for a version.
type Change = fn(&Path, u32);

struct Cost {
    /// Seconds of the collection itself (cairn's report; restic: wall).
    job: f64,
    /// Wall seconds of forget and collect, processes included.
    wall: f64,
    /// Repository bytes before and after.
    before: u64,
    after: u64,
}

fn cairn_collect(tool: &Tool, keep: usize) -> Cost {
    let before = du(&tool.repo);
    let started = Instant::now();
    tool.run(&["forget", "--keep-last", &keep.to_string()]);
    let output = tool.command(&["--json", "gc"]).output().unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "cairn gc: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    println!(
        "  cairn gc: {} blobs ({} metadata) reclaimed, {} containers deleted, {} rewritten",
        report["blobs_reclaimed"],
        report["metadata_blobs"],
        report["containers_deleted"],
        report["containers_rewritten"]
    );
    Cost { job: report["seconds"].as_f64().unwrap(), wall, before, after: du(&tool.repo) }
}

fn restic_collect(tool: &Tool, keep: usize) -> Cost {
    let before = du(&tool.repo);
    let wall = tool.run(&["forget", "--keep-last", &keep.to_string(), "--prune"]);
    Cost { job: wall, wall, before, after: du(&tool.repo) }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200) } else { 2 };
    let versions: usize = if benchmarking { 50 } else { 6 };
    let work = common::work_dir();
    let mut tools = vec!["cairn"];
    // CAIRN_BENCH_COMPARE=0 runs cairn alone (for profiling).
    if benchmarking && std::env::var("CAIRN_BENCH_COMPARE").as_deref() != Ok("0") {
        if installed("restic") {
            tools.push("restic");
        } else {
            println!("restic is not installed; not compared (apt install restic)");
        }
    }
    let work_path = work.path().to_path_buf();
    if std::env::var_os("CAIRN_BENCH_KEEP").is_some() {
        println!("keeping {}", work.keep().display());
    }
    let work = WorkDir(work_path);
    let (one, many) = (versions - 1, versions / 2);
    let shapes: [(&str, Change); 2] = [("spread over every directory", mutate), ("in one directory", mutate_local)];
    for (shape, change) in shapes {
        println!(
            "\n{versions} datasets of a {mb} MiB tree, each version editing 2% of the files {shape}; \
             forget the oldest {} or the oldest {}",
            versions - one,
            versions - many
        );
        println!(
            "{:<8} {:>7} {:>12} {:>12} {:>14} {:>14}",
            "tool", "forget", "gc job (s)", "wall (s)", "store before", "freed"
        );
        let mut cairn_costs = Vec::new();
        for name in &tools {
            let name = *name;
            let tree = work.path().join(format!("tree-{name}"));
            let _ = std::fs::remove_dir_all(&tree);
            generate(&tree, mb << 20);
            let tool = Tool { name, repo: work.path().join(format!("repo-{name}")) };
            let _ = std::fs::remove_dir_all(&tool.repo);
            tool.init();
            for version in 1..=versions as u32 {
                if version > 1 {
                    change(&tree, version);
                }
                tool.backup(&tree, version);
            }
            for keep in [one, many] {
                let copy_of = Tool { name, repo: work.path().join(format!("repo-{name}-{keep}")) };
                let _ = std::fs::remove_dir_all(&copy_of.repo);
                copy(&tool.repo, &copy_of.repo);
                let cost = if name == "cairn" { cairn_collect(&copy_of, keep) } else { restic_collect(&copy_of, keep) };
                println!(
                    "{:<8} {:>7} {:>12.3} {:>12.3} {:>10.1} MiB {:>10.1} MiB",
                    name,
                    versions - keep,
                    cost.job,
                    cost.wall,
                    cost.before as f64 / (1 << 20) as f64,
                    cost.before.saturating_sub(cost.after) as f64 / (1 << 20) as f64
                );
                if name == "cairn" {
                    cairn_costs.push(cost);
                } else {
                    let cairn = &cairn_costs[if keep == one { 0 } else { 1 }];
                    println!(
                        "  cairn forget+gc is {:.1}x faster than restic forget --prune (wall)",
                        cost.wall / cairn.wall
                    );
                }
            }
            if name == "cairn" {
                println!(
                    "  forgetting {} costs {:.1}x the gc job time of forgetting {} (wall {:.1}x)",
                    versions - many,
                    cairn_costs[1].job / cairn_costs[0].job,
                    versions - one,
                    cairn_costs[1].wall / cairn_costs[0].wall
                );
            }
        }
    }
}
