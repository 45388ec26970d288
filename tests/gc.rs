//! The delete job and compaction: space comes back, live data never goes,
//! a crash at any step converges, and the brief's two hazards (a revived
//! metadata blob counted twice; a collected blob named by a session that
//! skipped writing it) do not happen.

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use cairn_gc::{GcOptions, GcReport};
use cairn_store::fault::GC_CRASH_POINTS;
use cairn_store::index::cf;
use cairn_store::ingest::ingest;
use cairn_store::{ObjectRecord, OpenMode, Store};
use serde_json::Value;

use crate::util::{Fixture, assert_clean, assert_recount_matches, count_files, library_store, read_object, text};
use crate::versions::{diff_r, generate, mutate};

fn gc_json(fixture: &Fixture, args: &[&str]) -> Value {
    let mut all = vec!["--json", "gc"];
    all.extend(args);
    serde_json::from_str(&fixture.ok(&all)).unwrap()
}

fn backup(fixture: &Fixture, source: &Path) -> u64 {
    let report: Value = serde_json::from_str(&fixture.ok(&["--json", "backup", source.to_str().unwrap()])).unwrap();
    report["record"]["id"].as_u64().unwrap()
}

/// Makes `source` (`files` files from `seed`) and backs up `versions`
/// versions of it, changing it before each one after the first; calls
/// `after` with each version number once it is backed up.
fn back_up_versions(
    fixture: &Fixture,
    source: &Path,
    files: usize,
    seed: u64,
    versions: u64,
    mut after: impl FnMut(u64),
) {
    generate(source, files, seed);
    for version in 1..=versions {
        if version > 1 {
            mutate(source, version);
        }
        backup(fixture, source);
        after(version);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

fn restore_and_compare(fixture: &Fixture, dataset: &str, expected: &Path) {
    let target = fixture.path(&format!("restored-{dataset}"));
    let _ = fs::remove_dir_all(&target);
    fixture.ok(&["restore", dataset, "--to", target.to_str().unwrap()]);
    diff_r(expected, &target);
    fs::remove_dir_all(&target).unwrap();
}

fn open(fixture: &Fixture) -> Store {
    Store::open(&fixture.store(), OpenMode::ReadOnly).unwrap()
}

/// Every container file on disk has a record and vice versa.
fn assert_files_match_records(fixture: &Fixture) {
    let store = open(fixture);
    assert_eq!(count_files(store.files().dir()), store.containers().unwrap().len() as u64, "stray container files");
}

#[test]
fn forgetting_nine_of_twelve_versions_gives_back_their_space() {
    let fixture = Fixture::new();
    let fresh = Fixture::new();
    fixture.ok(&["init", "--container-size", "1MiB"]);
    fresh.ok(&["init", "--container-size", "1MiB"]);
    let source = fixture.path("source");
    let kept = fixture.path("kept");
    fs::create_dir(&kept).unwrap();
    back_up_versions(&fixture, &source, 1500, 3, 12, |version| {
        if version >= 10 {
            backup(&fresh, &source);
            copy_tree(&source, &kept.join(format!("v{version}")));
        }
    });
    let before = fixture.stored_bytes();
    let index_before = fixture.stats()["index_bytes"].as_u64().unwrap();
    fixture.ok(&["forget", "--keep-last", "3"]);
    let report = gc_json(&fixture, &[]);
    // The index shrinks with the store: the collected entries' tombstones
    // are compacted away and the write-ahead log flushed (issue 18).
    let stats = fixture.stats();
    let index_after = stats["index_bytes"].as_u64().unwrap();
    eprintln!(
        "index: {index_before} B before gc, {index_after} B after ({} B per live blob)",
        stats["index_bytes_per_blob"]
    );
    assert!(index_after < index_before, "the index went from {index_before} to {index_after} bytes");
    assert!(report["blobs_reclaimed"].as_u64().unwrap() > 0, "{report}");
    let after = fixture.stored_bytes();
    let target = fresh.stored_bytes();
    eprintln!("12 versions: {before} B; after forget + gc: {after} B; fresh store of the 3 kept: {target} B");
    assert!(after < before, "gc freed nothing: {report}");
    assert!(
        after as f64 <= target as f64 * 1.10,
        "after gc the store is {after} B, more than 10% over a fresh store of the same 3 versions ({target} B): {report}"
    );
    fixture.ok(&["check", "--read-data"]);
    assert_files_match_records(&fixture);
    assert_recount_matches(&open(&fixture));
    for (dataset, version) in [("latest~2", 10), ("latest~1", 11), ("latest", 12)] {
        restore_and_compare(&fixture, dataset, &kept.join(format!("v{version}")));
    }
    // A second run has nothing left to do.
    let again = gc_json(&fixture, &[]);
    assert_eq!(again["blobs_reclaimed"], 0, "{again}");
    assert_eq!(again["containers_rewritten"], 0, "{again}");
}

#[test]
fn a_dry_run_predicts_the_run_and_changes_nothing() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "512KiB"]);
    let source = fixture.path("source");
    back_up_versions(&fixture, &source, 400, 5, 4, |_| {});
    fixture.ok(&["forget", "--keep-last", "1"]);
    let stats_before = fixture.contents();
    let planned = gc_json(&fixture, &["--dry-run"]);
    assert_eq!(planned["dry_run"], true);
    assert_eq!(fixture.contents(), stats_before, "a dry run changed the store");
    let done = gc_json(&fixture, &[]);
    for field in ["blobs_reclaimed", "metadata_blobs", "bytes_reclaimed", "containers_deleted", "containers_rewritten"]
    {
        assert_eq!(planned[field], done[field], "{field}: planned {planned}, done {done}");
    }
    assert!(done["blobs_reclaimed"].as_u64().unwrap() > 0);
    let human = fixture.ok(&["gc", "--dry-run"]);
    assert!(human.contains("dry run") && human.contains("reclaimed     0 blobs"), "{human}");
}

