//! Bad input for backup and restore: each gets a clear message and a
//! non-zero exit, and earlier datasets stay intact.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use cairn_store::content::ContentReader;
use cairn_store::dataset::record::{DatasetRecord, next_id, put_record};
use cairn_store::dataset::{Entry, EntryKind, Tree};
use cairn_store::{BlobKind, OpenMode, Store, WriteSession};

use crate::fstree::is_root;
use crate::util::{Fixture, SmallDisk, command_on, flip_byte_in_blob, noise, succeed, text};

fn small_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("a.txt"), text(50_000, seed)).unwrap();
    fs::write(root.join("sub/b.bin"), noise(300_000, seed)).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff").arg("-r").arg(a).arg(b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_missing_source_is_named_and_creates_nothing() {
    let fixture = Fixture::new();
    let error = fixture.fails(&["backup", "/nonexistent/source"]);
    assert!(error.contains("/nonexistent/source") && error.contains("check the path"), "{error}");
    assert!(!fixture.store().exists(), "a failed backup created the store");
}

/// An unreadable file is skipped and reported; the backup commits the
/// rest and exits 3. As root, the binary runs as `nobody` (root reads everything).
#[test]
fn unreadable_files_make_a_partial_backup_with_exit_code_3() {
    let fixture = Fixture::new();
    fs::set_permissions(fixture.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let source = fixture.path("source");
    small_tree(&source, 1);
    let secret = source.join("sub/secret");
    fs::write(&secret, b"not for you").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let locked = source.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("inside"), b"hidden").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();

    let mut command = command_on(&fixture.store(), &["backup", source.to_str().unwrap()]);
    if is_root() {
        // The store and the readable files belong to nobody; the secrets to root.
        for path in [
            &fixture.dir.path().to_path_buf(),
            &source,
            &source.join("sub"),
            &source.join("a.txt"),
            &source.join("sub/b.bin"),
        ] {
            nix::unistd::chown(path.as_path(), Some(65534.into()), Some(65534.into())).unwrap();
        }
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        command = std::process::Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(program).args(args);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sub/secret") && stderr.contains("ermission denied"), "{stderr}");
    assert!(stderr.contains("partial") && stderr.contains("2 entries"), "{stderr}");

    // Everything else is in the dataset.
    let listing = fixture.ok(&["find", "latest", "--type", "f"]);
    assert_eq!(listing, "/a.txt\n/sub/b.bin\n");
    let target = fixture.path("restored");
    fixture.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("sub/b.bin")).unwrap(), fs::read(source.join("sub/b.bin")).unwrap());
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Flips a byte in the stored bytes of the first chunk of `path` in the
/// latest dataset; returns (container, blob) as messages print them.
fn corrupt_file(fixture: &Fixture, path: &str) -> (String, String) {
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let dataset = store.dataset("latest").unwrap();
    let entry = store.lookup(&dataset, path).unwrap();
    let mut reader = ContentReader::new(&store, entry.blob.unwrap()).unwrap();
    let chunk = reader.next_batch(1).unwrap()[0];
    flip_byte_in_blob(&store, chunk.id)
}

#[test]
fn a_corrupt_container_fails_only_what_needs_it() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    small_tree(&source, 1);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let v1 = fixture.path("v1");
    fixture.ok(&["restore", "1", "--to", v1.to_str().unwrap()]);
    fs::write(source.join("added.bin"), noise(500_000, 9)).unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let (container, blob) = corrupt_file(&fixture, "added.bin");

    let target = fixture.path("target");
    let error = fixture.fails(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert!(error.contains(&container) && error.contains(&blob), "{error}");
    assert!(error.contains("added.bin") && error.contains("cairn check"), "{error}");
    assert!(!target.join("added.bin").exists(), "a partial file was left behind");
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), fs::read(source.join("a.txt")).unwrap());
    let error = fixture.fails(&["cat", "latest", "added.bin"]);
    assert!(error.contains(&blob), "{error}");

    // The first dataset does not use that blob and restores whole.
    let again = fixture.path("again");
    fixture.ok(&["restore", "1", "--to", again.to_str().unwrap()]);
    same_tree(&v1, &again);
}

/// A directory listing (tree blob) that does not read fails the restore
/// by container and blob, and only the paths under it are lost.
#[test]
fn a_corrupt_directory_listing_fails_the_restore_by_name_and_spares_its_siblings() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    for (n, dir) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        fs::create_dir_all(source.join(dir).join("inner")).unwrap();
        fs::write(source.join(dir).join("f"), text(2000, n as u64)).unwrap();
        fs::write(source.join(dir).join("inner/g"), text(3000, 10 + n as u64)).unwrap();
    }
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let (container, blob) = {
        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        let dataset = store.dataset("latest").unwrap();
        let listing = store.lookup(&dataset, "c").unwrap().blob.unwrap();
        flip_byte_in_blob(&store, listing)
    };
    let target = fixture.path("target");
    let error = fixture.fails(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert!(error.contains(&container) && error.contains(&blob) && error.contains("cairn check"), "{error}");
    // Only `c` is lost: the others restore one by one.
    for dir in ["a", "b", "d", "e"] {
        let one = fixture.path(&format!("only-{dir}"));
        fixture.ok(&["restore", "latest", dir, "--to", one.to_str().unwrap()]);
        same_tree(&source.join(dir), &one.join(dir));
    }
}

