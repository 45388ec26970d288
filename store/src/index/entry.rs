//! Fixed binary layouts of the index's values (see `docs/format.md`).

use crate::container::{ContainerKind, TableEntry};
use crate::ids::{BlobId, BlobKind, ContainerId, Tid};

/// A `blobs` value: where a blob lives and how many references it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The container holding the blob's record.
    pub container: ContainerId,
    /// Offset of the record header in that container.
    pub offset: u64,
    /// Length of the stored bytes (after the record header).
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
    /// What the blob holds.
    pub kind: BlobKind,
    /// Record flags (compression, [`FLAG_FRAME`](crate::container::FLAG_FRAME)).
    pub flags: u8,
    /// A frame member's place in its frame; 0 otherwise.
    pub member: u16,
    /// The reference count (see the invariant in ARCHITECTURE.md).
    pub refs: i64,
}

/// Length of an encoded [`IndexEntry`].
pub const ENTRY_LEN: usize = 36;
/// Length of a merge operand: a little-endian i64 delta.
pub const DELTA_LEN: usize = 8;
/// Container number written by the merge operator when deltas arrive for a
/// key with no entry. Such an entry names no bytes; readers treat the blob as
/// missing and `cairn check` reports it.
pub const ORPHAN_CONTAINER: ContainerId = ContainerId(u64::MAX);

impl IndexEntry {
    /// The entry for a record just written to `container`, with `refs` references.
    pub fn new(container: ContainerId, record: &TableEntry, refs: i64) -> IndexEntry {
        IndexEntry {
            container,
            offset: record.offset,
            stored_len: record.stored_len,
            raw_len: record.raw_len,
            kind: record.kind,
            flags: record.flags,
            member: record.member,
            refs,
        }
    }

    /// The record this entry points at, as a container table entry.
    pub fn record(&self, id: BlobId) -> TableEntry {
        TableEntry {
            id,
            kind: self.kind,
            flags: self.flags,
            offset: self.offset,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
            member: self.member,
        }
    }

    /// Bytes the record occupies in its container, header included (a
    /// frame member's: its whole frame's, which a read fetches).
    pub fn record_len(&self) -> u64 {
        crate::container::RECORD_HEADER_LEN as u64 + self.stored_len as u64
    }

    /// Its stored bytes: its record's, or a frame member's share of its
    /// frame's (`container::member_share`).
    pub fn stored_bytes(&self) -> u64 {
        if self.is_member() {
            crate::container::member_share(self.stored_len.into(), self.raw_len)
        } else {
            self.stored_len.into()
        }
    }

    /// The bytes of its container the blob accounts for: its record, or a
    /// frame member's share (`container::member_share`).
    pub fn accounted_len(&self) -> u64 {
        if self.is_member() {
            crate::container::member_share(self.record_len(), self.raw_len)
        } else {
            self.record_len()
        }
    }

    /// Whether this names a member of a frame.
    pub fn is_member(&self) -> bool {
        self.flags & crate::container::FLAG_FRAME != 0
    }

    /// Encodes the entry.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[..8].copy_from_slice(&self.container.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.raw_len.to_le_bytes());
        out[24] = self.kind as u8;
        out[25] = self.flags;
        out[26..28].copy_from_slice(&self.member.to_le_bytes());
        out[28..36].copy_from_slice(&self.refs.to_le_bytes());
        out
    }

    /// Decodes an entry, or `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let bytes: &[u8; ENTRY_LEN] = bytes.try_into().ok()?;
        Some(IndexEntry {
            container: ContainerId(u64::from_le_bytes(bytes[..8].try_into().ok()?)),
            offset: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            stored_len: u32::from_le_bytes(bytes[16..20].try_into().ok()?),
            raw_len: u32::from_le_bytes(bytes[20..24].try_into().ok()?),
            kind: BlobKind::from_byte(bytes[24])?,
            flags: bytes[25],
            member: u16::from_le_bytes(bytes[26..28].try_into().ok()?),
            refs: i64::from_le_bytes(bytes[28..36].try_into().ok()?),
        })
    }

    /// Whether the entry was made by deltas alone (no location).
    pub fn is_orphan(&self) -> bool {
        self.container == ORPHAN_CONTAINER
    }
}