/// Builds a store with a few versions, forgets all but the last, and
/// returns the fixture and a copy of the kept version's tree.
fn store_with_garbage(versions: u64) -> (Fixture, std::path::PathBuf) {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let source = fixture.path("source");
    back_up_versions(&fixture, &source, 300, 7, versions, |_| {});
    fixture.ok(&["forget", "--keep-last", "1"]);
    (fixture, source)
}

#[test]
fn a_crash_at_every_gc_step_converges_and_loses_nothing() {
    for point in GC_CRASH_POINTS {
        let (fixture, source) = store_with_garbage(4);
        let output = fixture
            .command(&["gc", "--compact-threshold", "0.01", "--batch", "100"])
            .env("CAIRN_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{point}: gc should have crashed");
        assert!(String::from_utf8_lossy(&output.stderr).contains(point), "{point}: crashed elsewhere");
        fixture.ok(&["check"]);
        restore_and_compare(&fixture, "latest", &source);
        let report = gc_json(&fixture, &["--compact-threshold", "0.01"]);
        assert!(report["problems"].as_array().unwrap().is_empty(), "{point}: {report}");
        fixture.ok(&["check", "--read-data"]);
        assert_files_match_records(&fixture);
        assert_recount_matches(&open(&fixture));
        restore_and_compare(&fixture, "latest", &source);
        // Converged: nothing more to collect or compact.
        let again = gc_json(&fixture, &["--compact-threshold", "0.01"]);
        assert_eq!((again["blobs_reclaimed"].as_u64(), again["containers_rewritten"].as_u64()), (Some(0), Some(0)));
    }
}

