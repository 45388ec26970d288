//! Commits too large for one batch: their entries are staged, made
//! durable, and applied in pieces, and a crash part way is finished by the
//! next writer's open.
//!
//! A commit of a few hundred thousand new blobs is one synced RocksDB
//! batch, as it always was. A larger one (a first backup of a terabyte is
//! a hundred million chunks) would need that batch, and the resolution
//! behind it, in memory. Instead its resolution spills to the `stage`
//! family ([`crate::commit::Stage`]), and then, under the commit lock:
//!
//! 1. the stage is flushed to table files (durable: it was written
//!    without the write-ahead log);
//! 2. one synced write puts `meta/staged`, holding the commit's *final*
//!    batch (records, container records, zero queue, log, tid), serialized;
//! 3. the staged entries are put into `blobs` in key order, a few thousand
//!    per batch, each batch also setting `meta/staged_through` to its last
//!    key;
//! 4. the final batch is written, synced; it deletes both `meta` keys;
//! 5. the stage is emptied.
//!
//! The three commit properties hold. Nothing uncommitted is visible: no
//! record names a new entry before step 4, and the entries of step 3
//! point into containers that have no record until then (a reader reaches
//! blobs only through records). Nothing committed is lost: the commit's
//! log record is durable before step 1, so a crash before step 2 is
//! redone from the log as any other (`log/redo.rs`); a crash after it is
//! finished by [`resume`] at the next writer's open, from
//! `staged_through` on: the staged entries are whole entries, not deltas,
//! so putting one twice is harmless. Every entry's children are counted
//! once: the stage is the resolution's, computed once.
//!
//! Between steps 3 and 4 a session of this process may find an applied
//! entry and deduplicate against it: that is safe, because the commit is
//! durable and the lock keeps every other commit and the delete job out
//! until it is applied (or the process is poisoned, and the next open
//! finishes it).

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::fault::{crash_point, lost_acknowledgement};
use crate::index::{Index, IndexEntry, cf, meta};

/// Staged entries per batch of step 3.
pub(crate) const APPLY_BATCH: usize = 16_384;

/// Entries a commit's resolution holds in memory before its stage spills
/// (`commit::Stage`): below it, the whole commit is one batch.
const STAGE_LIMIT: usize = 100_000;

/// [`STAGE_LIMIT`], or `CAIRN_STAGE_ENTRIES` (for tests, which need small
/// commits to take this path).
pub(crate) fn stage_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("CAIRN_STAGE_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(STAGE_LIMIT).max(1)
    })
}

/// Steps 1 to 5 for a commit whose stage spilled; `last` is its final
/// batch, `crash_points` the points before and after it.
pub(crate) fn commit_staged(
    index: &Index,
    mut last: WriteBatch,
    sync: bool,
    crash_points: [&'static str; 2],
) -> Result<()> {
    if !crate::fault::skip_sync("stage") {
        index.flush_family(cf::STAGE)?;
    }
    last.delete_cf(index.cf(cf::META), meta::STAGED);
    last.delete_cf(index.cf(cf::META), meta::STAGED_THROUGH);
    let mut marker = WriteBatch::default();
    marker.put_cf(index.cf(cf::META), meta::STAGED, last.data());
    marker.delete_cf(index.cf(cf::META), meta::STAGED_THROUGH);
    index.write(marker, sync)?;
    crash_point("commit:staged");
    finish(index, last, sync, crash_points)
}

/// A writer's open: finishes a staged commit that a crash interrupted
/// (returns whether there was one), or empties a stage left by a commit
/// that never reached step 2.
pub(crate) fn resume(index: &Index) -> Result<bool> {
    let Some(last) = index.get(cf::META, meta::STAGED)? else {
        if index.scan(cf::STAGE, b"").next().is_some() {
            clear_stage(index, true)?;
        }
        return Ok(false);
    };
    tracing::info!("finishing a large commit that was interrupted while it was applied");
    finish(index, WriteBatch::from_data(&last), true, ["redo:resolved", "redo:written"])?;
    Ok(true)
}

/// Steps 3 to 5.
fn finish(index: &Index, last: WriteBatch, sync: bool, crash_points: [&'static str; 2]) -> Result<()> {
    let through = index.get(cf::META, meta::STAGED_THROUGH)?;
    let mut batch = WriteBatch::default();
    let mut in_batch = 0;
    let mut first = true;
    let mut last_key = None;
    for item in index.scan_after(cf::STAGE, through.as_deref()) {
        let (key, value) = item?;
        if IndexEntry::decode(&value).is_none() || key.len() != 32 {
            return Err(Error::BadEntry {
                what: "a staged index entry".into(),
                reason: format!("key of {} bytes, value of {} bytes", key.len(), value.len()),
            });
        }
        batch.put_cf(index.cf(cf::BLOBS), &key, &value);
        in_batch += 1;
        last_key = Some(key);
        if in_batch == APPLY_BATCH.min(stage_limit()) {
            batch.put_cf(index.cf(cf::META), meta::STAGED_THROUGH, last_key.as_deref().expect("set above"));
            index.write(std::mem::take(&mut batch), false)?;
            in_batch = 0;
            if first {
                crash_point("commit:applying");
                first = false;
            }
        }
    }
    if in_batch > 0 {
        batch.put_cf(index.cf(cf::META), meta::STAGED_THROUGH, last_key.as_deref().expect("set above"));
        index.write(batch, false)?;
    }
    crash_point(crash_points[0]);
    index.write(last, sync)?;
    crash_point(crash_points[1]);
    clear_stage(index, true)?;
    lost_acknowledgement(crash_points[1])
}

/// Empties the stage (compacting the range away when `compact`).
pub(crate) fn clear_stage(index: &Index, compact: bool) -> Result<()> {
    index.clear(cf::STAGE, &[], &[0xff; 33], compact)
}
