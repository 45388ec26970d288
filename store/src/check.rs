//! `cairn check`: verifies the store against itself.
//!
//! - every committed container exists, its footer reads, and (with
//!   `read_data`) its checksum and every record verify;
//! - every index entry points into a committed container;
//! - every reference count equals an independent recount: the records
//!   (objects, datasets) naming a blob, plus the entries naming it in every
//!   metadata blob still in the index (live, or condemned but not yet
//!   collected, whose references the delete job has not yet removed);
//! - every blob a metadata blob names is in the index (nothing was lost),
//!   and is of the kind its place asks for (a subtree is a tree, a level-0
//!   piece names data chunks, ...);
//! - every blob at zero references is queued for the delete job;
//! - every object's content is as long as its record says;
//! - every container's dead bytes are its records less those an entry
//!   names (what compaction and `stats` go by; compared only when no
//!   commit came during the check);
//! - the log's chain reads from its head back to its checkpoint, and no
//!   container holds a commit the index lacks (`log/chain.rs`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::check_recount::{Named, Namer, Recount};
use crate::container::{records_len, verify_container};
use crate::content::Piece;
use crate::error::Result;
use crate::ids::{BlobId, BlobKind, ContainerId};
use crate::index::{ContainerRecord, IndexEntry, cf};
use crate::refs::{Expected, typed_children_of};
use crate::store::Store;

/// What to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Read and verify every byte of every container (slow), not just footers.
    pub read_data: bool,
}

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Containers looked at.
    pub containers: u64,
    /// Index entries looked at.
    pub blobs: u64,
    /// Blobs at zero references (garbage awaiting the delete job; not a problem).
    pub garbage: u64,
    /// Log records verified (from the head back to the newest checkpoint).
    pub log_records: u64,
    /// Commits the index lacked and that were redone from the log before
    /// the check (filled in by whoever opened the store to do that).
    pub redone: Vec<String>,
    /// Problems, one sentence each.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An index entry against the references the recount found to it.
fn compare(report: &mut CheckReport, id: BlobId, entry: &IndexEntry, named: Option<&Named>) {
    let want = named.map_or(0, |n| n.count);
    if entry.refs != want {
        report.problems.push(format!("blob {id} has {} references; recount finds {want}", entry.refs));
    }
    for (want, by) in named.iter().flat_map(|n| &n.wants).filter(|(w, _)| !w.admits(entry.kind)) {
        report.problems.push(format!("blob {id} is a {} blob, but {by} names it as {}", entry.kind, want.describe()));
    }
}

