//! Compact layouts (store format 5): new stores write compact footer
//! tables and content-list pieces, stores made before keep the fixed
//! layouts, and every path that makes a container's record from its
//! footer (a commit, compaction, repair, attach) counts its bytes exactly
//! in either layout.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use cairn_store::container::{ContainerKind, FooterLayout, HEADER_LEN, read_footer, records_len};
use cairn_store::content::{Piece, PieceLayout};
use cairn_store::index::{ContainerRecord, cf};
use cairn_store::{BlobKind, ContainerId, OpenMode, Store};

use crate::remote::{add_remote, attach, push};
use crate::s3::{BUCKET, S3Server};
use crate::util::{Fixture, assert_recount_matches, noise, text};

/// A tree of text and noise that backs up into several containers.
fn build_source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..40u64 {
        fs::write(dir.join(format!("t{i:02}.txt")), text(2_000 + i as usize * 900, seed * 100 + i)).unwrap();
    }
    fs::write(dir.join("big.bin"), noise(3 << 20, seed)).unwrap();
}

/// A new store holding one backup of the source `build_source` makes
/// from `seed`.
fn store_with_backup(seed: u64) -> Fixture {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    let source = fixture.path("source");
    build_source(&source, seed);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    fixture
}

/// Every committed container's record, and the layout of its footer.
fn records(store_dir: &Path) -> BTreeMap<ContainerId, (ContainerRecord, FooterLayout)> {
    let store = Store::open(store_dir, OpenMode::ReadOnly).unwrap();
    store
        .containers()
        .unwrap()
        .into_iter()
        .map(|(id, record)| {
            let footer = read_footer(&store.files().path(id), id).unwrap();
            // The records' bytes, each frame once: what the record must
            // count, whatever the footer's size.
            let mut seen = HashSet::new();
            let records: u64 = footer.table.iter().filter(|e| seen.insert(e.offset)).map(|e| e.record_len()).sum();
            let end = footer.table.iter().map(|e| e.offset + e.record_len()).max().unwrap_or(HEADER_LEN as u64);
            assert_eq!(records, end - HEADER_LEN as u64, "container {id}: records are back to back");
            assert_eq!(records_len(&footer.table), records, "container {id}");
            assert_eq!(record.record_bytes(), records, "container {id} ({:?}): record bytes", footer.layout);
            (id, (record, footer.layout))
        })
        .collect()
}

/// The layouts of every content-list piece in the store.
fn piece_layouts(store_dir: &Path) -> HashSet<PieceLayout> {
    let store = Store::open(store_dir, OpenMode::ReadOnly).unwrap();
    let mut layouts = HashSet::new();
    for (id, _) in store.containers().unwrap() {
        for entry in read_footer(&store.files().path(id), id).unwrap().table {
            if entry.kind == BlobKind::ContentList {
                let bytes = store.files().read_blob(id, &entry).unwrap();
                layouts.insert(Piece::layout_of(&bytes).unwrap());
            }
        }
    }
    layouts
}

/// Back up, change, back up, forget the first and collect (compaction
/// rewrites the half-dead containers), then check, repair and restore:
/// every container in `layout` (and every piece in `pieces`), and every
/// record exact.
fn lifecycle(fixture: &Fixture, layout: FooterLayout, pieces: PieceLayout) {
    let source = fixture.path("source");
    build_source(&source, 1);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    fs::remove_dir_all(&source).unwrap();
    build_source(&source, 2);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let before = records(&fixture.store());
    assert!(before.len() >= 3, "{} containers", before.len());
    assert!(before.values().all(|(_, l)| *l == layout), "{before:?}");
    assert_eq!(piece_layouts(&fixture.store()), HashSet::from([pieces]));

    fixture.ok(&["forget", "1"]);
    let collected = fixture.ok(&["gc"]);
    let after = records(&fixture.store());
    assert!(after.keys().any(|id| !before.contains_key(id)), "compaction wrote containers: {collected}");
    assert!(after.values().all(|(_, l)| *l == layout), "{after:?}");
    assert_eq!(piece_layouts(&fixture.store()), HashSet::from([pieces]));
    fixture.ok(&["check", "--read-data"]);

    // A repair makes every record again from the footers alone: the same.
    fixture.ok(&["repair"]);
    let repaired = records(&fixture.store());
    for (id, (record, _)) in &after {
        let (again, _) = &repaired[id];
        assert_eq!(
            (again.stored_bytes, again.n_blobs, again.table_bytes, again.dead_bytes),
            (record.stored_bytes, record.n_blobs, record.table_bytes, record.dead_bytes),
            "container {id} after repair"
        );
    }
    assert_recount_matches(&Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap());
    let restored = fixture.path("restored");
    fixture.ok(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    for entry in fs::read_dir(&source).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(fs::read(restored.join(&name)).unwrap(), fs::read(source.join(&name)).unwrap(), "{name:?}");
    }
}

#[test]
fn a_new_store_writes_compact_layouts_and_counts_footers_exactly() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    lifecycle(&fixture, FooterLayout::Compact, PieceLayout::Compact);
}

/// A store made by the cairn before compact layouts is opened by that
/// cairn still, so this one goes on writing the fixed layouts in it.
#[test]
fn a_store_made_before_compact_layouts_keeps_the_fixed_ones() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    assert_eq!(fixture.set_format(4), 6);
    lifecycle(&fixture, FooterLayout::Fixed, PieceLayout::Fixed);
}

