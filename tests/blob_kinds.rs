//! One id namespace per blob kind (store format 3): a data chunk whose bytes
//! equal a tree or a content-list piece is never taken for one, `check`
//! finds an entry whose kind disagrees with what names it, `get` and `cat`
//! refuse content whose length disagrees with its record, and a store of an
//! older format is read or refused by name, never misread.
//!
//! Each collision here is one that format 2 (plain BLAKE3 for every kind)
//! got wrong: `get` wrote the wrong bytes, a restore failed, or a backup
//! deduplicated a content list against a data chunk and never counted the
//! chunks under it.

use std::fs;
use std::path::Path;

use cairn_store::index::{IndexEntry, cf};
use cairn_store::{BlobKind, OpenMode, Store};

use crate::fstree::{assert_same, snapshot};
use crate::util::{Fixture, noise};

/// The bytes of an empty content list: one empty level-0 piece.
const EMPTY_PIECE: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];
/// The bytes of an empty directory's tree: version 1, no entries.
const EMPTY_TREE: [u8; 2] = [1, 0];

#[test]
fn an_empty_object_and_a_chunk_with_its_bytes_are_two_blobs() {
    for empty_first in [true, false] {
        let fixture = Fixture::new();
        let order: [(&str, &[u8]); 2] =
            if empty_first { [("e", &[]), ("k", &EMPTY_PIECE)] } else { [("k", &EMPTY_PIECE), ("e", &[])] };
        for (key, data) in order {
            fixture.put(key, data);
        }
        assert_eq!(fixture.get("k"), EMPTY_PIECE, "empty first: {empty_first}");
        assert_eq!(fixture.get("e"), b"", "empty first: {empty_first}");
        fixture.ok(&["check", "--read-data"]);
    }
}

#[test]
fn a_file_holding_an_empty_trees_bytes_restores() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("empty")).unwrap();
    fs::write(source.join("plain"), b"some text").unwrap();
    let src = source.to_str().unwrap();
    fixture.ok(&["backup", src]);
    fs::write(source.join("tree-bytes"), EMPTY_TREE).unwrap();
    fixture.ok(&["backup", src]);
    let target = fixture.path("restored");
    fixture.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same(&snapshot(&source), &snapshot(&target));
    fixture.ok(&["check", "--read-data"]);
}

/// The plaintext of the (one) content-list piece of `file` in a store that
/// backed up a directory holding only that file.
fn piece_of(fixture: &Fixture) -> Vec<u8> {
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let mut pieces = Vec::new();
    for item in store.index().scan(cf::BLOBS, b"") {
        let (key, value) = item.unwrap();
        let entry = IndexEntry::decode(&value).unwrap();
        if entry.kind == BlobKind::ContentList {
            pieces.push(store.read_blob(&cairn_store::BlobId::from_slice(&key).unwrap()).unwrap());
        }
    }
    assert_eq!(pieces.len(), 1, "one file of a few chunks has one piece");
    pieces.pop().unwrap()
}

/// A 40 KB file is a few chunks: one level-0 piece of a few hundred bytes,
/// which is one chunk when it is a file of its own.
fn many_chunk_file(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("big"), noise(40_000, 9)).unwrap();
}

#[test]
fn a_file_holding_a_content_list_piece_is_data_in_either_order() {
    // The piece a backup of `big` writes, learnt from a scratch store (the
    // same keys, so the same bytes).
    let scratch = Fixture::new();
    many_chunk_file(&scratch.path("source"));
    scratch.ok(&["backup", scratch.path("source").to_str().unwrap()]);
    let piece = piece_of(&scratch);

    for piece_file_first in [true, false] {
        let fixture = Fixture::new();
        let (first, second) = (fixture.path("first"), fixture.path("second"));
        if piece_file_first {
            fs::create_dir_all(&first).unwrap();
            fs::write(first.join("piece"), &piece).unwrap();
            many_chunk_file(&second);
        } else {
            many_chunk_file(&first);
            fs::create_dir_all(&second).unwrap();
            fs::write(second.join("piece"), &piece).unwrap();
        }
        fixture.ok(&["backup", first.to_str().unwrap(), "--name", "first"]);
        fixture.ok(&["backup", second.to_str().unwrap(), "--name", "second"]);
        fixture.ok(&["check", "--read-data"]);
        // Forget the first and collect: had the second deduplicated its
        // piece against the first's chunk (or the reverse), the chunks
        // under the piece would have no references and go.
        fixture.ok(&["forget", "first"]);
        fixture.ok(&["gc"]);
        fixture.ok(&["check", "--read-data"]);
        let target = fixture.path("restored");
        fixture.ok(&["restore", "second", "--to", target.to_str().unwrap()]);
        assert_same(&snapshot(&second), &snapshot(&target));
    }
}

/// Rewrites blob `id`'s index entry with `change` applied.
fn tamper_entry(store: &Store, id: &cairn_store::BlobId, change: impl FnOnce(&mut IndexEntry)) {
    let mut entry = store.entry(id).unwrap();
    change(&mut entry);
    let mut batch = rocksdb::WriteBatch::default();
    batch.put_cf(store.index().cf(cf::BLOBS), id.as_bytes(), entry.encode());
    store.index().write(batch, true).unwrap();
}

