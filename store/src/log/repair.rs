//! `cairn repair`: rebuilds the whole index from the containers alone.
//!
//! A new index is built beside the old one (`index.repair/`), then put in
//! its place with two renames; until the second rename the old index (or
//! its absence) is what a crash leaves, and running `repair` again starts
//! over. Steps:
//!
//! 1. **Entries**, from every container's footer: one entry per blob (the
//!    first copy found; later copies are dead bytes), at zero references.
//! 2. **The log.** Of the log records the containers hold, the newest one
//!    whose chain of `prev` links reaches a checkpoint unbroken is the head.
//!    Records are rebuilt by taking the checkpoint's records and replaying
//!    every record's changes from there to the head.
//! 3. **References**, recounted from the live roots (every dataset's tree,
//!    every object's content, every live log record) down through the
//!    metadata blobs, each counted once, as the invariant defines them.
//! 4. **Sweep.** Blobs nothing reaches leave the index and become dead
//!    bytes of their containers; containers get their records and the
//!    counters follow the highest ids.
//!
//! Memory stays bounded by RocksDB's, not the store's size: entries and
//! counts live in the new index as they are made (written without its
//! write-ahead log, then flushed), and only per-container totals, the log
//! records since the newest checkpoint and the recount's stack are held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use serde::Serialize;

use crate::config::StoreConfig;
use crate::container::{ContainerFiles, ContainerKind, Footer, TableEntry, read_footer, sync_dir};
use crate::dataset::Progress;
use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::ids::{BlobId, BlobKind, ContainerId, Tid};
use crate::index::{ContainerRecord, ContainerShape, Index, IndexEntry, cf, meta};
use crate::lock::{LockWait, WriterLock};
use crate::log::record::{Body, LogBlob, LogRecord};
use crate::log::write::tid_key;
use crate::refs::children_of;

/// What `repair` may do.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// Build the new index and compare it with the old, but change nothing.
    pub dry_run: bool,
}

/// What a repair found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Containers read.
    pub containers: u64,
    /// Blobs entered (reachable from a live root).
    pub blobs: u64,
    /// Blobs that nothing reaches, left out as dead bytes.
    pub unreachable_blobs: u64,
    /// Bytes of records nothing reaches (unreachable blobs and second copies).
    pub dead_bytes: u64,
    /// Log records replayed (from the newest checkpoint to the head).
    pub log_records: u64,
    /// The head's tid: the last commit the rebuilt index holds.
    pub tid: u64,
    /// Dataset records rebuilt.
    pub datasets: u64,
    /// Object records rebuilt.
    pub objects: u64,
    /// What the index found in place said, when it could be read.
    pub old_index: String,
    /// Dataset ids the old index lacked (or all, when it could not be read).
    pub datasets_restored: Vec<u64>,
    /// Dataset ids the old index had that the log does not.
    pub datasets_dropped: Vec<u64>,
    /// Object keys the old index lacked.
    pub objects_restored: Vec<String>,
    /// Object keys the old index had that the log does not.
    pub objects_dropped: Vec<String>,
    /// Where the old index was moved to.
    pub moved_aside: Option<PathBuf>,
    /// What could not be rebuilt, one sentence each.
    pub problems: Vec<String>,
    /// Seconds taken.
    pub seconds: f64,
}

/// Difference lists are cut at this many names (the counts stay exact).
const MAX_LISTED: usize = 1000;