#[test]
fn sigkill_during_gc_at_random_moments_converges() {
    use rand::SeedableRng;
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "256KiB"]);
    let source = fixture.path("source");
    let kept = fixture.path("kept");
    back_up_versions(&fixture, &source, 300, 11, 22, |_| {});
    copy_tree(&source, &kept);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
    let mut killed = 0;
    // Kill moments are drawn below a bound that adapts to how long a gc
    // takes on this machine, so most runs are cut somewhere.
    let mut max_delay = 250;
    for round in 0..20 {
        // Each round has fresh garbage: one more dataset goes.
        fixture.ok(&["forget", "--keep-last", &(21 - round).to_string()]);
        let mut child = fixture.command(&["gc", "--compact-threshold", "0.05", "--batch", "5"]).spawn().unwrap();
        if crate::util::kill_at_random(&mut child, &mut rng, &mut max_delay) {
            killed += 1;
        }
        fixture.ok(&["check"]);
    }
    eprintln!("{killed} of 20 gc runs were killed before they finished");
    assert!(killed >= 10, "too few runs were actually interrupted ({killed}); the test proves little");
    gc_json(&fixture, &["--compact-threshold", "0.05"]);
    fixture.ok(&["check", "--read-data"]);
    assert_files_match_records(&fixture);
    assert_recount_matches(&open(&fixture));
    restore_and_compare(&fixture, "latest", &kept);
    let listed: Value = serde_json::from_str(&fixture.ok(&["--json", "datasets"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

fn new_store(dir: &tempfile::TempDir) -> Store {
    library_store(dir, 128 * 1024)
}

fn collect(store: &Store) -> GcReport {
    let options = GcOptions { compact_threshold: 0.01, ..GcOptions::default() };
    cairn_gc::collect(store, &options, &AtomicBool::new(false), &|_| {}).unwrap()
}

/// Commits the content `root` as object `key` through `session`.
fn commit_object(session: cairn_store::WriteSession, key: &str, content: cairn_store::content::ContentRef) {
    session
        .commit(|commit| {
            let record = ObjectRecord { content: content.root, size: content.size, created_ns: 0, tid: commit.tid() };
            commit.put(cf::OBJECTS, key.as_bytes(), serde_json::to_vec(&record).unwrap())?;
            Ok(())
        })
        .unwrap();
}

/// The loss hazard: a session that saw a blob with references does not
/// write it; if the blob then reaches zero, gc must keep it until the
/// session has committed its reference.
#[test]
fn gc_keeps_what_a_running_session_deduplicated_against() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let data = text(2 << 20, 31);
    store.put_object("a", Cursor::new(data.clone()), "a", &|_| {}).unwrap();
    let session = store.session().unwrap();
    let (content, stats) = ingest(&session, Cursor::new(data.clone()), "b", &|_| {}).unwrap();
    assert_eq!(session.bytes_written().unwrap() as usize, 0, "every chunk was deduplicated ({stats:?})");
    store.remove_object("a").unwrap();
    let report = collect(&store);
    assert!(report.protected > 0, "the zeroed blobs are protected: {report:?}");
    assert_eq!(report.blobs_reclaimed, 0, "{report:?}");
    commit_object(session, "b", content);
    assert_eq!(read_object(&store, "b"), data);
    collect(&store);
    assert_eq!(read_object(&store, "b"), data);
    assert_clean(&store);
    assert_recount_matches(&store);
}

/// The leak hazard: a content list at zero references that a commit names
/// again is revived with +1, its children not counted a second time; and
/// one collected while a session holds its own copy is re-entered with its
/// children counted once.
#[test]
fn revived_metadata_blobs_count_their_children_once() {
    for collect_before_commit in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = new_store(&dir);
        let data = text(1 << 20, 32);
        store.put_object("a", Cursor::new(data.clone()), "a", &|_| {}).unwrap();
        store.remove_object("a").unwrap();
        // Starts after the content list reached zero: writes its own copy of it.
        let session = store.session().unwrap();
        let (content, _) = ingest(&session, Cursor::new(data.clone()), "b", &|_| {}).unwrap();
        assert!(session.bytes_written().unwrap() > 0, "the condemned content list is written again");
        if collect_before_commit {
            let report = collect(&store);
            assert!(report.blobs_reclaimed > 0, "{report:?}");
        }
        commit_object(session, "b", content);
        assert_clean(&store);
        collect(&store);
        assert_eq!(read_object(&store, "b"), data);
        assert_clean(&store);
        assert_recount_matches(&store);
    }
}

/// A store with objects "mix" (garbage, then the bytes of "kept") and
/// "kept": they share containers, so once "mix" goes, compaction moves
/// "kept"'s chunks. Returns the store and those bytes.
fn mixed_store(dir: &tempfile::TempDir, seed: u64) -> (Store, Vec<u8>) {
    let store = new_store(dir);
    let kept = text(2 << 20, seed);
    let mut mix = text(1 << 20, seed + 1);
    mix.extend_from_slice(&kept);
    store.put_object("mix", Cursor::new(mix), "mix", &|_| {}).unwrap();
    store.put_object("kept", Cursor::new(kept.clone()), "kept", &|_| {}).unwrap();
    (store, kept)
}

/// In-process readers keep reading while compaction moves what they read:
/// an entry looked up before the move still leads to the bytes.
#[test]
fn reads_follow_blobs_that_compaction_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (store, kept) = mixed_store(&dir, 41);
    let mut reader = cairn_store::content::ContentReader::new(&store, store.object("kept").unwrap().content).unwrap();
    let chunks = reader.next_batch(100_000).unwrap();
    let ids: Vec<cairn_store::BlobId> = chunks.iter().map(|c| c.id).collect();
    let before: Vec<_> = store.index().blobs(&ids).unwrap().into_iter().map(Option::unwrap).collect();
    store.remove_object("mix").unwrap();
    let options = GcOptions { compact_threshold: 0.0, ..GcOptions::default() };
    let report = cairn_gc::collect(&store, &options, &AtomicBool::new(false), &|_| {}).unwrap();
    assert!(report.compaction.containers_rewritten > 0, "{report:?}");
    let mut moved = 0;
    let mut offset = 0;
    for (chunk, old) in chunks.iter().zip(before) {
        if store.entry(&chunk.id).unwrap().container != old.container {
            moved += 1;
            assert!(!store.files().path(old.container).exists(), "the old container is gone");
            let bytes = store.read_located(&chunk.id, old).unwrap();
            assert_eq!(bytes, kept[offset..offset + chunk.len as usize]);
        }
        offset += chunk.len as usize;
    }
    assert!(moved > 0, "compaction moved none of the kept chunks");
    assert_eq!(read_object(&store, "kept"), kept);
    assert_clean(&store);
    assert_recount_matches(&store);
}