impl Store {
    /// Checks the store; see the module documentation.
    pub fn check(&self, options: CheckOptions) -> Result<CheckReport> {
        let index = self.index();
        let started_at = index.tid()?;
        let mut report = CheckReport::default();
        let mut containers: HashMap<ContainerId, ContainerRecord> = HashMap::new();
        for item in index.scan(cf::CONTAINERS, b"") {
            let (key, value) = item?;
            let Some(id) = ContainerId::from_key(&key) else {
                report.problems.push(format!("container key {key:02x?} is malformed"));
                continue;
            };
            let Some(record) = ContainerRecord::decode(&value) else {
                report.problems.push(format!("container {id}: record does not decode"));
                continue;
            };
            report.containers += 1;
            let outcome = if options.read_data {
                verify_container(self.files(), id)
            } else {
                self.files().table(id, record.stored_bytes)
            };
            match outcome {
                Ok(table) if table.len() as u64 != record.n_blobs => report.problems.push(format!(
                    "container {id}: footer lists {} blobs, index says {}",
                    table.len(),
                    record.n_blobs
                )),
                Ok(table) if records_len(&table) != record.record_bytes() => report.problems.push(format!(
                    "container {id}: its records take {} bytes, the index counts {} (its live and dead bytes \
                     are off by as much); `cairn repair` rebuilds the index from the containers",
                    records_len(&table),
                    record.record_bytes()
                )),
                Ok(_) => {}
                // A compaction running beside the check removed it since the
                // scan began: not damage, if its record is gone too.
                Err(error) if error.is_not_found() && !self.still_committed(id)? => {
                    report.containers -= 1;
                    continue;
                }
                Err(error) => report.problems.push(error.to_string()),
            }
            containers.insert(id, record);
        }

        // Expected counts: record roots, then the children of every metadata
        // entry; with the first reference's expected kind and who made it.
        // On disk (`check_recount.rs`): memory does not grow with the store.
        let mut recount = Recount::new()?;
        for object in self.objects("")? {
            recount.name(object.record.content, Expected::Content, Namer::Text(format!("object '{}'", object.key)))?;
            match self.content_len(object.record.content) {
                Ok(len) if len != object.record.size => report.problems.push(format!(
                    "object '{}' says it is {} bytes, but its content is {len} bytes",
                    object.key, object.record.size
                )),
                Ok(_) => {}
                Err(error) => report.problems.push(format!("object '{}': {error}", object.key)),
            }
        }
        for dataset in self.datasets()? {
            recount.name(dataset.root, Expected::Tree, Namer::Text(format!("dataset {}", dataset.id)))?;
        }
        if index.has(cf::LOG) {
            for item in index.scan(cf::LOG, b"") {
                let (key, value) = item?;
                if let Some(id) = crate::log::write::blob_id(&value) {
                    recount.name(id, Expected::Log, Namer::Text(format!("the log at {key:02x?}")))?;
                }
            }
        }
        let zero: HashSet<BlobId> = index
            .scan(cf::ZERO, b"")
            .filter_map(|item| item.ok().and_then(|(key, _)| BlobId::from_slice(&key)))
            .collect();
        let mut live: HashMap<ContainerId, u64> = HashMap::new();
        for item in index.scan(cf::BLOBS, b"") {
            let (key, value) = item?;
            let (Some(id), Some(entry)) = (BlobId::from_slice(&key), IndexEntry::decode(&value)) else {
                report.problems.push(format!("blob entry {key:02x?} does not decode"));
                continue;
            };
            report.blobs += 1;
            if entry.is_orphan() {
                report.problems.push(format!("blob {id} has references ({}) but no location", entry.refs));
                continue;
            }
            if !containers.contains_key(&entry.container) {
                // A compaction beside the check may have made it since the
                // container scan: committed now means committed.
                match index.container(entry.container)? {
                    Some(record) => drop(containers.insert(entry.container, record)),
                    None => {
                        report.problems.push(format!(
                            "blob {id} points into container {}, which is not committed",
                            entry.container
                        ));
                        continue;
                    }
                }
            }
            if entry.refs <= 0 {
                report.garbage += 1;
                if !zero.contains(&id) {
                    report
                        .problems
                        .push(format!("blob {id} has {} references but is not queued for deletion", entry.refs));
                }
            }
            if entry.kind.is_metadata() {
                match self.read_located(&id, entry).and_then(|bytes| typed_children_of(entry.kind, id, &bytes)) {
                    Ok(children) => {
                        for (child, want) in children {
                            recount.name(child, want, Namer::Blob(entry.kind, id))?;
                        }
                    }
                    Err(error) => report.problems.push(error.to_string()),
                }
            }
            *live.entry(entry.container).or_default() += entry.accounted_len();
        }
        // Each container's dead bytes are its records less the ones an entry
        // names (what compaction chooses by): comparable only if no commit
        // came while the scans ran.
        if index.tid()? == started_at {
            let mut ids: Vec<&ContainerId> = containers.keys().collect();
            ids.sort();
            for id in ids {
                let record = &containers[id];
                // A frame's bytes no member's share covers count live.
                let named = live.get(id).copied().unwrap_or(0).saturating_add(record.slack_bytes);
                if record.live_bytes() != named {
                    report.problems.push(format!(
                        "container {id}: its record counts {} bytes of records live, its entries name {named}",
                        record.live_bytes()
                    ));
                }
            }
        }
        // The recount beside the index's entries, both in id order. The
        // entries are read again: those the scan above passed over (it
        // reported why) count as absent, as they did when both were held.
        let entries = index.scan(cf::BLOBS, b"").filter_map(|item| match item {
            Ok((key, value)) => {
                let (id, entry) = (BlobId::from_slice(&key)?, IndexEntry::decode(&value)?);
                (!entry.is_orphan() && containers.contains_key(&entry.container)).then_some(Ok((id, entry)))
            }
            Err(error) => Some(Err(error)),
        });
        let mut entries = entries.peekable();
        for named in recount.named()? {
            let (id, named) = named?;
            // Entries no one names: zero references found.
            while let Some(item) = entries.next_if(|item| item.as_ref().is_ok_and(|(entry_id, _)| *entry_id < id)) {
                let (entry_id, entry) = item?;
                compare(&mut report, entry_id, &entry, None);
            }
            match entries.next_if(|item| !item.as_ref().is_ok_and(|(entry_id, _)| *entry_id > id)) {
                Some(item) => {
                    let (_, entry) = item?;
                    compare(&mut report, id, &entry, Some(&named));
                }
                None => report
                    .problems
                    .push(format!("blob {id} is named {} times but is not in the index (lost)", named.count)),
            }
        }
        for item in entries {
            let (id, entry) = item?;
            compare(&mut report, id, &entry, None);
        }
        report.log_records = self.verify_log(&mut report.problems)?;
        Ok(report)
    }

    /// The length of the content under `root`: a data chunk's length, or
    /// what its root piece says it covers.
    fn content_len(&self, root: BlobId) -> Result<u64> {
        let entry = self.entry(&root)?;
        match entry.kind {
            BlobKind::Data => Ok(entry.raw_len as u64),
            _ => Ok(Piece::decode(root, &self.read_located(&root, entry)?)?.len()),
        }
    }

    /// Whether container `id` still has a record, after catching up with
    /// the writer (for a reader) or looking again (for the writer).
    fn still_committed(&self, id: ContainerId) -> Result<bool> {
        self.index().catch_up()?;
        Ok(self.index().container(id)?.is_some())
    }
}
