//! What a commit changes, and how its references are resolved.
//!
//! [`Commit`] collects a transaction's record changes and its root
//! references. [`Resolution`] turns root references into index changes, top
//! down, following the brief's rule for every blob `b` that gains a reference:
//!
//! - If the index already has an entry for `b` (committed by someone else, or
//!   an older copy still there, even at refs 0 and not yet collected), `b` gets
//!   +1 and nothing below it changes: its children are already counted by
//!   that entry. Any copy this session wrote is dead bytes.
//! - Otherwise, if this session wrote `b`, an entry is inserted with refs 1,
//!   and each child `b` names gets +1 in turn, recursively.
//! - Otherwise `b` is named by nobody's bytes: the commit fails (nothing is
//!   written) rather than commit a dangling reference.
//!
//! So every entry's children are counted exactly once, whichever session's
//! copy wins. Reference drops come after all additions, and a count that ends
//! at zero queues the blob in `zero` for the delete job.
//!
//! All of this runs under the commit lock: no other commit and no delete-job
//! step can change an entry between the read here and the batch write. So
//! the resolution writes each changed entry whole, its new count included,
//! rather than a delta: entries that can be put twice without harm, which
//! is what lets a commit too large for one batch be applied in pieces
//! (`apply.rs`). The resolution's memory is bounded ([`Stage`]): a walk
//! holds one list of children per level, and the stage spills.
//!
//! What changes a count: a commit (whole entries, under the lock) and the
//! delete job's cascade (merge deltas, under the lock). The merge operator
//! also reads the deltas that stores written before this left.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::id_filter::IdFilter;
use crate::ids::{BlobId, ContainerId, Tid};
use crate::index::{Index, IndexEntry, cf};
use crate::log::{Change, Family};
use crate::session::Written;

/// One record change.
enum RecordOp {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
}

impl RecordOp {
    fn target(&self) -> (&'static str, &[u8]) {
        match self {
            RecordOp::Put(family, key, _) | RecordOp::Delete(family, key) => (family, key),
        }
    }
}

/// A transaction being built under the commit lock.
///
/// Root references follow from the record changes: putting a dataset or
/// object record adds a reference to its root and drops the one the record
/// it replaces held; deleting one drops its root's. So a commit's reference
/// changes are a function of its record changes alone, which is what lets
/// the log replay a commit from its record (`log/redo.rs`).
pub struct Commit<'a> {
    index: &'a Index,
    tid: Tid,
    adds: Vec<BlobId>,
    drops: Vec<BlobId>,
    records: Vec<RecordOp>,
}

impl<'a> Commit<'a> {
    pub(crate) fn new(index: &'a Index, tid: Tid) -> Commit<'a> {
        Commit { index, tid, adds: Vec::new(), drops: Vec::new(), records: Vec::new() }
    }

    /// The index, for reads that must be consistent with this commit.
    pub fn index(&self) -> &Index {
        self.index
    }

    /// The tid this commit will have.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// Something other than a record names `root` from now on (a log
    /// record, held by the log).
    pub(crate) fn add_ref(&mut self, root: BlobId) {
        self.adds.push(root);
    }

    /// Something other than a record that named `root` lets it go (a log
    /// record a checkpoint superseded).
    pub(crate) fn drop_ref(&mut self, root: BlobId) {
        self.drops.push(root);
    }

    /// The value `key` has as of this commit so far.
    pub fn current(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for op in self.records.iter().rev() {
            if op.target() == (family, key) {
                return Ok(match op {
                    RecordOp::Put(_, _, value) => Some(value.clone()),
                    RecordOp::Delete(..) => None,
                });
            }
        }
        self.index.get(family, key)
    }

    /// Puts a record, adding a reference to the root it names and dropping
    /// the one the record it replaces named.
    pub fn put(&mut self, family: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        self.drop_root_of_current(family, &key)?;
        if let Some(root) = root_of(family, &key, &value)? {
            self.adds.push(root);
        }
        self.records.push(RecordOp::Put(family, key, value));
        Ok(())
    }

    /// Deletes a record, dropping the reference it held on its root.
    pub fn delete(&mut self, family: &'static str, key: impl Into<Vec<u8>>) -> Result<()> {
        let key = key.into();
        self.drop_root_of_current(family, &key)?;
        self.records.push(RecordOp::Delete(family, key));
        Ok(())
    }

    fn drop_root_of_current(&mut self, family: &'static str, key: &[u8]) -> Result<()> {
        if let Some(old) = self.current(family, key)? {
            if let Some(root) = root_of(family, key, &old)? {
                self.drops.push(root);
            }
        }
        Ok(())
    }

    /// The record changes the log keeps (datasets, objects, `next_dataset`), in order.
    pub(crate) fn changes(&self) -> Vec<Change> {
        self.records
            .iter()
            .filter_map(|op| {
                let (family, key) = op.target();
                let value = match op {
                    RecordOp::Put(_, _, value) => Some(value.clone()),
                    RecordOp::Delete(..) => None,
                };
                Some(Change { family: Family::of(family, key)?, key: key.to_vec(), value })
            })
            .collect()
    }

    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for op in self.records {
            match op {
                RecordOp::Put(family, key, value) => batch.put_cf(self.index.cf(family), key, value),
                RecordOp::Delete(family, key) => batch.delete_cf(self.index.cf(family), key),
            }
        }
        batch
    }
}

