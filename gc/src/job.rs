//! The delete job: the cascade over the zero queue, then compaction.
//!
//! The store does each step under its commit protocol
//! (`Store::reclaim_batch`, `Store::compact`); this module decides how much
//! to do and in what order, and stops cleanly when asked:
//!
//! 1. **Cascade**, in passes over the `zero` queue, `batch_blobs` entries per
//!    commit (fewer when their metadata blobs name more than
//!    `batch_children` children). Collecting a metadata blob can bring its
//!    children to zero; they are collected later in the same pass or by the
//!    next. It ends when a pass collects nothing.
//! 2. **Compact** the containers whose dead share reaches the threshold, a
//!    group of about `group_bytes` of live records and `group_records`
//!    records (live or dead: each is looked up and held while its group is
//!    compacted) per commit. Wholly dead containers are dropped without
//!    copying.
//!
//! Cost follows what is freed: the cascade touches the queue and what it
//! names; compaction reads one small record per container to choose, then
//! only the chosen containers. Backups may run meanwhile (in this process:
//! the library supports it, the tests do it with threads).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cairn_store::index::ContainerRecord;
use cairn_store::{CompactReport, ContainerId, Result, Store};
use serde::Serialize;

/// How the delete job runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Compact a container once this share of its records is dead (0.0–1.0).
    pub compact_threshold: f64,
    /// Queue entries per cascade commit.
    pub batch_blobs: usize,
    /// Children named by a cascade commit's metadata blobs, about: a batch
    /// holds each a few times over (its list, the count deltas, the index
    /// entries read, the write batch: about 250 bytes a child), and a batch
    /// of 10,000 trees of a thousand entries each would hold ten million.
    /// Measured: forgetting a dataset of a million small files in 1,000
    /// directories, the batch of its 1,000 trees took gc from 153 to 409 MB
    /// and held the commit lock for 3.0 s; in batches of 192 trees, 0.56 s.
    pub batch_children: usize,
    /// Live bytes copied per compaction commit.
    pub group_bytes: u64,
    /// Records (live or dead) per compaction commit, about: compacting holds
    /// each with its index entry, and a container of small files holds tens
    /// of thousands of records in a few MiB, so live bytes alone do not bound
    /// a group (measured: 23 wholly dead containers of a million 100-byte
    /// files, compacted in one group, took gc from 162 to 393 MB).
    pub group_records: u64,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            compact_threshold: 0.2,
            batch_blobs: 10_000,
            batch_children: 128 << 10,
            group_bytes: 64 << 20,
            group_records: 128 << 10,
        }
    }
}

/// What a run did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// Blobs collected (index entries dropped).
    pub blobs_reclaimed: u64,
    /// Of which metadata blobs (trees, content-list pieces).
    pub metadata_blobs: u64,
    /// Their record bytes, now dead in their containers.
    pub bytes_reclaimed: u64,
    /// Blobs at zero references left because a running session may name them.
    pub protected: u64,
    /// What compaction did (its fields appear at the top level in JSON).
    #[serde(flatten)]
    pub compaction: CompactReport,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether it stopped early because it was asked to (Ctrl-C).
    pub interrupted: bool,
    /// Whether this run wrote a log checkpoint (the older log records
    /// become garbage for the next run).
    pub checkpoint: bool,
    /// Whether nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// Blobs or containers that could not be handled, and why.
    pub problems: Vec<String>,
}

/// Where the job is, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Collecting blobs; the number so far.
    Cascade(u64),
    /// Compacting; containers done of the total chosen.
    Compact(u64, u64),
}

