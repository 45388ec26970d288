//! Simulated cascades: what collecting would free, computed without
//! changing anything. `gc --dry-run` and `dedupe stats` ("what would
//! forgetting this dataset free?") both use [`Cascade`].
//!
//! Counts are read from the index, minus what simulated collections
//! subtract, so a whole chain (a dataset's root tree, its subtrees, their
//! content lists, their chunks) is followed to the end as the real job's
//! passes would. It assumes no session is running (so blobs zeroed on the
//! way are collectable), which is what a command-line run sees.
//!
//! What the simulation subtracts is kept on disk, in a [`ScratchMap`], and
//! worked through in batches: a dataset of ten million files would
//! otherwise hold a count for each of its blobs (about 190 bytes each in a
//! hash map: `dedupe stats` of a store of a million small files peaked at
//! 270 MB). Memory is a batch of releases, a batch of metadata blobs
//! waiting to be listed (the rest wait on disk, in order), and the scratch
//! map's memtables.

use std::collections::BTreeMap;
use std::time::Instant;

use cairn_store::index::IndexEntry;
use cairn_store::refs::children_of;
use cairn_store::scratch::ScratchMap;
use cairn_store::{BlobId, BlobKind, ContainerId, Result, Store};

use crate::job::{GcOptions, GcReport, worth_compacting};

/// Releases looked up and applied together, and metadata blobs held in
/// memory while they wait to be listed.
const BATCH: usize = 16 << 10;

/// Scratch keys: a blob's released references (`RELEASED` + id: an i64,
/// or [`COLLECTED`]); a metadata blob waiting to be listed (`WAITING` +
/// sequence number + id).
const RELEASED: u8 = b'r';
const WAITING: u8 = b'w';
/// The value of a collected blob's `RELEASED` key.
const COLLECTED: &[u8] = b"collected";

