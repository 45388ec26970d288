//! The delete job's cascade: collecting blobs whose reference count reached
//! zero, one bounded batch at a time.
//!
//! A blob in the `zero` queue is collected only when all of these hold,
//! checked under the commit lock:
//!
//! - its count is still 0 (a commit may have revived it: a session that names
//!   an entry at refs 0 adds a reference to it rather than writing a copy);
//! - it reached zero at or before the *horizon*: the start tid of the oldest
//!   running session, or the last tid when none runs. A session that started
//!   before the blob reached zero may have seen it with references and
//!   deduplicated against it; such a session commits a reference to it, so
//!   the blob must survive until that session ends.
//!
//! Collecting a blob drops its index entry, removes it from the queue, adds
//! its record to its container's dead bytes and, for a metadata blob,
//! subtracts one reference from each child it names (the cascade). Children
//! that reach zero are queued at this batch's tid, so they wait for sessions
//! running now, exactly like blobs zeroed by a commit.
//!
//! The slow part (reading metadata blobs to list their children) happens
//! before the lock is taken; under the lock only index reads and one batch
//! remain, so commits wait for a batch no longer than for another commit.
//! Everything is idempotent: a crash before the batch is durable leaves the
//! queue as it was, a crash after leaves the next batch to go on. So batches
//! are written without a sync of their own (an fsync per cascade level
//! would dominate small collections); callers end with `Index::sync`.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;
use rocksdb::WriteBatch;

use crate::error::Result;
use crate::fault::crash_point;
use crate::ids::{BlobId, ContainerId, Tid};
use crate::index::{IndexEntry, cf, merge, meta};
use crate::refs::children_of;
use crate::store::Store;

/// Metadata blobs read at once (in parallel) while listing children.
const LIST_AT_ONCE: usize = 64;

/// What one batch of the cascade did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimBatch {
    /// Queue entries looked at.
    pub examined: u64,
    /// Blobs collected (entries dropped).
    pub blobs: u64,
    /// Of which metadata blobs (their children were decremented).
    pub metadata_blobs: u64,
    /// Record bytes (header included) that became dead in their containers.
    pub bytes: u64,
    /// Queue entries dropped because the blob has references again.
    pub revived: u64,
    /// Queue entries left because a running session may still name them.
    pub protected: u64,
    /// Children this batch brought to zero (queued for a later batch).
    pub newly_zero: u64,
    /// Blobs that could not be collected, and why (a damaged metadata blob
    /// whose children cannot be listed stays until it is repaired).
    pub problems: Vec<String>,
    /// Where the next batch of this pass starts; `None` at the queue's end.
    pub next: Option<BlobId>,
}

impl Store {
    /// The tid at or before which a blob must have reached zero to be
    /// collected now: the start tid of the oldest running session, or the
    /// last committed tid when no session runs.
    pub fn horizon(&self) -> Result<Tid> {
        match self.oldest_session_tid() {
            Some(tid) => Ok(tid),
            None => self.tid(),
        }
    }

    /// The zero queue from `after` (exclusive) on, at most `limit` entries:
    /// each blob and the tid at which it reached zero.
    pub fn zero_queue(&self, after: Option<BlobId>, limit: usize) -> Result<Vec<(BlobId, Tid)>> {
        let after = after.as_ref().map(|id| id.as_bytes().as_slice());
        let mut out = Vec::new();
        for item in self.index().scan_after(cf::ZERO, after) {
            let (key, value) = item?;
            if out.len() >= limit {
                break;
            }
            let (Some(id), Ok(tid)) = (BlobId::from_slice(&key), <[u8; 8]>::try_from(&*value)) else {
                continue;
            };
            out.push((id, Tid(u64::from_le_bytes(tid))));
        }
        Ok(out)
    }

    /// Collects up to `limit` queued blobs starting after `after` (see the
    /// module documentation), ending early after the metadata blob that
    /// brings the children they name past `max_children` (a batch holds each
    /// child a few times over while it runs, and holds the commit lock
    /// while it applies them). Call it again with the returned `next` until
    /// it is `None` to make one pass over the queue; children zeroed by a
    /// pass are collected by it if they come later in the queue, or by the
    /// next pass.
    pub fn reclaim_batch(&self, after: Option<BlobId>, limit: usize, max_children: usize) -> Result<ReclaimBatch> {
        let started = std::time::Instant::now();
        let limit = limit.max(1);
        let queued = self.zero_queue(after, limit + 1)?;
        let mut report = ReclaimBatch::default();
        let mut batch: &[(BlobId, Tid)] = if queued.len() > limit {
            report.next = Some(queued[limit - 1].0);
            &queued[..limit]
        } else {
            &queued
        };

        // Outside the lock: which blobs look collectable, and the children of
        // the metadata ones. Blob contents never change for an id, so what is
        // read here stays true; counts are read again under the lock.
        let horizon = self.horizon()?;
        let entries = self.index().blobs(&batch.iter().map(|(id, _)| *id).collect::<Vec<_>>())?;
        let mut children: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
        let mut unreadable: HashSet<BlobId> = HashSet::new();
        let metadata: Vec<(usize, BlobId, IndexEntry)> = batch
            .iter()
            .zip(&entries)
            .enumerate()
            .filter_map(|(at, ((id, tid), entry))| {
                entry
                    .filter(|e| !e.is_orphan() && e.refs == 0 && *tid <= horizon && e.kind.is_metadata())
                    .map(|e| (at, *id, e))
            })
            .collect();
        // Listed a few at a time, so that a batch whose blobs name more
        // than `max_children` children ends after the one that passes that,
        // and the rest wait for the next batch.
        let mut listed: Vec<(BlobId, IndexEntry, Result<Vec<BlobId>>)> = Vec::new();
        let mut named = 0usize;
        'listing: for group in metadata.chunks(LIST_AT_ONCE) {
            let read: Vec<_> = group
                .par_iter()
                .map(|&(_, id, entry)| {
                    let kids = self.read_located(&id, entry).and_then(|bytes| children_of(entry.kind, id, &bytes));
                    (id, entry, kids)
                })
                .collect();
            for (&(at, id, _), item) in group.iter().zip(read) {
                named += item.2.as_ref().map_or(0, Vec::len);
                listed.push(item);
                if named > max_children && at + 1 < batch.len() {
                    batch = &batch[..=at];
                    report.next = Some(id);
                    break 'listing;
                }
            }
        }
        report.examined = batch.len() as u64;
        let ids: Vec<BlobId> = batch.iter().map(|(id, _)| *id).collect();
        for (id, entry, kids) in listed {
            match kids {
                Ok(kids) => {
                    children.insert(id, kids);
                }
                Err(error) => {
                    report.problems.push(format!("cannot collect {} blob {id}: {error}", entry.kind.name()));
                    unreadable.insert(id);
                }
            }
        }

