//! Hostile stores (issue 15): manifests and content lists written to hurt
//! the reader. Each gets an error naming a blob, never a panic, a stack
//! overflow or a walk without end; real shapes at the edge still work.

use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_store::content::{ContentEntry, Piece};
use cairn_store::dataset::record::{DatasetRecord, next_id, put_record};
use cairn_store::dataset::{Entry, EntryKind, Tree};
use cairn_store::index::{cf, meta};
use cairn_store::remote::MAX_JSON_OBJECT;
use cairn_store::{BlobId, BlobKind, Error, Store, StoreOptions, Tid, WriteSession};

use crate::remote::{add_remote, cairn, push, url};
use crate::s3::{Hostile, S3Server};
use crate::util::{Fixture, succeed, text};

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("store"), &StoreOptions::default()).unwrap();
    (dir, store)
}

fn entry(name: &str, kind: EntryKind, blob: Option<BlobId>, size: u64) -> Entry {
    Entry::bare(name.as_bytes(), kind, size, blob)
}

fn write_tree(session: &WriteSession, entries: Vec<Entry>) -> BlobId {
    let tree = Tree { entries };
    session.write_metadata(BlobKind::Tree, tree.encode(), tree.children()).unwrap()
}

fn write_piece(session: &WriteSession, level: u8, entries: Vec<ContentEntry>) -> BlobId {
    let piece = Piece { level, entries };
    session.write_metadata(BlobKind::ContentList, piece.encode(), piece.children()).unwrap()
}

fn commit_dataset(session: WriteSession, root: BlobId) -> DatasetRecord {
    let (_, record) = session
        .commit(|commit| {
            let record = DatasetRecord::bare(next_id(commit)?, root, 0, "/crafted", Tid(0));
            put_record(commit, &record)?;
            Ok(record)
        })
        .unwrap();
    record
}

/// A dataset that is a chain of `depth` directories `d/d/d/...`.
fn chain(store: &Store, depth: usize) -> DatasetRecord {
    let session = store.session().unwrap();
    let mut below = write_tree(&session, Vec::new());
    for _ in 0..depth {
        below = write_tree(&session, vec![entry("d", EntryKind::Dir, Some(below), 0)]);
    }
    commit_dataset(session, below)
}

