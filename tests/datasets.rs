//! Datasets end to end through the binary: a tree holding every kind of
//! entry backs up and restores identical (lstat, xattrs and ACLs, hardlink
//! structure, holes); browsing commands; naming datasets.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use serde_json::Value;

use crate::fstree::{assert_same, is_root, now_ns, set_times, sh, snapshot};
use crate::util::{Fixture, noise, text};

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// Builds a tree with every kind cairn stores, and one socket it must skip.
pub(crate) fn build_every_kind(root: &Path) {
    let dir = |rel: &str, mode: u32| {
        let path = root.join(rel);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    let file = |rel: &str, data: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    dir("", 0o750);
    dir("docs", 0o755);
    file("docs/readme.txt", &text(100_000, 1), 0o644);
    file("docs/big.bin", &noise(3 << 20, 2), 0o600);
    file("docs/empty", b"", 0o644);
    dir("docs/empty-dir", 0o700);
    dir("bin", 0o755);
    file("bin/tool", &text(5000, 3), 0o4755);
    file("bin/group-tool", &text(5000, 4), 0o2711);
    dir("shared", 0o2775);
    dir("tmp", 0o1777);
    dir("links", 0o755);
    symlink("../docs/readme.txt", root.join("links/relative")).unwrap();
    symlink("/etc/hostname", root.join("links/absolute")).unwrap();
    symlink("nowhere/at/all", root.join("links/dangling")).unwrap();
    // Three names for one inode, across directories.
    dir("hard", 0o755);
    dir("other", 0o755);
    file("hard/one", &text(20_000, 5), 0o640);
    fs::hard_link(root.join("hard/one"), root.join("hard/two")).unwrap();
    fs::hard_link(root.join("hard/one"), root.join("other/three")).unwrap();
    // A pipe, a socket (skipped), and devices when root.
    dir("special", 0o755);
    nix::unistd::mkfifo(&root.join("special/pipe"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(root.join("special/socket")).unwrap());
    if is_root() {
        sh("mknod", &[root.join("special/null").as_os_str(), os("c"), os("1"), os("3")]);
        sh("mknod", &[root.join("special/loop").as_os_str(), os("b"), os("7"), os("200")]);
    }
    // Extended attributes, and POSIX ACLs (access on a file, default on a directory).
    xattr::set(root.join("docs/readme.txt"), "user.comment", b"hello").unwrap();
    xattr::set(root.join("docs/readme.txt"), "user.binary", &[0, 255, 1]).unwrap();
    xattr::set(root.join("docs"), "user.dir", b"on a directory").unwrap();
    dir("acl", 0o755);
    file("acl/file", &text(3000, 6), 0o640);
    sh("setfacl", &[os("-m"), os("u:65534:rwx"), root.join("acl/file").as_os_str()]);
    sh("setfacl", &[os("-d"), os("-m"), os("g:65534:rx"), root.join("acl").as_os_str()]);
    file("acl/inherited", &text(3000, 7), 0o640);
    // A sparse file: holes before, between and after its data.
    dir("sparse", 0o755);
    let sparse = fs::File::create(root.join("sparse/image")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &noise(8192, 8), 1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &noise(4096, 9), 5 << 20).unwrap();
    drop(sparse);
    // Names that are not UTF-8.
    let latin1 = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&latin1, b"latin-1 name").unwrap();
    let odd_dir = root.join(std::ffi::OsStr::from_bytes(b"dir\xff\x01"));
    fs::create_dir(&odd_dir).unwrap();
    fs::write(odd_dir.join("inside"), b"under an odd name").unwrap();
    // Deep and long: 30 levels of 60-byte names, then a 255-byte name.
    let mut deep = root.join("deep");
    for level in 0..30 {
        deep.push(format!("{level:02}{}", "d".repeat(58)));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(255)), b"at the bottom").unwrap();
    // Owners: a user that exists, and numbers with no name, when root.
    if is_root() {
        dir("owned", 0o755);
        file("owned/nobody", b"owned by nobody", 0o644);
        file("owned/numbers", b"owned by numbers", 0o644);
        nix::unistd::chown(&root.join("owned/nobody"), Some(65534.into()), Some(65534.into())).unwrap();
        nix::unistd::chown(&root.join("owned/numbers"), Some(4321.into()), Some(8765.into())).unwrap();
        nix::unistd::chown(&root.join("owned"), Some(4321.into()), Some(8765.into())).unwrap();
    }
    // Times last, children before parents: mtimes in 2020 with odd ns, atimes
    // an hour ahead, later than the ctimes that setting them makes (so
    // relatime never moves them when the backup reads a symlink).
    let paths = snapshot(root);
    let base_atime = now_ns() + 3_600_000_000_000;
    for (i, rel) in paths.keys().rev().enumerate() {
        let i = i as i64;
        set_times(&root.join(rel), base_atime + i * 1_000_001, 1_600_000_000_123_456_789 + i * 7_777_777);
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn every_kind_of_entry_round_trips_with_all_metadata() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    build_every_kind(&source);
    let report = json(&fixture.ok(&["--json", "backup", source.to_str().unwrap(), "--name", "all-kinds"]));
    assert_eq!(report["sockets"], 1, "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 0, "{report}");

    let mut expected = snapshot(&source);
    expected.remove(Path::new("special/socket"));
    let target = fixture.path("restored");
    let restore = json(&fixture.ok(&["--json", "restore", "all-kinds", "--to", target.to_str().unwrap()]));
    assert_eq!(restore["problems"].as_array().unwrap().len(), 0, "{restore}");
    assert_eq!(restore["hardlinks"], 2, "{restore}");
    assert_same(&expected, &snapshot(&target));
    fixture.ok(&["check", "--read-data"]);

    // Holes came back as holes: the 8 MiB image holds 12 KiB of data.
    let image = fs::symlink_metadata(target.join("sparse/image")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&image) * 512 <= 64 << 10, "image not sparse: {image:?}");
}

#[test]
fn restoring_one_path_brings_its_parents_and_leaves_the_rest() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    build_every_kind(&source);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let target = fixture.path("one");
    fixture.ok(&["restore", "latest", "docs/readme.txt", "hard/two", "--to", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("docs/readme.txt")).unwrap(), fs::read(source.join("docs/readme.txt")).unwrap());
    assert_eq!(fs::read(target.join("hard/two")).unwrap(), fs::read(source.join("hard/one")).unwrap());
    assert!(!target.join("docs/big.bin").exists());
    assert!(!target.join("bin").exists());
    let missing = fixture.fails(&["restore", "latest", "docs/absent", "--to", target.to_str().unwrap()]);
    assert!(missing.contains("docs/absent"), "{missing}");
}

