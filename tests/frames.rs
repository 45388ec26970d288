//! Frames (issue "Space"): new data chunks are compressed together, across
//! the files of a backup, and stay deduplicated, counted and collected one
//! by one.

use std::collections::{BTreeMap, HashSet};
use std::fs;

use cairn_store::container::{FLAG_FRAME, FLAG_WIDE, FRAME_TARGET, TableEntry, WIDE_FRAME_TARGET};
use cairn_store::{BlobKind, ContainerId, OpenMode, Store};

use crate::util::{Fixture, assert_recount_matches, noise, text};

/// Every record of every data container: (container, table).
fn data_tables(store: &Store) -> Vec<(ContainerId, Vec<TableEntry>)> {
    store
        .containers()
        .unwrap()
        .into_iter()
        .filter(|(_, record)| record.kind == cairn_store::container::ContainerKind::Data)
        .map(|(id, record)| (id, store.files().table(id, record.stored_bytes).unwrap()))
        .collect()
}

/// Members per frame, by (container, offset).
fn frames(tables: &[(ContainerId, Vec<TableEntry>)]) -> BTreeMap<(ContainerId, u64), Vec<TableEntry>> {
    let mut frames: BTreeMap<(ContainerId, u64), Vec<TableEntry>> = BTreeMap::new();
    for (id, table) in tables {
        for entry in table {
            assert!(entry.flags & FLAG_FRAME != 0, "a data chunk outside a frame: {entry:?}");
            frames.entry((*id, entry.offset)).or_default().push(*entry);
        }
    }
    frames
}

/// Many small files: a backup frames them together, files are restored
/// exactly, and a frame whose members are partly forgotten is framed again
/// by compaction without them, every count and byte accounted.
#[test]
fn small_files_share_frames_and_compaction_drops_only_dead_members() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    fs::create_dir_all(&source).unwrap();
    for i in 0..60u64 {
        fs::write(source.join(format!("keep{i:02}.txt")), text(3000 + i as usize * 50, i)).unwrap();
        fs::write(source.join(format!("drop{i:02}.txt")), text(3000 + i as usize * 70, 1000 + i)).unwrap();
    }
    fixture.ok(&["init"]);
    fixture.ok(&["backup", source.to_str().unwrap()]);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let framed = frames(&data_tables(&store));
    // A frame per writing thread (four per core) is open at a time, so
    // a few more frames than the bytes need, each of many files.
    let chunks: usize = framed.values().map(Vec::len).sum();
    let threads = 4 * std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(framed.len() <= threads + 3, "120 files of 3-8 KiB make a few frames, not {}", framed.len());
    assert!(chunks >= 4 * framed.len(), "{chunks} chunks in {} frames", framed.len());
    for members in framed.values() {
        let places: Vec<u16> = members.iter().map(|m| m.member).collect();
        assert_eq!(places, (0..members.len() as u16).collect::<Vec<_>>(), "members are listed in frame order");
    }
    // `stats` counts what the frames take: each member's share, and the
    // slack of frames closed short (these are, at the backup's end).
    let data = &store.stats().unwrap().kinds[BlobKind::Data as usize];
    let stored: u64 = framed.values().map(|m| u64::from(m[0].stored_len)).sum();
    let records: u64 = framed.values().map(|m| m[0].record_len()).sum();
    assert!((stored - chunks as u64..=records).contains(&data.stored_bytes), "{stored} {records} {data:?}");
    drop(store);

    // The second version drops half the files; the first is forgotten.
    for i in 0..60u64 {
        fs::remove_file(source.join(format!("drop{i:02}.txt"))).unwrap();
    }
    fixture.ok(&["backup", source.to_str().unwrap()]);
    fixture.ok(&["forget", "1"]);
    let report: serde_json::Value =
        serde_json::from_str(&fixture.ok(&["--json", "gc", "--compact-threshold", "0.05"])).unwrap();
    assert!(report["containers_rewritten"].as_u64().unwrap() > 0, "{report}");
    fixture.ok(&["check", "--read-data"]);

    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    assert_recount_matches(&store);
    let tables = data_tables(&store);
    let live: HashSet<_> = tables.iter().flat_map(|(_, t)| t.iter().map(|e| e.id)).collect();
    let framed = frames(&tables);
    let members: usize = framed.values().map(Vec::len).sum();
    assert_eq!(members, live.len(), "the new frames hold the kept chunks once each");
    assert!(members <= 60 + 5, "only the kept files' chunks were framed again: {members}");
    for (id, record) in store.containers().unwrap() {
        assert_eq!(record.dead_bytes, 0, "container {id} after compaction: {record:?}");
    }
    drop(store);
    let restored = fixture.path("restored");
    fixture.ok(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    for i in 0..60u64 {
        let name = format!("keep{i:02}.txt");
        assert_eq!(fs::read(restored.join(&name)).unwrap(), fs::read(source.join(&name)).unwrap(), "{name}");
    }
}

