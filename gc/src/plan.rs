//! Simulated cascades: what collecting would free, computed without
//! changing anything. `gc --dry-run` and `dedupe stats` ("what would
//! forgetting this dataset free?") both use [`Cascade`].
//!
//! Counts are read from the index, minus what simulated collections
//! subtract, so a whole chain (a dataset's root tree, its subtrees, their
//! content lists, their chunks) is followed to the end as the real job's
//! passes would. It assumes no session is running (so blobs zeroed on the
//! way are collectable), which is what a command-line run sees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use cairn_store::refs::children_of;
use cairn_store::{BlobId, BlobKind, ContainerId, Result, Store};

use crate::job::{GcOptions, GcReport, worth_compacting};

/// A cascade simulated in memory.
pub struct Cascade<'a> {
    store: &'a Store,
    counts: HashMap<BlobId, i64>,
    condemned: HashSet<BlobId>,
    pending: Vec<BlobId>,
    /// Blobs that would be collected.
    pub blobs: u64,
    /// Of which metadata blobs.
    pub metadata_blobs: u64,
    /// Their record bytes (headers included).
    pub record_bytes: u64,
    /// Plaintext bytes of the data blobs among them.
    pub data_raw_bytes: u64,
    /// Record bytes that would become dead, per container.
    pub dead: BTreeMap<ContainerId, u64>,
    /// Blobs that could not be followed, and why.
    pub problems: Vec<String>,
}

impl<'a> Cascade<'a> {
    /// An empty simulation over `store`.
    pub fn new(store: &'a Store) -> Cascade<'a> {
        Cascade {
            store,
            counts: HashMap::new(),
            condemned: HashSet::new(),
            pending: Vec::new(),
            blobs: 0,
            metadata_blobs: 0,
            record_bytes: 0,
            data_raw_bytes: 0,
            dead: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// A blob's simulated count, read from the index the first time.
    fn count(&mut self, id: BlobId) -> Result<&mut i64> {
        if !self.counts.contains_key(&id) {
            let refs = self.store.index().blob(&id)?.filter(|e| !e.is_orphan()).map_or(0, |e| e.refs);
            self.counts.insert(id, refs);
        }
        Ok(self.counts.get_mut(&id).expect("inserted above"))
    }

    /// One reference to `id` goes away (a record naming it is dropped).
    pub fn release(&mut self, id: BlobId) -> Result<()> {
        let refs = self.count(id)?;
        *refs -= 1;
        if *refs == 0 {
            self.pending.push(id);
        }
        Ok(())
    }

    /// `id` sits in the zero queue: collect it if its count is 0.
    pub fn queue(&mut self, id: BlobId) {
        self.pending.push(id);
    }

    /// Follows everything released or queued so far to the end.
    pub fn run(&mut self) -> Result<()> {
        while let Some(id) = self.pending.pop() {
            if self.condemned.contains(&id) || *self.count(id)? != 0 {
                continue;
            }
            let Some(entry) = self.store.index().blob(&id)?.filter(|e| !e.is_orphan()) else { continue };
            if entry.kind.is_metadata() {
                let children = match self.store.read_blob(&id).and_then(|bytes| children_of(entry.kind, id, &bytes)) {
                    Ok(children) => children,
                    Err(error) => {
                        self.problems.push(format!("cannot collect {} blob {id}: {error}", entry.kind.name()));
                        continue;
                    }
                };
                for child in children {
                    self.release(child)?;
                }
                self.metadata_blobs += 1;
            } else if entry.kind == BlobKind::Data {
                self.data_raw_bytes += entry.raw_len as u64;
            }
            self.condemned.insert(id);
            self.blobs += 1;
            self.record_bytes += entry.accounted_len();
            *self.dead.entry(entry.container).or_default() += entry.accounted_len();
        }
        Ok(())
    }
}

/// Computes the report a run with `options` would give, changing nothing.
pub fn dry_run(store: &Store, options: &GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport { dry_run: true, ..GcReport::default() };
    let horizon = store.horizon()?;
    let mut cascade = Cascade::new(store);
    let mut after = None;
    loop {
        let queued = store.zero_queue(after, options.batch_blobs.max(1))?;
        let Some(last) = queued.last() else { break };
        after = Some(last.0);
        for (id, tid) in queued {
            if tid <= horizon {
                cascade.queue(id);
            } else {
                report.protected += 1;
            }
        }
    }
    cascade.run()?;
    report.blobs_reclaimed = cascade.blobs;
    report.metadata_blobs = cascade.metadata_blobs;
    report.bytes_reclaimed = cascade.record_bytes;
    report.problems = cascade.problems;

    for (id, mut record) in store.containers()? {
        record.dead_bytes =
            record.dead_bytes.saturating_add(cascade.dead.get(&id).copied().unwrap_or(0)).min(record.record_bytes());
        if !worth_compacting(&record, options.compact_threshold) {
            continue;
        }
        let compaction = &mut report.compaction;
        compaction.bytes_removed = compaction.bytes_removed.saturating_add(record.stored_bytes);
        // What entries name: the live bytes less the frames' slack, which
        // no member accounts for.
        let named = record.live_bytes().saturating_sub(record.slack_bytes);
        if named == 0 {
            compaction.containers_deleted += 1;
        } else {
            compaction.containers_rewritten += 1;
            // Estimated: the live records, without the new files' headers and footers.
            compaction.bytes_written += named;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