#[test]
fn browsing_lists_finds_stats_cats_and_diffs() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("src/nested")).unwrap();
    let main = text(200_000, 1);
    fs::write(source.join("src/main.rs"), &main).unwrap();
    fs::write(source.join("src/lib.rs"), text(3000, 2)).unwrap();
    fs::write(source.join("src/nested/mod.rs"), text(3000, 3)).unwrap();
    fs::write(source.join("notes.txt"), text(1000, 4)).unwrap();
    symlink("src/main.rs", source.join("entry")).unwrap();
    let src = source.to_str().unwrap();
    fixture.ok(&["backup", src, "--name", "first"]);

    // ls: names with a trailing slash on directories; -l shows mode and target.
    assert_eq!(fixture.ok(&["ls", "first"]), "entry\nnotes.txt\nsrc/\n");
    assert_eq!(fixture.ok(&["ls", "first", "/src"]), "lib.rs\nmain.rs\nnested/\n");
    let long = fixture.ok(&["ls", "-l", "latest"]);
    assert!(long.contains("lrwxrwxrwx") && long.contains("entry -> src/main.rs"), "{long}");
    let listed = json(&fixture.ok(&["--json", "ls", "1", "src"]));
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[1]["path"], "/src/main.rs");
    assert_eq!(listed[1]["size"], 200_000);

    // find: by name glob and by type.
    assert_eq!(fixture.ok(&["find", "first", "--name", "*.rs"]), "/src/lib.rs\n/src/main.rs\n/src/nested/mod.rs\n");
    assert_eq!(fixture.ok(&["find", "first", "--type", "d"]), "/\n/src\n/src/nested\n");
    assert_eq!(fixture.ok(&["find", "first", "src", "--type", "f"]), "/src/lib.rs\n/src/main.rs\n/src/nested/mod.rs\n");

    // cat gives the bytes back.
    let cat = fixture.command(&["cat", "first", "src/main.rs"]).output().unwrap();
    assert!(cat.status.success());
    assert_eq!(cat.stdout, main);

    // A second version: one file changed by an insertion, one added, one removed.
    let mut changed = main.clone();
    changed.splice(100..100, b"inserted line\n".iter().copied());
    fs::write(source.join("src/main.rs"), &changed).unwrap();
    fs::write(source.join("src/new.rs"), text(500, 9)).unwrap();
    fs::remove_file(source.join("notes.txt")).unwrap();
    fixture.ok(&["backup", src, "--name", "second"]);

    let diff = fixture.ok(&["diff", "first", "second"]);
    assert!(diff.contains("+ /src/new.rs"), "{diff}");
    assert!(diff.contains("- /notes.txt"), "{diff}");
    assert!(diff.contains("M /src/main.rs"), "{diff}");
    assert!(!diff.contains("lib.rs"), "{diff}");
    let changes = json(&fixture.ok(&["--json", "diff", "latest~1", "latest", "src"]));
    assert_eq!(changes.as_array().unwrap().len(), 2, "{changes}");
    // Written as the changes come: an empty diff and an empty find are still arrays.
    assert_eq!(json(&fixture.ok(&["--json", "diff", "first", "first"])), serde_json::json!([]));
    assert_eq!(json(&fixture.ok(&["--json", "find", "first", "/", "--name", "absent*"])), serde_json::json!([]));

    // stat: most of the changed file's chunks are shared with the first version.
    let stat = json(&fixture.ok(&["--json", "stat", "second", "src/main.rs"]));
    let (chunks, shared) = (stat["chunks"]["chunks"].as_u64().unwrap(), stat["chunks"]["shared"].as_u64().unwrap());
    assert!(chunks >= 10 && shared + 3 >= chunks && shared < chunks, "{stat}");
    let human = fixture.ok(&["stat", "second", "src/main.rs"]);
    assert!(human.contains("chunks") && human.contains("shared"), "{human}");

    // datasets: both, oldest first, with labels; names that do not exist are explained.
    let list = json(&fixture.ok(&["--json", "datasets"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["label"], "first");
    assert_eq!(list[1]["files"], 4);
    let table = fixture.ok(&["datasets"]);
    assert!(table.contains("second") && table.contains("ADDED"), "{table}");
    let error = fixture.fails(&["ls", "third"]);
    assert!(error.contains("third") && error.contains("cairn datasets"), "{error}");
    let error = fixture.fails(&["ls", "first", "src/absent.rs"]);
    assert!(error.contains("src/absent.rs"), "{error}");
}

#[test]
fn excludes_tags_and_one_file_system() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("src/target/debug")).unwrap();
    fs::create_dir_all(source.join("cache")).unwrap();
    fs::write(source.join("src/main.rs"), b"fn main() {}").unwrap();
    fs::write(source.join("src/scratch.tmp"), b"scratch").unwrap();
    fs::write(source.join("src/target/debug/big"), noise(100_000, 1)).unwrap();
    fs::write(source.join("cache/blob"), b"cached").unwrap();
    fs::write(source.join("keep.tmp.txt"), b"kept").unwrap();
    let cache_glob = format!("{}/cache", source.display());
    let report = json(&fixture.ok(&[
        "--json",
        "backup",
        source.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude",
        "target",
        "--exclude",
        &cache_glob,
        "--tag",
        "daily",
        "--tag",
        "laptop",
    ]));
    assert_eq!(report["record"]["tags"], serde_json::json!(["daily", "laptop"]));
    let found = fixture.ok(&["find", "latest"]);
    assert_eq!(found, "/\n/keep.tmp.txt\n/src\n/src/main.rs\n", "{found}");

    // A file system mounted inside the source: kept as an empty directory
    // with --one-file-system, backed up without it (needs root to mount).
    let mount = source.join("src/mnt");
    let Some(_disk) = crate::util::SmallDisk::mount(mount.clone(), "1m") else {
        eprintln!(
            "excludes_tags_and_one_file_system: cannot mount a tmpfs here (not root); --one-file-system not checked"
        );
        return;
    };
    fs::write(mount.join("on-another-fs"), b"elsewhere").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap(), "--one-file-system", "--name", "xdev"]);
    assert_eq!(fixture.ok(&["find", "xdev", "src/mnt"]), "/src/mnt\n");
    fixture.ok(&["backup", source.to_str().unwrap(), "--name", "all"]);
    assert_eq!(fixture.ok(&["find", "all", "src/mnt"]), "/src/mnt\n/src/mnt/on-another-fs\n");
}

