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
//! The ranges go in the order the restore's windows of files first need
//! them, and a read of a record in a range that has not landed waits for
//! it (`container/staged.rs`), so each file is written as soon as its own
//! bytes are here, while the rest are fetched: the restore reads every
//! chunk locally, as from a local store.

use std::collections::HashMap;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::container::StageReport;
use crate::content::ContentReader;
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

/// The ranges to stage, in the order the restore's windows of files need
/// them.
pub(crate) struct StagePlan {
    pub(crate) ranges: Vec<(ContainerId, u64, u64)>,
}

impl Store {
    /// Plans what restoring `files`, in windows of `window` files, reads
    /// from remote containers, per the module's rule. Empty for a store
    /// with no remote.
    pub(crate) fn plan_stage(&self, files: &[(&PathBuf, &Entry)], window: usize) -> Result<StagePlan> {
        let mut plan = StagePlan { ranges: Vec::new() };
        if self.files().remote().is_none() {
            return Ok(plan);
        }
        let mut needed: HashMap<ContainerId, (Needed, usize)> = HashMap::new();
        let mut local: HashMap<ContainerId, bool> = HashMap::new();
        // Windows are looked up several at once (each lookup is one
        // thread's batched read of the index), a bounded number at a time.
        let group = window * 4 * rayon::current_num_threads();
        for (first, files) in files.chunks(group).enumerate() {
            let windows: Vec<Vec<IndexEntry>> =
                files.par_chunks(window).map(|files| self.window_chunks(files)).collect::<Result<_>>()?;
            for (i, entries) in windows.into_iter().enumerate() {
                let number = first * (group / window) + i;
                for entry in entries {
                    let is_local =
                        *local.entry(entry.container).or_insert_with(|| self.files().is_local(entry.container));
                    if !is_local {
                        let end = entry.offset.saturating_add(entry.record_len());
                        needed
                            .entry(entry.container)
                            .or_insert_with(|| (Needed::default(), number))
                            .0
                            .mark(entry.offset, end);
                    }
                }
            }
        }
        let budget = gap_budget();
        let mut ranges: Vec<(usize, ContainerId, u64, u64)> = needed
            .iter()
            .flat_map(|(id, (needed, first))| {
                needed.ranges(budget).into_iter().map(move |(start, end)| (*first, *id, start, end - start))
            })
            .collect();
        ranges.sort_unstable();
        plan.ranges = ranges.into_iter().map(|(_, id, start, len)| (id, start, len)).collect();
        Ok(plan)
    }

    /// The index entries of every distinct chunk of `files` (content lists
    /// are metadata: local, or downloaded up front by the attach).
    fn window_chunks(&self, files: &[(&PathBuf, &Entry)]) -> Result<Vec<IndexEntry>> {
        let mut ids: Vec<BlobId> = files
            .iter()
            .flat_map(|(_, entry)| {
                let mut chunks = Vec::new();
                if let Some(Ok(mut reader)) = entry.blob.map(|root| ContentReader::new(self, root)) {
                    while let Ok(Some(chunk)) = reader.next_chunk() {
                        chunks.push(chunk.id);
                    }
                }
                chunks
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(self.index().blobs(&ids)?.into_iter().flatten().filter(|e| !e.is_orphan()).collect())
    }

    /// Announces `plan`'s ranges (reads inside them wait for them from
    /// now on), in a staging directory of this restore's own. One
    /// directory per restore: two restores from one attached store must
    /// not share files. A writer's open removes what a killed restore left
    /// (`Store::recover`).
    pub(crate) fn begin_staging(&self, plan: &StagePlan) -> Result<()> {
        let dir = self.root().join("staging").join(format!("{}-{}", std::process::id(), crate::config::random_id()));
        self.files().begin_staging(&dir, &plan.ranges)
    }

    /// Stages `plan`'s ranges, `jobs` requests at once, in order.
    pub(crate) fn stage(&self, plan: &StagePlan, jobs: usize) -> Result<StageReport> {
        let started = std::time::Instant::now();
        let report = self.files().stage(&plan.ranges, jobs)?;
        tracing::debug!(
            requests = report.requests,
            bytes = report.bytes,
            seconds = started.elapsed().as_secs_f64(),
            "staged remote containers"
        );
        Ok(report)
    }
}