        tracing::trace!(
            seconds = started.elapsed().as_secs_f64(),
            metadata = children.len(),
            "reclaim: read outside the lock"
        );
        let _guard = self.inner.lock_commits();
        let index = self.index();
        let horizon = self.horizon()?;
        let tid = Tid(index.tid()?.0 + 1);
        let mut write = WriteBatch::default();
        let entries = index.blobs(&ids)?;
        let mut condemned: HashMap<BlobId, IndexEntry> = HashMap::new();
        for ((id, _), entry) in batch.iter().zip(entries) {
            // The queue entry as of now: a commit may have re-queued the blob later.
            let Some(queued_at) = index.get(cf::ZERO, id.as_bytes())? else { continue };
            let queued_at = Tid(u64::from_le_bytes(queued_at.as_slice().try_into().unwrap_or_default()));
            match entry {
                None => write.delete_cf(index.cf(cf::ZERO), id.as_bytes()),
                Some(e) if e.is_orphan() => write.delete_cf(index.cf(cf::ZERO), id.as_bytes()),
                Some(e) if e.refs > 0 => {
                    report.revived += 1;
                    write.delete_cf(index.cf(cf::ZERO), id.as_bytes());
                }
                Some(e) if e.refs < 0 => {
                    report.problems.push(format!("blob {id} has {} references; run `cairn check`", e.refs));
                }
                Some(_) if queued_at > horizon => report.protected += 1,
                Some(_) if unreadable.contains(id) => {}
                Some(e) if e.kind.is_metadata() && !children.contains_key(id) => {
                    // Became collectable between the two reads: next pass.
                    report.protected += 1;
                }
                Some(e) => {
                    condemned.insert(*id, e);
                }
            }
        }

        // The cascade: one reference less for each time a condemned blob
        // names a child.
        let mut deltas: BTreeMap<BlobId, i64> = BTreeMap::new();
        for id in condemned.keys() {
            for child in children.get(id).into_iter().flatten() {
                *deltas.entry(*child).or_default() -= 1;
            }
        }
        let child_ids: Vec<BlobId> = deltas.keys().copied().collect();
        for (child, entry) in child_ids.iter().zip(index.blobs(&child_ids)?) {
            let delta = deltas[child];
            let current = match entry.filter(|e| !e.is_orphan()) {
                Some(entry) if !condemned.contains_key(child) => entry.refs,
                _ => {
                    // Under the invariant a named child has references while
                    // its parent is in the index; never make an orphan entry.
                    report.problems.push(format!("blob {child} is named by a collected blob but has no live entry"));
                    continue;
                }
            };
            write.merge_cf(index.cf(cf::BLOBS), child.as_bytes(), merge::delta(delta));
            let refs = current + delta;
            if refs == 0 {
                write.put_cf(index.cf(cf::ZERO), child.as_bytes(), tid.0.to_le_bytes());
                report.newly_zero += 1;
            } else if refs < 0 {
                report.problems.push(format!("blob {child} would have {refs} references; run `cairn check`"));
            }
        }

        let mut dead: BTreeMap<ContainerId, u64> = BTreeMap::new();
        for (id, entry) in &condemned {
            write.delete_cf(index.cf(cf::BLOBS), id.as_bytes());
            write.delete_cf(index.cf(cf::ZERO), id.as_bytes());
            *dead.entry(entry.container).or_default() += entry.accounted_len();
            report.blobs += 1;
            report.metadata_blobs += entry.kind.is_metadata() as u64;
            report.bytes += entry.accounted_len();
        }
        for (container, bytes) in dead {
            if let Some(mut record) = index.container(container)? {
                record.dead_bytes = record.dead_bytes.saturating_add(bytes).min(record.stored_bytes);
                write.put_cf(index.cf(cf::CONTAINERS), container.key(), record.encode());
            }
        }
        if write.is_empty() {
            return Ok(report);
        }
        write.put_cf(index.cf(cf::META), meta::TID, tid.0.to_le_bytes());
        crash_point("reclaim:resolved");
        // Not synced: losing a batch in a crash only means collecting it
        // again. Everything that depends on it syncs the log first: the next
        // commit or compaction (a synced write covers all earlier ones) and
        // the job's end (`Index::sync`).
        index.write(write, false)?;
        crash_point("reclaim:written");
        tracing::trace!(seconds = started.elapsed().as_secs_f64(), blobs = report.blobs, "reclaim: batch written");
        Ok(report)
    }
}