/// A cascade simulated on scratch space.
pub struct Cascade<'a> {
    store: &'a Store,
    batch: usize,
    scratch: ScratchMap,
    /// References released and not yet applied (a queued blob releases 0).
    releases: Vec<(BlobId, i64)>,
    /// Collected metadata blobs whose children are not yet released.
    waiting: Vec<(BlobId, IndexEntry)>,
    /// Of those, the ones on disk: sequence numbers `[head, tail)`.
    waiting_on_disk: (u64, u64),
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
    /// An empty simulation over `store`, with scratch space under `TMPDIR`.
    pub fn new(store: &'a Store) -> Result<Cascade<'a>> {
        Cascade::with_batch(store, BATCH)
    }

    /// The same, applying `batch` releases at a time and holding as many
    /// waiting metadata blobs in memory (tests use tiny batches, so that a
    /// small store takes the paths a large one does).
    pub fn with_batch(store: &'a Store, batch: usize) -> Result<Cascade<'a>> {
        Ok(Cascade {
            store,
            batch: batch.max(1),
            scratch: ScratchMap::new("making scratch space for the simulated collection")?,
            releases: Vec::new(),
            waiting: Vec::new(),
            waiting_on_disk: (0, 0),
            blobs: 0,
            metadata_blobs: 0,
            record_bytes: 0,
            data_raw_bytes: 0,
            dead: BTreeMap::new(),
            problems: Vec::new(),
        })
    }

    /// One reference to `id` goes away (a record naming it is dropped).
    pub fn release(&mut self, id: BlobId) -> Result<()> {
        self.releases.push((id, 1));
        self.apply_if_full()
    }

    /// `id` sits in the zero queue: collect it if its count is 0.
    pub fn queue(&mut self, id: BlobId) -> Result<()> {
        self.releases.push((id, 0));
        self.apply_if_full()
    }

    fn apply_if_full(&mut self) -> Result<()> {
        if self.releases.len() >= self.batch { self.apply() } else { Ok(()) }
    }

    /// Follows everything released or queued so far to the end: releases
    /// are applied a batch at a time, and a collected metadata blob's
    /// children are released only while the batch has room, so neither
    /// list grows past a batch (and one blob's children).
    pub fn run(&mut self) -> Result<()> {
        loop {
            if self.releases.len() < self.batch
                && let Some((id, entry)) = self.next_waiting()?
            {
                match self.store.read_located(&id, entry).and_then(|bytes| children_of(entry.kind, id, &bytes)) {
                    Ok(children) => self.releases.extend(children.into_iter().map(|child| (child, 1))),
                    Err(error) => {
                        self.problems.push(format!("cannot collect {} blob {id}: {error}", entry.kind.name()))
                    }
                }
            } else if !self.releases.is_empty() {
                self.apply()?;
            } else {
                return Ok(());
            }
        }
    }

    /// Applies the pending releases: each blob's count is its index count
    /// less everything released so far; one that reaches 0 is collected,
    /// and if it is metadata, waits for its children to be released.
    fn apply(&mut self) -> Result<()> {
        let mut releases = std::mem::take(&mut self.releases);
        releases.sort_unstable_by_key(|(id, _)| *id);
        let mut grouped: Vec<(BlobId, i64)> = Vec::with_capacity(releases.len());
        for (id, n) in releases {
            match grouped.last_mut() {
                Some((last, total)) if *last == id => *total += n,
                _ => grouped.push((id, n)),
            }
        }
        let ids: Vec<BlobId> = grouped.iter().map(|(id, _)| *id).collect();
        let entries = self.store.index().blobs_once(&ids)?;
        let keys: Vec<[u8; 33]> = ids.iter().map(|id| key(RELEASED, id.as_bytes())).collect();
        let before = self.scratch.get_many(&keys)?;
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for ((id, n), (entry, before)) in grouped.into_iter().zip(entries.into_iter().zip(before)) {
            let released = match before.as_deref() {
                Some(COLLECTED) => {
                    values.push(COLLECTED.to_vec());
                    continue;
                }
                Some(bytes) => i64::from_le_bytes(bytes.try_into().unwrap_or_default()),
                None => 0,
            };
            let released = released + n;
            match entry.filter(|e| !e.is_orphan()) {
                Some(entry) if entry.refs == released => {
                    values.push(COLLECTED.to_vec());
                    self.collect(id, entry)?;
                }
                _ => values.push(released.to_le_bytes().to_vec()),
            }
        }
        self.scratch.insert(keys.iter().map(|k| &k[..]).zip(values.iter().map(Vec::as_slice)))
    }

    /// Counts `id` as collected.
    fn collect(&mut self, id: BlobId, entry: IndexEntry) -> Result<()> {
        if entry.kind.is_metadata() {
            self.metadata_blobs += 1;
            self.wait(id, entry)?;
        } else if entry.kind == BlobKind::Data {
            self.data_raw_bytes += entry.raw_len as u64;
        }
        self.blobs += 1;
        self.record_bytes += entry.accounted_len();
        *self.dead.entry(entry.container).or_default() += entry.accounted_len();
        Ok(())
    }

    /// Puts a collected metadata blob in line to have its children
    /// released: in memory while a batch's worth wait, then on disk.
    fn wait(&mut self, id: BlobId, entry: IndexEntry) -> Result<()> {
        if self.waiting.len() < self.batch && self.waiting_on_disk.0 == self.waiting_on_disk.1 {
            self.waiting.push((id, entry));
            return Ok(());
        }
        let tail = self.waiting_on_disk.1;
        self.waiting_on_disk.1 += 1;
        let mut name = [0u8; 41];
        name[..9].copy_from_slice(&key_seq(tail));
        name[9..].copy_from_slice(id.as_bytes());
        self.scratch.insert([(&name[..], &[][..])])
    }

    /// The next metadata blob waiting to be listed, with its entry: from
    /// memory, else the next batch of those on disk (their entries looked
    /// up again).
    fn next_waiting(&mut self) -> Result<Option<(BlobId, IndexEntry)>> {
        if self.waiting.is_empty() && self.waiting_on_disk.0 < self.waiting_on_disk.1 {
            let (head, tail) = self.waiting_on_disk;
            let take = (tail - head).min(self.batch as u64);
            let mut ids = Vec::with_capacity(take as usize);
            for item in self.scratch.iter_from(&key_seq(head)).take(take as usize) {
                let (name, _) = item?;
                ids.extend(name.get(9..).and_then(BlobId::from_slice));
            }
            self.waiting_on_disk.0 += take;
            let entries = self.store.index().blobs_once(&ids)?;
            for (id, entry) in ids.into_iter().zip(entries) {
                match entry.filter(|e| !e.is_orphan()) {
                    Some(entry) => self.waiting.push((id, entry)),
                    None => self.problems.push(format!("blob {id} left the index while the simulation ran")),
                }
            }
        }
        Ok(self.waiting.pop())
    }
}

/// A scratch key: `tag` then `id`.
fn key(tag: u8, id: &[u8; 32]) -> [u8; 33] {
    let mut key = [tag; 33];
    key[1..].copy_from_slice(id);
    key
}

/// The prefix of the `seq`th waiting blob's key, in order.
fn key_seq(seq: u64) -> [u8; 9] {
    let mut key = [WAITING; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Computes the report a run with `options` would give, changing nothing.
pub fn dry_run(store: &Store, options: &GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport { dry_run: true, ..GcReport::default() };
    let horizon = store.horizon()?;
    let mut cascade = Cascade::new(store)?;
    let mut after = None;
    loop {
        let queued = store.zero_queue(after, options.batch_blobs.max(1))?;
        let Some(last) = queued.last() else { break };
        after = Some(last.0);
        for (id, tid) in queued {
            if tid <= horizon {
                cascade.queue(id)?;
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
