//! Objects: the store's flat key namespace (`put`, `get`, `clone`, `rm`).
//!
//! An object record names the root of a content list. `clone` writes a
//! second record naming the same root (one more reference, no data copied);
//! `rm` drops the record and its reference. Records are JSON in the
//! `objects` column family, keyed by the key's UTF-8 bytes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::ids::{BlobId, Tid};
use crate::index::cf;
use crate::ingest::{IngestStats, extract, ingest};
use crate::store::Store;

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// What the index keeps about an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Root of the content list (hex).
    #[serde(with = "hex_id")]
    pub content: BlobId,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored, ns since the epoch.
    pub created_ns: u64,
    /// The tid of the commit that stored it.
    pub tid: Tid,
}

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its record.
    #[serde(flatten)]
    pub record: ObjectRecord,
}

/// What a `put` did.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    /// The stored object.
    pub object: ObjectInfo,
    /// Chunk counts.
    pub stats: IngestStats,
    /// Bytes appended to containers (compressed, with record headers).
    pub bytes_stored: u64,
    /// Whether an older object under the key was replaced.
    pub replaced: bool,
}

fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "keys cannot be empty"
    } else if key.len() > MAX_KEY_LEN {
        "keys are at most 1024 bytes"
    } else if key.contains('\0') {
        "keys cannot contain NUL"
    } else {
        return Ok(());
    };
    Err(Error::BadKey { key: key.to_string(), reason })
}

fn now_ns() -> u64 {
    crate::clock::now_ns_unsigned()
}

pub(crate) fn decode_record(key: &str, bytes: &[u8]) -> Result<ObjectRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::BadEntry { what: format!("object '{key}'"), reason: e.to_string() })
}

/// Reads the record of `key` inside a commit (consistent with it).
fn record_in(commit: &Commit<'_>, key: &str) -> Result<Option<ObjectRecord>> {
    commit.index().get(cf::OBJECTS, key.as_bytes())?.map(|bytes| decode_record(key, &bytes)).transpose()
}

impl Store {
    /// Stores everything `source` yields under `key`, replacing any object
    /// there. Memory stays bounded whatever the size.
    pub fn put_object<R: Read + Send>(
        &self,
        key: &str,
        source: R,
        what: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<PutOutcome> {
        check_key(key)?;
        let session = self.session()?;
        let started = std::time::Instant::now();
        let (content, stats) = ingest(&session, source, what, progress)?;
        let bytes_stored = session.bytes_written()?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), chunks = stats.chunks, "ingested {key}");
        let started = std::time::Instant::now();
        let (tid, (record, replaced)) = session.commit(|commit| {
            let old = record_in(commit, key)?;
            let record =
                ObjectRecord { content: content.root, size: content.size, created_ns: now_ns(), tid: commit.tid() };
            commit.put(cf::OBJECTS, key.as_bytes(), serde_json::to_vec(&record).expect("records serialize"))?;
            Ok((record, old.is_some()))
        })?;
        debug_assert_eq!(record.tid, tid);
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), %tid, "committed {key}");
        Ok(PutOutcome { object: ObjectInfo { key: key.to_string(), record }, stats, bytes_stored, replaced })
    }

    /// The record of `key`.
    pub fn object(&self, key: &str) -> Result<ObjectRecord> {
        let bytes =
            self.index().get(cf::OBJECTS, key.as_bytes())?.ok_or_else(|| Error::NoSuchObject(key.to_string()))?;
        decode_record(key, &bytes)
    }

    /// Writes the object's bytes to `out`; returns how many.
    pub fn get_object<W: Write>(
        &self,
        key: &str,
        out: &mut W,
        what: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let record = self.object(key)?;
        extract(self, record.content, record.size, out, what, progress)
    }

    /// Objects whose key starts with `prefix`, in key order.
    pub fn objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.index()
            .scan(cf::OBJECTS, prefix.as_bytes())
            .map(|item| {
                let (key, value) = item?;
                let key = String::from_utf8_lossy(&key).into_owned();
                let record = decode_record(&key, &value)?;
                Ok(ObjectInfo { key, record })
            })
            .collect()
    }

    /// Removes `key`. Its content loses one reference; what nothing else
    /// names is reclaimed by the delete job.
    pub fn remove_object(&self, key: &str) -> Result<ObjectRecord> {
        let session = self.session()?;
        let (_, record) = session.commit(|commit| {
            let record = record_in(commit, key)?.ok_or_else(|| Error::NoSuchObject(key.to_string()))?;
            commit.delete(cf::OBJECTS, key.as_bytes())?;
            Ok(record)
        })?;
        Ok(record)
    }

    /// Makes `destination` a second name for the content of `source`: O(1),
    /// one more reference on the content list, no data copied.
    pub fn clone_object(&self, source: &str, destination: &str) -> Result<ObjectRecord> {
        check_key(destination)?;
        let session = self.session()?;
        let (_, record) = session.commit(|commit| {
            let original = record_in(commit, source)?.ok_or_else(|| Error::NoSuchObject(source.to_string()))?;
            if record_in(commit, destination)?.is_some() {
                return Err(Error::ObjectExists(destination.to_string()));
            }
            let record = ObjectRecord {
                content: original.content,
                size: original.size,
                created_ns: now_ns(),
                tid: commit.tid(),
            };
            commit.put(cf::OBJECTS, destination.as_bytes(), serde_json::to_vec(&record).expect("records serialize"))?;
            Ok(record)
        })?;
        Ok(record)
    }
}

/// Serde helper: a [`BlobId`] as 64 hex digits.
pub mod hex_id {
    use super::BlobId;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the id as hex.
    pub fn serialize<S: Serializer>(id: &BlobId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&id.to_hex())
    }

    /// Reads hex into an id.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BlobId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
