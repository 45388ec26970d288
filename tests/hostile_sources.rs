//! Backup sources that other users control (issue 15): files swapped
//! between `lstat` and open, trees thousands of levels deep, and times
//! outside what an entry's i64 ns can hold. A backup running as root must
//! neither hang, nor fill the store, nor crash, nor record a time that is
//! not the file's.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use cairn_store::content::ContentReader;
use cairn_store::dataset::EntryKind;
use cairn_store::{OpenMode, Store};

use crate::fstree::is_root;
use crate::util::{Fixture, SmallDisk, noise};

/// How long a backup of a few small files may take before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

/// Runs `cairn backup SOURCE`, paused at `point` (`CAIRN_FAULT=pause:...`)
/// for the file called `victim`: `backup:before-open` after it has
/// `lstat`ed it and before it opens it, `backup:before-lstat` before the
/// `lstat`. `swap` runs in that window. A backup that has not ended `HUNG`
/// after the swap is killed and the test fails.
fn backup_swapping(fixture: &Fixture, source: &Path, point: &str, swap: impl FnOnce()) -> Output {
    let marker = fixture.path("paused");
    let (out, err) = (fixture.path("backup.out"), fixture.path("backup.err"));
    let mut command = fixture.command(&["backup", source.to_str().unwrap()]);
    command.env("CAIRN_FAULT", format!("pause:{point}:victim:{}", marker.display()));
    command.stdout(Stdio::from(fs::File::create(&out).unwrap()));
    command.stderr(Stdio::from(fs::File::create(&err).unwrap()));
    let mut child = command.spawn().unwrap();
    let output = |child: &mut std::process::Child| Output {
        status: child.wait().unwrap(),
        stdout: fs::read(&out).unwrap(),
        stderr: fs::read(&err).unwrap(),
    };

    let deadline = Instant::now() + HUNG;
    while !marker.exists() {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let output = output(&mut child);
            panic!("the backup never paused before opening a file: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    swap();
    fs::remove_file(&marker).unwrap();

    let deadline = Instant::now() + HUNG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = output(&mut child);
            panic!(
                "the backup hung after the file was swapped (killed after {HUNG:?}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output(&mut child)
}

/// A source with a small file to keep and `victim`, `victim_len` bytes.
fn source_with_victim(fixture: &Fixture, victim_len: usize) -> (PathBuf, PathBuf) {
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("keep.txt"), b"kept").unwrap();
    let victim = source.join("victim");
    fs::write(&victim, noise(victim_len, 7)).unwrap();
    (source, victim)
}

/// The swapped file is named, the backup exits 3 (partial), and the
/// dataset holds the rest.
fn assert_left_out(fixture: &Fixture, output: &Output, now: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("victim") && stderr.contains("replaced after it was listed"), "{stderr}");
    assert!(stderr.contains(now), "{stderr}");
    assert_eq!(fixture.ok(&["find", "latest", "--type", "f"]), "/keep.txt\n");
    fixture.ok(&["check"]);
}

/// A file swapped for a fifo between lstat and open: opening it for reading
/// used to block until a writer came, which hung the backup forever.
#[test]
fn a_file_swapped_for_a_fifo_is_left_out_without_hanging() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 1000);
    let output = backup_swapping(&fixture, &source, "backup:before-open", || {
        fs::remove_file(&victim).unwrap();
        nix::unistd::mkfifo(&victim, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    });
    assert_left_out(&fixture, &output, "not a regular file");
}

/// A file swapped for a symlink to `/dev/zero`: following it read zeros
/// without end (a file above 4 MiB had no bound on what was read; with
/// `/dev/urandom` the store grew until the disk was full).
#[test]
fn a_file_swapped_for_a_symlink_to_dev_zero_is_left_out_unread() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 5 << 20);
    let output = backup_swapping(&fixture, &source, "backup:before-open", || {
        fs::remove_file(&victim).unwrap();
        symlink("/dev/zero", &victim).unwrap();
    });
    assert_left_out(&fixture, &output, "a symlink");
    assert!(fixture.stored_bytes() < 1 << 20, "{} bytes stored", fixture.stored_bytes());
}

/// A file swapped for another regular file (a hard link to someone else's
/// file, say): not the inode that was listed, so it is not read.
#[test]
fn a_file_swapped_for_another_file_is_left_out() {
    let fixture = Fixture::new();
    let (source, victim) = source_with_victim(&fixture, 1000);
    let elsewhere = fixture.path("secret");
    fs::write(&elsewhere, noise(1000, 8)).unwrap();
    let output = backup_swapping(&fixture, &source, "backup:before-open", || {
        fs::remove_file(&victim).unwrap();
        fs::hard_link(&elsewhere, &victim).unwrap();
    });
    assert_left_out(&fixture, &output, "another file");
}