/// Rebuilds the index of the store at `root` from its containers; see the
/// module documentation. Takes the writer lock as `wait` says.
pub fn repair(root: &Path, options: RepairOptions, wait: LockWait, progress: &Progress) -> Result<RepairReport> {
    let started = std::time::Instant::now();
    let config = StoreConfig::load(root)?;
    let _lock = WriterLock::acquire_waiting(root, wait, &mut |_| {})?;
    if let Some(origin) = crate::remote::Remotes::load(root)?.origin {
        return Err(Error::BadStore {
            path: root.to_path_buf(),
            reason: format!(
                "it is attached to remote '{origin}', where its data containers stay, and repair reads only the \
                 containers here; make it again with `cairn attach` (nothing was changed)"
            ),
        });
    }
    let files = ContainerFiles::new(root.join("containers"), config.id_scheme());
    let fresh = root.join("index.repair");
    remove_dir(&fresh)?;
    let mut report = RepairReport { dry_run: options.dry_run, ..RepairReport::default() };
    let index = Index::open(&fresh, false)?;
    let mut builder = Builder { index: &index, files: &files, report: &mut report };
    let containers = builder.enter_containers(progress)?;
    let logs = builder.read_log(&containers.logs)?;
    // (Opening a missing index, even read-only, would make its directory.)
    let old = match root.join("index").join("CURRENT").exists() {
        false => None,
        true => match Index::open(&root.join("index"), true) {
            Ok(old) => Some(old),
            Err(error) => {
                builder.report.old_index = format!("unreadable ({error})");
                None
            }
        },
    };
    let head = match choose_chain(&logs.records, &mut builder.report.problems) {
        Some(chain) => {
            builder.replay(&chain, &logs)?;
            chain.last().map(|(_, record)| (record.tid, chain.iter().map(|(id, r)| (r.tid(), *id)).collect()))
        }
        None if logs.records.is_empty() && old.is_some() => {
            let old = old.as_ref().expect("checked");
            builder.report.problems.push(
                "the containers hold no log (the store was last written by a cairn without one): dataset and \
                 object records were taken from the old index"
                    .into(),
            );
            builder.copy_records(old)?;
            None
        }
        None => {
            return Err(Error::BadStore {
                path: root.to_path_buf(),
                reason: "no unbroken log in the containers to rebuild dataset and object records from; nothing was \
                         changed"
                    .into(),
            });
        }
    };
    let (tid, live_log): (u64, Vec<(Tid, BlobId)>) = head.unwrap_or((0, Vec::new()));
    builder.recount(&live_log)?;
    builder.sweep_and_finish(&containers, Tid(tid), &live_log, old.as_ref())?;
    if let Some(old) = &old {
        builder.report.old_index = match compare(old, &index, builder.report) {
            Ok(()) => "readable".into(),
            Err(error) => format!("damaged ({error})"),
        };
    } else if builder.report.old_index.is_empty() {
        builder.report.old_index = "missing".into();
    }
    drop(old);
    index.flush()?;
    drop(index);
    crash_point("repair:built");
    if options.dry_run {
        remove_dir(&fresh)?;
    } else {
        report.moved_aside = swap_in(root, &fresh)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Puts `fresh` in place of `root/index`, moving the old one aside.
fn swap_in(root: &Path, fresh: &Path) -> Result<Option<PathBuf>> {
    let current = root.join("index");
    let mut moved = None;
    if current.exists() {
        let stamp = crate::clock::now_ns() / 1_000_000_000;
        let aside = root.join(format!("index.old-{stamp}"));
        std::fs::rename(&current, &aside).map_err(|e| Error::io("moving the old index aside", &current, e))?;
        moved = Some(aside);
        sync_dir(root)?;
        crash_point("repair:moved-aside");
    }
    std::fs::rename(fresh, &current).map_err(|e| Error::io("putting the rebuilt index in place", fresh, e))?;
    sync_dir(root)?;
    Ok(moved)
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing an unfinished repair", path, e)),
    }
}

/// What the footers said about each container.
struct Containers {
    /// What each holds.
    info: BTreeMap<ContainerId, ContainerShape>,
    /// Every log blob, where it is.
    logs: Vec<(ContainerId, TableEntry)>,
}

/// The log blobs read.
struct Logs {
    records: HashMap<BlobId, LogRecord>,
    pieces: HashMap<BlobId, crate::log::Piece>,
}

struct Builder<'a> {
    index: &'a Index,
    files: &'a ContainerFiles,
    report: &'a mut RepairReport,
}

