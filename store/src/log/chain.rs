//! Reading and verifying the live log: `cairn log`, and `cairn check`'s
//! part in it.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ids::{BlobId, Tid};
use crate::index::cf;
use crate::log::record::{LogBlob, LogRecord};
use crate::log::redo::records_in;
use crate::log::write::{blob_id, log_head};
use crate::store::Store;

/// A live log record and its blob id.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The record's blob id.
    pub id: BlobId,
    /// The record.
    pub record: LogRecord,
}

impl Store {
    /// The live log, oldest first: the records since the newest checkpoint
    /// (older ones are collected by the delete job).
    pub fn log(&self) -> Result<Vec<LogEntry>> {
        let index = self.index();
        if !index.has(cf::LOG) {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for item in index.scan(cf::LOG, b"") {
            let (_, value) = item?;
            let Some(id) = blob_id(&value) else { continue };
            if let LogBlob::Record(record) = LogBlob::decode(id, &self.read_blob(&id)?)? {
                entries.push(LogEntry { id, record });
            }
        }
        Ok(entries)
    }

    /// Checks the log: the chain from the head back to the checkpoint reads,
    /// links by id with falling tids, and is exactly what `log` lists; and
    /// no container the index has no record of holds a commit the index
    /// lacks. Problems are pushed as sentences naming the commit by tid.
    /// Returns the records checked.
    pub fn verify_log(&self, problems: &mut Vec<String>) -> Result<u64> {
        let index = self.index();
        if !index.has(cf::LOG) {
            return Ok(0);
        }
        let mut listed: BTreeMap<Tid, BlobId> = BTreeMap::new();
        for item in index.scan(cf::LOG, b"") {
            let (key, value) = item?;
            match (<[u8; 8]>::try_from(&*key), blob_id(&value)) {
                (Ok(tid), Some(id)) => {
                    listed.insert(Tid(u64::from_be_bytes(tid)), id);
                }
                _ => problems.push(format!("log entry {key:02x?} is malformed")),
            }
        }
        let tids: std::collections::HashMap<BlobId, Tid> = listed.iter().map(|(tid, id)| (*id, *tid)).collect();
        let tid_of = |id: &BlobId| tids.get(id).copied();
        let mut checked = 0;
        let mut at = log_head(index)?;
        let mut newer: Option<Tid> = None;
        while let Some(id) = at {
            let commit = tid_of(&id).map_or_else(|| "?".to_string(), |tid| tid.to_string());
            let record = match self.read_blob(&id).and_then(|bytes| LogBlob::decode(id, &bytes)) {
                Ok(LogBlob::Record(record)) => record,
                Ok(LogBlob::Piece(_)) => {
                    problems.push(format!("the log names checkpoint piece {id:#} as the record of commit {commit}"));
                    break;
                }
                Err(error) => {
                    problems.push(format!("the log record of commit {commit} (blob {id:#}) is damaged: {error}"));
                    break;
                }
            };
            checked += 1;
            if listed.get(&record.tid()) != Some(&id) {
                problems.push(format!(
                    "the log record of commit {} (blob {id:#}) is not the one the index lists for that commit",
                    record.tid
                ));
            }
            if newer.is_some_and(|newer| record.tid() >= newer) {
                problems.push(format!("the log record of commit {} comes after a later commit's", record.tid));
                break;
            }
            newer = Some(record.tid());
            if record.checkpoint.is_some() {
                break;
            }
            at = record.prev();
            if at.is_none() {
                problems.push(format!("the log starts at commit {} without a checkpoint", record.tid));
            }
        }
        if checked != listed.len() as u64 && problems.is_empty() {
            problems.push(format!(
                "the index lists {} live log records, but the chain from the head to its checkpoint has {checked}",
                listed.len()
            ));
        }
        self.unindexed_commits(problems)?;
        Ok(checked)
    }

    /// Commits whose log record is in a container the index has no record
    /// of, and which the index lacks: the index lost them (or a commit is
    /// being made right now, which a second look rules out).
    fn unindexed_commits(&self, problems: &mut Vec<String>) -> Result<()> {
        let index = self.index();
        let mut orphans = Vec::new();
        for id in self.files().on_disk()? {
            if index.container(id)?.is_none() {
                orphans.push(id);
            }
        }
        let (records, _) = records_in(self, &orphans, &mut |_, _| {});
        index.catch_up()?;
        let tid = index.tid()?;
        for found in records {
            let still_missing = index.container(found.container)?.is_none();
            if found.record.tid() > tid && still_missing {
                problems.push(format!(
                    "commit {} ({}) is in the log (container {}) but not in the index, which lost it; the next \
                     command that writes to the store redoes it, or run `cairn repair`",
                    found.record.tid,
                    found.record.summary(),
                    found.container
                ));
            }
        }
        Ok(())
    }
}
