//! Planning a restore from a remote per container: which range of each
//! remote container to fetch ahead, whole, before files are written
//! (`container/staged.rs` does the fetching).
//!
//! For every chunk of every file to restore, the 64 KiB blocks of its
//! container that its record touches are marked (a bit each: memory per
//! container, not per chunk). Each container is then fetched as the runs
//! of marked blocks, clipped to the first and last needed byte, with runs
//! joined when the unneeded bytes between them cost less than a round trip
//! would ([`gap_budget`]): a full restore reads each container it needs
//! in one range, a restore of one directory reads what it needs in a few.
//! Files are written in the order their first chunks were stored, in
//! windows; the ranges go in the order the windows first need them, each
//! with the first and last windows that need it, so it can be dropped once
//! those are written (`container/staged.rs` holds them in memory). A read
//! of a record in a range that has not landed waits for it, so each file
//! is written as soon as its own bytes are here, while the rest are
//! fetched: the restore reads every chunk locally, as from a local store.
//! The chunks the plan found, and where they are, go on to the writers
//! (up to [`HANDED_ON_CHUNKS`]), so they are not looked up twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::restore::Located;
use crate::container::{PlannedRange, StageReport};
use crate::content::{ContentEntry, ContentReader};
use crate::dataset::tree::Entry;
use crate::error::Result;
use crate::ids::{BlobId, ContainerId};
use crate::index::entry::IndexEntry;
use crate::store::Store;

/// Requests in flight while staging (the default; the S3 client
/// keeps this many connections busy).
pub const STAGE_JOBS: usize = 32;

/// Needed records are marked per block of this many bytes of a container.
const BLOCK: u64 = 64 << 10;

/// Which blocks of a container hold needed records (one bit each: a word
/// covers 4 MiB, a default container), and the first and last needed byte.
#[derive(Default)]
struct Needed {
    blocks: Vec<u64>,
    start: u64,
    end: u64,
}

impl Needed {
    fn mark(&mut self, start: u64, end: u64) {
        if self.blocks.is_empty() {
            (self.start, self.end) = (start, end);
        }
        (self.start, self.end) = (self.start.min(start), self.end.max(end));
        for block in start / BLOCK..=(end.max(start + 1) - 1) / BLOCK {
            let (word, bit) = ((block / 64) as usize, block % 64);
            if self.blocks.len() <= word {
                self.blocks.resize(word + 1, 0);
            }
            self.blocks[word] |= 1 << bit;
        }
    }

    /// Adds `other`'s marks to these.
    fn merge(&mut self, other: Needed) {
        if other.blocks.is_empty() {
            return;
        }
        if self.blocks.is_empty() {
            *self = other;
            return;
        }
        (self.start, self.end) = (self.start.min(other.start), self.end.max(other.end));
        if self.blocks.len() < other.blocks.len() {
            self.blocks.resize(other.blocks.len(), 0);
        }
        for (word, bits) in self.blocks.iter_mut().zip(other.blocks) {
            *word |= bits;
        }
    }

    /// Byte ranges covering every marked block, runs closer than `budget`
    /// joined, clipped to the first and last needed byte.
    fn ranges(&self, budget: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (word, bits) in self.blocks.iter().enumerate() {
            for bit in 0..64 {
                if bits & (1 << bit) == 0 {
                    continue;
                }
                let block = (word as u64 * 64 + bit) * BLOCK;
                let (start, end) = (block.max(self.start), (block + BLOCK).min(self.end));
                match out.last_mut() {
                    Some(last) if start.saturating_sub(last.1) <= budget => last.1 = end,
                    _ => out.push((start, end)),
                }
            }
        }
        out
    }
}

/// The unneeded bytes worth fetching to save one request: what the link
/// moves in one round trip. `CAIRN_REMOTE_LATENCY_MS` (default 20) times
/// `CAIRN_REMOTE_MBPS` (MB/s, default 100): 2 MB.
pub fn gap_budget() -> u64 {
    let read = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    read("CAIRN_REMOTE_LATENCY_MS", 20).saturating_mul(read("CAIRN_REMOTE_MBPS", 100)).saturating_mul(1000)
}

/// Chunks whose places the plan hands on to the writers (about 80 bytes
/// each: 20 MiB, a restore of about 2 GiB of 8 KiB chunks). The writers
/// look up the rest themselves, so a larger restore costs no more memory.
/// Measured on the remote bench's 1 GiB tree: looking every chunk up
/// again in the writers cost about 0.15 s of a 2.4 s restore.
const HANDED_ON_CHUNKS: usize = 256 << 10;