/// A directory swapped for a symlink after it was listed, before the walk
/// reaches the file in it: following it stored a file the swapper may not
/// read (here `secret`) under the swapper's path.
#[test]
fn a_directory_swapped_for_a_symlink_does_not_lead_the_walk_elsewhere() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("keep.txt"), b"kept").unwrap();
    fs::write(source.join("sub/victim"), b"the swapper's own file").unwrap();
    let elsewhere = fixture.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("victim"), b"secret").unwrap();
    let output = backup_swapping(&fixture, &source, "backup:before-lstat", || {
        fs::rename(source.join("sub"), source.join("moved")).unwrap();
        symlink(&elsewhere, source.join("sub")).unwrap();
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sub/victim") && stderr.contains("under one"), "{stderr}");
    assert_eq!(fixture.ok(&["find", "latest", "--type", "f"]), "/keep.txt\n");
}

/// Levels of the deep tree: 2,000 one-letter directories make a 4,000-byte
/// path, under PATH_MAX (4,096) with the fixture's short prefix.
const DEPTH: usize = 2000;

/// Makes `root/a/a/.../a` (`DEPTH` levels) with a file at the bottom and
/// one at the top; returns the bottom directory. A chain of directories
/// with one entry each is the worst case for a recursive walk: rayon runs
/// a one-item parallel iterator on the calling thread, so each level was a
/// few frames more on one stack (it overflowed at this depth).
fn deep_tree(root: &Path) -> PathBuf {
    let mut dir = root.to_path_buf();
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("top"), b"the top of the tree").unwrap();
    for _ in 0..DEPTH {
        dir.push("a");
        fs::create_dir(&dir).unwrap();
    }
    fs::write(dir.join("bottom"), b"the bottom of the tree").unwrap();
    dir
}

/// The path inside a dataset of the bottom directory.
fn deep_path() -> String {
    vec!["a"; DEPTH].join("/")
}

/// Runs `body` on a thread with a large stack: the test's own helpers
/// (and `remove_dir_all` when the fixture is dropped) recurse per level.
fn with_big_stack(body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 << 20).spawn(body).unwrap().join().unwrap();
}

/// The backup side of a 2,000-level tree: the walk used to recurse on
/// rayon's 2 MiB stacks and overflowed them. Verified through the library's
/// trees (no restore, ls or find, which walk by themselves).
#[test]
fn a_tree_2000_levels_deep_backs_up_and_checks() {
    with_big_stack(|| {
        let fixture = Fixture::new();
        let source = fixture.path("s");
        deep_tree(&source);
        fixture.ok(&["backup", source.to_str().unwrap()]);
        fixture.ok(&["check", "--read-data"]);

        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        let dataset = store.dataset("latest").unwrap();
        assert_eq!((dataset.dirs, dataset.files, dataset.skipped), (DEPTH as u64, 2, 0));
        let mut tree = store.tree(dataset.root).unwrap();
        for level in 0..DEPTH {
            let names: Vec<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
            let want: &[&[u8]] = if level == 0 { &[b"a", b"top"] } else { &[b"a"] };
            assert_eq!(names, want, "level {level}");
            let a = tree.get(b"a").unwrap();
            assert_eq!(a.kind, EntryKind::Dir);
            tree = store.tree(a.blob.unwrap()).unwrap();
        }
        let bottom = tree.get(b"bottom").expect("the bottom file");
        let mut reader = ContentReader::new(&store, bottom.blob.unwrap()).unwrap();
        let mut content = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            content.extend(store.read_blob(&chunk.id).unwrap());
        }
        assert_eq!(content, b"the bottom of the tree");
    });
}

/// The rest of the 2,000-level tree: restore, `ls`, `find` and `diff`
/// walk the dataset trees themselves (restore.rs, browse.rs), so this
/// passes once they are iterative too.
#[test]
fn a_tree_2000_levels_deep_restores_lists_and_diffs() {
    with_big_stack(|| {
        let fixture = Fixture::new();
        let source = fixture.path("s");
        let bottom = deep_tree(&source);
        fixture.ok(&["backup", source.to_str().unwrap()]);
        fs::write(bottom.join("bottom"), b"changed at the bottom").unwrap();
        fixture.ok(&["backup", source.to_str().unwrap()]);

        let target = fixture.path("r");
        fixture.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
        same_deep_tree(&source, &target);

        let deep = deep_path();
        assert_eq!(fixture.ok(&["ls", "latest", &deep]), "bottom\n");
        let found = fixture.ok(&["find", "latest", "--type", "f"]);
        let mut found: Vec<&str> = found.lines().collect();
        found.sort();
        assert_eq!(found, [format!("/{deep}/bottom"), "/top".to_string()]);
        assert_eq!(fixture.ok(&["find", "latest", "--type", "d"]).lines().count(), DEPTH + 1);
        let diff = fixture.ok(&["diff", "latest~1", "latest"]);
        assert!(diff.contains(&format!("M /{deep}/bottom")), "{}", &diff[diff.len().saturating_sub(300)..]);
    });
}

