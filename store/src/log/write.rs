//! Appending a commit's log record, under the commit lock.

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, Tid};
use crate::index::{Index, cf, meta};
use crate::log::record::{Body, Change, Family, LogBlob, LogRecord, MAX_LOG_LEN, PIECE_TARGET, Piece};
use crate::session::WriteSession;

impl WriteSession {
    /// Writes the log record of `commit` (with `body` and `note`) to this
    /// session's metadata container, a checkpoint first when `checkpoint`
    /// or when the store has no log yet, and adds the log's own changes to
    /// the commit (see [`log_ops`]). Returns the record's id. The caller
    /// seals the container before the commit's batch.
    pub(crate) fn append_log(
        &self,
        commit: &mut Commit<'_>,
        body: Body,
        note: String,
        checkpoint: bool,
    ) -> Result<BlobId> {
        let index = commit.index();
        let prev = log_head(index)?;
        let pieces = if checkpoint || prev.is_none() { Some(self.write_checkpoint(index)?) } else { None };
        let (host, user, command) = crate::log::identity();
        let record = LogRecord {
            tid: commit.tid().0,
            time_ns: crate::clock::now_ns(),
            host,
            user,
            command,
            prev: prev.map(|id| id.0),
            checkpoint: pieces.as_ref().map(|p| p.iter().map(|id| id.0).collect()),
            note,
            body,
        };
        let bytes = LogBlob::Record(record).encode();
        if bytes.len() > MAX_LOG_LEN {
            return Err(Error::BlobTooLarge {
                what: format!(
                    "the log record of commit {}: too many changes in one commit; make fewer at once",
                    commit.tid()
                ),
                kind: BlobKind::Log,
                len: bytes.len() as u64,
                max: MAX_LOG_LEN as u64,
            });
        }
        let id = self.write_metadata(BlobKind::Log, bytes, pieces.unwrap_or_default())?;
        log_ops(commit, id, checkpoint || prev.is_none())?;
        Ok(id)
    }

    /// Writes every live record (datasets, objects, `next_dataset`) as
    /// checkpoint pieces; returns their ids.
    fn write_checkpoint(&self, index: &Index) -> Result<Vec<BlobId>> {
        let mut ids = Vec::new();
        let mut piece = Piece { records: Vec::new() };
        let mut len = 0;
        let next_dataset = index.get(cf::META, meta::NEXT_DATASET)?.map(|v| (meta::NEXT_DATASET.to_vec(), v));
        let families = [(Family::Datasets, cf::DATASETS), (Family::Objects, cf::OBJECTS)];
        let records = families
            .into_iter()
            .flat_map(|(family, name)| index.scan(name, b"").map(move |item| item.map(|kv| (family, kv))))
            .chain(next_dataset.map(|(k, v)| Ok((Family::Meta, (k.into_boxed_slice(), v.into_boxed_slice())))));
        for item in records {
            let (family, (key, value)) = item?;
            len += key.len() + value.len() + 16;
            piece.records.push(Change { family, key: key.into_vec(), value: Some(value.into_vec()) });
            if len >= PIECE_TARGET {
                ids.push(self.write_metadata(
                    BlobKind::Log,
                    LogBlob::Piece(std::mem::take(&mut piece)).encode(),
                    Vec::new(),
                )?);
                len = 0;
            }
        }
        if !piece.records.is_empty() || ids.is_empty() {
            ids.push(self.write_metadata(BlobKind::Log, LogBlob::Piece(piece).encode(), Vec::new())?);
        }
        Ok(ids)
    }
}

/// The log's own changes in a commit whose record is `id`: the record
/// becomes the head and joins `log` with the log's reference; a checkpoint
/// lets every older record go (they lose that reference, and the delete
/// job collects them).
pub(crate) fn log_ops(commit: &mut Commit<'_>, id: BlobId, checkpoint: bool) -> Result<()> {
    if checkpoint {
        let older: Vec<_> = commit.index().scan(cf::LOG, b"").collect::<Result<_>>()?;
        for (key, value) in older {
            if let Some(old) = blob_id(&value) {
                commit.drop_ref(old);
            }
            commit.delete(cf::LOG, key.into_vec())?;
        }
    }
    commit.add_ref(id);
    commit.put(cf::LOG, tid_key(commit.tid()).to_vec(), id.as_bytes().to_vec())?;
    commit.put(cf::META, meta::LOG_HEAD, id.as_bytes().to_vec())
}

/// The newest log record's id, if the store has a log.
pub fn log_head(index: &Index) -> Result<Option<BlobId>> {
    Ok(index.get(cf::META, meta::LOG_HEAD)?.as_deref().and_then(blob_id))
}

/// A `log` key.
pub(crate) fn tid_key(tid: Tid) -> [u8; 8] {
    tid.0.to_be_bytes()
}

pub(crate) fn blob_id(bytes: &[u8]) -> Option<BlobId> {
    Some(BlobId(bytes.try_into().ok()?))
}

impl crate::store::Store {
    /// Live log records: those since the newest checkpoint.
    pub fn log_len(&self) -> Result<u64> {
        if !self.index().has(cf::LOG) {
            return Ok(0);
        }
        let mut n = 0;
        for item in self.index().scan(cf::LOG, b"") {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Commits nothing but a log record saying `note` (what a delete-job
    /// run did, for the audit trail), made a checkpoint when `checkpoint`.
    pub fn log_note(&self, note: String, checkpoint: bool) -> Result<Tid> {
        let (tid, ()) = self.session()?.commit_noted(note, checkpoint, |_| Ok(()))?;
        Ok(tid)
    }
}
