//! The commit protocol through the library API: racing sessions that write
//! the same blobs, abandoned sessions, and a session whose process "dies"
//! (its session is leaked, never committed nor cleaned up).

use std::io::Cursor;

use cairn_store::fault::{CRASH_POINTS, LOGGED_CRASH_POINTS};
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