/// The root a record names: a dataset's tree, an object's content. Other
/// families name none.
pub fn root_of(family: &str, key: &[u8], value: &[u8]) -> Result<Option<BlobId>> {
    match family {
        cf::DATASETS => Ok(Some(crate::dataset::record::decode_record(key, value)?.root)),
        cf::OBJECTS => {
            let name = String::from_utf8_lossy(key);
            Ok(Some(crate::objects::decode_record(&name, value)?.content))
        }
        _ => Ok(None),
    }
}

/// One step of the resolution's walk.
enum Walk {
    /// Ids that gain a reference each time they appear.
    Count(Vec<BlobId>),
    /// New metadata blobs whose children gain one.
    Expand(Vec<BlobId>),
}

/// Children the walk gathers into one batch of lookups (more when one
/// blob names more).
const WALK_BATCH: usize = 4096;

/// Ids the resolution gathers before it looks them up together
/// ([`Resolution::resolve_fresh`]; fewer when the stage's limit is lower):
/// 5 MiB, and enough that each block of the `pending` family they read
/// holds several of them (about 17 entries a block: 2.4 gathered ids in
/// each for a session that wrote a million blobs).
const FRESH_LIMIT: usize = 1 << 17;

/// What the committing session wrote, as the resolution asks for it
/// (from several threads at once: [`written_in_parallel`]).
pub(crate) trait SessionBlobs: Sync {
    /// Where the session wrote each id, if it did.
    fn written(&self, ids: &[BlobId]) -> Result<Vec<Option<Written>>>;
    /// The children of metadata blobs the session wrote.
    fn children(&self, ids: &[BlobId]) -> Result<Vec<Vec<BlobId>>>;
    /// Entries the resolution may hold in memory before its stage spills.
    fn stage_limit(&self) -> usize;
}

/// Ids below which one thread looks them all up: a thread costs tens of
/// microseconds, a spilled lookup about two.
const PARALLEL_LOOKUP_MIN: usize = 1024;

/// `session.written(ids)`, split across the machine's cores when there are
/// many. The resolution is the commit's one long serial step, under the
/// commit lock, and most of it is these lookups (a first backup of
/// `/usr/lib`: 1.1 s of the 1.8 s that resolving 467,000 new blobs took,
/// each a random read of the spilled `pending` family), while every other
/// core is idle. Plain scoped threads, not rayon: a rayon worker waiting
/// on a join may steal another session's task, which could wait on the
/// commit lock this commit holds.
fn written_in_parallel(session: &dyn SessionBlobs, ids: &[BlobId]) -> Result<Vec<Option<Written>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(ids.len() / PARALLEL_LOOKUP_MIN);
    if threads < 2 {
        return session.written(ids);
    }
    let part = ids.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = ids.chunks(part);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| scope.spawn(move || session.written(part))).collect();
        let mut found = session.written(first)?;
        for other in others {
            found.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
        }
        Ok(found)
    })
}

