//! A restore over a target that other users can change while it runs, and
//! of datasets that someone crafted: nothing outside the target changes,
//! one bad entry costs only itself, and a crafted length or depth is
//! refused before it costs disk or memory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_store::content::{ContentEntry, ContentReader, Piece};
use cairn_store::dataset::{Entry, EntryKind, Tree};
use cairn_store::{BlobKind, OpenMode, Store};

use crate::dataset_errors::{commit_crafted, commit_crafted_with};
use crate::fstree::is_root;
use crate::util::{Fixture, SmallDisk, command_on, flip_byte_in_blob, noise};

/// Starts `cairn ARGS` and returns once it waits at pause point `point`,
/// with the file to remove to let it go on.
fn start_paused(fixture: &Fixture, args: &[&str], point: &str) -> (Child, PathBuf) {
    let marker = fixture.path("paused");
    let mut child = fixture
        .command(args)
        .env("CAIRN_FAULT", format!("pause:{point}:{}", marker.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cairn {args:?} ended ({status}) before pausing at {point}: {:?}", child.wait_with_output());
        }
        assert!(Instant::now() < deadline, "cairn {args:?} never paused at {point}");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, marker)
}

fn resume(child: Child, marker: &Path) -> Output {
    fs::remove_file(marker).unwrap();
    child.wait_with_output().unwrap()
}

/// A source with a directory `docs` (mode 0755) that the tests swap.
fn docs_tree(fixture: &Fixture) -> PathBuf {
    let source = fixture.path("source");
    fs::create_dir_all(source.join("docs/inner")).unwrap();
    fs::write(source.join("docs/a.txt"), b"alpha").unwrap();
    fs::write(source.join("docs/inner/b.txt"), b"beta").unwrap();
    fs::write(source.join("z.txt"), b"zed").unwrap();
    fs::set_permissions(source.join("docs"), fs::Permissions::from_mode(0o755)).unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    source
}

/// A directory outside the target that a swapped-in symlink points at.
fn outside(fixture: &Fixture) -> PathBuf {
    let outside = fixture.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"mine").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o710)).unwrap();
    outside
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// A user who swaps a restored directory for a symlink while files are
/// being written cannot make the restore write there; and directories are
/// private (0700) until the restore puts their own mode on last.
#[test]
fn a_directory_swapped_for_a_symlink_mid_restore_redirects_nothing() {
    let fixture = Fixture::new();
    docs_tree(&fixture);
    let outside = outside(&fixture);
    let before = fs::metadata(&outside).unwrap();
    let target = fixture.path("target");
    let (child, marker) =
        start_paused(&fixture, &["restore", "latest", "--to", target.to_str().unwrap()], "restore:dirs-made");
    let docs = target.join("docs");
    assert_eq!(fs::metadata(&docs).unwrap().mode() & 0o777, 0o700, "a directory was readable during the restore");
    assert_eq!(fs::metadata(docs.join("inner")).unwrap().mode() & 0o777, 0o700);
    fs::rename(&docs, target.join("moved")).unwrap();
    symlink(&outside, &docs).unwrap();
    let output = resume(child, &marker);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(listing(&outside), ["keep"], "the restore wrote through the swapped-in symlink: {stderr}");
    let after = fs::metadata(&outside).unwrap();
    assert_eq!((after.mode(), after.uid(), after.mtime()), (before.mode(), before.uid(), before.mtime()));
    assert!(stderr.contains("docs/a.txt") && stderr.contains("not restored"), "{stderr}");
    assert!(!stderr.contains("WARN"), "problems print as cairn's own lines, not log lines: {stderr}");
    assert_eq!(fs::read(target.join("z.txt")).unwrap(), b"zed");
}