impl Builder<'_> {
    /// Step 1: an entry at zero references for the first copy of every blob.
    fn enter_containers(&mut self, progress: &Progress) -> Result<Containers> {
        let ids = self.files.on_disk()?;
        progress.total_files.store(ids.len() as u64, Ordering::Relaxed);
        let mut containers = Containers { info: BTreeMap::new(), logs: Vec::new() };
        for id in ids {
            let path = self.files.path(id);
            let Footer { table, layout } = match read_footer(&path, id) {
                Ok(footer) => footer,
                Err(error) => {
                    if !error.is_never_sealed() {
                        self.report.problems.push(format!("{error}; the blobs it holds are left out"));
                    }
                    progress.add(1, 0);
                    continue;
                }
            };
            let len = std::fs::metadata(&path).map_err(|e| Error::io("reading container", &path, e))?.len();
            let blob_ids: Vec<BlobId> = table.iter().map(|t| t.id).collect();
            let existing = self.index.blobs(&blob_ids)?;
            let mut batch = WriteBatch::default();
            let mut here = HashSet::new();
            for (entry, existing) in table.iter().zip(existing) {
                if existing.is_some() || !here.insert(entry.id) {
                    continue;
                }
                batch.put_cf(self.index.cf(cf::BLOBS), entry.id.as_bytes(), IndexEntry::new(id, entry, 0).encode());
                if entry.kind == BlobKind::Log {
                    containers.logs.push((id, *entry));
                }
            }
            self.index.write_unlogged(batch)?;
            containers.info.insert(id, ContainerShape::of(ContainerKind::holding(&table), len, &table, layout));
            self.report.containers += 1;
            progress.add(1, len);
        }
        Ok(containers)
    }

    /// Reads every log blob; one that does not read is a problem, not an end.
    fn read_log(&mut self, logs: &[(ContainerId, TableEntry)]) -> Result<Logs> {
        let mut out = Logs { records: HashMap::new(), pieces: HashMap::new() };
        for (container, entry) in logs {
            match LogBlob::read(self.files, *container, entry) {
                Ok(LogBlob::Record(record)) => {
                    out.records.insert(entry.id, record);
                }
                Ok(LogBlob::Piece(piece)) => {
                    out.pieces.insert(entry.id, piece);
                }
                Err(error) => self.report.problems.push(format!("log blob {:#}: {error}", entry.id)),
            }
        }
        Ok(out)
    }

    /// Step 2: the records as of the head: the checkpoint's, then every
    /// record's changes in order.
    fn replay(&mut self, chain: &[(BlobId, &LogRecord)], logs: &Logs) -> Result<()> {
        let (base_id, base) = chain[0];
        let mut batch = WriteBatch::default();
        for piece_id in base.checkpoint.iter().flatten() {
            let piece = logs.pieces.get(&BlobId(*piece_id)).ok_or_else(|| Error::BadStore {
                path: self.files.dir().to_path_buf(),
                reason: format!(
                    "checkpoint piece {:#} of commit {} (log record {base_id:#}) is missing or damaged; records \
                     cannot be rebuilt from this log",
                    BlobId(*piece_id),
                    base.tid
                ),
            })?;
            for record in &piece.records {
                if let Some(value) = &record.value {
                    batch.put_cf(self.index.cf(record.family.cf()), &record.key, value);
                }
            }
        }
        for (id, record) in chain {
            if let Body::Commit { changes, .. } = &record.body {
                for change in changes {
                    match &change.value {
                        Some(value) => batch.put_cf(self.index.cf(change.family.cf()), &change.key, value),
                        None => batch.delete_cf(self.index.cf(change.family.cf()), &change.key),
                    }
                }
            }
            batch.put_cf(self.index.cf(cf::LOG), tid_key(record.tid()), id.as_bytes());
            if batch.len() >= 100_000 {
                self.index.write_unlogged(std::mem::take(&mut batch))?;
            }
        }
        self.index.write_unlogged(batch)?;
        self.report.log_records = chain.len() as u64;
        Ok(())
    }

    /// Records from an index that still reads, for a store without a log.
    fn copy_records(&mut self, old: &Index) -> Result<()> {
        let mut batch = WriteBatch::default();
        for family in [cf::DATASETS, cf::OBJECTS] {
            for item in old.scan(family, b"") {
                let (key, value) = item?;
                batch.put_cf(self.index.cf(family), key, value);
            }
        }
        if let Some(next) = old.get(cf::META, meta::NEXT_DATASET)? {
            batch.put_cf(self.index.cf(cf::META), meta::NEXT_DATASET, next);
        }
        self.index.write_unlogged(batch)
    }

    /// Step 3: every reference from the live roots, each metadata blob's
    /// children counted once (when it is first reached).
    fn recount(&mut self, live_log: &[(Tid, BlobId)]) -> Result<()> {
        let mut pending: Vec<BlobId> = live_log.iter().map(|(_, id)| *id).collect();
        for family in [cf::DATASETS, cf::OBJECTS] {
            for item in self.index.scan(family, b"") {
                let (key, value) = item?;
                match crate::commit::root_of(family, &key, &value) {
                    Ok(Some(root)) => pending.push(root),
                    Ok(None) => {}
                    Err(error) => self.report.problems.push(format!("{error}; left as it is")),
                }
                if family == cf::DATASETS {
                    self.report.datasets += 1;
                } else {
                    self.report.objects += 1;
                }
            }
        }
        let mut missing = 0u64;
        while let Some(id) = pending.pop() {
            let Some(mut entry) = self.index.blob(&id)? else {
                missing += 1;
                if missing <= 10 {
                    self.report.problems.push(format!(
                        "blob {id} is named but no container holds it; `cairn check` lists what it affects"
                    ));
                }
                continue;
            };
            entry.refs += 1;
            let mut batch = WriteBatch::default();
            batch.put_cf(self.index.cf(cf::BLOBS), id.as_bytes(), entry.encode());
            self.index.write_unlogged(batch)?;
            if entry.refs == 1 && entry.kind.is_metadata() {
                let children = self
                    .files
                    .read_blob(entry.container, &entry.record(id))
                    .and_then(|bytes| children_of(entry.kind, id, &bytes));
                match children {
                    Ok(children) => pending.extend(children),
                    Err(error) => self.report.problems.push(format!("{error}; what it names is not counted")),
                }
            }
        }
        if missing > 10 {
            self.report.problems.push(format!("{} more blobs are named but missing", missing - 10));
        }
        Ok(())
    }

    /// Step 4: unreachable entries out, container records, counters.
    fn sweep_and_finish(
        &mut self,
        containers: &Containers,
        tid: Tid,
        live_log: &[(Tid, BlobId)],
        old: Option<&Index>,
    ) -> Result<()> {
        let mut live: HashMap<ContainerId, u64> = HashMap::new();
        let mut batch = WriteBatch::default();
        for item in self.index.scan(cf::BLOBS, b"") {
            let (key, value) = item?;
            let Some(entry) = IndexEntry::decode(&value) else { continue };
            if entry.refs == 0 {
                batch.delete_cf(self.index.cf(cf::BLOBS), &key);
                self.report.unreachable_blobs += 1;
            } else {
                *live.entry(entry.container).or_default() += entry.accounted_len();
                self.report.blobs += 1;
            }
            if batch.len() >= 100_000 {
                self.index.write_unlogged(std::mem::take(&mut batch))?;
            }
        }
        for (id, shape) in &containers.info {
            let record = ContainerRecord::new(shape, tid, false, live.get(id).copied().unwrap_or(0));
            self.report.dead_bytes += record.dead_bytes;
            batch.put_cf(self.index.cf(cf::CONTAINERS), id.key(), record.encode());
        }
        // Settings and claims the old index kept beside the counters, as
        // far as they read.
        if let Some(old) = old {
            for item in old.scan(cf::META, b"") {
                let Ok((key, value)) = item else { break };
                if ![meta::TID, meta::NEXT_CONTAINER, meta::NEXT_DATASET, meta::LOG_HEAD].contains(&&*key) {
                    batch.put_cf(self.index.cf(cf::META), key, value);
                }
            }
        }
        let next_container = containers.info.keys().next_back().map_or(0, |id| id.0.saturating_add(1));
        let last_dataset = self.index.scan_after(cf::DATASETS, None).last().transpose()?;
        let after_last = last_dataset
            .and_then(|(key, _)| <[u8; 8]>::try_from(&*key).ok())
            .map_or(1, |key| u64::from_be_bytes(key).saturating_add(1));
        let replayed = self.index.meta_u64(meta::NEXT_DATASET)?;
        batch.put_cf(self.index.cf(cf::META), meta::NEXT_DATASET, replayed.max(after_last).to_le_bytes());
        batch.put_cf(self.index.cf(cf::META), meta::TID, tid.0.to_le_bytes());
        batch.put_cf(self.index.cf(cf::META), meta::NEXT_CONTAINER, next_container.to_le_bytes());
        if let Some((_, head)) = live_log.last() {
            batch.put_cf(self.index.cf(cf::META), meta::LOG_HEAD, head.as_bytes());
        }
        self.index.write_unlogged(batch)?;
        self.report.tid = tid.0;
        Ok(())
    }
}