/// The index changes a commit's references amount to: every entry it
/// inserts or whose count it changes, as the whole new entry, in a
/// [`Stage`]; and the blobs whose count ends at zero.
pub(crate) struct Resolution<'a> {
    stage: Stage<'a>,
    /// Blobs whose count this commit brings to zero.
    zeroed: Vec<BlobId>,
    /// Record bytes of the session's copies that became entries, by container.
    live: HashMap<ContainerId, u64>,
}

impl<'a> Resolution<'a> {
    /// Resolves `commit`'s references top down. Each batch of ids (a
    /// blob's children) is looked up in the stage (already counted by this
    /// commit) at once; the rest, counted by nobody yet, wait in `fresh`
    /// until it holds [`FRESH_LIMIT`] ids, and are then looked up
    /// together, in id order, in what the session wrote and in the index
    /// ([`Resolution::resolve_fresh`]). Memory holds the stage's overlay,
    /// `fresh`, and one list of children per level of the walk, whatever
    /// the commit's size.
    pub(crate) fn resolve(
        index: &'a Index,
        commit: &Commit<'_>,
        session: &dyn SessionBlobs,
        unchanged_since_start: bool,
    ) -> Result<Resolution<'a>> {
        let stage = Stage::new(index, session.stage_limit());
        let mut resolution = Resolution { stage, zeroed: Vec::new(), live: HashMap::new() };
        // Depth first: each level holds one batch of ids to count and the
        // new metadata blobs whose children are still to be counted, taken
        // a few at a time, so the walk's memory is bounded by the depth of
        // the tree, not by its width (a directory of a thousand new
        // subdirectories does not bring all their listings in at once).
        let mut pending: Vec<Walk> = vec![Walk::Count(commit.adds.clone())];
        // Ids counted by nobody yet, with the references this commit gives
        // them (an id may be here more than once: its counts add up).
        let mut fresh: Vec<(BlobId, i64)> = Vec::new();
        loop {
            while let Some(work) = pending.pop() {
                let mut ids = match work {
                    Walk::Count(ids) => ids,
                    Walk::Expand(mut parents) => {
                        let mut ids = Vec::new();
                        while ids.len() < WALK_BATCH
                            && let Some(parent) = parents.pop()
                        {
                            ids.extend(session.children(&[parent])?.pop().unwrap_or_default());
                        }
                        if !parents.is_empty() {
                            pending.push(Walk::Expand(parents));
                        }
                        ids
                    }
                };
                if ids.is_empty() {
                    continue;
                }
                ids.sort_unstable();
                let mut unique: Vec<(BlobId, i64)> = Vec::with_capacity(ids.len());
                for id in ids {
                    match unique.last_mut() {
                        Some((last, n)) if *last == id => *n += 1,
                        _ => unique.push((id, 1)),
                    }
                }
                let ids: Vec<BlobId> = unique.iter().map(|(id, _)| *id).collect();
                for ((id, n), staged) in unique.into_iter().zip(resolution.stage.get_many(&ids)?) {
                    match staged {
                        Some(mut entry) => {
                            entry.refs += n;
                            resolution.stage.set(id, entry)?;
                        }
                        None => fresh.push((id, n)),
                    }
                }
                if fresh.len() >= session.stage_limit().min(FRESH_LIMIT) {
                    pending.extend(resolution.resolve_fresh(index, session, &mut fresh, unchanged_since_start)?);
                }
            }
            if fresh.is_empty() {
                break;
            }
            pending.extend(resolution.resolve_fresh(index, session, &mut fresh, unchanged_since_start)?);
        }
        for id in &commit.drops {
            let mut entry = match resolution.stage.get_many(std::slice::from_ref(id))?.pop().flatten() {
                Some(entry) => entry,
                None => index.blob(id)?.filter(|e| !e.is_orphan()).ok_or(Error::MissingBlob(*id))?,
            };
            entry.refs -= 1;
            resolution.stage.set(*id, entry)?;
            if entry.refs == 0 {
                resolution.zeroed.push(*id);
            } else if entry.refs < 0 {
                tracing::warn!(blob = %id, refs = entry.refs, "reference count went below zero; run `cairn check`");
            }
        }
        Ok(resolution)
    }

    /// Counts the ids in `fresh` (each with the references this commit
    /// gives it; none staged), and empties it: the session's copy
    /// becomes an entry unless the index has one (any count, even 0).
    /// Returns the walk's next step: the new metadata blobs, whose
    /// children are counted in turn.
    ///
    /// Why they wait to be looked up together: most of a large commit is
    /// looking up, in the `pending` family, the blobs the session wrote, a
    /// random read each (a first backup of `/usr/lib`: 0.8 s of its
    /// resolution, for 467,000 blobs), while in id order, many thousands
    /// at a time, RocksDB reads each block of the family once for all the
    /// ids in it.
    fn resolve_fresh(
        &mut self,
        index: &Index,
        session: &dyn SessionBlobs,
        fresh: &mut Vec<(BlobId, i64)>,
        unchanged_since_start: bool,
    ) -> Result<Option<Walk>> {
        fresh.sort_unstable_by_key(|(id, _)| *id);
        fresh.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 += later.1;
            }
            same
        });
        let mut new_metadata = Vec::new();
        // A part at a time, so what the lookups return stays small; each
        // part is a run of neighbouring ids, so the blocks it reads are
        // still read once for all of its ids that they hold.
        for part in fresh.chunks(WALK_BATCH) {
            let ids: Vec<BlobId> = part.iter().map(|(id, _)| *id).collect();
            let written = written_in_parallel(session, &ids)?;
            // Blobs the session found absent need no lookup when no commit
            // came between (the bulk of a backup of new data).
            let still_absent = |w: &Option<Written>| unchanged_since_start && w.is_some_and(|w| w.absent);
            let unknown: Vec<BlobId> =
                ids.iter().zip(&written).filter(|(_, w)| !still_absent(w)).map(|(id, _)| *id).collect();
            let existing: HashMap<BlobId, IndexEntry> = unknown
                .iter()
                .zip(index.blobs(&unknown)?)
                .filter_map(|(id, e)| Some((*id, e.filter(|e| !e.is_orphan())?)))
                .collect();
            for (&(id, n), written) in part.iter().zip(written) {
                let entry = if let Some(mut entry) = existing.get(&id).copied() {
                    entry.refs += n;
                    entry
                } else if let Some(written) = written {
                    *self.live.entry(written.container).or_default() += written.record.accounted_len();
                    if written.record.kind.is_metadata() {
                        new_metadata.push(id);
                    }
                    IndexEntry::new(written.container, &written.record, n)
                } else {
                    return Err(Error::MissingBlob(id));
                };
                self.stage.set(id, entry)?;
            }
        }
        fresh.clear();
        // Each child once per time its new parent names it.
        Ok((!new_metadata.is_empty()).then_some(Walk::Expand(new_metadata)))
    }

    /// Record bytes of the session's copies in `container` that became entries.
    pub(crate) fn live_bytes(&self, container: ContainerId) -> u64 {
        self.live.get(&container).copied().unwrap_or(0)
    }

    /// Counts `bytes` in `container` as live (a compaction's moved copies).
    pub(crate) fn add_live(&mut self, container: ContainerId, bytes: u64) {
        *self.live.entry(container).or_default() += bytes;
    }

    /// Adds the zero-queue entries to `batch`, and the entries too unless
    /// the stage spilled (then they are all in the `stage` family, for
    /// [`crate::apply`] to apply); returns whether it did.
    pub(crate) fn write_to(self, batch: &mut WriteBatch, tid: Tid) -> Result<bool> {
        let index = self.stage.index;
        for id in &self.zeroed {
            batch.put_cf(index.cf(cf::ZERO), id.as_bytes(), tid.0.to_le_bytes());
        }
        if self.stage.spilled() {
            let mut stage = self.stage;
            stage.spill()?;
            return Ok(true);
        }
        // In key order: RocksDB's memtable inserts sorted keys much faster
        // (each insert starts from where the last one ended).
        let mut entries: Vec<_> = self.stage.overlay.into_iter().collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        for (id, entry) in entries {
            batch.put_cf(index.cf(cf::BLOBS), id.as_bytes(), entry.encode());
        }
        Ok(false)
    }
}