/// A swap after the files are written, just before directory metadata is
/// put back, cannot redirect the chmod, chown or utimes.
#[test]
fn a_directory_swapped_before_its_metadata_is_set_changes_nothing_outside() {
    let fixture = Fixture::new();
    let source = docs_tree(&fixture);
    let outside = outside(&fixture);
    let before = fs::metadata(&outside).unwrap();
    let target = fixture.path("target");
    let (child, marker) =
        start_paused(&fixture, &["restore", "latest", "--to", target.to_str().unwrap()], "restore:files-written");
    fs::rename(target.join("docs"), target.join("moved")).unwrap();
    symlink(&outside, target.join("docs")).unwrap();
    let output = resume(child, &marker);

    let stderr = String::from_utf8_lossy(&output.stderr);
    let after = fs::metadata(&outside).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o710, "the restore chmodded through a symlink: {stderr}");
    assert_eq!((after.uid(), after.gid(), after.mtime()), (before.uid(), before.gid(), before.mtime()));
    assert_eq!(listing(&outside), ["keep"]);
    assert_eq!(output.status.code(), Some(3), "the directory whose metadata was not set is listed: {stderr}");
    assert!(stderr.contains("docs"), "{stderr}");
    // What was restored before the swap is whole.
    assert_eq!(fs::read(target.join("moved/a.txt")).unwrap(), fs::read(source.join("docs/a.txt")).unwrap());
}

fn hardlinked_source(fixture: &Fixture) -> PathBuf {
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("h1"), noise(100_000, 7)).unwrap();
    fs::hard_link(source.join("h1"), source.join("h2")).unwrap();
    fs::hard_link(source.join("h1"), source.join("h3")).unwrap();
    fs::write(source.join("plain.txt"), b"plain").unwrap();
    symlink("h1", source.join("zz-link")).unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    source
}

/// A hard-link group whose first name is damaged: every name of it is
/// listed, and the rest of the restore goes on.
#[test]
fn a_damaged_first_link_costs_its_group_and_nothing_else() {
    let fixture = Fixture::new();
    hardlinked_source(&fixture);
    {
        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        let entry = store.lookup(&store.dataset("latest").unwrap(), "h1").unwrap();
        let chunk = ContentReader::new(&store, entry.blob.unwrap()).unwrap().next_batch(1).unwrap()[0];
        flip_byte_in_blob(&store, chunk.id);
    }
    let target = fixture.path("target");
    let output = fixture.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "damage is an error: {stderr}");
    for name in ["h1", "h2", "h3"] {
        assert!(stderr.contains(&format!("target/{name}: not restored")), "{name} is not listed: {stderr}");
        assert!(!target.join(name).exists(), "{name}: a damaged file was left behind");
    }
    assert_eq!(fs::read(target.join("plain.txt")).unwrap(), b"plain");
    assert_eq!(fs::read_link(target.join("zz-link")).unwrap(), Path::new("h1"), "the restore stopped at the links");
}

