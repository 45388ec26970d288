//! `cairn check`: verifies the store against itself.
//!
//! - every committed container exists, its footer reads, and (with
//!   `read_data`) its checksum and every record verify;
//! - every index entry points into a committed container;
//! - every reference count equals an independent recount: the records
//!   (objects, datasets) naming a blob, plus the entries naming it in every
//!   metadata blob still in the index (live, or condemned but not yet
//!   collected, whose references the delete job has not yet removed);
//! - every blob a metadata blob names is in the index (nothing was lost);
//! - every blob at zero references is queued for the delete job.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::container::verify_container;
use crate::error::Result;
use crate::ids::{BlobId, ContainerId};
use crate::index::{ContainerRecord, IndexEntry, cf};
use crate::refs::children_of;
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
    /// Problems, one sentence each.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the store; see the module documentation.
    pub fn check(&self, options: CheckOptions) -> Result<CheckReport> {
        let index = self.index();
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
                Ok(_) => {}
                Err(error) => report.problems.push(error.to_string()),
            }
            containers.insert(id, record);
        }

        // Expected counts: record roots, then the children of every metadata entry.
        let mut expected: HashMap<BlobId, i64> = HashMap::new();
        for object in self.objects("")? {
            *expected.entry(object.record.content).or_default() += 1;
        }
        for dataset in self.datasets()? {
            *expected.entry(dataset.root).or_default() += 1;
        }
        let zero: HashSet<BlobId> = index
            .scan(cf::ZERO, b"")
            .filter_map(|item| item.ok().and_then(|(key, _)| BlobId::from_slice(&key)))
            .collect();
        let mut actual: HashMap<BlobId, IndexEntry> = HashMap::new();
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
                report
                    .problems
                    .push(format!("blob {id} points into container {}, which is not committed", entry.container));
                continue;
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
                match self
                    .files()
                    .read_blob(entry.container, &entry.record(id))
                    .and_then(|bytes| children_of(entry.kind, id, &bytes))
                {
                    Ok(children) => {
                        for child in children {
                            *expected.entry(child).or_default() += 1;
                        }
                    }
                    Err(error) => report.problems.push(error.to_string()),
                }
            }
            actual.insert(id, entry);
        }
        for (id, entry) in &actual {
            let want = expected.get(id).copied().unwrap_or(0);
            if entry.refs != want {
                report.problems.push(format!("blob {id} has {} references; recount finds {want}", entry.refs));
            }
        }
        let mut missing: Vec<&BlobId> = expected.keys().filter(|id| !actual.contains_key(id)).collect();
        missing.sort();
        for id in missing {
            report.problems.push(format!("blob {id} is named {} times but is not in the index (lost)", expected[id]));
        }
        Ok(report)
    }
}