/// `gc --every` runs until interrupted; Ctrl-C (SIGINT) ends it with 130
/// after the current commit, and the store is consistent.
#[test]
fn gc_every_runs_until_ctrl_c() {
    let (fixture, source) = store_with_garbage(3);
    let mut child = fixture.command(&["gc", "--every", "1s"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "gc --every exited on its own");
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "interrupted runs exit 130");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.matches("reclaimed ").count() >= 2, "it ran more than once:\n{stdout}");
    fixture.ok(&["check"]);
    restore_and_compare(&fixture, "latest", &source);
    assert_recount_matches(&open(&fixture));
}

/// A reader that opened before a gc (its own view of the index, like a
/// `cairn restore` running while `cairn gc` runs) finds blobs the gc moved.
#[test]
fn a_reader_opened_before_compaction_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (store, kept) = mixed_store(&dir, 61);
    store.remove_object("mix").unwrap();
    let reader = Store::open(store.root(), OpenMode::ReadOnly).unwrap();
    let options = GcOptions { compact_threshold: 0.0, ..GcOptions::default() };
    let report = cairn_gc::collect(&store, &options, &AtomicBool::new(false), &|_| {}).unwrap();
    assert!(report.compaction.containers_rewritten > 0, "{report:?}");
    assert_eq!(read_object(&reader, "kept"), kept);
}

