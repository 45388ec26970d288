//! What a commit changes, and how its references are resolved.
//!
//! [`Commit`] collects a transaction's record changes and its root
//! references. [`Resolution`] turns root references into index changes, top
//! down, following the brief's rule for every blob `b` that gains a reference:
//!
//! - If the index already has an entry for `b` (committed by someone else, or
//!   an older copy still there, even at refs 0 and not yet collected), `b` gets
//!   +1 as a merge delta and nothing below it changes: its children are already
//!   counted by that entry. Any copy this session wrote is dead bytes.
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
//! step can change an entry between the read here and the batch write.

use std::collections::HashMap;

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::ids::{BlobId, Tid};
use crate::index::{Index, IndexEntry, cf, merge};
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

/// The index changes a commit's references amount to.
pub(crate) struct Resolution {
    /// New entries (this session's copies that won).
    inserted: HashMap<BlobId, IndexEntry>,
    /// Deltas on entries that existed before the commit.
    deltas: HashMap<BlobId, i64>,
    /// Blobs whose count this commit brings to zero.
    zeroed: Vec<BlobId>,
}

impl Resolution {
    pub(crate) fn resolve(
        index: &Index,
        commit: &Commit<'_>,
        written: &HashMap<BlobId, Written>,
        children: &HashMap<BlobId, Vec<BlobId>>,
        unchanged_since_start: bool,
    ) -> Result<Resolution> {
        let mut resolution = Resolution { inserted: HashMap::new(), deltas: HashMap::new(), zeroed: Vec::new() };
        // Existing entries' counts as read from the index (merges applied).
        let mut existing: HashMap<BlobId, i64> = HashMap::new();
        let mut pending: Vec<Vec<BlobId>> = vec![commit.adds.clone()];
        while let Some(ids) = pending.pop() {
            // Blobs this session found absent need no lookup when no commit
            // came between (the bulk of a backup of new data).
            let still_absent = |id: &BlobId| unchanged_since_start && written.get(id).is_some_and(|w| w.absent);
            let mut unknown: Vec<BlobId> = ids
                .iter()
                .filter(|id| !resolution.inserted.contains_key(id) && !existing.contains_key(id) && !still_absent(id))
                .copied()
                .collect();
            unknown.sort_unstable();
            for (id, entry) in unknown.iter().zip(index.blobs(&unknown)?) {
                if let Some(entry) = entry.filter(|e| !e.is_orphan()) {
                    existing.insert(*id, entry.refs);
                }
            }
            for id in ids {
                if let Some(entry) = resolution.inserted.get_mut(&id) {
                    entry.refs += 1;
                } else if existing.contains_key(&id) {
                    *resolution.deltas.entry(id).or_default() += 1;
                } else if let Some(written) = written.get(&id) {
                    resolution.inserted.insert(id, IndexEntry::new(written.container, &written.record, 1));
                    if let Some(kids) = children.get(&id) {
                        pending.push(kids.clone());
                    }
                } else {
                    return Err(Error::MissingBlob(id));
                }
            }
        }
        for id in &commit.drops {
            let refs = if let Some(entry) = resolution.inserted.get_mut(id) {
                entry.refs -= 1;
                entry.refs
            } else {
                let base = match existing.get(id) {
                    Some(refs) => *refs,
                    None => {
                        let refs = index.blob(id)?.filter(|e| !e.is_orphan()).ok_or(Error::MissingBlob(*id))?.refs;
                        existing.insert(*id, refs);
                        refs
                    }
                };
                let delta = resolution.deltas.entry(*id).or_default();
                *delta -= 1;
                base + *delta
            };
            if refs == 0 {
                resolution.zeroed.push(*id);
            } else if refs < 0 {
                tracing::warn!(blob = %id, refs, "reference count went below zero; run `cairn check`");
            }
        }
        Ok(resolution)
    }

    /// Whether the session's copy of `id` became the index entry.
    pub(crate) fn inserted(&self, id: &BlobId) -> bool {
        self.inserted.contains_key(id)
    }

    /// Adds the entries, deltas and zero-queue entries to `batch`.
    pub(crate) fn write_to(&self, index: &Index, batch: &mut WriteBatch, tid: Tid) {
        let blobs = index.cf(cf::BLOBS);
        // In key order: RocksDB's memtable inserts sorted keys much faster
        // (each insert starts from where the last one ended).
        let mut inserted: Vec<_> = self.inserted.iter().collect();
        inserted.sort_unstable_by_key(|(id, _)| **id);
        for (id, entry) in inserted {
            batch.put_cf(blobs, id.as_bytes(), entry.encode());
        }
        for (id, delta) in &self.deltas {
            if *delta != 0 {
                batch.merge_cf(blobs, id.as_bytes(), merge::delta(*delta));
            }
        }
        for id in &self.zeroed {
            batch.put_cf(index.cf(cf::ZERO), id.as_bytes(), tid.0.to_le_bytes());
        }
    }
}
