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
//! `cargo bench --bench backup_restore` (CAIRN_BENCH_MB=400 of data by
//! default). Under `cargo test` it runs cairn alone on a small tree as a
//! smoke test. restic always encrypts (cairn does not: part of the
//! difference); borg runs with `--encryption=none` and lz4, like cairn.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One tool under test: how to init, back up and restore.
struct Tool {
    name: &'static str,
    repo: PathBuf,
}

impl Tool {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.name {
            "cairn" => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
                c.arg("--store").arg(&self.repo).arg("--no-progress");
                c
            }
            "restic" => {
                let mut c = Command::new("restic");
                // A password is needed on every restic version (Debian 12 has 0.14).
                c.env("RESTIC_PASSWORD", "bench").arg("--repo").arg(&self.repo).arg("--quiet");
                c
            }
            _ => {
                let mut c = Command::new("borg");
                c.env("BORG_PASSPHRASE", "").env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes");
                c
            }
        };
        command.args(args);
        command
    }

    fn run(&self, args: &[&str]) -> f64 {
        let started = Instant::now();
        let output = self.command(args).output().unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.name));
        assert!(output.status.success(), "{} {args:?} failed: {}", self.name, String::from_utf8_lossy(&output.stderr));
        started.elapsed().as_secs_f64()
    }

    fn init(&self) {
        match self.name {
            "cairn" => self.run(&["init"]),
            "restic" => self.run(&["init"]),
            _ => self.run(&["init", "--encryption=none", self.repo.to_str().unwrap()]),
        };
    }

    fn backup(&self, source: &Path, version: u32) -> f64 {
        let source = source.to_str().unwrap();
        match self.name {
            "cairn" => self.run(&["backup", source]),
            "restic" => self.run(&["backup", source]),
            _ => {
                let archive = format!("{}::v{version}", self.repo.display());
                self.run(&["create", "--compression", "lz4", &archive, source])
            }
        }
    }

    fn restore(&self, target: &Path, version: u32) -> f64 {
        fs::create_dir_all(target).unwrap();
        match self.name {
            "cairn" => self.run(&["restore", "latest", "--to", target.to_str().unwrap()]),
            "restic" => self.run(&["restore", "latest", "--target", target.to_str().unwrap()]),
            _ => {
                let archive = format!("{}::v{version}", self.repo.display());
                let started = Instant::now();
                let status = self.command(&["extract", &archive]).current_dir(target).status().unwrap();
                assert!(status.success());
                started.elapsed().as_secs_f64()
            }
        }
    }
}

fn installed(program: &str) -> bool {
    let flag = if program == "restic" { "version" } else { "--version" };
    Command::new(program).arg(flag).output().is_ok_and(|o| o.status.success())
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).unwrap().map(|e| du(&e.unwrap().path())).sum()
}

/// Writes the tree: `bytes` in all, a quarter in 4 large files and the rest
/// in files of 1–32 KiB spread over 50 directories. Returns the file count.
fn generate(root: &Path, bytes: usize) -> usize {
    let large = bytes / 16;
    for i in 0..4 {
        fs::create_dir_all(root.join("images")).unwrap();
        fs::write(root.join(format!("images/disk{i}.img")), common::text_like(large, 1000 + i as u64)).unwrap();
    }
    let mut left = bytes - 4 * large;
    let mut count = 4;
    let mut state = 0x1234_5678_u64;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = (1024 + (state % (31 * 1024)) as usize).min(left);
        let dir = root.join(format!("dir{:02}", count % 50));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("file{count:06}.txt")), common::text_like(size, state)).unwrap();
        left -= size;
        count += 1;
    }
    count
}

/// Edits 2% of the small files, adds 1%, and appends to one large file.
fn mutate(root: &Path, version: u32) {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap().to_str().unwrap().starts_with("dir") {
            files.extend(fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    let step = 50;
    for (i, path) in files.iter().enumerate().skip(version as usize).step_by(step) {
        let mut data = fs::read(path).unwrap();
        data.splice(data.len() / 2..data.len() / 2, format!("edit {version}\n").bytes());
        fs::write(path, data).unwrap();
        if i % 2 == 0 {
            let new = path.with_file_name(format!("new-{version}-{i}.txt"));
            fs::write(new, common::text_like(8192, u64::from(version) * 1_000_000 + i as u64)).unwrap();
        }
    }
    let image = root.join("images/disk0.img");
    let mut data = fs::read(&image).unwrap();
    data.extend_from_slice(&common::text_like(1 << 20, u64::from(version)));
    fs::write(image, data).unwrap();
}

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
    let work = tempfile::tempdir().unwrap();
    let mut tools = vec!["cairn"];
    if benchmarking {
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
    let last = if benchmarking { 10 } else { 3 };
    // Every tool backs up the same path through the same ten versions: the
    // tree is regenerated (deterministically) for each and changed in place,
    // as a real source is, so inode and ctime checks work as they would.
    // Nothing is deleted until the end: ext4 spends most of a restore's
    // time skipping recently freed inodes (`recently_deleted`) for minutes
    // after many files are removed, which would punish whoever runs next.
    let mut files = 0;
    let mut results = Vec::new();
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
        let target = work.path().join(format!("restored-{name}"));
        let restore = tool.restore(&target, last);
        results.push(Result { name, first, unchanged, restore, size: du(&tool.repo) });
    }
    println!("tree: {files} files, {mb} MiB; {} cores", rayon::current_num_threads());
    let mib = mb as f64;
    println!(
        "{:<8} {:>14} {:>12} {:>16} {:>14} {:>12} {:>14}",
        "tool", "first MiB/s", "files/s", "unchanged (s)", "restore MiB/s", "files/s", "size (10 v.)"
    );
    for r in &results {
        println!(
            "{:<8} {:>14.1} {:>12.0} {:>16.2} {:>14.1} {:>12.0} {:>10.1} MiB",
            r.name,
            mib / r.first,
            files as f64 / r.first,
            r.unchanged,
            mib / r.restore,
            files as f64 / r.restore,
            r.size as f64 / (1 << 20) as f64
        );
    }
    let cairn = &results[0];
    for other in &results[1..] {
        println!(
            "cairn vs {}: first backup {:.2}x faster, unchanged backup {:.2}x faster, restore {:.2}x faster, store {:.2}x the size",
            other.name,
            other.first / cairn.first,
            other.unchanged / cairn.unchanged,
            other.restore / cairn.restore,
            cairn.size as f64 / other.size as f64
        );
    }
}