#[test]
fn check_names_an_entry_whose_kind_disagrees_with_what_names_it() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/file"), b"hello").unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        let root = store.datasets().unwrap()[0].root;
        tamper_entry(&store, &root, |entry| entry.kind = BlobKind::ContentList);
    }
    let output = fixture.run(&["check"]);
    assert!(!output.status.success(), "check fails on problems");
    let report = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(report.contains("is a content-list blob, but dataset 1 names it as a tree"), "{report}");
}

#[test]
fn check_reports_counts_the_recount_disagrees_with_and_blobs_that_were_lost() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(&source).unwrap();
    for i in 0..20u64 {
        fs::write(source.join(format!("f{i}")), noise(3000, i)).unwrap();
    }
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let (root, lost, stranger) = {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        let root = store.datasets().unwrap()[0].root;
        let children = cairn_store::refs::children_of(BlobKind::Tree, root, &store.read_blob(&root).unwrap()).unwrap();
        // One reference too many on the root; a file's chunk gone; and an
        // entry with a reference that nothing names.
        tamper_entry(&store, &root, |entry| entry.refs += 1);
        let lost = children[7];
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(store.index().cf(cf::BLOBS), lost.as_bytes());
        let stranger = cairn_store::BlobId::of(b"named by nothing");
        batch.put_cf(store.index().cf(cf::BLOBS), stranger.as_bytes(), store.entry(&children[3]).unwrap().encode());
        store.index().write(batch, true).unwrap();
        (root, lost, stranger)
    };
    let output = fixture.run(&["check"]);
    assert!(!output.status.success(), "check fails on problems");
    let report = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    for problem in [
        format!("blob {root} has 2 references; recount finds 1"),
        format!("blob {lost} is named 1 times but is not in the index (lost)"),
        format!("blob {stranger} has 1 references; recount finds 0"),
    ] {
        assert!(report.contains(&problem), "{problem}\n{report}");
    }
}

#[test]
fn get_refuses_content_of_another_length_than_recorded() {
    let fixture = Fixture::new();
    fixture.put("o", &noise(30_000, 3));
    let source = fixture.path("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("f"), noise(30_000, 3)).unwrap();
    fixture.ok(&["backup", source.to_str().unwrap()]);
    {
        // The object's record says one byte less than its content holds.
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        let mut record: serde_json::Value =
            serde_json::from_slice(&store.index().get(cf::OBJECTS, b"o").unwrap().unwrap()).unwrap();
        record["size"] = serde_json::Value::from(29_999);
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(store.index().cf(cf::OBJECTS), b"o", serde_json::to_vec(&record).unwrap());
        store.index().write(batch, true).unwrap();
    }
    let out = fixture.path("o.out");
    let error = fixture.fails(&["get", "o", out.to_str().unwrap()]);
    assert!(error.contains("its record says 29999"), "{error}");
    // Nothing past the recorded size was written.
    assert!(fs::metadata(&out).map_or(0, |m| m.len()) <= 29_999);
    let check = fixture.run(&["check"]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("object 'o' says it is 29999 bytes"));

    // The file, whose tree entry agrees with its content, reads whole.
    let cat = fixture.run(&["cat", "latest", "f"]);
    assert!(cat.status.success(), "an intact file cats");
    assert_eq!(cat.stdout, noise(30_000, 3));
}

#[test]
fn a_store_of_an_older_format_is_refused_by_name_for_new_blobs() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    assert_eq!(fixture.set_format(2), 6);
    let data = fixture.file("data", b"new bytes");
    let error = fixture.fails(&["put", "k", &data]);
    assert!(error.contains("format 2") && error.contains("cairn init"), "{error}");
    // Reading works: nothing in it is misread.
    fixture.ok(&["objects"]);
    fixture.ok(&["check", "--read-data"]);
}

/// A format-2 store made by the cairn before format 3 (`tests/fixtures`,
/// made by backing up `source/` with `init --compression zstd`, then
/// `put e` of an empty file and `put k` of the 8 bytes of an empty content
/// list): it reads as it was written, the one object that store itself
/// got wrong (`e`, deduplicated against the data chunk with its list's
/// bytes) is refused instead of misread, and nothing new goes in.
#[test]
fn a_format_2_store_from_the_previous_cairn_reads_and_takes_no_new_blob() {
    let fixture = Fixture::new();
    // Read at run time: cargo sets it for `cargo test`, and a test binary
    // built in another checkout sharing the target directory must still find
    // this checkout's fixture.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let archive = root.join("tests/fixtures/format2-store.tar.gz");
    crate::util::succeed({
        let mut tar = std::process::Command::new("tar");
        tar.arg("xzf").arg(&archive).arg("-C").arg(fixture.dir.path());
        tar
    });
    let listed = fixture.ok(&["datasets"]);
    assert!(listed.contains("old"), "{listed}");
    let target = fixture.path("restored");
    fixture.ok(&["restore", "old", "--to", target.to_str().unwrap()]);
    crate::versions::diff_r(&fixture.path("source"), &target);
    assert_eq!(fixture.get("k"), EMPTY_PIECE);
    let out = fixture.path("e.out");
    let error = fixture.fails(&["get", "e", out.to_str().unwrap()]);
    assert!(error.contains("its record says 0"), "{error}");
    let output = fixture.run(&["check", "--read-data"]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("object 'e' says it is 0 bytes, but its content is 8 bytes"), "{report}");
    assert_eq!(report.matches("problem:").count(), 1, "only e is wrong: {report}");
    let data = fixture.file("new", b"new bytes");
    let error = fixture.fails(&["put", "n", &data]);
    assert!(error.contains("format 2"), "{error}");
}
