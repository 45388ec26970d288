//! `gc --dry-run`: what the delete job would do, computed without changing
//! anything.
//!
//! The cascade is simulated in memory: counts read from the index, minus
//! what simulated collections subtract, so the whole chain (a dataset's root
//! tree, its subtrees, their content lists, their chunks) is followed to the
//! end as the real job's passes would. It assumes no session is running
//! (so blobs zeroed on the way are collectable), which is what a run from
//! the command line sees. Compaction is then projected from each container's
//! dead bytes plus what the cascade would add.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use cairn_store::refs::children_of;
use cairn_store::{BlobId, ContainerId, Result, Store};

use crate::job::{GcOptions, GcReport};

/// Computes the report a run with `options` would give, changing nothing.
pub fn dry_run(store: &Store, options: &GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    let mut report = GcReport { dry_run: true, ..GcReport::default() };
    let horizon = store.horizon()?;
    let mut counts: HashMap<BlobId, i64> = HashMap::new();
    let mut pending: Vec<BlobId> = Vec::new();
    let mut after = None;
    loop {
        let queued = store.zero_queue(after, options.batch_blobs.max(1))?;
        let Some(last) = queued.last() else { break };
        after = Some(last.0);
        for (id, tid) in queued {
            if tid <= horizon {
                pending.push(id);
            } else {
                report.protected += 1;
            }
        }
    }

    let mut condemned: HashSet<BlobId> = HashSet::new();
    let mut dead: BTreeMap<ContainerId, u64> = BTreeMap::new();
    while let Some(id) = pending.pop() {
        if condemned.contains(&id) {
            continue;
        }
        let Some(entry) = store.index().blob(&id)?.filter(|e| !e.is_orphan()) else { continue };
        if *counts.entry(id).or_insert(entry.refs) != 0 {
            continue;
        }
        if entry.kind.is_metadata() {
            let children = match store.read_blob(&id).and_then(|bytes| children_of(entry.kind, id, &bytes)) {
                Ok(children) => children,
                Err(error) => {
                    report.problems.push(format!("cannot collect {} blob {id}: {error}", entry.kind.name()));
                    continue;
                }
            };
            for child in children {
                let refs = match counts.get_mut(&child) {
                    Some(refs) => refs,
                    None => {
                        let current = store.index().blob(&child)?.map_or(0, |e| e.refs);
                        counts.entry(child).or_insert(current)
                    }
                };
                *refs -= 1;
                if *refs == 0 {
                    pending.push(child);
                }
            }
            report.metadata_blobs += 1;
        }
        condemned.insert(id);
        report.blobs_reclaimed += 1;
        report.bytes_reclaimed += entry.record_len();
        *dead.entry(entry.container).or_default() += entry.record_len();
    }

    for (id, mut record) in store.containers()? {
        record.dead_bytes = (record.dead_bytes + dead.get(&id).copied().unwrap_or(0)).min(record.record_bytes());
        if record.dead_bytes == 0 || record.dead_share() < options.compact_threshold {
            continue;
        }
        report.bytes_removed += record.stored_bytes;
        if record.live_bytes() == 0 {
            report.containers_deleted += 1;
        } else {
            report.containers_rewritten += 1;
            // Estimated: the live records, without the new files' headers and footers.
            report.bytes_written += record.live_bytes();
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