/// The entries a commit will put, each the whole new entry (its count
/// already includes the commit's references). Held in memory up to
/// [`crate::apply::stage_limit`] (100,000: about 10 MB), beyond
/// which they go to the index's `stage` family, written without its log
/// (the commit makes them durable before relying on them, `apply.rs`).
/// Under the commit lock nothing else changes a count, so the whole entry
/// can be written where a delta used to be.
pub(crate) struct Stage<'a> {
    index: &'a Index,
    overlay: HashMap<BlobId, IndexEntry>,
    limit: usize,
    /// The ids spilled to the family; `None` until the first spill. Most of a large
    /// commit's lookups are of ids nothing has counted yet, which the
    /// family does not hold: each cost a RocksDB multi-get (0.26 s of the
    /// resolution of a first backup of `/usr/lib`, 468,726 blobs), and
    /// the filter answers most of them without one.
    in_family: Option<IdFilter>,
}

/// Memory of [`Stage::in_family`]: 8 Mi bits, which keep "maybe" for ids
/// the family lacks under 1% up to about 700,000 spilled ids.
const STAGE_FILTER_BYTES: usize = 1 << 20;

impl<'a> Stage<'a> {
    fn new(index: &'a Index, limit: usize) -> Stage<'a> {
        Stage { index, overlay: HashMap::new(), limit, in_family: None }
    }

    /// Whether anything moved to the family.
    fn spilled(&self) -> bool {
        self.in_family.is_some()
    }

    fn get_many(&self, ids: &[BlobId]) -> Result<Vec<Option<IndexEntry>>> {
        let mut found: Vec<Option<IndexEntry>> = ids.iter().map(|id| self.overlay.get(id).copied()).collect();
        if let Some(in_family) = &self.in_family {
            let missing: Vec<usize> =
                (0..ids.len()).filter(|&i| found[i].is_none() && in_family.may_contain(&ids[i])).collect();
            let keys: Vec<&[u8]> = missing.iter().map(|&i| ids[i].as_bytes().as_slice()).collect();
            for (&i, value) in missing.iter().zip(self.index.get_many(cf::STAGE, &keys, keys.is_sorted())?) {
                found[i] = value.map(|bytes| crate::index::decode_entry(&ids[i], &bytes)).transpose()?;
            }
        }
        Ok(found)
    }

    fn set(&mut self, id: BlobId, entry: IndexEntry) -> Result<()> {
        self.overlay.insert(id, entry);
        if self.overlay.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Moves the overlay to the family (emptied first by the first spill:
    /// an earlier commit that failed may have left entries there).
    fn spill(&mut self) -> Result<()> {
        if !self.spilled() {
            crate::apply::clear_stage(self.index, false)?;
        }
        let mut entries: Vec<_> = self.overlay.drain().collect();
        entries.sort_unstable_by_key(|(id, _)| *id);
        let in_family = self.in_family.get_or_insert_with(|| IdFilter::new(STAGE_FILTER_BYTES));
        for (id, _) in &entries {
            in_family.insert(id);
        }
        // In batches: one batch of the whole overlay was a 12 MiB string
        // that doubled its way there, the largest allocation of a large
        // commit (heaptrack on a 3 GiB put).
        for part in entries.chunks(crate::apply::APPLY_BATCH) {
            let mut batch = WriteBatch::default();
            for (id, entry) in part {
                batch.put_cf(self.index.cf(cf::STAGE), id.as_bytes(), entry.encode());
            }
            self.index.write_unlogged(batch)?;
        }
        Ok(())
    }
}