/// The chain to replay, checkpoint first: from the newest record whose
/// `prev` links reach a checkpoint with every record present and tids
/// falling. Records newer than its head are reported as left out.
fn choose_chain<'a>(
    records: &'a HashMap<BlobId, LogRecord>,
    problems: &mut Vec<String>,
) -> Option<Vec<(BlobId, &'a LogRecord)>> {
    let mut newest_first: Vec<(&BlobId, &LogRecord)> = records.iter().collect();
    newest_first.sort_by_key(|(id, record)| (std::cmp::Reverse(record.tid), **id));
    let mut broken: HashSet<BlobId> = HashSet::new();
    for (head, _) in &newest_first {
        let mut chain = Vec::new();
        let mut at = **head;
        let complete = loop {
            if broken.contains(&at) {
                break false;
            }
            let Some(record) = records.get(&at) else { break false };
            chain.push((at, record));
            if record.checkpoint.is_some() {
                break true;
            }
            match record.prev() {
                Some(prev) if records.get(&prev).is_some_and(|p| p.tid < record.tid) => at = prev,
                _ => break false,
            }
        };
        if complete {
            let tid = chain[0].1.tid;
            for (id, record) in newest_first.iter().filter(|(_, r)| r.tid > tid) {
                problems.push(format!(
                    "the log record of commit {} ({}; blob {id:#}) does not chain back to a checkpoint: a record \
                     before it is missing or damaged, so it is left out",
                    record.tid,
                    record.summary()
                ));
            }
            chain.reverse();
            return Some(chain);
        }
        broken.extend(chain.into_iter().map(|(id, _)| id));
    }
    None
}