#[test]
fn forget_keeps_what_the_policy_says_and_the_rest_still_restores() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(&source).unwrap();
    for version in 1..=5u64 {
        fs::write(source.join(format!("v{version}")), text(20_000, version)).unwrap();
        let tag = if version == 2 { "release" } else { "daily" };
        fixture.ok(&["backup", source.to_str().unwrap(), "--tag", tag]);
    }
    let error = fixture.fails(&["forget"]);
    assert!(error.contains("--keep-daily"), "{error}");

    let plan = json(&fixture.ok(&["--json", "forget", "--keep-last", "2", "--keep-tag", "release", "--dry-run"]));
    let kept: Vec<u64> = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["dataset"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, vec![2, 4, 5]);
    assert_eq!(json(&fixture.ok(&["--json", "datasets"])).as_array().unwrap().len(), 5, "a dry run forgot something");

    let table = fixture.ok(&["forget", "--keep-last", "2", "--keep-tag", "release"]);
    assert!(table.contains("tag release") && table.contains("removed"), "{table}");
    let left: Vec<u64> = json(&fixture.ok(&["--json", "datasets"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(left, vec![2, 4, 5]);
    fixture.ok(&["check", "--read-data"]);
    let target = fixture.path("restored");
    fixture.ok(&["restore", "2", "--to", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("v2")).unwrap(), text(20_000, 2));
    assert!(!target.join("v3").exists());
}

#[test]
fn forget_expired_drops_what_expired_and_keeps_the_reserve() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(&source).unwrap();
    let src = source.to_str().unwrap();
    for (version, expiry) in [(1u64, Some("0s")), (2, None), (3, Some("0s")), (4, Some("10y"))] {
        fs::write(source.join(format!("v{version}")), text(5_000, version)).unwrap();
        let mut args = vec!["backup", src];
        if let Some(span) = expiry {
            args.extend(["--expire-after", span]);
        }
        fixture.ok(&args);
    }
    let ids = |fixture: &Fixture| -> Vec<u64> {
        json(&fixture.ok(&["--json", "datasets"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_u64().unwrap())
            .collect()
    };
    // With a reserve of 3 the newest three stay whatever their expiry.
    fixture.ok(&["forget", "--expired", "--reserve", "3"]);
    assert_eq!(ids(&fixture), vec![2, 3, 4]);
    fixture.ok(&["forget", "--expired"]);
    assert_eq!(ids(&fixture), vec![2, 4]);
    let usage = fixture.run(&["forget", "--reserve", "1"]);
    assert_eq!(usage.status.code(), Some(2), "--reserve without --expired is a usage error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--expired"), "{usage:?}");
    fixture.ok(&["check"]);
}

/// A sparse file is backed up without reading its holes, as the same
/// chunks as a dense copy of its bytes: backing up the copy afterwards
/// adds no data, and the sparse one restores byte for byte.
#[test]
fn a_sparse_file_and_its_dense_copy_are_the_same_chunks() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    let (sparse_dir, dense_dir) = (fixture.path("sparse"), fixture.path("dense"));
    fs::create_dir(&sparse_dir).unwrap();
    fs::create_dir(&dense_dir).unwrap();
    let image = fs::File::create(sparse_dir.join("image")).unwrap();
    image.set_len(40 << 20).unwrap();
    for (i, at) in [3u64 << 20, (11 << 20) + 4096, 30 << 20].into_iter().enumerate() {
        std::os::unix::fs::FileExt::write_all_at(&image, &noise(300_000, 40 + i as u64), at).unwrap();
    }
    drop(image);
    let meta = fs::metadata(sparse_dir.join("image")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 4 << 20, "the file system made no holes");
    let bytes = fs::read(sparse_dir.join("image")).unwrap();
    fs::write(dense_dir.join("image"), &bytes).unwrap();

    fixture.ok(&["backup", sparse_dir.to_str().unwrap(), "--name", "sparse"]);
    let after_sparse = fixture.stored_bytes();
    fixture.ok(&["backup", dense_dir.to_str().unwrap(), "--name", "dense"]);
    let growth = fixture.stored_bytes() - after_sparse;
    assert!(growth < 64 << 10, "the dense copy added {growth} bytes");

    let target = fixture.path("restored");
    fixture.ok(&["restore", "sparse", "--to", target.to_str().unwrap()]);
    assert!(fs::read(target.join("image")).unwrap() == bytes, "the restored image differs");
    fixture.ok(&["check", "--read-data"]);
}

#[test]
fn a_restore_in_batches_of_a_few_entries_restores_the_same_tree() {
    // Batches of 1, 2 and 5 steps: directories are made in one batch and
    // end (getting their mode and times) in a later one, and hard links'
    // later names come in later batches than their first names.
    let fixture = Fixture::new();
    let source = fixture.path("source");
    build_every_kind(&source);
    fixture.ok(&["backup", source.to_str().unwrap(), "--name", "all-kinds"]);
    let mut expected = snapshot(&source);
    expected.remove(Path::new("special/socket"));
    let whole = json(&fixture.ok(&["--json", "restore", "all-kinds", "--to", "unused", "--dry-run"]));
    for batch in ["1", "2", "5"] {
        let target = fixture.path(&format!("restored-{batch}"));
        let args = ["--json", "restore", "all-kinds", "--to", target.to_str().unwrap(), "--batch", batch];
        let restore = json(&fixture.ok(&args));
        assert_eq!(restore["problems"].as_array().unwrap().len(), 0, "batch {batch}: {restore}");
        assert_eq!(restore["hardlinks"], 2, "batch {batch}: {restore}");
        assert_same(&expected, &snapshot(&target));
        let dry =
            json(&fixture.ok(&["--json", "restore", "all-kinds", "--to", "unused", "--dry-run", "--batch", batch]));
        assert_eq!(dry, whole, "a dry run in batches of {batch} counts the same");
    }

    // Several paths under shared ancestors, one step at a time: the
    // ancestors get their metadata at the end, and the second name of a
    // hard link is linked to the first.
    let deep = ["deep", &format!("00{}", "d".repeat(58)), &format!("01{}", "d".repeat(58))].join("/");
    let target = fixture.path("paths");
    let t = target.to_str().unwrap();
    fixture.ok(&["restore", "all-kinds", &deep, "hard/two", "other/three", "docs", "--to", t, "--batch", "1"]);
    let restored = snapshot(&target);
    for rel in [deep.as_str(), "deep", "hard", "other", "docs", "docs/empty-dir", "docs/readme.txt"] {
        let (want, got) = (&expected[Path::new(rel)], &restored[Path::new(rel)]);
        assert_eq!((want.mode, want.mtime_ns), (got.mode, got.mtime_ns), "{rel}");
    }
    let inode = |rel: &str| std::os::unix::fs::MetadataExt::ino(&fs::metadata(target.join(rel)).unwrap());
    assert_eq!(inode("hard/two"), inode("other/three"), "the later name is a link to the first");
}

/// Files are created with their own permission bits and get no `fchmod`
/// when they came out right, so the umask the restore runs under must
/// never decide a restored mode: under a umask that strips every bit, and
/// under none, each file comes back with exactly its mode (setuid and
/// setgid included, which are only set after the owner).
#[test]
fn restored_files_get_their_mode_whatever_the_umask() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    let modes = [0o777, 0o666, 0o644, 0o604, 0o444, 0o400, 0o000, 0o4755, 0o2750, 0o1777];
    for (n, mode) in modes.iter().enumerate() {
        let path = source.join(format!("{mode:o}"));
        fs::write(&path, text(100 + n * 1000, n as u64)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    fixture.ok(&["backup", source.to_str().unwrap(), "--name", "modes"]);
    let expected = snapshot(&source);
    for umask in ["0777", "0022", "0000"] {
        let target = fixture.path(&format!("restored-{umask}"));
        let restore = fixture.command(&["restore", "modes", "--to", target.to_str().unwrap()]);
        let mut under_umask = std::process::Command::new("sh");
        under_umask.args(["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")]);
        under_umask.arg(restore.get_program()).args(restore.get_args()).env_remove("CAIRN_STORE");
        crate::util::succeed(under_umask);
        for mode in modes {
            let got = fs::symlink_metadata(target.join(format!("{mode:o}"))).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "umask {umask}: a file of mode {mode:o} came back {got:o}");
        }
        assert_same(&expected, &snapshot(&target));
    }
}
