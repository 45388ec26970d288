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
//! Every chunk the restore needs is then local, and the restore goes as
//! from a local store.

use std::collections::HashMap;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::container::StageReport;
use crate::content::ContentReader;
use crate::dataset::tree::Entry;
use crate::error::Result;
use crate::ids::{BlobId, ContainerId};
use crate::store::Store;

/// Requests in flight while staging (the default; the S3 client
/// keeps this many connections busy).
pub const STAGE_JOBS: usize = 32;

/// Files whose chunks are looked up together while planning.
const PLAN_WINDOW: usize = 512;

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

impl Store {
    /// Stages the ranges of remote containers that restoring `files` reads,
    /// per the module's rule, `STAGE_JOBS` requests at once. Does nothing
    /// for a store with no remote.
    pub(crate) fn stage_for(
        &self,
        files: &[(&PathBuf, &Entry)],
        jobs: usize,
        progress: &dyn Fn(u64),
    ) -> Result<StageReport> {
        if self.files().remote().is_none() {
            return Ok(StageReport::default());
        }
        let mut needed: HashMap<ContainerId, Needed> = HashMap::new();
        let mut local: HashMap<ContainerId, bool> = HashMap::new();
        for window in files.chunks(PLAN_WINDOW) {
            // Every chunk of every file in the window (content lists are
            // metadata: local, or downloaded up front by the attach).
            let mut ids: Vec<BlobId> = window
                .par_iter()
                .flat_map_iter(|(_, entry)| {
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
            for entry in self.index().blobs(&ids)?.into_iter().flatten().filter(|e| !e.is_orphan()) {
                let is_local = *local.entry(entry.container).or_insert_with(|| self.files().is_local(entry.container));
                if !is_local {
                    let end = entry.offset.saturating_add(entry.record_len());
                    needed.entry(entry.container).or_default().mark(entry.offset, end);
                }
            }
        }
        let budget = gap_budget();
        let mut ranges: Vec<(ContainerId, u64, u64)> = needed
            .iter()
            .flat_map(|(id, needed)| needed.ranges(budget).into_iter().map(|(start, end)| (*id, start, end - start)))
            .collect();
        ranges.sort_unstable();
        let dir = self.root().join("staging").join(format!("{}-{}", std::process::id(), crate::config::random_id()));
        let report = self.files().stage(&dir, &ranges, jobs, progress)?;
        tracing::debug!(requests = report.requests, bytes = report.bytes, "staged remote containers");
        Ok(report)
    }
}