/// Fills the report's lists of records that the old index and the new one
/// disagree on, walking both in key order.
fn compare(old: &Index, new: &Index, report: &mut RepairReport) -> Result<()> {
    let keys = |index: &Index, family: &str| -> Result<Vec<Box<[u8]>>> {
        index.scan(family, b"").map(|item| item.map(|(key, _)| key)).collect()
    };
    let dataset = |key: &[u8]| <[u8; 8]>::try_from(key).map_or(0, u64::from_be_bytes);
    let (added, dropped) = differences(keys(old, cf::DATASETS)?, keys(new, cf::DATASETS)?);
    report.datasets_restored = added.iter().map(|k| dataset(k)).collect();
    report.datasets_dropped = dropped.iter().map(|k| dataset(k)).collect();
    let (added, dropped) = differences(keys(old, cf::OBJECTS)?, keys(new, cf::OBJECTS)?);
    report.objects_restored = added.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    report.objects_dropped = dropped.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    Ok(())
}

/// Keys in `new` only and in `old` only (both sorted), at most
/// [`MAX_LISTED`] of each.
fn differences(old: Vec<Box<[u8]>>, new: Vec<Box<[u8]>>) -> (Vec<Box<[u8]>>, Vec<Box<[u8]>>) {
    let old: std::collections::BTreeSet<_> = old.into_iter().collect();
    let new: std::collections::BTreeSet<_> = new.into_iter().collect();
    let added = new.difference(&old).take(MAX_LISTED).cloned().collect();
    let dropped = old.difference(&new).take(MAX_LISTED).cloned().collect();
    (added, dropped)
}
