//! Backups, forget, gc and restores all at once in one process, for a minute
//! (`CAIRN_STRESS_SECONDS` changes it): afterwards every surviving dataset
//! restores identical to its source as it was backed up, and an independent
//! recount matches the index exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_gc::{GcOptions, GcReport, GroupBy, Policy};
use cairn_store::dataset::{BackupOptions, Progress, RestoreOptions};
use cairn_store::{CheckOptions, DatasetId, Store, StoreOptions};

use crate::fstree::{Meta, assert_same, snapshot};
use crate::util::{assert_recount_matches, text};
use crate::versions::{generate, mutate};

type Snapshots = Arc<Mutex<HashMap<DatasetId, BTreeMap<PathBuf, Meta>>>>;

const SOURCES: u64 = 3;

fn backup(store: &Store, source: &Path, tags: Vec<String>) -> DatasetId {
    let options = BackupOptions { sources: vec![source.to_path_buf()], tags, ..BackupOptions::default() };
    let report = store.backup(&options, &Progress::default()).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    report.record.id
}

fn restore_and_compare(store: &Store, id: DatasetId, target: &Path, expected: &BTreeMap<PathBuf, Meta>) {
    let _ = std::fs::remove_dir_all(target);
    let record = store.dataset(&id.to_string()).unwrap();
    let options = RestoreOptions::default();
    let report = store.restore(&record, &[], target, &options, &Progress::default()).unwrap();
    assert_eq!(report.files_failed, 0, "dataset {id}: {:?}", report.problems);
    let mut actual = snapshot(target);
    // The target directory itself is not part of the comparison (its own
    // metadata is the restore's, not the dataset's root).
    actual.remove(Path::new(""));
    let mut expected = expected.clone();
    expected.remove(Path::new(""));
    assert_same(&expected, &actual);
    std::fs::remove_dir_all(target).unwrap();
}

/// Keeps the 2 newest datasets of each source and the pinned ones;
/// returns how many it forgot.
fn forget_step(store: &Store) -> u64 {
    let policy = Policy { last: 2, tags: vec!["pinned".into()], group_by: GroupBy::Source, ..Policy::default() };
    let decisions = policy.apply(&store.datasets().unwrap(), &jiff::tz::TimeZone::UTC);
    let doomed: Vec<DatasetId> = decisions.iter().filter(|d| !d.keep).map(|d| d.dataset.id).collect();
    if !doomed.is_empty() {
        store.forget(&doomed).unwrap();
    }
    doomed.len() as u64
}

#[test]
fn backups_forget_gc_and_restores_race_for_a_minute() {
    let seconds: u64 = std::env::var("CAIRN_STRESS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { container_size: 256 * 1024, ..StoreOptions::default() };
    let store = Store::create(&dir.path().join("store"), &options).unwrap();
    // Every backup of more than 64 changed entries is staged and applied
    // in pieces (`apply.rs`) while forget and gc race it; smaller commits
    // (forget, small backups) stay one batch.
    store.set_stage_limit(64);
    let snapshots: Snapshots = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let backups = Arc::new(AtomicU64::new(0));

    let mut writers = Vec::new();
    for i in 0..SOURCES {
        let (store, snapshots, backups) = (store.clone(), snapshots.clone(), backups.clone());
        let source = dir.path().join(format!("source{i}"));
        writers.push(std::thread::spawn(move || {
            generate(&source, 150, 100 + i);
            // The first version is pinned by a tag, so the reader always has
            // something to restore while everything else comes and goes.
            let mut tags = vec!["pinned".to_string()];
            let mut version = 1;
            while Instant::now() < deadline {
                let id = backup(&store, &source, std::mem::take(&mut tags));
                snapshots.lock().unwrap().insert(id, snapshot(&source));
                backups.fetch_add(1, Ordering::Relaxed);
                version += 1;
                mutate(&source, version * 10 + i);
                // Content that comes back: its chunks are often named only by
                // a dataset being forgotten while this backup deduplicates
                // against them (the case the delete job's horizon exists for).
                std::fs::write(source.join("recycled.txt"), text(256 << 10, i * 10 + version % 3)).unwrap();
            }
        }));
    }
    let mut others = Vec::new();
    let forgotten = Arc::new(AtomicU64::new(0));
    {
        let (store, stop, forgotten) = (store.clone(), stop.clone(), forgotten.clone());
        others.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                forgotten.fetch_add(forget_step(&store), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(150));
            }
        }));
    }
    let collected = Arc::new(Mutex::new(GcReport::default()));
    {
        let (store, stop, collected) = (store.clone(), stop.clone(), collected.clone());
        others.push(std::thread::spawn(move || {
            // Small batches and groups: many commits interleaved with the backups'.
            let options = GcOptions {
                compact_threshold: 0.1,
                batch_blobs: 64,
                batch_children: 16,
                group_bytes: 1 << 20,
                group_records: 64,
            };
            while !stop.load(Ordering::Relaxed) {
                let report = cairn_gc::collect(&store, &options, &AtomicBool::new(false), &|_| {}).unwrap();
                assert!(report.problems.is_empty(), "{:?}", report.problems);
                let mut total = collected.lock().unwrap();
                total.blobs_reclaimed += report.blobs_reclaimed;
                total.compaction.containers_rewritten += report.compaction.containers_rewritten;
                total.compaction.containers_deleted += report.compaction.containers_deleted;
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    let restores = Arc::new(AtomicU64::new(0));
    {
        let (store, stop, snapshots, restores) = (store.clone(), stop.clone(), snapshots.clone(), restores.clone());
        let target = dir.path().join("reader");
        others.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let pinned: Vec<DatasetId> = store
                    .datasets()
                    .unwrap()
                    .into_iter()
                    .filter(|d| d.tags.iter().any(|t| t == "pinned"))
                    .map(|d| d.id)
                    .collect();
                for id in pinned {
                    let expected = snapshots.lock().unwrap().get(&id).cloned();
                    if let Some(expected) = expected {
                        restore_and_compare(&store, id, &target, &expected);
                        restores.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    for thread in writers {
        thread.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for thread in others {
        thread.join().unwrap();
    }

    let during = collected.lock().unwrap().clone();
    eprintln!(
        "{} backups, {} forgotten, {} restores; gc during the run: {} blobs, {} containers rewritten, {} deleted",
        backups.load(Ordering::Relaxed),
        forgotten.load(Ordering::Relaxed),
        restores.load(Ordering::Relaxed),
        during.blobs_reclaimed,
        during.compaction.containers_rewritten,
        during.compaction.containers_deleted
    );
    assert!(forgotten.load(Ordering::Relaxed) > 0 && during.blobs_reclaimed > 0, "the race never happened");
    assert!(
        during.compaction.containers_rewritten + during.compaction.containers_deleted > 0,
        "compaction never ran during backups"
    );

    // Backups that committed after the forget thread's last look.
    forget_step(&store);
    cairn_gc::collect(&store, &GcOptions::default(), &AtomicBool::new(false), &|_| {}).unwrap();
    let report = store.check(CheckOptions { read_data: true }).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_recount_matches(&store);
    let snapshots = snapshots.lock().unwrap();
    let survivors = store.datasets().unwrap();
    assert_eq!(survivors.len() as u64, SOURCES * 3, "2 newest + the pinned one per source");
    for dataset in survivors {
        restore_and_compare(&store, dataset.id, &dir.path().join("final"), &snapshots[&dataset.id]);
    }
}
