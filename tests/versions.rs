//! Many versions of a changing tree: later backups read only what changed,
//! every version restores identical (checked with the real `diff -r`), an
//! unchanged tree costs almost nothing, and `--overwrite if-changed`
//! rewrites only files that differ.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::util::{Fixture, noise, text};

/// A deterministic generator for test decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// `count` files of 100 B to 40 KiB of text in 25 directories, and a few
/// large ones.
pub(crate) fn generate(root: &Path, count: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    for i in 0..count {
        let dir = root.join(format!("dir{:02}", i % 25));
        fs::create_dir_all(&dir).unwrap();
        let size = 100 + rng.next(40_000) as usize;
        fs::write(dir.join(format!("file{i:05}.txt")), text(size, seed * 100_000 + i as u64)).unwrap();
    }
    fs::write(root.join("large.bin"), noise(6 << 20, seed)).unwrap();
}

/// Regular files under `root`, recursively.
fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out.sort();
    out
}

/// Changes a tree the way a working day does: edits, new files, deletions.
/// Returns (files written, bytes written).
pub(crate) fn mutate(root: &Path, version: u64) -> (u64, u64) {
    let mut rng = Rng(version * 7919 + 1);
    let all = files(root);
    let (mut written, mut bytes) = (0, 0);
    let mut touched = std::collections::HashSet::new();
    for _ in 0..30 {
        let path = &all[rng.next(all.len() as u64) as usize];
        if !touched.insert(path.clone()) {
            continue;
        }
        let mut data = fs::read(path).unwrap();
        let at = rng.next(data.len() as u64 + 1) as usize;
        data.splice(at..at, format!("edit {version}\n").bytes());
        fs::write(path, &data).unwrap();
        written += 1;
        bytes += data.len() as u64;
    }
    for i in 0..20 {
        let data = text(500 + rng.next(20_000) as usize, version * 1000 + i);
        fs::write(root.join(format!("dir{:02}/new-{version}-{i}.txt", i % 25)), &data).unwrap();
        written += 1;
        bytes += data.len() as u64;
    }
    for _ in 0..10 {
        let path = &all[rng.next(all.len() as u64) as usize];
        if touched.insert(path.clone()) {
            fs::remove_file(path).unwrap();
        }
    }
    (written, bytes)
}

fn backup(fixture: &Fixture, source: &Path) -> Value {
    backup_with(fixture, source, &[])
}

fn backup_with(fixture: &Fixture, source: &Path, options: &[&str]) -> Value {
    let mut args = vec!["--json", "backup", source.to_str().unwrap()];
    args.extend(options);
    serde_json::from_str(&fixture.ok(&args)).unwrap()
}

pub(crate) fn diff_r(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().unwrap();
    assert!(out.status.success(), "diff -r {} {}:\n{}", a.display(), b.display(), String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ten_versions_read_only_changes_and_each_restores_identical() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    generate(&source, 2500, 1);
    let first = backup(&fixture, &source);
    assert_eq!(first["files_new"], 2501);
    let snapshots = fixture.path("snapshots");
    fs::create_dir(&snapshots).unwrap();
    let keep = |version: u64| {
        let copy = snapshots.join(format!("v{version}"));
        let status = std::process::Command::new("cp").arg("-a").arg(&source).arg(&copy).status().unwrap();
        assert!(status.success());
    };
    keep(1);
    for version in 2..=10 {
        let (written, bytes) = mutate(&source, version);
        let report = backup(&fixture, &source);
        let read = report["files_new"].as_u64().unwrap() + report["files_changed"].as_u64().unwrap();
        assert_eq!(read, written, "version {version} read other files than the changed ones: {report}");
        assert_eq!(report["bytes_read"].as_u64().unwrap(), bytes, "version {version}: {report}");
        assert_eq!(report["record"]["parent"].as_u64().unwrap(), version - 1);
        keep(version);
    }
    for version in 1..=10u64 {
        let target = fixture.path(&format!("restored{version}"));
        fixture.ok(&["restore", &version.to_string(), "--to", target.to_str().unwrap()]);
        diff_r(&snapshots.join(format!("v{version}")), &target);
    }
    fixture.ok(&["check", "--read-data"]);
}

#[test]
fn unchanged_tree_backs_up_without_reading_and_adds_almost_nothing() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    generate(&source, 10_000, 2);
    let first = backup(&fixture, &source);
    let second = backup(&fixture, &source);
    assert_eq!(second["files_unchanged"], 10_001, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    let (added1, added2) =
        (first["record"]["bytes_added"].as_u64().unwrap(), second["record"]["bytes_added"].as_u64().unwrap());
    assert!(added2 * 100 < added1, "second backup added {added2} bytes, first {added1}");
    // --read-all reads everything again, and still stores nothing new but metadata.
    let third = backup_with(&fixture, &source, &["--read-all"]);
    assert_eq!(third["files_changed"], 10_001, "{third}");
    assert!(third["record"]["bytes_added"].as_u64().unwrap() * 100 < added1, "{third}");
}

#[test]
fn overwrite_if_changed_rewrites_only_files_that_differ() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    generate(&source, 300, 3);
    backup(&fixture, &source);
    let (written, _) = mutate(&source, 2);
    backup(&fixture, &source);

    let target = fixture.path("target");
    fixture.ok(&["restore", "1", "--to", target.to_str().unwrap()]);
    // Hard links aside keep each file's inode alive, so a rewritten file
    // cannot get its old inode number back.
    let aside = fixture.path("aside");
    let before: Vec<_> = files(&target)
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let link = aside.join(i.to_string());
            fs::create_dir_all(&aside).unwrap();
            fs::hard_link(path, &link).unwrap();
            (path.strip_prefix(&target).unwrap().to_path_buf(), link)
        })
        .collect();
    let same_inode =
        |rel: &Path, link: &Path| fs::metadata(target.join(rel)).unwrap().ino() == fs::metadata(link).unwrap().ino();

    // Never (the default) leaves existing files and says how many.
    let never: Value =
        serde_json::from_str(&fixture.ok(&["--json", "restore", "2", "--to", target.to_str().unwrap()])).unwrap();
    assert_eq!(never["files_written"].as_u64().unwrap(), 20, "only the new files: {never}");
    assert!(never["skipped_existing"].as_u64().unwrap() > 250, "{never}");

    let report: Value = serde_json::from_str(&fixture.ok(&[
        "--json",
        "restore",
        "2",
        "--to",
        target.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]))
    .unwrap();
    assert_eq!(report["files_written"].as_u64().unwrap(), written - 20, "edited files only: {report}");
    // Files that did not change kept their inode: they were not rewritten.
    let changed = report["files_written"].as_u64().unwrap() as usize;
    let kept = before.iter().filter(|(rel, link)| source.join(rel).exists() && same_inode(rel, link)).count();
    let surviving = before.iter().filter(|(rel, _)| source.join(rel).exists()).count();
    assert_eq!(kept, surviving - changed);
    // Every file of version 2 is there with its content (deleted ones stay: restore never deletes).
    for path in files(&source) {
        let rel = path.strip_prefix(&source).unwrap();
        assert_eq!(fs::read(&path).unwrap(), fs::read(target.join(rel)).unwrap(), "{}", rel.display());
    }
}