/// Runs the delete job once. `stop` is checked between commits: when it is
/// set, the job ends after the commit in progress and says so in the report.
pub fn collect(store: &Store, options: &GcOptions, stop: &AtomicBool, progress: &dyn Fn(Phase)) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport::default();
    let mut problems = BTreeSet::new();
    'passes: loop {
        let mut after = None;
        let mut collected = 0;
        let mut protected = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                report.interrupted = true;
                break 'passes;
            }
            let batch = store.reclaim_batch(after, options.batch_blobs.max(1), options.batch_children)?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), blobs = batch.blobs, "reclaim batch");
            collected += batch.blobs;
            protected += batch.protected;
            report.blobs_reclaimed += batch.blobs;
            report.metadata_blobs += batch.metadata_blobs;
            report.bytes_reclaimed += batch.bytes;
            problems.extend(batch.problems);
            progress(Phase::Cascade(report.blobs_reclaimed));
            after = batch.next;
            if after.is_none() {
                break;
            }
        }
        report.protected = protected;
        if collected == 0 {
            break;
        }
    }

    // The cascade's batches were not synced one by one.
    store.index().sync()?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), blobs = report.blobs_reclaimed, "cascade done");
    if !report.interrupted {
        let chosen = choose_containers(store, options.compact_threshold)?;
        let total = chosen.len() as u64;
        let mut done = 0;
        for group in groups(&chosen, options.group_bytes, options.group_records) {
            if stop.load(Ordering::Relaxed) {
                report.interrupted = true;
                break;
            }
            progress(Phase::Compact(done, total));
            let ids: Vec<ContainerId> = group.iter().map(|c| c.id).collect();
            let compacted = store.compact(&ids)?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), containers = ids.len(), "compacted a group");
            report.compaction.add(compacted);
            done += ids.len() as u64;
        }
        progress(Phase::Compact(done, total));
    }
    problems.extend(std::mem::take(&mut report.compaction.problems));
    // The audit trail: what this run did goes in the log, and once enough
    // records have piled up since the last checkpoint, this one is a
    // checkpoint (the next run collects the records it supersedes).
    let checkpoint = store.log_len()? >= cairn_store::log::CHECKPOINT_EVERY;
    let did_something = report.blobs_reclaimed > 0
        || report.compaction.containers_rewritten > 0
        || report.compaction.containers_deleted > 0;
    if !report.interrupted && (did_something || checkpoint) {
        let note = format!(
            "gc: collected {} blobs ({} bytes), rewrote {} containers and deleted {}",
            report.blobs_reclaimed,
            report.bytes_reclaimed,
            report.compaction.containers_rewritten,
            report.compaction.containers_deleted
        );
        store.log_note(note, checkpoint)?;
        report.checkpoint = checkpoint;
    }
    // Last, after the compaction's repointed entries and the log's
    // record: every write of the job leaves the write-ahead log, and the
    // compaction of the index drops the tombstones and the entries the
    // compaction replaced (measured: done after the cascade only, it left
    // 128-350 KB of log, 12 B of a small store's 114 B per live blob).
    store.index().tidy_after_collecting(report.blobs_reclaimed)?;
    report.problems = problems.into_iter().collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Containers worth compacting: those whose dead share reaches `threshold`,
/// with the live bytes each would copy, fullest of dead first.
pub fn choose_containers(store: &Store, threshold: f64) -> Result<Vec<Chosen>> {
    let mut chosen: Vec<(Chosen, f64)> = store
        .containers()?
        .into_iter()
        .filter(|(_, record)| worth_compacting(record, threshold))
        .map(|(id, record)| {
            (Chosen { id, live_bytes: record.live_bytes(), records: record.n_blobs }, record.dead_share())
        })
        .collect();
    chosen.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
    Ok(chosen.into_iter().map(|(c, _)| c).collect())
}

/// A container chosen for compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The container.
    pub id: ContainerId,
    /// Bytes of its live records.
    pub live_bytes: u64,
    /// Its records, live or dead.
    pub records: u64,
}

/// Whether a container has dead records and their share reaches `threshold`.
pub fn worth_compacting(record: &ContainerRecord, threshold: f64) -> bool {
    record.dead_bytes > 0 && record.dead_share() >= threshold
}

/// Splits containers into groups of about `group_bytes` live bytes and
/// `group_records` records each (at least one container per group).
fn groups(chosen: &[Chosen], group_bytes: u64, group_records: u64) -> Vec<&[Chosen]> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut bytes, mut records) = (0u64, 0u64);
    for (i, c) in chosen.iter().enumerate() {
        let (more_bytes, more_records) = (bytes.saturating_add(c.live_bytes), records.saturating_add(c.records));
        if i > start && (more_bytes > group_bytes || more_records > group_records) {
            out.push(&chosen[start..i]);
            start = i;
            (bytes, records) = (c.live_bytes, c.records);
        } else {
            (bytes, records) = (more_bytes, more_records);
        }
    }
    if start < chosen.len() {
        out.push(&chosen[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_about_the_target_and_never_nothing() {
        let chosen: Vec<Chosen> = [(5, 1), (5, 1), (5, 1), (20, 1), (0, 30), (1, 1), (0, 100)]
            .iter()
            .enumerate()
            .map(|(i, &(live_bytes, records))| Chosen { id: ContainerId(i as u64), live_bytes, records })
            .collect();
        let sizes: Vec<Vec<u64>> =
            groups(&chosen, 10, 40).iter().map(|g| g.iter().map(|c| c.live_bytes).collect()).collect();
        // By bytes, then by records: the dead container of 30 records goes
        // with one more, and the one of 100 alone.
        assert_eq!(sizes, vec![vec![5, 5], vec![5], vec![20], vec![0, 1], vec![0]]);
        assert!(groups(&[], 10, 40).is_empty());
    }
}
