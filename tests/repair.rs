//! The store's own history (issue 16): the log in the containers, `cairn
//! repair` rebuilding the index from the containers alone, and an index
//! that lost commits being found (`check`) and mended (redo, `repair`).
//! Damage is done the way a user's disk would do it: a deleted `index/`, a
//! truncated or flipped table file, a truncated write-ahead log.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use cairn_store::fault::REPAIR_CRASH_POINTS;
use cairn_store::{OpenMode, Store};
use serde_json::Value;

use crate::util::{Fixture, assert_recount_matches, noise};
use crate::versions::{diff_r, generate, mutate};

/// A store with history: ten versions of a tree (each kept as a copy to
/// compare restores with), objects put, replaced, cloned and removed, some
/// datasets forgotten, and a gc with compaction.
struct History {
    fixture: Fixture,
    source: PathBuf,
    /// Dataset id → a copy of the tree it holds.
    versions: Vec<(u64, PathBuf)>,
}

fn history() -> History {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let source = fixture.path("source");
    generate(&source, 120, 16);
    let mut versions = Vec::new();
    for version in 1..=10 {
        if version > 1 {
            mutate(&source, version);
        }
        let report: Value = serde_json::from_str(&fixture.ok(&["--json", "backup", source.to_str().unwrap()])).unwrap();
        let id = report["record"]["id"].as_u64().unwrap();
        let copy = fixture.path(&format!("v{version}"));
        let status = std::process::Command::new("cp").arg("-a").arg(&source).arg(&copy).status().unwrap();
        assert!(status.success());
        versions.push((id, copy));
        if version == 3 {
            fixture.put("a", &noise(300_000, 1));
            fixture.put("b", &noise(200_000, 2));
            fixture.ok(&["clone", "a", "a-copy"]);
        }
        if version == 6 {
            fixture.put("a", &noise(300_000, 3));
            fixture.ok(&["rm", "b"]);
            fixture.ok(&["clone", "latest", "--name", "copy-of-6"]);
        }
    }
    fixture.ok(&["forget", "2", "4", "5"]);
    versions.retain(|(id, _)| ![2, 4, 5].contains(id));
    fixture.ok(&["gc", "--compact-threshold", "0.01"]);
    History { fixture, source, versions }
}

/// What `datasets` and `objects` list, as JSON.
fn listing(fixture: &Fixture) -> (Value, Value) {
    let datasets = serde_json::from_str(&fixture.ok(&["--json", "datasets"])).unwrap();
    let objects = serde_json::from_str(&fixture.ok(&["--json", "objects"])).unwrap();
    (datasets, objects)
}

/// After a repair: the same listing, every dataset restores identical,
/// check --read-data is clean, counts match a recount, and the store
/// goes on (a backup and a gc work, and check is clean after them).
fn assert_whole(history: &History, before: &(Value, Value)) {
    let fixture = &history.fixture;
    assert_eq!(&listing(fixture), before, "datasets and objects as before");
    for (id, copy) in &history.versions {
        let target = fixture.path(&format!("restored-{id}"));
        fixture.ok(&["restore", &id.to_string(), "--to", target.to_str().unwrap()]);
        diff_r(copy, &target);
        fs::remove_dir_all(&target).unwrap();
    }
    fixture.ok(&["check", "--read-data"]);
    assert_recount_matches(&Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap());
    mutate(&history.source, 11);
    fixture.ok(&["backup", history.source.to_str().unwrap()]);
    fixture.ok(&["forget", "--keep-last", "2"]);
    fixture.ok(&["gc", "--compact-threshold", "0.01"]);
    fixture.ok(&["check", "--read-data"]);
    assert_recount_matches(&Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap());
}

fn repair(fixture: &Fixture, args: &[&str]) -> Value {
    let mut all = vec!["--json", "repair"];
    all.extend(args);
    serde_json::from_str(&fixture.ok(&all)).unwrap()
}