/// Compares two trees by walking them with a stack (not recursion): names,
/// kinds, modes, file contents and mtimes.
fn same_deep_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(rel) = stack.pop() {
        seen += 1;
        let (ma, mb) = (fs::symlink_metadata(a.join(&rel)).unwrap(), fs::symlink_metadata(b.join(&rel)).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        assert_eq!(ma.mode(), mb.mode(), "{}", rel.display());
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "{}", rel.display());
        if ma.is_file() {
            assert_eq!(fs::read(a.join(&rel)).unwrap(), fs::read(b.join(&rel)).unwrap(), "{}", rel.display());
        } else if ma.is_dir() {
            let names = |root: &Path| {
                let mut names: Vec<_> =
                    fs::read_dir(root.join(&rel)).unwrap().map(|e| e.unwrap().file_name()).collect();
                names.sort();
                names
            };
            let (na, nb) = (names(a), names(b));
            assert_eq!(na, nb, "{}", rel.display());
            stack.extend(na.into_iter().map(|n| rel.join(n)));
        }
    }
    assert_eq!(seen, DEPTH + 3, "the root, {DEPTH} directories and two files");
}

/// 2300-01-01 and 1600-01-01 UTC, and the last and first ns an i64 holds.
const Y2300: (i64, i64) = (10_413_792_000, 0);
const Y1600: (i64, i64) = (-11_676_096_000, 0);
const LAST_NS: (i64, i64) = (9_223_372_036, 854_775_807);
const FIRST_NS: (i64, i64) = (-9_223_372_037, 145_224_192);

/// Sets a file's (atime, mtime) and returns what the file system kept:
/// ext4 keeps 1901 to 2446 and clamps the rest; tmpfs keeps all of these.
fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> ((i64, i64), (i64, i64)) {
    use std::os::unix::fs::MetadataExt;
    let spec = |(s, ns): (i64, i64)| TimeSpec::new(s, ns);
    utimensat(nix::fcntl::AT_FDCWD, path, &spec(atime), &spec(mtime), UtimensatFlags::NoFollowSymlink).unwrap();
    let m = fs::symlink_metadata(path).unwrap();
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

fn fits_i64_ns((s, ns): (i64, i64)) -> bool {
    i64::try_from(i128::from(s) * 1_000_000_000 + i128::from(ns)).is_ok()
}

/// Files whose times an entry's i64 ns cannot hold (after 2262-04-11 or
/// before 1677-09-21) are refused by name, never stored with another time
/// (the old arithmetic panicked in debug builds and wrapped in release);
/// the last and first times it can hold come back exactly. On a tmpfs when
/// this process may mount one (ext4 clamps 1600 to 1901).
#[test]
fn times_outside_i64_ns_are_refused_by_name_and_the_edges_restore_exactly() {
    let fixture = Fixture::new();
    let disk = if is_root() { SmallDisk::mount(fixture.path("tmpfs"), "16m") } else { None };
    let base = disk.as_ref().map_or_else(|| fixture.path("plain"), |d| d.path.clone());
    let source = base.join("source");
    fs::create_dir_all(&source).unwrap();
    let now = (1_700_000_000, 123_456_789);
    let mut cases = Vec::new();
    for (name, atime, mtime) in [
        ("future", now, Y2300),
        ("past", now, Y1600),
        ("accessed-in-2300", Y2300, now),
        ("last-ns", LAST_NS, LAST_NS),
        ("first-ns", FIRST_NS, FIRST_NS),
        ("ordinary", now, now),
    ] {
        let path = source.join(name);
        fs::write(&path, name).unwrap();
        let kept = set_times(&path, atime, mtime);
        cases.push((name, kept, fits_i64_ns(kept.0) && fits_i64_ns(kept.1)));
    }
    let refused: Vec<&str> = cases.iter().filter(|c| !c.2).map(|c| c.0).collect();
    assert!(refused.contains(&"future"), "2300 fits every file system these tests run on: {cases:?}");

    let output = fixture.run(&["backup", source.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    for name in &refused {
        let line = stderr.lines().find(|l| l.contains(&format!("/{name}:"))).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("outside the range cairn records"), "{line}");
    }
    assert!(stderr.contains("2300-01-01 00:00:00"), "{stderr}");

    let target = base.join("restored");
    fixture.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    for (name, kept, fits) in &cases {
        let path = target.join(name);
        if !fits {
            assert!(!path.exists(), "{name} was stored with a time it does not have");
            continue;
        }
        let restored = fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        let times = ((restored.atime(), restored.atime_nsec()), (restored.mtime(), restored.mtime_nsec()));
        // What the file system keeps of the same times (all of them on tmpfs).
        let probe = base.join(format!("probe-{name}"));
        fs::write(&probe, b"").unwrap();
        assert_eq!(times, set_times(&probe, kept.0, kept.1), "{name}");
        assert_eq!(fs::read(&path).unwrap(), name.as_bytes());
    }
}