/// The compact footer is smaller: on chunks of 8 KiB, under 36 bytes a
/// blob against 50.
#[test]
fn compact_footers_take_about_two_thirds_of_the_fixed_ones() {
    let fixture = store_with_backup(3);
    let (blobs, bytes) = records(&fixture.store())
        .values()
        .fold((0, 0), |(blobs, bytes), (record, _)| (blobs + record.n_blobs, bytes + record.table_bytes));
    assert!(blobs > 300, "{blobs} blobs");
    assert!(bytes < blobs * 36, "{bytes} bytes of footer for {blobs} blobs");
}

/// A pushed store attached elsewhere: each container's record counts the
/// same bytes as where it was made (the index delta names the layout).
#[test]
fn attach_counts_compact_footers_as_the_store_that_pushed_them() {
    let fixture = store_with_backup(4);
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    add_remote(&store, &server, &[]);
    push(&store, &server);
    let attached = fixture.path("attached");
    attach(&attached, &server);
    let ours = records(&store);
    // The attached store holds its metadata containers only: its records
    // come from the index deltas.
    let theirs = Store::open(&attached, OpenMode::ReadOnly).unwrap().containers().unwrap();
    assert_eq!(ours.keys().copied().collect::<Vec<_>>(), theirs.iter().map(|(id, _)| *id).collect::<Vec<_>>());
    for (id, again) in &theirs {
        let (record, layout) = &ours[id];
        assert_eq!(layout, &FooterLayout::Compact);
        assert_eq!((again.table_bytes, again.record_bytes()), (record.table_bytes, record.record_bytes()), "{id}");
        // The origin's log records are dead in the attached store (its
        // own log starts afresh), so only data containers count alike.
        if record.kind == ContainerKind::Data {
            assert_eq!((again.dead_bytes, record.dead_bytes), (0, 0), "container {id}");
        }
    }
}

/// A container record whose byte count disagrees with its file (a
/// damaged index, or one a cairn with a bug wrote) is reported by
/// `check`, naming the container and the fix; `repair` makes it right.
#[test]
fn check_finds_a_record_that_miscounts_its_container() {
    let fixture = store_with_backup(5);
    {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        let (id, record) = store.containers().unwrap()[0];
        let wrong = ContainerRecord { table_bytes: record.table_bytes + 7, ..record };
        store.index().put_unsynced(cf::CONTAINERS, &id.key(), &wrong.encode()).unwrap();
        store.index().sync().unwrap();
    }
    let output = fixture.run(&["check"]);
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("the index counts") && said.contains("cairn repair"), "{said}");
    fixture.ok(&["repair"]);
    fixture.ok(&["check"]);
}

/// `cairn upgrade` moves a format-4 store to this cairn's format: what
/// was stored stays as it was and reads, what is written after gets the
/// compact layouts, the remote's config follows at the next push, and a
/// second upgrade, or one of a store too old for it, says so.
#[test]
fn upgrade_moves_an_older_store_to_the_compact_layouts() {
    let fixture = Fixture::new();
    let server = S3Server::start(&fixture.path("s3"));
    let store = fixture.store();
    fixture.ok(&["init"]);
    assert_eq!(fixture.set_format(4), 6);
    let source = fixture.path("source");
    build_source(&source, 6);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    add_remote(&store, &server, &[]);
    push(&store, &server);
    let remote_format = || {
        let config = server.root().join(BUCKET).join("team/cairn/config");
        let config: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
        config["store"]["format"].as_u64().unwrap()
    };
    assert_eq!(remote_format(), 4);
    let before = records(&store);
    assert!(before.values().all(|(_, layout)| *layout == FooterLayout::Fixed));

    let said = fixture.ok(&["upgrade"]);
    assert!(said.contains("from format 4 to 6"), "{said}");
    let said = fixture.ok(&["upgrade"]);
    assert!(said.contains("at format 6 already"), "{said}");
    let first = fixture.path("first");
    fixture.ok(&["restore", "1", "--to", first.to_str().unwrap()]);
    fs::remove_dir_all(&source).unwrap();
    build_source(&source, 7);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let after = records(&store);
    for (id, (_, layout)) in &after {
        let expected = if before.contains_key(id) { FooterLayout::Fixed } else { FooterLayout::Compact };
        assert_eq!(*layout, expected, "container {id}");
    }
    assert!(after.len() > before.len());
    assert_eq!(piece_layouts(&store), HashSet::from([PieceLayout::Fixed, PieceLayout::Compact]));
    fixture.ok(&["check", "--read-data"]);
    // A repair reads both layouts and counts each container as before.
    fixture.ok(&["repair"]);
    let repaired = records(&store);
    for (id, (record, _)) in &after {
        let (again, _) = &repaired[id];
        assert_eq!((again.table_bytes, again.dead_bytes), (record.table_bytes, record.dead_bytes), "container {id}");
    }
    fixture.ok(&["check"]);
    push(&store, &server);
    assert_eq!(remote_format(), 6);
    let second = fixture.path("second");
    fixture.ok(&["restore", "2", "--to", second.to_str().unwrap()]);
    for (restored, seed) in [(&first, 6), (&second, 7)] {
        let expected = fixture.path(&format!("expected{seed}"));
        build_source(&expected, seed);
        for entry in fs::read_dir(&expected).unwrap() {
            let name = entry.unwrap().file_name();
            assert_eq!(fs::read(restored.join(&name)).unwrap(), fs::read(expected.join(&name)).unwrap(), "{name:?}");
        }
    }

    let old = Fixture::new();
    old.ok(&["init"]);
    old.set_format(2);
    let error = old.fails(&["upgrade"]);
    assert!(error.contains("format 2") && error.contains("cairn init"), "{error}");
}
