//! The commit protocol through the library API: racing sessions that write
//! the same blobs, abandoned sessions, and a session whose process "dies"
//! (its session is leaked, never committed nor cleaned up).

use std::io::Cursor;

use cairn_store::fault::{CRASH_POINTS, LOGGED_CRASH_POINTS, STAGED_CRASH_POINTS};
use cairn_store::index::cf;
use cairn_store::{OpenMode, Store};

use crate::util::{Fixture, assert_clean, count_files, library_store, noise, read_object, text};

fn new_store(dir: &tempfile::TempDir) -> Store {
    library_store(dir, 256 * 1024)
}

#[test]
fn racing_sessions_writing_the_same_blobs_count_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let data = text(3 << 20, 21);
    // Both sessions start before either commits: neither can dedup against
    // the other, so both write every blob; the second commit must keep one
    // copy, count its bytes dead, and leave counts exact.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            let data = data.clone();
            std::thread::spawn(move || store.put_object(&format!("k{i}"), Cursor::new(data), "test", &|_| {}).unwrap())
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for i in 0..4 {
        assert_eq!(read_object(&store, &format!("k{i}")), data);
    }
    assert_clean(&store);
    let stats = store.stats().unwrap();
    assert_eq!(stats.logical_bytes, 4 * data.len() as u64);
    assert!(stats.unique_bytes == data.len() as u64, "unique {} for {}", stats.unique_bytes, data.len());
}

/// Chunks that the first and the last pieces of one new content list both
/// name reach the commit's walk in different batches (it takes 4,096
/// children at a time), both before the resolution has counted them: it
/// gathers uncounted ids and looks them up together, and must add up the
/// references of an id gathered twice. Losing one would leave the chunk
/// a reference short, to be deleted while something still names it.
#[test]
fn a_chunk_named_in_two_batches_of_one_commit_gets_both_references() {
    chunks_named_twice_get_both_references(None);
}

/// The same with the stage spilling every 64 entries: the first reference
/// is counted and spilled to the `stage` family long before the walk
/// meets the second, which must find it there (the stage keeps a filter
/// of what it spilled, and a lookup it skips wrongly would count the chunk
/// afresh, losing the first reference).
#[test]
fn a_chunk_named_before_and_after_the_stage_spilled_gets_both_references() {
    chunks_named_twice_get_both_references(Some(64));
}

fn chunks_named_twice_get_both_references(stage_limit: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    if let Some(limit) = stage_limit {
        store.set_stage_limit(limit);
    }
    let edge = noise(256 << 10, 31);
    // About 6,000 chunks between the two copies: more than one batch.
    let data = [&edge[..], &noise(48 << 20, 32), &edge].concat();
    store.put_object("twice", Cursor::new(data.clone()), "test", &|_| {}).unwrap();
    assert_eq!(read_object(&store, "twice"), data);
    let counts = crate::util::recount(&store);
    assert!(counts.values().any(|&n| n >= 2), "no chunk is named twice: the test does not test what it says");
    crate::util::assert_recount_matches(&store);
}

#[test]
fn an_abandoned_session_leaves_no_files_and_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    store.put_object("kept", Cursor::new(noise(1 << 20, 1)), "test", &|_| {}).unwrap();
    let files_before = count_files(store.files().dir());
    {
        let session = store.session().unwrap();
        cairn_store::ingest::ingest(&session, Cursor::new(noise(2 << 20, 2)), "test", &|_| {}).unwrap();
        assert!(count_files(store.files().dir()) > files_before, "the session wrote containers");
        session.abort();
    }
    assert_eq!(count_files(store.files().dir()), files_before);
    assert_clean(&store);
}

