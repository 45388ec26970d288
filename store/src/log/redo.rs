//! Redoing commits whose log record is durable but whose index batch is not.
//!
//! When a writer opens the store, container files with no record in the
//! index are either a session that never reached its commit (no log record:
//! deleted, as always) or a commit whose log record was sealed but whose
//! batch never became durable (a crash between the two, or an index that
//! lost its newest writes: a truncated or damaged write-ahead log). Such a
//! commit is redone from its record, in chain order from the index's head,
//! with the same code that made it (`WriteSession::redo`). A log record
//! that does not continue the index's chain means the index lost more than
//! its tail: the open stops, deleting nothing, and says to run `cairn repair`.

use std::collections::{BTreeMap, HashSet};

use crate::container::{Footer, read_footer};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, ContainerId};
use crate::log::record::{Body, LogBlob, LogRecord};
use crate::log::write::log_head;
use crate::session::{Found, WriteSession};
use crate::store::Store;

/// A log record found in a container.
pub struct FoundRecord {
    /// The record's blob id.
    pub id: BlobId,
    /// The container holding it.
    pub container: ContainerId,
    /// The record.
    pub record: LogRecord,
}

/// The log records in `containers` (pieces are skipped), with each
/// container's table. A container whose footer or record does not read is
/// reported through `damaged` and skipped.
pub(crate) fn records_in(
    store: &Store,
    containers: &[ContainerId],
    damaged: &mut dyn FnMut(ContainerId, Error),
) -> (Vec<FoundRecord>, BTreeMap<ContainerId, Found>) {
    let mut records = Vec::new();
    let mut tables = BTreeMap::new();
    for &container in containers {
        let path = store.files().path(container);
        let Footer { table, layout } = match read_footer(&path, container) {
            Ok(footer) => footer,
            Err(error) => {
                damaged(container, error);
                continue;
            }
        };
        for entry in table.iter().filter(|t| t.kind == BlobKind::Log) {
            match LogBlob::read(store.files(), container, entry) {
                Ok(LogBlob::Record(record)) => records.push(FoundRecord { id: entry.id, container, record }),
                Ok(LogBlob::Piece(_)) => {}
                Err(error) => damaged(container, error),
            }
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        tables.insert(container, Found { id: container, len, table, layout });
    }
    (records, tables)
}

/// Redoes, in chain order, the commits whose records `orphans` (containers
/// with no record in the index) hold. Returns the containers that are now
/// committed; the caller deletes the other orphans. Fails, changing
/// nothing further, when a record does not continue the chain.
pub(crate) fn roll_forward(store: &Store, orphans: &[ContainerId]) -> Result<HashSet<ContainerId>> {
    let mut committed = HashSet::new();
    if orphans.is_empty() {
        return Ok(committed);
    }
    let mut unreadable = Vec::new();
    let (mut records, mut tables) = records_in(store, orphans, &mut |container, error| {
        // A container that was being written when the process died has no
        // footer: the session never got to commit. Anything else is odd.
        if !error.is_never_sealed() {
            unreadable.push(format!("container {container}: {error}"));
        }
    });
    // An attached store holds only some of its origin's containers: a
    // record of the origin's, downloaded by an attach that was cut before
    // it wrote the index, names containers that stay remote. It is not
    // this store's commit (the attach is made again), and its container
    // goes like any other orphan.
    if store.files().remote().is_some() {
        records.retain(|r| r.record.containers().iter().all(|c| tables.contains_key(c)));
    }
    records.sort_by_key(|r| r.record.tid);
    let index = store.index();
    loop {
        let head = log_head(index)?;
        let tid = index.tid()?;
        let next: Vec<usize> =
            (0..records.len()).filter(|&i| records[i].record.prev() == head && records[i].record.tid() > tid).collect();
        let [i] = next[..] else {
            if next.len() > 1 {
                return Err(behind(store, "two log records both continue the index's newest commit".into()));
            }
            break;
        };
        let found = records.remove(i);
        let mut containers = found.record.containers();
        containers.push(found.container);
        containers.sort_unstable();
        containers.dedup();
        let mut parts = Vec::new();
        for container in &containers {
            match tables.remove(container) {
                Some(part) => parts.push(part),
                None => {
                    return Err(behind(
                        store,
                        format!(
                            "commit {} (in container {}) wrote container {container}, which is missing or unreadable",
                            found.record.tid, found.container
                        ),
                    ));
                }
            }
        }
        let session = WriteSession::replaying(store.inner.clone(), &parts)?;
        let outcome = match found.record.body {
            Body::Commit { .. } => session.redo(found.id, &found.record),
            Body::Relocation { .. } => session.redo_relocation(found.id, &found.record),
        };
        match outcome {
            Ok(tid) => {
                let line = format!(
                    "the index lacked commit {tid} ({}), whose log record is durable; redone from the log",
                    found.record.summary()
                );
                tracing::info!("{line}");
                store.inner.redone.lock().expect("redone list poisoned").push(line);
                committed.extend(containers);
            }
            // It names a blob that nothing holds: it never was a valid commit
            // (the session's own containers went with it).
            Err(Error::MissingBlob(blob)) => {
                tracing::warn!(%blob, "dropped the log record of commit {}: it names a missing blob", found.record.tid);
            }
            Err(error) => return Err(error),
        }
    }
    let tid = index.tid()?;
    if let Some(ahead) = records.iter().find(|r| r.record.tid() > tid) {
        return Err(behind(
            store,
            format!(
                "container {} holds the log record of commit {}, which does not follow the index's newest commit {tid}",
                ahead.container, ahead.record.tid
            ),
        ));
    }
    if let Some(problem) = unreadable.first() {
        tracing::warn!("{problem}");
    }
    Ok(committed)
}

fn behind(store: &Store, reason: String) -> Error {
    Error::IndexBehind { path: store.root().join("index"), reason }
}