/// State of a container in the `containers` column family. Only committed
/// containers have a record: a container file without one was written by a
/// session that never committed, and is deleted when the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Data or metadata.
    pub kind: ContainerKind,
    /// The commit that made it visible.
    pub committed_tid: Tid,
    /// Blobs in the file (live or not).
    pub n_blobs: u64,
    /// File length, footer included.
    pub stored_bytes: u64,
    /// Bytes of records that no index entry names (duplicates written by
    /// racing sessions, and blobs reclaimed by the delete job).
    pub dead_bytes: u64,
    /// Whether the container has been uploaded to the remote.
    pub uploaded: bool,
    /// Bytes of its frames that no member's share covers, counted live
    /// (`container::frame_slack`); 0 for containers without frames.
    pub slack_bytes: u64,
}

impl ContainerRecord {
    /// Bytes of blob records in the file (headers included): the file less
    /// its header, footer table and trailer.
    pub fn record_bytes(&self) -> u64 {
        use crate::container::{FOOTER_ENTRY_LEN, HEADER_LEN, TRAILER_LEN};
        // Saturating: `n_blobs` comes from disk, and a crafted count must
        // not overflow (it leaves no record bytes).
        let overhead =
            ((HEADER_LEN + TRAILER_LEN) as u64).saturating_add(self.n_blobs.saturating_mul(FOOTER_ENTRY_LEN as u64));
        self.stored_bytes.saturating_sub(overhead)
    }

    /// Bytes of records that some index entry names.
    pub fn live_bytes(&self) -> u64 {
        self.record_bytes().saturating_sub(self.dead_bytes)
    }

    /// The share of the records that is dead, 0.0 to 1.0.
    pub fn dead_share(&self) -> f64 {
        match self.record_bytes() {
            0 => 1.0,
            total => self.dead_bytes.min(total) as f64 / total as f64,
        }
    }
}

/// Length of an encoded [`ContainerRecord`].
pub const CONTAINER_RECORD_LEN: usize = 48;

impl ContainerRecord {
    /// Encodes the record.
    pub fn encode(&self) -> [u8; CONTAINER_RECORD_LEN] {
        let mut out = [0u8; CONTAINER_RECORD_LEN];
        out[0] = 1; // record version
        out[1] = self.kind as u8;
        out[2] = self.uploaded as u8;
        out[8..16].copy_from_slice(&self.committed_tid.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.n_blobs.to_le_bytes());
        out[24..32].copy_from_slice(&self.stored_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.dead_bytes.to_le_bytes());
        out[40..48].copy_from_slice(&self.slack_bytes.to_le_bytes());
        out
    }

    /// Decodes a record.
    pub fn decode(bytes: &[u8]) -> Option<ContainerRecord> {
        let bytes: &[u8; CONTAINER_RECORD_LEN] = bytes.try_into().ok()?;
        if bytes[0] != 1 {
            return None;
        }
        Some(ContainerRecord {
            kind: ContainerKind::from_byte(bytes[1])?,
            uploaded: bytes[2] != 0,
            committed_tid: Tid(u64::from_le_bytes(bytes[8..16].try_into().ok()?)),
            n_blobs: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
            stored_bytes: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
            dead_bytes: u64::from_le_bytes(bytes[32..40].try_into().ok()?),
            slack_bytes: u64::from_le_bytes(bytes[40..48].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entry = IndexEntry {
            container: ContainerId(7),
            offset: 99,
            stored_len: 5,
            raw_len: 8,
            kind: BlobKind::Tree,
            flags: 1,
            member: 0,
            refs: -3,
        };
        assert_eq!(IndexEntry::decode(&entry.encode()), Some(entry));
        let record = ContainerRecord {
            kind: ContainerKind::Metadata,
            committed_tid: Tid(4),
            n_blobs: 10,
            stored_bytes: 4096,
            dead_bytes: 100,
            uploaded: true,
            slack_bytes: 7,
        };
        assert_eq!(ContainerRecord::decode(&record.encode()), Some(record));
    }

    /// Regression (issue 15): a record's `n_blobs` from disk overflowed
    /// the footer's length (a panic in `stats` and `gc`).
    #[test]
    fn a_crafted_blob_count_does_not_overflow() {
        let record = ContainerRecord {
            kind: ContainerKind::Data,
            committed_tid: Tid(1),
            n_blobs: u64::MAX,
            stored_bytes: 4096,
            dead_bytes: 0,
            uploaded: false,
            slack_bytes: 0,
        };
        let record = ContainerRecord::decode(&record.encode()).unwrap();
        assert_eq!((record.record_bytes(), record.live_bytes(), record.dead_share()), (0, 0, 1.0));
    }
}