/// Aborts `cairn put` at every crash point of the commit protocol in turn.
#[test]
fn a_crash_at_every_commit_step_keeps_committed_data_and_hides_the_rest() {
    for point in CRASH_POINTS {
        let fixture = Fixture::new();
        fixture.ok(&["init", "--container-size", "256KiB"]);
        let kept = noise(1 << 20, 3);
        fixture.put("kept", &kept);
        // Shares chunks with "kept" and adds new ones over several containers.
        let mut mixed = kept.clone();
        mixed.extend_from_slice(&noise(2 << 20, 4));
        let file = fixture.file("mixed", &mixed);
        let output = fixture.command(&["put", "mixed", &file]).env("CAIRN_CRASH_AT", point).output().unwrap();
        assert!(!output.status.success(), "{point}: the put should have crashed");

        // A reader sees the index as it is: the commit only once its batch is durable.
        let keys = object_keys(&fixture);
        if point == "commit:written" {
            assert_eq!(keys, ["kept", "mixed"], "{point}: a durable commit is visible");
        } else {
            assert_eq!(keys, ["kept"], "{point}: a reader sees no commit whose batch is not durable");
        }
        // From `commit:logged` on the commit's log record is durable, and
        // the next writer's open (check does one) redoes the commit.
        let logged = LOGGED_CRASH_POINTS.contains(&point);
        let checked = fixture.ok(&["check"]);
        assert_eq!(checked.contains("redone: the index lacked commit"), logged, "{point}: {checked}");
        if logged || point == "commit:written" {
            assert_eq!(object_keys(&fixture), ["kept", "mixed"], "{point}: a commit with a durable log is kept");
            assert_eq!(fixture.get("mixed"), mixed, "{point}");
        } else {
            assert_eq!(object_keys(&fixture), ["kept"], "{point}: nothing uncommitted is visible");
        }
        assert_eq!(fixture.get("kept"), kept, "{point}");

        // The next writer removes what the crashed session left, and reuses no ids.
        fixture.put("after", &noise(1 << 20, 5));
        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        assert_eq!(count_files(store.files().dir()), store.stats().unwrap().containers, "{point}: leftovers remain");
        assert_clean(&store);
    }
}

/// The keys `cairn objects` lists, as a reader.
fn object_keys(fixture: &Fixture) -> Vec<String> {
    let listed: serde_json::Value = serde_json::from_str(&fixture.ok(&["--json", "objects"])).unwrap();
    listed.as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_string()).collect()
}

/// A session keeps only its open containers' blobs in memory (issue 18):
/// the rest are in the index's `pending` family, and the session still
/// finds them. Content that repeats far from its first copy (found in the
/// family) or close to it (while ingest's pipeline still holds it) is
/// stored once, and the family is empty after the commit.
#[test]
fn a_session_finds_blobs_it_wrote_after_they_left_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (far, near) = (noise(10 << 20, 7), noise(3 << 20, 8));
    // At the start ingest's pipeline runs furthest ahead of the appends.
    let data = [&near[..], &near, &far, &far].concat();
    store.put_object("twice", Cursor::new(data.clone()), "test", &|_| {}).unwrap();
    assert_eq!(read_object(&store, "twice"), data);
    assert_clean(&store);
    let stats = store.stats().unwrap();
    assert_eq!(stats.dead_bytes, 0, "the session wrote some blobs twice");
    // Noise does not compress: one copy of each is 13 MiB and a bit.
    let unique = (far.len() + near.len()) as u64;
    assert!(stats.stored_bytes < unique * 21 / 20, "{} bytes stored for {unique} of content", stats.stored_bytes);
    // Containers of 256 KiB, frames of 512 KiB: about a container a frame.
    assert!(stats.containers > 20, "the session sealed (and spilled) many containers: {}", stats.containers);
    assert!(store.index().scan(cf::PENDING, b"").next().is_none(), "the session's scratch entries outlived it");
}

/// Ingest looks chunks up several batches before it appends them, so a
/// chunk it found missing may have been written meanwhile and its
/// container spilled: the append still knows it and skips it (the ids of
/// recently spilled containers stay in memory, `pending.rs`).
#[test]
fn a_blob_written_again_just_after_its_container_spilled_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let session = store.session().unwrap();
    let codec = store.codec();
    let blob = |seed: u64| {
        let data = noise(8 << 10, seed);
        let id = store.keys_for_writing().unwrap().id(cairn_store::ids::BlobKind::Data, &data);
        cairn_store::container::encode_blob(id, cairn_store::ids::BlobKind::Data, &data, codec)
    };
    let first = blob(1);
    assert!(session.write_blob(&first).unwrap());
    // Past one 256 KiB container: the first one is handed off and spilled.
    for seed in 2..80 {
        assert!(session.write_blob(&blob(seed)).unwrap());
    }
    assert!(!session.write_blob(&first).unwrap(), "the blob was appended a second time");
    assert_eq!(session.missing(&[first.id]).unwrap(), [false]);
}