fn index_files(fixture: &Fixture, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture.store().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn a_deleted_index_is_rebuilt_from_the_containers_alone() {
    let history = history();
    let fixture = &history.fixture;
    let before = listing(fixture);
    fs::remove_dir_all(fixture.store().join("index")).unwrap();

    // Every command says what to do, in one line, and changes nothing.
    for args in [&["datasets"][..], &["backup", history.source.to_str().unwrap()], &["check"]] {
        let error = fixture.fails(args);
        assert!(error.contains("index") && error.contains("cairn repair"), "{args:?}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "{error}");
    }
    assert!(!fixture.store().join("index").exists(), "a failed command made an index");

    let dry = repair(fixture, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(!fixture.store().join("index").exists(), "a dry run changed the store");
    let report = repair(fixture, &[]);
    assert!(report["problems"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["datasets"], dry["datasets"]);
    assert_eq!(report["datasets"].as_u64().unwrap() as usize, history.versions.len() + 1, "{report}");
    assert_whole(&history, &before);
}

#[test]
fn a_damaged_table_file_is_rebuilt() {
    for damage in ["truncate", "flip"] {
        let history = history();
        let fixture = &history.fixture;
        let before = listing(fixture);
        // Flushed, so the records live in table files, not only the WAL.
        let tables = index_files(fixture, "sst");
        assert!(!tables.is_empty(), "no table files to damage");
        for table in &tables {
            let len = fs::metadata(table).unwrap().len();
            let file = fs::OpenOptions::new().write(true).open(table).unwrap();
            match damage {
                "truncate" => file.set_len(len / 2).unwrap(),
                _ => file.write_all_at(b"\xde\xad\xbe\xef", len / 3).unwrap(),
            }
        }
        // Damage RocksDB notices says what to do (a flipped byte in a block
        // nothing reads goes unnoticed until something does).
        let said = fixture.run(&["datasets"]);
        let error = String::from_utf8_lossy(&said.stderr);
        assert!(said.status.success() || error.contains("cairn repair"), "{damage}: {error}");
        let report = repair(fixture, &[]);
        assert!(report["moved_aside"].is_string(), "{damage}: {report}");
        assert_whole(&history, &before);
    }
}

#[test]
fn a_tampered_log_record_is_named_by_check() {
    let fixture = Fixture::new();
    for i in 0..4 {
        fixture.put(&format!("k{i}"), &noise(20_000, i));
    }
    let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
    let log = store.log().unwrap();
    assert_eq!(log.len(), 4, "one record per commit");
    let victim = &log[2];
    crate::util::flip_byte_in_blob(&store, victim.id);
    drop(store);
    let output = fixture.fails(&["check"]);
    let out = String::from_utf8_lossy(&fixture.run(&["check"]).stdout).into_owned();
    assert!(
        out.contains(&format!("log record of commit {}", victim.record.tid)),
        "check does not name commit {}: {out}{output}",
        victim.record.tid
    );
}

#[test]
fn commits_a_truncated_wal_lost_are_found_and_redone() {
    let fixture = Fixture::new();
    fixture.put("kept", &noise(100_000, 1));
    // Make the first commit durable in a table file, so the WAL holds only
    // what follows.
    flush_index(&fixture);
    let data = noise(150_000, 2);
    fixture.put("lost", &data);
    let wals = index_files(&fixture, "log");
    let wal = wals.last().expect("a write-ahead log");
    fs::OpenOptions::new().write(true).open(wal).unwrap().set_len(0).unwrap();

    // A reader sees the index as it is: the commit is gone...
    let error = fixture.fails(&["get", "lost", "-"]);
    assert!(error.contains("lost"), "{error}");
    // ...and check finds it in the log, redoes it, and says so.
    let out = fixture.ok(&["check"]);
    assert!(out.contains("redone: the index lacked commit 2 (put object 'lost')"), "{out}");
    assert_eq!(fixture.get("lost"), data);
    fixture.ok(&["check", "--read-data"]);
}

#[test]
fn a_truncated_manifest_is_refused_and_repaired() {
    let history = history();
    let fixture = &history.fixture;
    let before = listing(fixture);
    for manifest in fs::read_dir(fixture.store().join("index")).unwrap().map(|e| e.unwrap().path()) {
        if manifest.file_name().unwrap().to_string_lossy().starts_with("MANIFEST-") {
            fs::OpenOptions::new().write(true).open(&manifest).unwrap().set_len(10).unwrap();
        }
    }
    // Nothing may quietly list an empty store, or delete containers.
    let containers = crate::util::count_files(&fixture.store().join("containers"));
    let said = fixture.run(&["backup", history.source.to_str().unwrap()]);
    assert!(!said.status.success(), "a backup went ahead on a damaged index");
    let error = String::from_utf8_lossy(&said.stderr);
    assert!(error.contains("cairn repair"), "{error}");
    assert_eq!(crate::util::count_files(&fixture.store().join("containers")), containers, "containers were deleted");
    repair(fixture, &[]);
    assert_whole(&history, &before);
}

#[test]
fn a_crash_at_every_repair_step_is_mended_by_running_it_again() {
    for point in REPAIR_CRASH_POINTS.iter().filter(|p| p.starts_with("repair:")) {
        let history = history();
        let fixture = &history.fixture;
        let before = listing(fixture);
        // The old index is moved aside only when there is one: repairing a
        // sound index is allowed (and rebuilds the same).
        if *point == "repair:built" {
            fs::remove_dir_all(fixture.store().join("index")).unwrap();
        }
        let output = fixture.command(&["repair"]).env("CAIRN_CRASH_AT", point).output().unwrap();
        assert!(!output.status.success(), "{point}: repair should have crashed");
        let error = fixture.fails(&["datasets"]);
        assert!(error.contains("cairn repair"), "{point}: {error}");
        repair(fixture, &[]);
        assert_whole(&history, &before);
    }
}

#[test]
fn a_crash_while_redoing_a_commit_is_mended_by_the_next_open() {
    for point in REPAIR_CRASH_POINTS.iter().filter(|p| p.starts_with("redo:")) {
        let fixture = Fixture::new();
        fixture.put("kept", &noise(100_000, 1));
        let data = noise(150_000, 2);
        let crashed = fixture
            .command(&["put", "x", &fixture.file("x", &data)])
            .env("CAIRN_CRASH_AT", "commit:logged")
            .output()
            .unwrap();
        assert!(!crashed.status.success());
        let crashed = fixture.command(&["check"]).env("CAIRN_CRASH_AT", point).output().unwrap();
        assert!(!crashed.status.success(), "{point}: the redo should have crashed");
        fixture.ok(&["check", "--read-data"]);
        assert_eq!(fixture.get("x"), data, "{point}");
        assert_eq!(fixture.get("kept"), noise(100_000, 1), "{point}");
    }
}

#[test]
fn log_lists_who_did_what_and_one_datasets_life() {
    let history = history();
    let fixture = &history.fixture;
    let log: Value = serde_json::from_str(&fixture.ok(&["--json", "log"])).unwrap();
    let commits = log.as_array().unwrap();
    assert!(commits[0]["checkpoint"].as_bool().unwrap(), "the log starts at a checkpoint");
    let commands: Vec<&str> = commits.iter().map(|c| c["command"].as_str().unwrap()).collect();
    assert!(commands.iter().any(|c| c.starts_with("cairn --store") && c.contains(" forget 2 4 5")), "{commands:?}");
    assert!(commits.iter().any(|c| c["note"].as_str().unwrap().starts_with("gc: collected")), "{log}");
    let tids: Vec<u64> = commits.iter().map(|c| c["tid"].as_u64().unwrap()).collect();
    assert!(tids.windows(2).all(|w| w[0] < w[1]), "{tids:?}");

    let life: Value = serde_json::from_str(&fixture.ok(&["--json", "log", "4"])).unwrap();
    let events: Vec<&str> = life.as_array().unwrap().iter().map(|c| c["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["created", "forgotten", "collected"], "{life}");
    let table = fixture.ok(&["log", "copy-of-6"]);
    assert!(table.contains("cloned"), "{table}");
}

/// Flushes the index's memtables to table files (a writer's open and close
/// does not; RocksDB flushes when asked or when full).
fn flush_index(fixture: &Fixture) {
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    store.index().flush().unwrap();
}

#[test]
fn a_checkpoint_lets_older_records_go_and_repair_starts_from_it() {
    let history = history();
    let fixture = &history.fixture;
    let log_blobs = || {
        let store = Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap();
        let stats = store.stats().unwrap();
        stats.kinds.iter().find(|k| k.kind == "log").map_or(0, |k| k.blobs)
    };
    let before_checkpoint = log_blobs();
    {
        let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
        assert!(store.log_len().unwrap() > 10, "the history has many records");
        store.log_note("a test checkpoint".into(), true).unwrap();
        assert_eq!(store.log_len().unwrap(), 1, "the checkpoint supersedes every older record");
    }
    fixture.put("after-checkpoint", &noise(50_000, 9));
    fixture.ok(&["gc"]);
    let after_gc = log_blobs();
    assert!(after_gc < before_checkpoint, "gc collected superseded records: {before_checkpoint} -> {after_gc}");
    let log: Value = serde_json::from_str(&fixture.ok(&["--json", "log"])).unwrap();
    assert_eq!(log[0]["note"], "a test checkpoint", "{log}");
    assert!(log[0]["checkpoint"].as_bool().unwrap());
    fixture.ok(&["check", "--read-data"]);

    let before = listing(fixture);
    fs::remove_dir_all(fixture.store().join("index")).unwrap();
    let report = repair(fixture, &[]);
    assert!(report["problems"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["log_records"].as_u64(), log.as_array().map(|l| l.len() as u64), "{report}");
    assert_whole(&history, &before);
}

#[test]
fn an_attached_store_is_not_repaired_from_the_few_containers_it_holds() {
    use crate::remote::{add_remote, attach, cairn};
    let fixture = Fixture::new();
    let server = crate::s3::S3Server::start(&fixture.path("s3"));
    let origin = fixture.path("origin");
    let source = fixture.path("source");
    generate(&source, 20, 3);
    add_remote(&origin, &server, &[]);
    crate::util::succeed(cairn(&origin, &server, &["backup", source.to_str().unwrap(), "--push", "s3"]));
    let attached = fixture.path("attached");
    attach(&attached, &server);
    let output = cairn(&attached, &server, &["repair"]).output().unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("attached to remote") && error.contains("cairn attach"), "{error}");
    crate::util::succeed(cairn(&attached, &server, &["check"]));
}