/// Damaged bytes stop gc only where they are: a corrupt tree it must read
/// to collect stays queued, a container with a corrupt live record is not
/// compacted; both are named, the run exits 3, and nothing live is lost.
#[test]
fn gc_names_damage_and_works_around_it() {
    use cairn_store::index::cf;
    let (fixture, source) = store_with_garbage(4);
    // A forgotten dataset's root tree, queued for collection.
    let queued_tree = {
        let store = open(&fixture);
        let queued: Vec<cairn_store::BlobId> = store
            .index()
            .scan(cf::ZERO, b"")
            .map(|item| cairn_store::BlobId::from_slice(&item.unwrap().0).unwrap())
            .collect();
        queued.into_iter().find(|id| store.entry(id).unwrap().kind == cairn_store::BlobKind::Tree).unwrap()
    };
    let (_, tree) = crate::util::flip_byte_in_blob(&open(&fixture), queued_tree);
    // Threshold 1: only wholly dead containers go, so partly dead ones are
    // left for the second half.
    let output = fixture.run(&["gc", "--compact-threshold", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("cannot collect tree blob {tree}")) && stderr.contains("corrupt"), "{stderr}");
    restore_and_compare(&fixture, "latest", &source);

    // A live record damaged in a container that now has dead bytes.
    let store = open(&fixture);
    let (container, live) = store
        .containers()
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.dead_bytes > 0)
        .find_map(|(id, _)| {
            let usage = store.container_usage(id).unwrap();
            let live = usage.blobs.iter().find(|(_, e)| e.is_some_and(|e| e.refs > 0)).map(|(t, _)| t.id);
            live.map(|live| (id, live))
        })
        .expect("a partly dead container with a referenced record");
    drop(store);
    crate::util::flip_byte_in_blob(&open(&fixture), live);
    let output = fixture.run(&["gc", "--compact-threshold", "0.0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("container {container} left alone")), "{stderr}");
    assert!(open(&fixture).files().path(container).exists(), "the damaged container is kept");
}

/// A check that began before a compaction (a reader opened then) reports
/// no damage that is not there: the containers it listed and finds gone
/// were compacted away, and the blobs it reads are looked up again.
#[test]
fn a_check_during_compaction_finds_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = mixed_store(&dir, 62);
    store.remove_object("mix").unwrap();
    let reader = Store::open(store.root(), OpenMode::ReadOnly).unwrap();
    let options = GcOptions { compact_threshold: 0.0, ..GcOptions::default() };
    let report = cairn_gc::collect(&store, &options, &AtomicBool::new(false), &|_| {}).unwrap();
    assert!(report.compaction.containers_rewritten > 0, "{report:?}");
    let check = reader.check(cairn_store::CheckOptions { read_data: true }).unwrap();
    assert!(check.is_clean(), "{:#?}", check.problems);
}

/// The index write of a compaction fails after reaching RocksDB's log (an
/// unknown outcome): neither the old containers nor the new copies are
/// removed, the next open keeps whichever the index names, and nothing is
/// lost.
#[test]
fn a_compaction_whose_index_write_has_an_unknown_outcome_loses_nothing() {
    let (fixture, source) = store_with_garbage(4);
    fixture.ok(&["gc", "--compact-threshold", "1"]);
    let output = fixture
        .command(&["gc", "--compact-threshold", "0.01"])
        .env("CAIRN_FAULT", "lost-ack:compact:written")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("did not confirm"), "{stderr}");
    fixture.ok(&["check", "--read-data"]);
    restore_and_compare(&fixture, "latest", &source);
    gc_json(&fixture, &["--compact-threshold", "0.01"]);
    fixture.ok(&["check", "--read-data"]);
    assert_files_match_records(&fixture);
    restore_and_compare(&fixture, "latest", &source);
}

