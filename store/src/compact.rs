//! Compaction: giving back the space of dead records, a container at a time.
//!
//! A sealed container is never modified. When enough of it is dead, the
//! records the index still names are copied (as stored, after checking each
//! against its id) into new containers written by an ordinary write session;
//! one synced commit repoints exactly the entries that still point into the
//! old container and deletes its record; only then is the old file removed.
//! A container with nothing live is simply dropped the same way.
//!
//! Crash safety follows from the commit protocol: before the commit the new
//! containers have no record (the next writer deletes them) and the old ones
//! are untouched; after it, the old files have no record (the next writer
//! deletes them if the unlink did not happen). A reader in this process that
//! looked an entry up just before it moved retries once with the new
//! location (`Store::read_located`).

use std::collections::HashMap;

use serde::Serialize;

use crate::container::{ContainerFiles, TableEntry, sync_dir_of};
use crate::error::{Error, Result};
use crate::fault::crash_point;
use crate::ids::{BlobId, ContainerId};
use crate::index::{ContainerRecord, IndexEntry, cf};
use crate::store::Store;

/// A container's records, split into those the index names (live) and the rest.
#[derive(Clone, Debug)]
pub struct ContainerUsage {
    /// The container.
    pub id: ContainerId,
    /// Its record.
    pub record: ContainerRecord,
    /// Every record in the file, in file order, with the index entry that
    /// names it (`None` for a dead record).
    pub blobs: Vec<(TableEntry, Option<IndexEntry>)>,
}

impl ContainerUsage {
    /// Records the index names.
    pub fn live(&self) -> impl Iterator<Item = &TableEntry> {
        self.blobs.iter().filter(|(_, entry)| entry.is_some()).map(|(table, _)| table)
    }

    /// Bytes of live records, headers included.
    pub fn live_bytes(&self) -> u64 {
        self.live().map(TableEntry::accounted_len).sum()
    }
}

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Containers dropped because nothing in them was live.
    pub containers_deleted: u64,
    /// Containers whose live records were copied before they were dropped.
    pub containers_rewritten: u64,
    /// Containers the copies went to.
    pub containers_written: u64,
    /// Live records copied.
    pub blobs_moved: u64,
    /// Bytes of the dropped container files.
    pub bytes_removed: u64,
    /// Bytes of the new container files.
    pub bytes_written: u64,
    /// Containers left alone, and why (a damaged record cannot be copied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl CompactReport {
    /// Adds another compaction's counts (and problems) to these.
    pub fn add(&mut self, other: CompactReport) {
        self.containers_deleted += other.containers_deleted;
        self.containers_rewritten += other.containers_rewritten;
        self.containers_written += other.containers_written;
        self.blobs_moved += other.blobs_moved;
        self.bytes_removed += other.bytes_removed;
        self.bytes_written += other.bytes_written;
        self.problems.extend(other.problems);
    }

    /// Disk space given back: removed less written.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_removed.saturating_sub(self.bytes_written)
    }
}

impl Store {
    /// Every committed container and its record, in id order.
    pub fn containers(&self) -> Result<Vec<(ContainerId, ContainerRecord)>> {
        let mut out = Vec::new();
        for item in self.index().scan(cf::CONTAINERS, b"") {
            let (key, value) = item?;
            let id = ContainerId::from_key(&key).ok_or_else(|| Error::BadEntry {
                what: format!("container key {key:02x?}"),
                reason: "is not 8 bytes".into(),
            })?;
            let record = ContainerRecord::decode(&value)
                .ok_or_else(|| Error::BadEntry { what: format!("container {id}"), reason: "does not decode".into() })?;
            out.push((id, record));
        }
        Ok(out)
    }

    /// Reads a container's footer and looks every record up in the index.
    pub fn container_usage(&self, id: ContainerId) -> Result<ContainerUsage> {
        let record = self
            .index()
            .container(id)?
            .ok_or_else(|| Error::Usage(format!("there is no container {id}; `cairn containers` lists them")))?;
        let table = self.files().table(id, record.stored_bytes)?;
        // Sorted, RocksDB's batched lookup is several times faster.
        let mut ids: Vec<BlobId> = table.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        let entries: HashMap<BlobId, Option<IndexEntry>> = ids.iter().copied().zip(self.index().blobs(&ids)?).collect();
        let blobs = table
            .into_iter()
            .map(|t| {
                let live = entries[&t.id].filter(|e| !e.is_orphan() && e.container == id && e.offset == t.offset);
                (t, live)
            })
            .collect();
        Ok(ContainerUsage { id, record, blobs })
    }

    /// Copies the live records of `ids` into new containers and drops the
    /// old ones (see the module documentation). A container whose live
    /// records cannot all be read is left alone and reported.
    pub fn compact(&self, ids: &[ContainerId]) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let session = self.session()?;
        let mut tables: HashMap<ContainerId, Vec<TableEntry>> = HashMap::new();
        let mut old: Vec<ContainerId> = Vec::new();
        let mut removed_bytes = 0;
        for id in ids {
            let usage = match self.container_usage(*id) {
                Ok(usage) => usage,
                Err(error) => {
                    report.problems.push(format!("container {id} left alone: {error}"));
                    continue;
                }
            };
            let live: Vec<TableEntry> = usage.live().copied().collect();
            let copies = if live.is_empty() {
                Vec::new()
            } else {
                match self.files().read_encoded(*id, &live) {
                    Ok(copies) => copies,
                    Err(error) => {
                        report.problems.push(format!("container {id} left alone: {error}"));
                        continue;
                    }
                }
            };
            for blob in &copies {
                session.write_blob(blob)?;
            }
            if copies.is_empty() {
                report.containers_deleted += 1;
            } else {
                report.containers_rewritten += 1;
            }
            removed_bytes += usage.record.stored_bytes;
            tables.insert(*id, usage.blobs.into_iter().map(|(t, _)| t).collect());
            old.push(*id);
        }
        if old.is_empty() {
            return Ok(report);
        }
        let relocation = session.commit_relocation(&old, &tables)?;
        report.blobs_moved = relocation.moved;
        report.containers_written = relocation.new_containers.len() as u64;
        for id in &relocation.new_containers {
            report.bytes_written += self.index().container(*id)?.map_or(0, |r| r.stored_bytes);
        }
        report.bytes_removed = removed_bytes;
        for id in &old {
            self.remove_container_file(*id)?;
        }
        crash_point("compact:unlinked");
        Ok(report)
    }

    /// Removes the file of a container that no longer has a record.
    fn remove_container_file(&self, id: ContainerId) -> Result<()> {
        remove_container_file(self.files(), id)
    }
}

/// Removes the file of a container that no longer has a record (gone already is fine).
pub(crate) fn remove_container_file(files: &ContainerFiles, id: ContainerId) -> Result<()> {
    let path = files.path(id);
    files.forget(id);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir_of(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing compacted container", &path, e)),
    }
}