/// What a window of files reads: each file's chunks (`None` where its
/// content could not be listed whole here), and their index entries.
type WindowChunks = (Vec<Option<Vec<ContentEntry>>>, HashMap<BlobId, IndexEntry>);

/// What one file reads from remote containers: where its first remote
/// chunk is (the order files are written in), and the containers it reads.
struct FileReads {
    first: (ContainerId, u64),
    containers: Vec<ContainerId>,
}

/// The ranges to stage, in the order the restore's windows of files first
/// need them, each with the first and last windows that need it.
pub(crate) struct StagePlan {
    pub(crate) ranges: Vec<PlannedRange>,
    /// Each file's chunks and their places, in the files' new order, for
    /// as many files as [`HANDED_ON_CHUNKS`] allows; `None` for the rest,
    /// which the writers look up.
    pub(crate) located: Vec<Option<Located>>,
}

impl Store {
    /// Plans what restoring `files`, in windows of `window` files, reads
    /// from remote containers, per the module's rule, and puts `files` in
    /// the order they should be written: by where their first chunk is
    /// (frames hold neighbours' chunks, and a frame is decoded once while
    /// its files are written). No ranges for a store with no remote.
    pub(crate) fn plan_stage(&self, files: &mut [(&PathBuf, &Entry)], window: usize) -> Result<StagePlan> {
        let mut plan = StagePlan { ranges: Vec::new(), located: Vec::new() };
        // Each window's chunks are looked up and marked by one thread (the
        // lookups are batched per window), on every core; the marks are
        // merged under a lock, once per window. Done in one pass and not
        // in groups with the marking after each, which left one core idle
        // for half the plan.
        let needed: Mutex<HashMap<ContainerId, Needed>> = Mutex::new(HashMap::new());
        let handed_on = AtomicUsize::new(0);
        let reads: Vec<(Vec<FileReads>, Vec<Option<Located>>)> = files
            .par_chunks(window)
            .map(|files| {
                let (chunks_of_files, entries) = self.window_chunks(files)?;
                let (reads, marked) = self.window_reads(&chunks_of_files, &entries);
                let mut needed = needed.lock().expect("plan poisoned");
                for (container, marks) in marked {
                    needed.entry(container).or_default().merge(marks);
                }
                drop(needed);
                let count = chunks_of_files.iter().flatten().map(Vec::len).sum::<usize>();
                let keep = handed_on.fetch_add(count, Ordering::Relaxed) + count <= HANDED_ON_CHUNKS;
                let located = chunks_of_files
                    .into_iter()
                    .map(|chunks| {
                        let chunks = chunks.filter(|_| keep)?;
                        chunks.into_iter().map(|c| Some((c, *entries.get(&c.id)?))).collect()
                    })
                    .collect();
                Ok((reads, located))
            })
            .collect::<Result<_>>()?;
        let (reads, located): (Vec<Vec<FileReads>>, Vec<Vec<Option<Located>>>) = reads.into_iter().unzip();
        let reads: Vec<FileReads> = reads.into_iter().flatten().collect();
        let mut located: Vec<Option<Located>> = located.into_iter().flatten().collect();
        let needed = needed.into_inner().expect("plan poisoned");
        // Files are written in the order their bytes were stored, not in
        // the tree's: a backup's threads fill containers together, so
        // files far apart in the tree share containers (one thread works
        // from each end of a directory), and in the tree's order every
        // container would be needed from the start of the restore to its
        // end. Measured on the remote bench's 1 GiB tree, restoring to a
        // fresh ext4: 1.72x a local restore's time in the tree's order,
        // 1.42x in this one.
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| reads[i].first);
        let sorted: Vec<(&PathBuf, &Entry)> = order.iter().map(|&i| files[i]).collect();
        files.copy_from_slice(&sorted);
        plan.located = order.iter().map(|&i| located[i].take()).collect();
        // The first and last windows that read from each container.
        let mut windows: HashMap<ContainerId, (usize, usize)> = HashMap::new();
        for (at, &i) in order.iter().enumerate() {
            let number = at / window;
            for container in &reads[i].containers {
                windows.entry(*container).or_insert((number, number)).1 = number;
            }
        }
        let budget = gap_budget();
        let mut ranges: Vec<(usize, PlannedRange)> = needed
            .iter()
            .flat_map(|(&container, needed)| {
                let (first, last_window) = windows[&container];
                needed.ranges(budget).into_iter().map(move |(start, end)| {
                    (first, PlannedRange { container, start, len: end - start, first_window: first, last_window })
                })
            })
            .collect();
        ranges.sort_unstable_by_key(|(first, range)| (*first, range.container, range.start));
        plan.ranges = ranges.into_iter().map(|(_, range)| range).collect();
        Ok(plan)
    }

    /// What each file of a window reads from remote containers, and the
    /// blocks of each of those containers that the window needs.
    fn window_reads(
        &self,
        chunks_of_files: &[Option<Vec<ContentEntry>>],
        entries: &HashMap<BlobId, IndexEntry>,
    ) -> (Vec<FileReads>, HashMap<ContainerId, Needed>) {
        let mut needed: HashMap<ContainerId, Needed> = HashMap::new();
        let mut local: HashMap<ContainerId, bool> = HashMap::new();
        let remote = self.files().remote().is_some();
        let reads = chunks_of_files
            .iter()
            .map(|chunks| {
                let mut file = FileReads { first: (ContainerId(0), 0), containers: Vec::new() };
                for (at, entry) in chunks.iter().flatten().filter_map(|chunk| entries.get(&chunk.id)).enumerate() {
                    if at == 0 {
                        file.first = (entry.container, entry.offset);
                    }
                    if !remote
                        || *local.entry(entry.container).or_insert_with(|| self.files().is_local(entry.container))
                    {
                        continue;
                    }
                    let end = entry.offset.saturating_add(entry.record_len());
                    needed.entry(entry.container).or_default().mark(entry.offset, end);
                    if file.containers.last() != Some(&entry.container) {
                        file.containers.push(entry.container);
                    }
                }
                file.containers.sort_unstable();
                file.containers.dedup();
                file
            })
            .collect();
        (reads, needed)
    }

    /// The chunks of each of `files` (content lists are metadata: local,
    /// or downloaded up front by the attach), and the index entries of
    /// them all. The files' roots are looked up in one batch and their
    /// chunks in another: most files are one chunk, their own root, so
    /// looking each root up alone (as `ContentReader::new` does) was half
    /// the plan's lookups, one at a time.
    fn window_chunks(&self, files: &[(&PathBuf, &Entry)]) -> Result<WindowChunks> {
        let mut roots: Vec<BlobId> = files.iter().filter_map(|(_, entry)| entry.blob).collect();
        let mut entries = self.live_entries(&mut roots)?;
        let chunks: Vec<Option<Vec<ContentEntry>>> =
            files.iter().map(|(_, entry)| self.chunks_of(entry, &entries)).collect();
        let mut ids: Vec<BlobId> =
            chunks.iter().flatten().flatten().map(|c| c.id).filter(|id| !entries.contains_key(id)).collect();
        entries.extend(self.live_entries(&mut ids)?);
        Ok((chunks, entries))
    }

    /// The chunks of `file`'s content, when its root is in `entries` and
    /// its content lists can be read and cover no more than its size; a
    /// file that fails any of that is read the usual way by its writer,
    /// which reports what is wrong. Stopping at the size bounds what a
    /// crafted list (one chunk named a million times) makes the plan hold.
    fn chunks_of(&self, file: &Entry, entries: &HashMap<BlobId, IndexEntry>) -> Option<Vec<ContentEntry>> {
        let root = file.blob?;
        let mut reader = ContentReader::at(self, root, *entries.get(&root)?).ok()?;
        let (mut chunks, mut covered) = (Vec::new(), 0u64);
        while let Some(chunk) = reader.next_chunk().ok()? {
            covered = covered.checked_add(chunk.len).filter(|&c| c <= file.size)?;
            chunks.push(chunk);
        }
        Some(chunks)
    }

    /// Announces `plan`'s ranges (reads inside them wait for them from
    /// now on), in a staging directory of this restore's own. One
    /// directory per restore: two restores from one attached store must
    /// not share files. A writer's open removes what a killed restore left
    /// (`Store::recover`).
    pub(crate) fn begin_staging(&self, plan: &StagePlan, memory: usize) {
        let dir = self.root().join("staging").join(format!("{}-{}", std::process::id(), crate::config::random_id()));
        self.files().begin_staging(&dir, &plan.ranges, memory);
    }

    /// Stages `plan`'s ranges, `jobs` requests at once, in order.
    pub(crate) fn stage(&self, plan: &StagePlan, jobs: usize) -> Result<StageReport> {
        let started = std::time::Instant::now();
        let report = self.files().stage(&plan.ranges, jobs)?;
        tracing::debug!(
            requests = report.requests,
            bytes = report.bytes,
            spilled = report.spilled,
            seconds = started.elapsed().as_secs_f64(),
            "staged remote containers"
        );
        Ok(report)
    }
}