/// A commit too large for one batch is staged and applied in pieces
/// (`CAIRN_STAGE_ENTRIES` makes a few hundred blobs that large). A crash at
/// each step, or just before or after its final batch, leaves a commit
/// that readers do not see until a writer's open finishes (or redoes) it;
/// then it is whole and `check` is clean.
#[test]
fn a_staged_commit_survives_a_crash_at_every_step() {
    const STAGE: (&str, &str) = ("CAIRN_STAGE_ENTRIES", "40");
    for point in LOGGED_CRASH_POINTS.into_iter().chain(STAGED_CRASH_POINTS).chain(["commit:written"]) {
        let fixture = Fixture::new();
        fixture.ok(&["init", "--container-size", "256KiB"]);
        let kept = noise(1 << 20, 3);
        fixture.put("kept", &kept);
        let mut mixed = kept.clone();
        mixed.extend_from_slice(&noise(3 << 20, 4));
        let file = fixture.file("mixed", &mixed);
        let output = fixture
            .command(&["put", "mixed", &file])
            .env("CAIRN_CRASH_AT", point)
            .env(STAGE.0, STAGE.1)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{point}: the put should have crashed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("Error"), "{point}: {stderr}");

        let keys = object_keys(&fixture);
        if point == "commit:written" {
            assert_eq!(keys, ["kept", "mixed"], "{point}: a durable commit is visible");
        } else {
            assert_eq!(keys, ["kept"], "{point}: a reader sees no record of a commit not applied");
        }
        let output = fixture.command(&["check", "--read-data"]).env(STAGE.0, STAGE.1).output().unwrap();
        let checked = String::from_utf8(output.stdout).unwrap();
        assert!(output.status.success(), "{point}: {checked} {}", String::from_utf8_lossy(&output.stderr));
        let finished = checked.contains("interrupted while its entries were applied; finished it");
        let redone = checked.contains("redone: the index lacked commit");
        match point {
            "commit:logged" => assert!(redone && !finished, "{point}: {checked}"),
            "commit:written" => assert!(!redone && !finished, "{point}: {checked}"),
            _ => assert!(finished && !redone, "{point}: {checked}"),
        }
        assert_eq!(object_keys(&fixture), ["kept", "mixed"], "{point}: the commit is whole after the open");
        assert_eq!(fixture.get("mixed"), mixed, "{point}");
        assert_eq!(fixture.get("kept"), kept, "{point}");

        fixture.put("after", &noise(1 << 20, 5));
        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        assert_eq!(count_files(store.files().dir()), store.stats().unwrap().containers, "{point}: leftovers remain");
        assert!(store.index().scan(cf::STAGE, b"").next().is_none(), "{point}: the stage was not emptied");
        assert_clean(&store);
    }
}

/// The test above must be able to fail: without the stage's flush
/// (`CAIRN_FAULT=skip-sync:stage`), what a crash leaves is a final batch
/// whose staged entries are gone, and `check` finds the damage.
#[test]
fn the_staged_crash_test_finds_an_unflushed_stage() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let file = fixture.file("data", &noise(3 << 20, 6));
    let output = fixture
        .command(&["put", "data", &file])
        .env("CAIRN_CRASH_AT", "commit:applying")
        .env("CAIRN_STAGE_ENTRIES", "40")
        .env("CAIRN_FAULT", "skip-sync:stage")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the put should have crashed");
    let output = fixture.command(&["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "check found nothing wrong: {stdout}");
    assert!(stdout.contains("problem"), "{stdout}");
}