/// Under `--overwrite never`, a group whose first name exists already is
/// not linked to that unrelated file: its next name gets the content.
#[test]
fn overwrite_never_never_links_to_a_file_it_left_alone() {
    let fixture = Fixture::new();
    let source = hardlinked_source(&fixture);
    let target = fixture.path("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("h1"), b"unrelated").unwrap();
    let output = fixture.run(&["restore", "latest", "--to", target.to_str().unwrap(), "--overwrite", "never"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(fs::read(target.join("h1")).unwrap(), b"unrelated");
    let content = fs::read(source.join("h1")).unwrap();
    assert_eq!(fs::read(target.join("h2")).unwrap(), content, "h2 was linked to the file left alone");
    let (h1, h2, h3) = (
        fs::metadata(target.join("h1")).unwrap(),
        fs::metadata(target.join("h2")).unwrap(),
        fs::metadata(target.join("h3")).unwrap(),
    );
    assert_ne!(h1.ino(), h2.ino());
    assert_eq!(h2.ino(), h3.ino(), "the rest of the group links to its stand-in");
}

/// The tree entries of the latest dataset, for crafting a new one.
fn latest_entries(store: &Store) -> Vec<Entry> {
    let record = store.dataset("latest").unwrap();
    store.tree(record.root).unwrap().entries
}

/// A symlink whose target holds a NUL cannot be made: it is listed, and
/// everything after it is restored.
#[test]
fn an_entry_the_file_system_refuses_costs_only_itself() {
    let fixture = Fixture::new();
    hardlinked_source(&fixture);
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let mut entries = latest_entries(&store);
    let plain = entries.iter().find(|e| e.name == b"plain.txt").unwrap().clone();
    let link = |name: &[u8], target: &[u8]| Entry {
        name: name.to_vec(),
        kind: EntryKind::Symlink,
        target: target.to_vec(),
        size: target.len() as u64,
        blob: None,
        links: 1,
        ..plain.clone()
    };
    entries.push(link(b"a-bad", b"x\0y"));
    entries.push(link(b"b-good", b"plain.txt"));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    commit_crafted(&store, &Tree { entries });
    drop(store);
    let target = fixture.path("target");
    let output = fixture.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("a-bad: not restored"), "{stderr}");
    assert_eq!(fs::read_link(target.join("b-good")).unwrap(), Path::new("plain.txt"));
    assert_eq!(fs::read(target.join("zz-link")).unwrap(), fs::read(target.join("h1")).unwrap());
}

/// Root restores owners, xattrs, devices and setuid bits by default, as tar
/// does; `--no-owner`, `--no-xattrs` and `--no-special` leave them out.
#[test]
fn root_can_leave_out_owners_xattrs_and_special_files() {
    if !is_root() {
        eprintln!("root_can_leave_out_owners_xattrs_and_special_files: needs root; not run");
        return;
    }
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    let tool = source.join("tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    nix::unistd::chown(&tool, Some(1234.into()), Some(1234.into())).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    xattr::set(&tool, "user.note", b"kept").unwrap();
    nix::sys::stat::mknod(
        &source.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);

    let faithful = fixture.path("faithful");
    fixture.ok(&["restore", "latest", "--to", faithful.to_str().unwrap()]);
    let m = fs::metadata(faithful.join("tool")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o4755));
    assert_eq!(xattr::get(faithful.join("tool"), "user.note").unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(fs::symlink_metadata(faithful.join("null")).unwrap().rdev(), nix::sys::stat::makedev(1, 3));

    let plain = fixture.path("plain");
    let out = fixture.ok(&[
        "restore",
        "latest",
        "--to",
        plain.to_str().unwrap(),
        "--no-owner",
        "--no-xattrs",
        "--no-special",
    ]);
    assert!(out.contains("1 device nodes left out"), "{out}");
    let m = fs::metadata(plain.join("tool")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    assert_eq!(xattr::get(plain.join("tool"), "user.note").unwrap(), None);
    assert!(fs::symlink_metadata(plain.join("null")).is_err(), "--no-special made a device");
}

/// A content list that names one chunk a million times, for a file whose
/// entry says 10 bytes: the restore refuses it before writing (on a disk
/// far smaller than the 64 MiB the list claims), and restores the rest.
#[test]
fn a_content_bomb_is_refused_before_it_is_written() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("chunk"), [7u8; 64]).unwrap();
    fs::write(source.join("other.txt"), b"other").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let mut entries = latest_entries(&store);
    let chunk = entries.iter().find(|e| e.name == b"chunk").unwrap().clone();
    commit_crafted_with(&store, |session| {
        let level0 = Piece { level: 0, entries: vec![ContentEntry { id: chunk.blob.unwrap(), len: 64 }; 1024] };
        let level0_id = session.write_metadata(BlobKind::ContentList, level0.encode(), level0.children()).unwrap();
        let level1 = Piece { level: 1, entries: vec![ContentEntry { id: level0_id, len: 64 * 1024 }; 1024] };
        let bomb = session.write_metadata(BlobKind::ContentList, level1.encode(), level1.children()).unwrap();
        entries.push(Entry { name: b"bomb".to_vec(), size: 10, blob: Some(bomb), ..chunk.clone() });
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Tree { entries }
    });
    drop(store);

    let Some(disk) = SmallDisk::mount(fixture.path("disk"), "8m") else {
        eprintln!("a_content_bomb_is_refused_before_it_is_written: cannot mount a tmpfs here (not root); not run");
        return;
    };
    let target = disk.path.join("target");
    let output = fixture.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bomb") && stderr.contains("record says 10"), "{stderr}");
    assert!(!target.join("bomb").exists());
    assert_eq!(fs::read(target.join("other.txt")).unwrap(), b"other");
    let cat = fixture.command(&["cat", "latest", "bomb"]).output().unwrap();
    assert!(!cat.status.success() && cat.stdout.len() <= 10, "cat wrote {} bytes", cat.stdout.len());
}

/// A crafted chain of directories deeper than any real path is refused by
/// name before anything is written, with no stack overflow.
#[test]
fn a_tree_nested_deeper_than_any_real_path_is_refused() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("f"), b"f").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let template = store.dataset("latest").unwrap().root_entry();
    commit_crafted_with(&store, |session| {
        let mut tree = Tree { entries: Vec::new() };
        for _ in 0..5000 {
            let id = session.write_metadata(BlobKind::Tree, tree.encode(), tree.children()).unwrap();
            let dir = Entry { name: b"d".to_vec(), kind: EntryKind::Dir, blob: Some(id), ..template.clone() };
            tree = Tree { entries: vec![dir] };
        }
        tree
    });
    drop(store);
    let target = fixture.path("target");
    let output =
        command_on(&fixture.store(), &["restore", "latest", "--to", target.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nest more than 4096 deep"), "{stderr}");
    assert!(!target.exists(), "a refused restore wrote something");
}

/// Nothing authenticates what a bucket holds until encryption exists:
/// root restoring owners from a `--remote` store is warned, and
/// `--no-owner` is what the warning suggests.
#[test]
fn root_is_warned_when_a_remote_chooses_owners() {
    if !is_root() {
        eprintln!("root_is_warned_when_a_remote_chooses_owners: needs root; not run");
        return;
    }
    let fixture = Fixture::new();
    docs_tree(&fixture);
    let server = pushed_to_a_new_remote(&fixture);
    let warned = restore_from_remote(&fixture, &server, "owners", &[]);
    assert!(warned.contains("warning: restoring owners as root") && warned.contains("--no-owner"), "{warned}");
    let quiet = restore_from_remote(&fixture, &server, "mine", &["--no-owner"]);
    assert!(!quiet.contains("warning"), "{quiet}");
}

/// An S3 server holding a copy of `fixture`'s store.
fn pushed_to_a_new_remote(fixture: &Fixture) -> crate::s3::S3Server {
    let server = crate::s3::S3Server::start(&fixture.path("s3"));
    crate::remote::add_remote(&fixture.store(), &server, &[]);
    crate::remote::push(&fixture.store(), &server);
    server
}

/// Restores the latest dataset straight from `server` into `to` (under
/// the fixture) with `extra` arguments; insists that it succeeds, and
/// returns what it printed on stderr.
fn restore_from_remote(fixture: &Fixture, server: &crate::s3::S3Server, to: &str, extra: &[&str]) -> String {
    let to = fixture.path(to);
    let url = crate::remote::url();
    let mut args = vec!["--remote", &url, "restore", "latest", "--to", to.to_str().unwrap()];
    args.extend(extra);
    let output = crate::remote::cairn(&fixture.path("no-store"), server, &args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

/// A root restore from a remote counts what it would take on trust over
/// the whole walk before writing anything, even when the walk comes in
/// batches and what it counts lies past the first.
#[test]
fn root_is_warned_of_privileged_xattrs_past_the_first_batch() {
    if !is_root() {
        eprintln!("root_is_warned_of_privileged_xattrs_past_the_first_batch: needs root; not run");
        return;
    }
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("a")).unwrap();
    fs::create_dir_all(source.join("z")).unwrap();
    for name in ["a/1", "a/2", "a/3", "z/1", "z/2"] {
        fs::write(source.join(name), name).unwrap();
    }
    // Last in the walk: far past a first batch of two steps.
    xattr::set(source.join("z/1"), "trusted.cairn-test", b"one").unwrap();
    xattr::set(source.join("z/2"), "trusted.cairn-test", b"two").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let server = pushed_to_a_new_remote(&fixture);
    for batch in ["2", "65536"] {
        let to = format!("restored-{batch}");
        let stderr = restore_from_remote(&fixture, &server, &to, &["--batch", batch]);
        assert!(stderr.contains("restoring 2 security.* or trusted.* xattrs as root"), "batch {batch}: {stderr}");
        let restored = xattr::get(fixture.path(&to).join("z/2"), "trusted.cairn-test").unwrap();
        assert_eq!(restored.as_deref(), Some(&b"two"[..]));
    }
}
