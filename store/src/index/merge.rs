//! The `blobs` merge operator: reference counts go up by associative adds,
//! so a commit never has to read an entry to count one more reference to it.
//!
//! Operands are 8-byte little-endian deltas. A full merge adds them to the
//! entry's count; a partial merge folds deltas into one delta. Deltas for a
//! key with no entry produce an orphan entry (see [`ORPHAN_CONTAINER`]) rather
//! than failing the whole read path; commits never write such deltas, and
//! `cairn check` reports any that exist.

use rocksdb::MergeOperands;

use crate::ids::BlobKind;
use crate::index::entry::{DELTA_LEN, IndexEntry, ORPHAN_CONTAINER};

/// Name under which the operator is registered; changing it makes old
/// databases unreadable.
pub const NAME: &str = "cairn.refs.v1";

/// Encodes a reference delta operand.
pub fn delta(change: i64) -> [u8; DELTA_LEN] {
    change.to_le_bytes()
}

/// Saturating, like every add here: counts and deltas are read from disk,
/// and a panic inside RocksDB's callback would abort the process. No real
/// count comes near 2^63; a crafted one stays wrong and `cairn check` says so.
fn sum_deltas(operands: &MergeOperands) -> i64 {
    operands.iter().filter_map(|op| op.try_into().ok().map(i64::from_le_bytes)).fold(0i64, i64::saturating_add)
}

/// Full merge: apply every delta to the existing entry.
pub fn full_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut entry = existing.and_then(IndexEntry::decode).unwrap_or(IndexEntry {
        container: ORPHAN_CONTAINER,
        offset: 0,
        stored_len: 0,
        raw_len: 0,
        kind: BlobKind::Data,
        flags: 0,
        member: 0,
        refs: 0,
    });
    // An operand may itself be a whole entry when a put and merges were
    // combined out of order by compaction; take the newest whole entry.
    for op in operands.iter() {
        // Entries are never as short as a delta (a compact one is at least
        // nine bytes, the old layout 36).
        if op.len() != DELTA_LEN {
            if let Some(replacement) = IndexEntry::decode(op) {
                entry = replacement;
            }
        } else if let Ok(bytes) = op.try_into() {
            entry.refs = entry.refs.saturating_add(i64::from_le_bytes(bytes));
        }
    }
    Some(entry.encode().to_vec())
}

/// Partial merge: fold deltas into one.
pub fn partial_merge(_key: &[u8], _existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    if operands.iter().any(|op| op.len() != DELTA_LEN) {
        // Refuse; RocksDB keeps the operands and retries with a full merge.
        return None;
    }
    Some(delta(sum_deltas(operands)).to_vec())
}

#[cfg(test)]
mod tests {
    use rocksdb::WriteBatch;

    use super::*;
    use crate::ids::{BlobId, ContainerId};
    use crate::index::{Index, cf};

    /// Regression (issue 15): the merge operator added a delta to a count
    /// read from disk unchecked; at `i64::MAX` that overflowed inside
    /// RocksDB's callback, which aborts the process.
    #[test]
    fn counts_at_the_limit_saturate_instead_of_aborting() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), false).unwrap();
        let id = BlobId::of(b"counted");
        let entry = IndexEntry {
            container: ContainerId(1),
            offset: 32,
            stored_len: 1,
            raw_len: 1,
            kind: BlobKind::Data,
            flags: 0,
            member: 0,
            refs: i64::MAX,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(index.cf(cf::BLOBS), id.as_bytes(), entry.encode());
        batch.merge_cf(index.cf(cf::BLOBS), id.as_bytes(), delta(1));
        batch.merge_cf(index.cf(cf::BLOBS), id.as_bytes(), delta(i64::MAX));
        index.write(batch, false).unwrap();
        assert_eq!(index.blob(&id).unwrap().unwrap().refs, i64::MAX);
    }
}