#[test]
fn a_full_disk_fails_the_backup_and_loses_nothing() {
    let fixture = Fixture::new();
    let Some(disk) = SmallDisk::mount(fixture.path("disk"), "24m") else {
        eprintln!("a_full_disk_fails_the_backup_and_loses_nothing: cannot mount a tmpfs here (not root); not run");
        return;
    };
    let store = disk.path.join("store");
    let source = fixture.path("source");
    small_tree(&source, 1);
    succeed(command_on(&store, &["backup", source.to_str().unwrap()]));
    let v1 = fixture.path("v1");
    succeed(command_on(&store, &["restore", "1", "--to", v1.to_str().unwrap()]));

    fs::write(source.join("huge.bin"), noise(64 << 20, 2)).unwrap();
    let output = command_on(&store, &["backup", source.to_str().unwrap()]).output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("disk is full") && error.contains("nothing committed was lost"), "{error}");

    let listed: serde_json::Value =
        serde_json::from_str(&succeed(command_on(&store, &["--json", "datasets"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "the failed backup left a dataset");
    succeed(command_on(&store, &["check", "--read-data"]));
    let again = fixture.path("again");
    succeed(command_on(&store, &["restore", "1", "--to", again.to_str().unwrap()]));
    same_tree(&v1, &again);
}

/// Commits a dataset whose top tree is `tree`, written as it is (the
/// library does not check trees it is given, so this is how a hostile
/// store would look).
pub fn commit_crafted(store: &Store, tree: &Tree) {
    commit_crafted_with(store, |_| tree.clone());
}

/// Commits a dataset whose top tree `build` makes, in the session that
/// writes it (so the blobs `build` writes are committed with it).
pub fn commit_crafted_with(store: &Store, build: impl FnOnce(&WriteSession) -> Tree) {
    let session = store.session().unwrap();
    let tree = build(&session);
    // Encoded by hand: `Tree::encode` refuses unsorted entries.
    let mut bytes = vec![1u8];
    bytes.extend(postcard::to_stdvec(&tree.entries).unwrap());
    let root = session.write_metadata(BlobKind::Tree, bytes, tree.children()).unwrap();
    let template = store.dataset("latest").unwrap();
    session
        .commit(|commit| {
            let record = DatasetRecord { id: next_id(commit)?, root, root_meta: None, tid: commit.tid(), ..template };
            put_record(commit, &record)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_crafted_manifest_cannot_write_outside_the_target() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    small_tree(&source, 1);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let good = store.lookup(&store.dataset("1").unwrap(), "a.txt").unwrap();
    for name in [&b"../escaped"[..], b"/tmp/escaped", b"..", b"a/../../escaped", b""] {
        commit_crafted(&store, &Tree { entries: vec![Entry { name: name.to_vec(), ..good.clone() }] });
    }
    // Two entries with one name (a directory, then a symlink) would let a
    // symlink redirect the directory's files.
    let dir = store.lookup(&store.dataset("1").unwrap(), "sub").unwrap();
    let link = Entry { kind: EntryKind::Symlink, target: b"/tmp".to_vec(), blob: None, ..dir.clone() };
    commit_crafted(&store, &Tree { entries: vec![dir, link] });
    drop(store);

    let jail = fixture.path("jail");
    fs::create_dir(&jail).unwrap();
    for id in 2..=7 {
        let target = jail.join(format!("t{id}"));
        let error = fixture.fails(&["restore", &id.to_string(), "--to", target.to_str().unwrap()]);
        assert!(error.contains("tree") && error.contains("malformed"), "dataset {id}: {error}");
        assert!(!target.exists(), "dataset {id}: a restore that found a bad tree wrote something");
        let error = fixture.fails(&["ls", &id.to_string()]);
        assert!(error.contains("malformed"), "dataset {id}: {error}");
    }
    assert_eq!(fs::read_dir(&jail).unwrap().count(), 0);
    assert!(!fixture.dir.path().join("escaped").exists() && !Path::new("/tmp/escaped").exists());
}

/// A symlink already in the target (planted, or restored earlier) never
/// redirects a restore's writes outside it.
#[test]
fn a_planted_symlink_does_not_redirect_a_restore() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    small_tree(&source, 1);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let outside = fixture.path("outside");
    fs::create_dir(&outside).unwrap();
    for overwrite in ["never", "if-changed", "always"] {
        let target = fixture.path(&format!("target-{overwrite}"));
        fs::create_dir(&target).unwrap();
        symlink(&outside, target.join("sub")).unwrap();
        symlink(outside.join("a.txt"), target.join("a.txt")).unwrap();
        let output = fixture.run(&["restore", "latest", "--to", target.to_str().unwrap(), "--overwrite", overwrite]);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "--overwrite {overwrite} wrote through a symlink");
        if overwrite == "never" {
            assert_eq!(output.status.code(), Some(3), "{output:?}");
            assert!(String::from_utf8_lossy(&output.stderr).contains("not a directory"), "{output:?}");
        } else {
            assert!(output.status.success(), "{output:?}");
            same_tree(&source, &target);
        }
    }
}