/// A cascade batch whose metadata blobs name more children than the job
/// allows ends after the blob that passes the limit, and the job still
/// collects everything; compaction groups hold a bounded number of records.
#[test]
fn cascade_batches_and_compaction_groups_stay_within_their_limits() {
    let fixture = Fixture::new();
    fixture.ok(&["init", "--container-size", "64KiB"]);
    let source = fixture.path("source");
    for dir in 0..3 {
        fs::create_dir_all(source.join(format!("d{dir}"))).unwrap();
        for file in 0..40 {
            fs::write(source.join(format!("d{dir}/f{file}")), format!("file {file} of directory {dir}")).unwrap();
        }
    }
    let id = backup(&fixture, &source);
    fixture.ok(&["forget", &id.to_string()]);

    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    // Pass 1: the dataset's root tree, which names the three directories.
    let first = store.reclaim_batch(None, 10_000, 50).unwrap();
    assert_eq!((first.blobs, first.metadata_blobs, first.next), (1, 1, None), "{first:?}");
    // Pass 2: the three directories' trees, 40 files each. The second
    // brings the children to 80, past 50: the batch ends there.
    let second = store.reclaim_batch(None, 10_000, 50).unwrap();
    assert_eq!((second.examined, second.metadata_blobs, second.newly_zero), (2, 2, 80), "{second:?}");
    let after = second.next.expect("the batch ended early, so the pass goes on");
    let third = store.reclaim_batch(Some(after), 10_000, 50).unwrap();
    assert_eq!(third.metadata_blobs, 1, "{third:?}");

    // The job with the same limits collects the rest, and compacts in
    // groups of at most 64 records (the store's containers hold more).
    let options = GcOptions { compact_threshold: 0.0, batch_children: 50, group_records: 64, ..GcOptions::default() };
    let report = cairn_gc::collect(&store, &options, &AtomicBool::new(false), &|_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(first.blobs + second.blobs + third.blobs + report.blobs_reclaimed, 4 + 120, "{report:?}");
    let stats = store.stats().unwrap();
    let left: Vec<_> = stats.kinds.iter().filter(|k| k.kind != "log" && k.blobs > 0).collect();
    assert!(left.is_empty(), "only the log is left once the only dataset is collected: {left:?}");
    assert_clean(&store);
}

/// The simulated cascade (`gc --dry-run`, `dedupe stats`) keeps what it
/// subtracts on scratch space and works in batches. In batches of one
/// (every collected metadata blob waits on disk to be listed), of three,
/// and of the default size, it predicts the same, and the real job then
/// collects exactly that.
#[test]
fn a_simulated_cascade_in_tiny_batches_predicts_what_gc_collects() {
    let fixture = Fixture::new();
    let source = fixture.path("source");
    back_up_versions(&fixture, &source, 200, 11, 3, |_| {});
    let store = Store::open(&fixture.store(), OpenMode::Write).unwrap();
    let first = store.datasets().unwrap().remove(0);
    let mut predictions = Vec::new();
    for batch in [1, 3, 16 << 10] {
        let mut cascade = cairn_gc::Cascade::with_batch(&store, batch).unwrap();
        cascade.release(first.root).unwrap();
        cascade.run().unwrap();
        assert!(cascade.problems.is_empty(), "{:?}", cascade.problems);
        predictions.push((cascade.blobs, cascade.metadata_blobs, cascade.record_bytes, cascade.data_raw_bytes));
    }
    assert_eq!(predictions[0], predictions[1]);
    assert_eq!(predictions[0], predictions[2]);
    let (blobs, metadata_blobs, bytes, _) = predictions[0];
    assert!(metadata_blobs > 3 && blobs > metadata_blobs, "{predictions:?}");

    store.forget(&[first.id]).unwrap();
    let report = collect(&store);
    assert_eq!((report.blobs_reclaimed, report.metadata_blobs, report.bytes_reclaimed), (blobs, metadata_blobs, bytes));
}
