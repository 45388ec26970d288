//! The backup tools the end-to-end benchmarks drive (cairn, restic, borg),
//! and the generated tree they back up.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One tool under test: how to init, back up and restore.
pub struct Tool {
    /// "cairn" (a default store: zstd), "cairn-CODEC" (a store made with
    /// `--compression CODEC`: "cairn-lz4", "cairn-zstd:9"), "restic" or
    /// "borg".
    pub name: &'static str,
    /// The store or repository.
    pub repo: PathBuf,
}

impl Tool {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.name {
            name if name.starts_with("cairn") => {
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

    pub fn run(&self, args: &[&str]) -> f64 {
        let started = Instant::now();
        let output = self.command(args).output().unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.name));
        assert!(output.status.success(), "{} {args:?} failed: {}", self.name, String::from_utf8_lossy(&output.stderr));
        started.elapsed().as_secs_f64()
    }

    pub fn init(&self) {
        match self.name {
            "cairn" => self.run(&["init"]),
            name if name.starts_with("cairn-") => self.run(&["init", "--compression", &name["cairn-".len()..]]),
            "restic" => self.run(&["init"]),
            _ => self.run(&["init", "--encryption=none", self.repo.to_str().unwrap()]),
        };
    }

    pub fn backup(&self, source: &Path, version: u32) -> f64 {
        let source = source.to_str().unwrap();
        match self.name {
            name if name.starts_with("cairn") => self.run(&["backup", source]),
            "restic" => self.run(&["backup", source]),
            _ => {
                let archive = format!("{}::v{version}", self.repo.display());
                self.run(&["create", "--compression", "lz4", &archive, source])
            }
        }
    }

    pub fn restore(&self, target: &Path, version: u32) -> f64 {
        fs::create_dir_all(target).unwrap();
        drop_caches();
        match self.name {
            name if name.starts_with("cairn") => self.run(&["restore", "latest", "--to", target.to_str().unwrap()]),
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

/// Empties the page cache (root only), so that each tool restores from the
/// disk as a restore days after the backup would, instead of from whatever
/// the last backup left in memory: a store written with `O_DIRECT` (cairn's)
/// leaves nothing there, one written through the cache (restic's, borg's)
/// may be entirely there. Returns whether it could.
pub fn drop_caches() -> bool {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

pub fn installed(program: &str) -> bool {
    let flag = if program == "restic" { "version" } else { "--version" };
    Command::new(program).arg(flag).output().is_ok_and(|o| o.status.success())
}

pub fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).unwrap().map(|e| du(&e.unwrap().path())).sum()
}

/// Writes the tree: `bytes` in all, a quarter in 4 large files and the rest
/// in files of 1–32 KiB spread over 50 directories. Returns the file count.
pub fn generate(root: &Path, bytes: usize) -> usize {
    let large = bytes / 16;
    for i in 0..4 {
        fs::create_dir_all(root.join("images")).unwrap();
        fs::write(root.join(format!("images/disk{i}.img")), super::text_like(large, 1000 + i as u64)).unwrap();
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
        fs::write(dir.join(format!("file{count:06}.txt")), super::text_like(size, state)).unwrap();
        left -= size;
        count += 1;
    }
    count
}

/// Edits 2% of the small files, adds 1%, and appends to one large file.
/// The edits are spread over every directory (every version rewrites all
/// directory trees).
pub fn mutate(root: &Path, version: u32) {
    edit(root, version, |files| files.iter().enumerate().skip(version as usize).step_by(50).collect());
}

/// Like [`mutate`], but the 2% of files edited are the files of one
/// directory (a different one each version), as a day's work usually is.
pub fn mutate_local(root: &Path, version: u32) {
    let dir = format!("dir{:02}", (version as usize * 7) % 50);
    edit(root, version, |files| {
        files.iter().enumerate().filter(|(_, p)| p.parent().is_some_and(|d| d.ends_with(&dir))).collect()
    });
}

fn edit(root: &Path, version: u32, choose: impl Fn(&[PathBuf]) -> Vec<(usize, &PathBuf)>) {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap().to_str().unwrap().starts_with("dir") {
            files.extend(fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    for (i, path) in choose(&files) {
        let mut data = fs::read(path).unwrap();
        data.splice(data.len() / 2..data.len() / 2, format!("edit {version}\n").bytes());
        fs::write(path, data).unwrap();
        if i % 2 == 0 {
            let new = path.with_file_name(format!("new-{version}-{i}.txt"));
            fs::write(new, super::text_like(8192, u64::from(version) * 1_000_000 + i as u64)).unwrap();
        }
    }
    let image = root.join("images/disk0.img");
    let mut data = fs::read(&image).unwrap();
    data.extend_from_slice(&super::text_like(1 << 20, u64::from(version)));
    fs::write(image, data).unwrap();
}
