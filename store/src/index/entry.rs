//! Fixed binary layouts of the index's values (see `docs/format.md`).

use crate::container::{ContainerKind, FOOTER_ENTRY_LEN, FooterLayout, TableEntry};
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

/// Length of an entry as stores made before compact entries wrote it
/// (fixed fields, little-endian), which every cairn still reads.
pub const LEGACY_ENTRY_LEN: usize = 36;
/// The first byte of a compact entry ([`IndexEntry::encode`]).
pub const COMPACT_ENTRY_TAG: u8 = 0xE2;
/// The longest compact entry: the tag and every field at its widest
/// (varints of 10, 10, 5, 5, 1, 1, 3 and 10 bytes).
pub const MAX_ENTRY_LEN: usize = 46;
/// The compact format's number, as the index's `format` family records it.
pub const ENTRIES_FORMAT: u64 = 2;
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
            crate::container::member_share(self.stored_len.into(), self.raw_len, self.flags)
        } else {
            self.stored_len.into()
        }
    }

    /// The bytes of its container the blob accounts for: its record, or a
    /// frame member's share (`container::member_share`).
    pub fn accounted_len(&self) -> u64 {
        if self.is_member() {
            crate::container::member_share(self.record_len(), self.raw_len, self.flags)
        } else {
            self.record_len()
        }
    }

    /// Whether this names a member of a frame.
    pub fn is_member(&self) -> bool {
        self.flags & crate::container::FLAG_FRAME != 0
    }

    /// Encodes the entry compactly: a tag byte, then the fields as
    /// postcard writes them (unsigned varints, the count a zigzag varint,
    /// `kind` and `flags` a byte each). Most entries take 14-18 bytes where
    /// the fixed layout took 36, about a quarter of the index (the key is 32
    /// more). An encoding that would be exactly [`LEGACY_ENTRY_LEN`] long
    /// gets one zero byte more, so that length always means the old layout.
    pub fn encode(&self) -> EncodedEntry {
        let mut out = EncodedEntry { bytes: [0u8; MAX_ENTRY_LEN], len: 0 };
        out.bytes[0] = COMPACT_ENTRY_TAG;
        let fields = CompactFields {
            container: self.container.0,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            kind: self.kind as u8,
            flags: self.flags,
            member: self.member,
            refs: self.refs,
        };
        let used = postcard::to_slice(&fields, &mut out.bytes[1..]).expect("MAX_ENTRY_LEN holds every entry").len();
        out.len = 1 + used;
        if out.len == LEGACY_ENTRY_LEN {
            out.len += 1; // the byte is already zero
        }
        out
    }

    /// Decodes an entry in either layout, or `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        if bytes.len() == LEGACY_ENTRY_LEN {
            return Self::decode_legacy(bytes);
        }
        let (&COMPACT_ENTRY_TAG, body) = bytes.split_first()? else { return None };
        let (fields, rest): (CompactFields, &[u8]) = postcard::take_from_bytes(body).ok()?;
        // Nothing after the fields but the one padding byte (see `encode`).
        let padded = rest == [0] && bytes.len() == LEGACY_ENTRY_LEN + 1;
        if !rest.is_empty() && !padded {
            return None;
        }
        Some(IndexEntry {
            container: ContainerId(fields.container),
            offset: fields.offset,
            stored_len: fields.stored_len,
            raw_len: fields.raw_len,
            kind: BlobKind::from_byte(fields.kind)?,
            flags: fields.flags,
            member: fields.member,
            refs: fields.refs,
        })
    }

    /// The fixed layout: container u64, offset u64, stored_len u32,
    /// raw_len u32, kind u8, flags u8, member u16, refs i64, little-endian.
    fn decode_legacy(bytes: &[u8]) -> Option<IndexEntry> {
        let bytes: &[u8; LEGACY_ENTRY_LEN] = bytes.try_into().ok()?;
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

/// An entry in the layout before compact entries, as tests make stores
/// that hold them.
#[cfg(test)]
pub(crate) fn legacy_bytes(entry: &IndexEntry) -> Vec<u8> {
    [
        &entry.container.0.to_le_bytes()[..],
        &entry.offset.to_le_bytes(),
        &entry.stored_len.to_le_bytes(),
        &entry.raw_len.to_le_bytes(),
        &[entry.kind as u8, entry.flags],
        &entry.member.to_le_bytes(),
        &entry.refs.to_le_bytes(),
    ]
    .concat()
}

/// An entry's fields in the order the compact layout writes them.
#[derive(serde::Serialize, serde::Deserialize)]
struct CompactFields {
    container: u64,
    offset: u64,
    stored_len: u32,
    raw_len: u32,
    kind: u8,
    flags: u8,
    member: u16,
    refs: i64,
}

/// An encoded entry, without an allocation: the bytes to write as a value.
#[derive(Clone, Copy)]
pub struct EncodedEntry {
    bytes: [u8; MAX_ENTRY_LEN],
    len: usize,
}

impl std::ops::Deref for EncodedEntry {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for EncodedEntry {
    fn as_ref(&self) -> &[u8] {
        self
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
    /// Bytes of its footer table: 50 per blob in the fixed layout, fewer
    /// in the compact one ([`FooterLayout`]).
    pub table_bytes: u64,
}

/// What a sealed container holds, as its footer tells: what its record
/// in `containers` is made from, by whichever command enters it (a
/// commit, its redo, a repair, an attach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerShape {
    /// Data or metadata.
    pub kind: ContainerKind,
    /// File length, footer included.
    pub len: u64,
    /// Records in its table.
    pub n_blobs: u64,
    /// Bytes of its footer table.
    pub table_bytes: u64,
    /// Bytes of its frames no member's share covers (`frame_slack`).
    pub slack: u64,
}

impl ContainerShape {
    /// The shape of a container of `kind`, `len` bytes long, whose footer
    /// lists `table` in `layout`.
    pub fn of(kind: ContainerKind, len: u64, table: &[TableEntry], layout: FooterLayout) -> ContainerShape {
        ContainerShape {
            kind,
            len,
            n_blobs: table.len() as u64,
            table_bytes: layout.table_len(table),
            slack: crate::container::frame_slack(table),
        }
    }
}

impl ContainerRecord {
    /// The record of a container of `shape`, committed at `tid`, whose
    /// blobs that some index entry names account for `live` bytes (frame
    /// slack is added here: it is never dead).
    pub fn new(shape: &ContainerShape, committed_tid: Tid, uploaded: bool, live: u64) -> ContainerRecord {
        let mut record = ContainerRecord {
            kind: shape.kind,
            committed_tid,
            n_blobs: shape.n_blobs,
            stored_bytes: shape.len,
            dead_bytes: 0,
            uploaded,
            slack_bytes: shape.slack,
            table_bytes: shape.table_bytes,
        };
        record.dead_bytes = record.record_bytes().saturating_sub(live.saturating_add(shape.slack));
        record
    }

    /// Bytes of blob records in the file (headers included): the file less
    /// its header, footer table and trailer.
    pub fn record_bytes(&self) -> u64 {
        use crate::container::{HEADER_LEN, TRAILER_LEN};
        // Saturating: the counts come from disk, and a crafted one must
        // not overflow (it leaves no record bytes).
        let overhead = ((HEADER_LEN + TRAILER_LEN) as u64).saturating_add(self.table_bytes);
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
        // A table in the fixed layout is known from the blob count (every
        // record before compact footers, which left bytes 3..8 zero); any
        // other is given. A compact table of 4 GiB would need a container
        // of 100 million blobs.
        if self.table_bytes != fixed_table_bytes(self.n_blobs) {
            out[3] = 1;
            out[4..8].copy_from_slice(&u32::try_from(self.table_bytes).unwrap_or(u32::MAX).to_le_bytes());
        }
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
        let n_blobs = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
        let table_bytes = match bytes[3] {
            0 => fixed_table_bytes(n_blobs),
            1 => u64::from(u32::from_le_bytes(bytes[4..8].try_into().ok()?)),
            _ => return None,
        };
        Some(ContainerRecord {
            kind: ContainerKind::from_byte(bytes[1])?,
            uploaded: bytes[2] != 0,
            committed_tid: Tid(u64::from_le_bytes(bytes[8..16].try_into().ok()?)),
            n_blobs,
            stored_bytes: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
            dead_bytes: u64::from_le_bytes(bytes[32..40].try_into().ok()?),
            slack_bytes: u64::from_le_bytes(bytes[40..48].try_into().ok()?),
            table_bytes,
        })
    }
}

/// Bytes of a fixed-layout table of `n_blobs` entries (saturating: the
/// count comes from disk).
fn fixed_table_bytes(n_blobs: u64) -> u64 {
    n_blobs.saturating_mul(FOOTER_ENTRY_LEN as u64)
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
            table_bytes: 500,
        };
        // A fixed table is implied by the count, as records before compact
        // footers were written; a compact one is carried.
        assert_eq!(record.encode()[3..8], [0; 5]);
        assert_eq!(ContainerRecord::decode(&record.encode()), Some(record));
        let compact = ContainerRecord { table_bytes: 333, ..record };
        assert_eq!(ContainerRecord::decode(&compact.encode()), Some(compact));
        assert_eq!(compact.record_bytes(), record.record_bytes() + 167);
    }

    /// The layout before compact entries, written by hand as those stores
    /// hold it: still read, field for field.
    #[test]
    fn entries_in_the_old_layout_still_decode() {
        let mut old = Vec::new();
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&99u64.to_le_bytes());
        old.extend_from_slice(&5u32.to_le_bytes());
        old.extend_from_slice(&8u32.to_le_bytes());
        old.extend_from_slice(&[BlobKind::ContentList as u8, 0x81]);
        old.extend_from_slice(&3u16.to_le_bytes());
        old.extend_from_slice(&(-2i64).to_le_bytes());
        let entry = IndexEntry::decode(&old).unwrap();
        assert_eq!(legacy_bytes(&entry), old);
        assert_eq!(
            entry,
            IndexEntry {
                container: ContainerId(7),
                offset: 99,
                stored_len: 5,
                raw_len: 8,
                kind: BlobKind::ContentList,
                flags: 0x81,
                member: 3,
                refs: -2,
            }
        );
        // One whose fields come to exactly the old length gets a byte more.
        let wide = IndexEntry {
            container: ContainerId(u64::MAX),
            offset: u64::MAX,
            stored_len: u32::MAX,
            raw_len: u32::MAX,
            member: 0,
            refs: 100,
            ..entry
        };
        assert_eq!(wide.encode().len(), LEGACY_ENTRY_LEN + 1);
        assert_eq!(IndexEntry::decode(&wide.encode()), Some(wide));
        // Crafted values: a u16 varint past 65,535, a varint of 11 bytes,
        // another tag: none is an entry.
        let member_at = |bytes: &[u8]| [&[COMPACT_ENTRY_TAG, 1, 1, 1, 1, 0, 0][..], bytes, &[2]].concat();
        assert!(IndexEntry::decode(&member_at(&[0x7f])).is_some());
        assert_eq!(IndexEntry::decode(&member_at(&[0xff, 0xff, 0x07])), None);
        let long = [&[COMPACT_ENTRY_TAG][..], &[0x80; 10], &[1, 1, 1, 1, 0, 0, 0, 2]].concat();
        assert_eq!(IndexEntry::decode(&long), None);
        assert_eq!(IndexEntry::decode(&[&[0xE3][..], &member_at(&[0])[1..]].concat()), None);
        // A typical entry is under half the old length.
        let typical = IndexEntry {
            container: ContainerId(40_000),
            offset: 60 << 20,
            stored_len: 200_000,
            raw_len: 8192,
            member: 17,
            refs: 1,
            ..entry
        };
        assert!(typical.encode().len() <= 18, "{} bytes", typical.encode().len());
    }

    fn any_entry() -> impl proptest::strategy::Strategy<Value = IndexEntry> {
        use proptest::prelude::*;
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            0..BlobKind::ALL.len(),
            any::<u8>(),
            any::<u16>(),
            any::<i64>(),
        )
            .prop_map(|(container, offset, stored_len, raw_len, kind, flags, member, refs)| IndexEntry {
                container: ContainerId(container),
                offset,
                stored_len,
                raw_len,
                kind: BlobKind::ALL[kind],
                flags,
                member,
                refs,
            })
    }

    proptest::proptest! {
        /// Every entry comes back as it went in, at a length that can be
        /// neither a merge delta's nor the old layout's.
        #[test]
        fn compact_entries_round_trip(entry in any_entry(), small in 0u64..300) {
            for entry in [entry, IndexEntry { container: ContainerId(small), offset: small, stored_len: small as u32, raw_len: small as u32, member: small as u16, refs: small as i64 - 150, ..entry }] {
                let bytes = entry.encode();
                proptest::prop_assert!(bytes.len() != DELTA_LEN && bytes.len() != LEGACY_ENTRY_LEN && bytes.len() <= MAX_ENTRY_LEN);
                proptest::prop_assert_eq!(IndexEntry::decode(&bytes), Some(entry));
                // Cut short or with a byte more, it is not an entry (unless
                // the cut lands on the old layout's length).
                if bytes.len() - 1 != LEGACY_ENTRY_LEN {
                    proptest::prop_assert_eq!(IndexEntry::decode(&bytes[..bytes.len() - 1]), None);
                }
                let mut longer = bytes.to_vec();
                longer.push(1);
                if longer.len() != LEGACY_ENTRY_LEN {
                    proptest::prop_assert_eq!(IndexEntry::decode(&longer), None);
                }
            }
        }
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
            table_bytes: u64::MAX,
        };
        let record = ContainerRecord::decode(&record.encode()).unwrap();
        assert_eq!((record.record_bytes(), record.live_bytes(), record.dead_share()), (0, 0, 1.0));
    }
}
