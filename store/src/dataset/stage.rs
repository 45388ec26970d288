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
//! them, and each window is written as soon as its ranges have landed
//! ([`Gate`]), while the rest are fetched: the restore then reads every
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
/// them, with the first window that needs each.
pub(crate) struct StagePlan {
    pub(crate) ranges: Vec<(ContainerId, u64, u64)>,
    first_window: Vec<usize>,
}

impl StagePlan {
    /// Every window before the one returned has all its ranges staged once
    /// the first `done` ranges are.
    pub(crate) fn ready_after(&self, done: usize) -> usize {
        self.first_window.get(done).copied().unwrap_or(usize::MAX)
    }
}

/// Windows of files the restore may write: the stager opens it as ranges
/// land, the writer waits at it.
#[derive(Default)]
pub(crate) struct Gate {
    ready: std::sync::Mutex<usize>,
    opened: std::sync::Condvar,
    /// How long the writer has waited, in µs (for the debug log).
    waited_us: std::sync::atomic::AtomicU64,
}

impl Gate {
    /// Windows below `upto` may be written.
    pub(crate) fn open_to(&self, upto: usize) {
        let mut ready = self.ready.lock().expect("gate poisoned");
        *ready = (*ready).max(upto);
        self.opened.notify_all();
    }

    /// Waits until window `window` may be written.
    pub(crate) fn wait_for(&self, window: usize) {
        let started = std::time::Instant::now();
        let mut ready = self.ready.lock().expect("gate poisoned");
        while *ready <= window {
            ready = self.opened.wait(ready).expect("gate poisoned");
        }
        let waited = started.elapsed().as_micros() as u64;
        self.waited_us.fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the writer has waited at the gate so far.
    pub(crate) fn waited(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.waited_us.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Store {
    /// Plans what restoring `files`, in windows of `window` files, reads
    /// from remote containers, per the module's rule. Empty for a store
    /// with no remote.
    pub(crate) fn plan_stage(&self, files: &[(&PathBuf, &Entry)], window: usize) -> Result<StagePlan> {
        let mut plan = StagePlan { ranges: Vec::new(), first_window: Vec::new() };
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
        plan.first_window = ranges.iter().map(|r| r.0).collect();
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

    /// Stages `plan`'s ranges, `jobs` requests at once, into a directory of
    /// this restore's own, opening `gate` to each window as its ranges land.
    pub(crate) fn stage(&self, plan: &StagePlan, jobs: usize, gate: &Gate) -> Result<StageReport> {
        // One directory per restore: two restores from one attached store
        // must not share files. A writer's open removes what a killed
        // restore left (`Store::recover`).
        let dir = self.root().join("staging").join(format!("{}-{}", std::process::id(), crate::config::random_id()));
        // However staging ends (an error, a panic), the writer goes on: it
        // reads from the remote what did not land.
        struct OpenAtEnd<'a>(&'a Gate);
        impl Drop for OpenAtEnd<'_> {
            fn drop(&mut self) {
                self.0.open_to(usize::MAX);
            }
        }
        let _open = OpenAtEnd(gate);
        let started = std::time::Instant::now();
        gate.open_to(plan.ready_after(0));
        let report = self.files().stage(&dir, &plan.ranges, jobs, &|done| gate.open_to(plan.ready_after(done)))?;
        tracing::debug!(
            requests = report.requests,
            bytes = report.bytes,
            seconds = started.elapsed().as_secs_f64(),
            writer_waited = gate.waited().as_secs_f64(),
            "staged remote containers"
        );
        Ok(report)
    }
}
