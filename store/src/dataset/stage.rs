//! Planning a restore from a remote per container: which range of each
//! remote container to fetch ahead, whole, before files are written
//! (`container/staged.rs` does the fetching).
//!
//! For every chunk of every file to restore, its container's span grows
//! to cover the chunk's record, and the bytes the restore needs from it
//! are added up: memory per container, not per chunk. A container is then
//! staged as one range from its first needed record to the end of its last
//! when the unneeded bytes in that range cost less than the round trips
//! that reading around them would: fewer than [`gap_budget`] bytes, or at
//! most a quarter of the range. A full restore stages nearly every
//! container it reads; a restore of one directory stages those whose
//! records for it lie together, and fetches the rest record run by record
//! run as before.

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

/// Where a container's needed records lie, and how many bytes they are.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    needed: u64,
}

/// The unneeded bytes worth fetching to save one request: what the link
/// moves in one round trip. `CAIRN_REMOTE_LATENCY_MS` (default 20) times
/// `CAIRN_REMOTE_MBPS` (MB/s, default 100): 2 MB.
pub fn gap_budget() -> u64 {
    let read = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    read("CAIRN_REMOTE_LATENCY_MS", 20).saturating_mul(read("CAIRN_REMOTE_MBPS", 100)).saturating_mul(1000)
}

impl Store {
    /// Stages the remote containers that restoring `files` reads, per
    /// the module's rule, `STAGE_JOBS` requests at once. Does nothing for
    /// a store with no remote.
    pub(crate) fn stage_for(&self, files: &[(&PathBuf, &Entry)], progress: &dyn Fn(u64)) -> Result<StageReport> {
        if self.files().remote().is_none() {
            return Ok(StageReport::default());
        }
        let mut spans: HashMap<ContainerId, Span> = HashMap::new();
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
                if is_local {
                    continue;
                }
                let end = entry.offset.saturating_add(entry.record_len());
                let span = spans.entry(entry.container).or_insert(Span { start: entry.offset, end, needed: 0 });
                span.start = span.start.min(entry.offset);
                span.end = span.end.max(end);
                span.needed = span.needed.saturating_add(entry.record_len());
            }
        }
        let budget = gap_budget();
        let mut ranges: Vec<(ContainerId, u64, u64)> = spans
            .into_iter()
            .filter(|(_, s)| {
                let len = s.end - s.start;
                let gap = len.saturating_sub(s.needed);
                gap <= budget || gap.saturating_mul(4) <= len
            })
            .map(|(id, s)| (id, s.start, s.end - s.start))
            .collect();
        ranges.sort_unstable();
        let dir = self.root().join("staging");
        let report = self.files().stage(&dir, &ranges, STAGE_JOBS, progress)?;
        tracing::debug!(containers = report.containers, bytes = report.bytes, "staged remote containers");
        Ok(report)
    }
}