/// A forgotten member's share of its frame is dead, the frame's slack never
/// is, and once every member is dead the container goes.
#[test]
fn dead_bytes_follow_members_and_a_wholly_dead_frame_is_deleted() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    fixture.put("a", &noise(600_000, 1));
    fixture.put("b", &text(600_000, 2));
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let before: BTreeMap<_, _> = store.containers().unwrap().into_iter().collect();
    assert!(before.values().all(|r| r.dead_bytes == 0), "{before:?}");
    assert!(before.values().any(|r| r.slack_bytes > 0), "frames closed short leave slack: {before:?}");
    drop(store);
    fixture.ok(&["rm", "a"]);
    fixture.ok(&["gc", "--compact-threshold", "1.0"]);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let after: BTreeMap<_, _> = store.containers().unwrap().into_iter().collect();
    let a_container = before.keys().copied().find(|id| {
        let record = after.get(id);
        record.is_some_and(|r| r.kind == cairn_store::container::ContainerKind::Data && r.dead_bytes > 0)
    });
    let a_container = a_container.expect("the container of a's frames has dead bytes");
    let record = after[&a_container];
    assert_eq!(record.live_bytes(), record.slack_bytes, "only the slack is live in a's container: {record:?}");
    drop(store);
    fixture.ok(&["gc", "--compact-threshold", "0.5"]);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    assert!(store.index().container(a_container).unwrap().is_none(), "a's container was deleted");
    drop(store);
    assert_eq!(fixture.get("b"), text(600_000, 2));
    fixture.ok(&["check", "--read-data"]);
}

/// A store upgraded from format 5 holds frames of 256 KiB and, written
/// after the upgrade, of 512 KiB (flagged wide). Each member's share of its
/// frame is counted against its own frame's target: the shares of a frame
/// never pass its bytes and cover nearly all of a full one, `repair`
/// counts every container as the writers did, and forgetting the older
/// object leaves exactly the slack live in its containers.
#[test]
fn narrow_and_wide_frames_are_each_counted_by_their_own_rule() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    assert_eq!(fixture.set_format(5), 6);
    fixture.put("old", &text(1_500_000, 1));
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let old_containers: HashSet<ContainerId> = data_tables(&store).into_iter().map(|(id, _)| id).collect();
    drop(store);
    fixture.ok(&["upgrade"]);
    fixture.put("new", &text(1_500_000, 2));
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let framed = frames(&data_tables(&store));
    let raw = |members: &[TableEntry]| members.iter().map(|m| u64::from(m.raw_len)).sum::<u64>();
    let (wide, narrow): (Vec<_>, Vec<_>) = framed.iter().partition(|(_, m)| m[0].flags & FLAG_WIDE != 0);
    assert!(wide.len() >= 2 && narrow.len() >= 4, "{} wide, {} narrow frames", wide.len(), narrow.len());
    for ((container, _), members) in &wide {
        assert!(!old_containers.contains(container), "a wide frame before the upgrade");
        assert!((FRAME_TARGET as u64 + 1..=WIDE_FRAME_TARGET as u64).contains(&raw(members)));
    }
    for (_, members) in &narrow {
        assert!(raw(members) <= FRAME_TARGET as u64, "a frame past 256 KiB not flagged wide");
    }
    for ((container, offset), members) in &framed {
        let record = members[0].record_len();
        let shares: u64 = members.iter().map(TableEntry::accounted_len).sum();
        let target = if members[0].flags & FLAG_WIDE != 0 { WIDE_FRAME_TARGET } else { FRAME_TARGET } as u64;
        assert!(shares <= record, "frame {container}:{offset}: shares {shares} of {record} bytes");
        if raw(members) * 10 >= target * 9 {
            assert!(shares * 10 >= record * 8, "a full frame {container}:{offset}: shares {shares} of {record}");
        }
    }
    let before: BTreeMap<_, _> = store.containers().unwrap().into_iter().collect();
    drop(store);
    fixture.ok(&["check", "--read-data"]);
    fixture.ok(&["repair"]);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    for (id, record) in store.containers().unwrap() {
        let was = &before[&id];
        assert_eq!((record.dead_bytes, record.slack_bytes), (was.dead_bytes, was.slack_bytes), "container {id}");
    }
    drop(store);

    fixture.ok(&["rm", "old"]);
    fixture.ok(&["gc", "--compact-threshold", "1.0"]);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    for (id, record) in store.containers().unwrap() {
        if record.kind != cairn_store::container::ContainerKind::Data {
            continue;
        }
        if old_containers.contains(&id) {
            assert_eq!(record.live_bytes(), record.slack_bytes, "only the slack is live in old's {id}: {record:?}");
        } else {
            assert_eq!(record.dead_bytes, 0, "new's container {id} lost nothing: {record:?}");
        }
    }
    drop(store);
    assert_eq!(fixture.get("new"), text(1_500_000, 2));
    fixture.ok(&["check", "--read-data"]);
}

/// A store of format 3 (made before frames) goes on storing a record per
/// chunk, and reads the same.
#[test]
fn a_format_3_store_keeps_one_record_per_chunk() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    fixture.set_format(3);
    let data = text(500_000, 3);
    fixture.put("k", &data);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    for (_, table) in data_tables(&store) {
        assert!(table.iter().all(|e| e.flags & FLAG_FRAME == 0), "format 3 wrote a frame: {table:?}");
    }
    drop(store);
    assert_eq!(fixture.get("k"), data);
    fixture.ok(&["check", "--read-data"]);
}

/// Reading a file through decodes each frame once, not once per chunk.
#[test]
fn reading_a_file_decodes_each_of_its_frames_once() {
    let fixture = Fixture::new();
    fixture.ok(&["init"]);
    let data = text(3 << 20, 7);
    fixture.put("big", &data);
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let tables = data_tables(&store);
    let framed = frames(&tables);
    let chunks: usize = framed.values().map(Vec::len).sum();
    assert!(chunks > 4 * framed.len(), "{chunks} chunks in {} frames", framed.len());
    assert_eq!(crate::util::read_object(&store, "big"), data);
    assert_eq!(store.files().frames_decoded(), framed.len() as u64, "{chunks} chunks read");
}