/// Regression (issue 15): `walk` (find) and `diff` recursed once per level,
/// so a chain of 30,000 trees overflowed the thread's stack and aborted.
/// Now they fail at 4,096 levels, naming a tree; a real tree of 2,000
/// levels (all a 4096-byte path holds) still walks and diffs.
#[test]
fn a_chain_of_trees_deeper_than_any_path_fails_walk_and_diff_without_overflowing() {
    let (_dir, store) = new_store();
    let session = store.session().unwrap();
    let empty = write_tree(&session, Vec::new());
    let empty = commit_dataset(session, empty);

    let real = chain(&store, 2000);
    let mut paths = 0;
    store
        .walk(&real, "", &mut |_, _| {
            paths += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(paths, 2001);
    let changes = store.diff(&empty, &real, "").unwrap();
    assert_eq!(changes.len(), 2000);
    assert_eq!(changes.last().unwrap().path.len(), 4000, "depth first: the deepest comes last");

    let crafted = chain(&store, 30_000);
    let error = store.walk(&crafted, "", &mut |_, _| Ok(())).unwrap_err();
    assert!(matches!(error, Error::Malformed { what: "tree", .. }), "{error}");
    assert!(error.to_string().contains("nest more than 4096"), "{error}");
    for (old, new) in [(&empty, &crafted), (&crafted, &empty), (&real, &crafted)] {
        let error = store.diff(old, new, "").unwrap_err().to_string();
        assert!(error.contains("nest more than 4096"), "{error}");
    }
}

/// A dataset of one file `f` of `size` bytes whose content list is `root`.
fn file_dataset(session: WriteSession, root: BlobId, size: u64) -> DatasetRecord {
    let top = write_tree(&session, vec![entry("f", EntryKind::File, Some(root), size)]);
    commit_dataset(session, top)
}

/// Regression (issue 15): a content-list piece of level 255 under a piece
/// of level 1 overflowed the level check (`255 + 1`, a panic in the
/// reading thread); `stat`'s chunk count did not check levels at all, so
/// pieces of one level naming each other recursed without bound.
#[test]
fn content_list_levels_out_of_order_are_refused() {
    let (_dir, store) = new_store();
    let chunk = store.put_object("seed", &b"hello"[..], "seed", &|_| {}).unwrap().object.record.content;
    assert_eq!(store.entry(&chunk).unwrap().kind, BlobKind::Data);

    let session = store.session().unwrap();
    let top = write_piece(&session, 255, vec![ContentEntry { id: chunk, len: 5 }]);
    let root = write_piece(&session, 1, vec![ContentEntry { id: top, len: 5 }]);
    let dataset = file_dataset(session, root, 5);
    let error = store.cat(&dataset, "f", &mut Vec::new()).unwrap_err().to_string();
    assert!(error.contains("content list") && error.contains("level 255 under level 1"), "{error}");

    let session = store.session().unwrap();
    let lower = write_piece(&session, 0, vec![ContentEntry { id: chunk, len: 5 }]);
    let same_level = write_piece(&session, 1, vec![ContentEntry { id: lower, len: 5 }]);
    let root = write_piece(&session, 1, vec![ContentEntry { id: same_level, len: 5 }]);
    let dataset = file_dataset(session, root, 5);
    let file = store.lookup(&dataset, "f").unwrap();
    let error = store.chunk_use(&file).unwrap_err().to_string();
    assert!(error.contains("level 1 under level 1"), "{error}");
}

/// The writer side of the tree limit: a tree longer than readers accept is
/// refused when written, with a message, instead of stored unreadable.
#[test]
fn a_tree_longer_than_readers_accept_is_refused_when_written() {
    let (_dir, store) = new_store();
    let session = store.session().unwrap();
    let max = BlobKind::Tree.max_len();
    let error = session.write_metadata(BlobKind::Tree, vec![0; max + 1], Vec::new()).unwrap_err();
    assert!(matches!(error, Error::BlobTooLarge { .. }), "{error}");
    assert!(error.to_string().contains(&format!("more than the {max}")), "{error}");
}

/// Regression (issue 15): `next_dataset` at `u64::MAX` in the index
/// overflowed (a panic inside the commit).
#[test]
fn a_dataset_counter_at_its_limit_fails_the_commit() {
    let (_dir, store) = new_store();
    store.index().put_unsynced(cf::META, meta::NEXT_DATASET, &u64::MAX.to_le_bytes()).unwrap();
    let session = store.session().unwrap();
    let error = session.commit(|commit| next_id(commit)).unwrap_err().to_string();
    assert!(error.contains("next_dataset"), "{error}");
}

/// `command` run to its end, or killed after `limit` (a failure: it ran
/// away); its stderr and exit code.
fn run_within(mut command: std::process::Command, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{command:?} was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (child.wait().unwrap().code(), stderr)
}

/// A store pushed to a fresh test server.
fn pushed(fixture: &Fixture) -> S3Server {
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    let source = fixture.path("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("a"), text(20_000, 1)).unwrap();
    add_remote(&store, &server, &[]);
    succeed(cairn(&store, &server, &["backup", source.to_str().unwrap()]));
    push(&store, &server);
    server
}

/// Regression (issue 15): a server whose listing always says "truncated"
/// with the same token kept `list` asking for ever. Now the listing stops
/// at the repeated token, naming the prefix.
#[test]
fn a_remote_listing_without_end_is_stopped_naming_the_prefix() {
    let fixture = Fixture::new();
    let server = pushed(&fixture);
    *server.seen.hostile.lock().unwrap() = Some(Hostile::EndlessListing);
    let attach = cairn(&fixture.path("attached"), &server, &["attach", &url()]);
    let (code, stderr) = run_within(attach, Duration::from_secs(120));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("listing team/cairn/") && stderr.contains("came back a second time"), "{stderr}");
}

/// Regression (issue 15): a GET took a body of any size into memory. A
/// remote config (a few hundred bytes of JSON) padded past 64 MiB is now
/// refused, naming the key, as soon as its length is known.
#[test]
fn a_remote_object_longer_than_its_kind_is_refused_naming_the_key() {
    let fixture = Fixture::new();
    let server = pushed(&fixture);
    *server.seen.hostile.lock().unwrap() = Some(Hostile::LongBodies((MAX_JSON_OBJECT + 1) as usize));
    let attach = cairn(&fixture.path("attached"), &server, &["attach", &url()]);
    let (code, stderr) = run_within(attach, Duration::from_secs(120));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("downloading team/cairn/config") && stderr.contains("more than the 67108864 expected"),
        "{stderr}"
    );
}
