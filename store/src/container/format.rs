//! Byte layout of containers: header, record headers, footer table, trailer.
//! Little-endian throughout. See `docs/format.md` for the picture.

use crate::ids::{BlobId, BlobKind};

/// First 8 bytes of every container, and its last 8.
pub const MAGIC: [u8; 8] = *b"CAIRNCTR";
/// Header: magic 8, version u32, container kind u8, 3 reserved, id u64, 8 reserved.
pub const HEADER_LEN: usize = 32;
/// Record header: id 32, kind u8, flags u8, raw_len u32, stored_len u32.
pub const RECORD_HEADER_LEN: usize = 42;
/// Footer table entry: id 32, kind u8, flags u8, offset u64, raw_len u32, stored_len u32.
pub const FOOTER_ENTRY_LEN: usize = 50;
/// Trailer: n_entries u32, footer layout u32 ([`FooterLayout`](super::FooterLayout)),
/// table_offset u64, BLAKE3 32, magic 8.
pub const TRAILER_LEN: usize = 56;
/// Record flag: the stored bytes are an lz4 block (`lz4_flex::block`).
pub const FLAG_LZ4: u8 = 1;
/// Record flag: the stored bytes are one zstd frame.
pub const FLAG_ZSTD: u8 = 2;
/// Record flag bit: the record is a frame of many data chunks
/// (`frame.rs`), its payload stored per the low bits (0, [`FLAG_LZ4`] or
/// [`FLAG_ZSTD`]). A footer or index entry with this bit names one member
/// of the frame at its offset.
pub const FLAG_FRAME: u8 = 0x80;
/// Record flag bit, on a frame only: the frame holds more than
/// [`FRAME_TARGET`](super::FRAME_TARGET) of plaintext (at most
/// [`WIDE_FRAME_TARGET`](super::WIDE_FRAME_TARGET)), and its members'
/// shares of its bytes are taken against the wider target
/// ([`member_share`]). Written by stores of format 6 on, whose frames are
/// 512 KiB; an upgraded store holds frames of both kinds.
pub const FLAG_WIDE: u8 = 0x40;
/// The bits of a frame's flags that say it is a frame, not how its payload
/// is stored.
pub const FRAME_BITS: u8 = FLAG_FRAME | FLAG_WIDE;
/// Where a frame member's place goes in its footer entry's offset field:
/// the top 16 bits (a container is far smaller than 2^48 bytes).
const MEMBER_SHIFT: u32 = 48;

/// Which blobs a container holds. Data and metadata never share a container,
/// so browsing a dataset reads only the small metadata containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// File and object content chunks.
    Data = 0,
    /// Trees and content lists.
    Metadata = 1,
}

impl ContainerKind {
    /// The container kind that holds blobs of `kind`.
    pub fn for_blob(kind: BlobKind) -> ContainerKind {
        if kind.is_metadata() { ContainerKind::Metadata } else { ContainerKind::Data }
    }

    /// The kind of a container whose footer lists `table`: metadata if
    /// any blob in it is.
    pub fn holding(table: &[TableEntry]) -> ContainerKind {
        if table.iter().any(|t| t.kind.is_metadata()) { ContainerKind::Metadata } else { ContainerKind::Data }
    }

    /// Reads the kind byte.
    pub fn from_byte(byte: u8) -> Option<ContainerKind> {
        match byte {
            0 => Some(ContainerKind::Data),
            1 => Some(ContainerKind::Metadata),
            _ => None,
        }
    }

    /// "data" or "metadata".
    pub fn name(self) -> &'static str {
        match self {
            ContainerKind::Data => "data",
            ContainerKind::Metadata => "metadata",
        }
    }
}

/// Encodes a container header; `version` is the container format (1 or
/// 2, after the footer's layout).
pub fn encode_header(kind: ContainerKind, id: u64, version: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header[12] = kind as u8;
    header[16..24].copy_from_slice(&id.to_le_bytes());
    header
}

/// A frame member's share of its frame's `record_len` bytes, for counting
/// live and dead bytes: the frame's bytes in proportion to the member's
/// plaintext, taking the frame to hold [`FRAME_TARGET`](super::FRAME_TARGET)
/// bytes of plaintext, or [`WIDE_FRAME_TARGET`](super::WIDE_FRAME_TARGET)
/// when its `flags` have [`FLAG_WIDE`] (a frame never holds more than
/// that, so its members' shares add up to at most the frame's bytes, and
/// to less for a frame closed early).
/// An index entry does not carry the frame's own total, so this is the
/// rule everywhere: the delete job's dead bytes, compaction's and
/// repair's live bytes.
pub fn member_share(frame_record_len: u64, raw_len: u32, flags: u8) -> u64 {
    let frame_raw = if flags & FLAG_WIDE != 0 { super::WIDE_FRAME_TARGET } else { super::FRAME_TARGET };
    (frame_record_len * u64::from(raw_len) / frame_raw as u64).min(frame_record_len)
}

/// The bytes of `table`'s frames that no member's share covers (a frame
/// closed short of [`FRAME_TARGET`](super::FRAME_TARGET)): counted live
/// in its container's record for as long as the container lives, so that
/// a container's dead bytes are only ever the shares of dead members.
/// A frame's members are consecutive in its container's table.
pub fn frame_slack(table: &[TableEntry]) -> u64 {
    let mut slack = 0u64;
    let mut frame: Option<(u64, u64, u64)> = None;
    for entry in table.iter().filter(|e| e.is_member()) {
        match &mut frame {
            Some((offset, _, shares)) if *offset == entry.offset => *shares += entry.accounted_len(),
            _ => {
                if let Some((_, len, shares)) = frame {
                    slack += len.saturating_sub(shares);
                }
                frame = Some((entry.offset, entry.record_len(), entry.accounted_len()));
            }
        }
    }
    slack + frame.map_or(0, |(_, len, shares)| len.saturating_sub(shares))
}

/// One record's placement, as listed in the footer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// The blob.
    pub id: BlobId,
    /// Its kind.
    pub kind: BlobKind,
    /// Record flags ([`FLAG_LZ4`], [`FLAG_ZSTD`], or 0 for raw).
    pub flags: u8,
    /// Offset of the record header from the start of the file.
    pub offset: u64,
    /// Length of the blob's plaintext.
    pub raw_len: u32,
    /// Length of the stored (possibly compressed) bytes after the record header.
    pub stored_len: u32,
    /// A frame member's place in its frame ([`FLAG_FRAME`]); 0 otherwise.
    pub member: u16,
}

impl TableEntry {
    /// Bytes the record takes in the file, header included (a frame
    /// member's: its whole frame's).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.stored_len as u64
    }

    /// Whether this names a member of a frame.
    pub fn is_member(&self) -> bool {
        self.flags & FLAG_FRAME != 0
    }

    /// The bytes of the container this blob accounts for: its record, or
    /// a frame member's share of its frame ([`member_share`]).
    pub fn accounted_len(&self) -> u64 {
        if self.is_member() { member_share(self.record_len(), self.raw_len, self.flags) } else { self.record_len() }
    }

    /// Encodes the record header that precedes the stored bytes.
    pub fn encode_record_header(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[..32].copy_from_slice(self.id.as_bytes());
        header[32] = self.kind as u8;
        header[33] = self.flags;
        header[34..38].copy_from_slice(&self.raw_len.to_le_bytes());
        header[38..42].copy_from_slice(&self.stored_len.to_le_bytes());
        header
    }

    /// Decodes a record header found at `offset`.
    pub fn decode_record_header(bytes: &[u8], offset: u64) -> Option<TableEntry> {
        let bytes: &[u8; RECORD_HEADER_LEN] = bytes.get(..RECORD_HEADER_LEN)?.try_into().ok()?;
        Some(TableEntry {
            id: BlobId::from_slice(&bytes[..32])?,
            kind: BlobKind::from_byte(bytes[32])?,
            flags: bytes[33],
            offset,
            raw_len: u32::from_le_bytes(bytes[34..38].try_into().ok()?),
            stored_len: u32::from_le_bytes(bytes[38..42].try_into().ok()?),
            member: 0,
        })
    }

    /// Appends the footer form of this entry to `out`.
    pub fn encode_footer(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.push(self.kind as u8);
        out.push(self.flags);
        let offset = if self.is_member() { self.offset | u64::from(self.member) << MEMBER_SHIFT } else { self.offset };
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
    }

    /// Decodes one footer entry.
    pub fn decode_footer(bytes: &[u8]) -> Option<TableEntry> {
        let bytes: &[u8; FOOTER_ENTRY_LEN] = bytes.get(..FOOTER_ENTRY_LEN)?.try_into().ok()?;
        let flags = bytes[33];
        let offset = u64::from_le_bytes(bytes[34..42].try_into().ok()?);
        let (offset, member) = if flags & FLAG_FRAME != 0 {
            (offset & ((1 << MEMBER_SHIFT) - 1), (offset >> MEMBER_SHIFT) as u16)
        } else {
            (offset, 0)
        };
        Some(TableEntry {
            id: BlobId::from_slice(&bytes[..32])?,
            kind: BlobKind::from_byte(bytes[32])?,
            flags,
            offset,
            raw_len: u32::from_le_bytes(bytes[42..46].try_into().ok()?),
            stored_len: u32::from_le_bytes(bytes[46..50].try_into().ok()?),
            member,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_both_forms() {
        let entry = TableEntry {
            id: BlobId::of(b"x"),
            kind: BlobKind::ContentList,
            flags: FLAG_LZ4,
            offset: 1 << 40,
            raw_len: 70_000,
            stored_len: 1234,
            member: 0,
        };
        let header = entry.encode_record_header();
        assert_eq!(TableEntry::decode_record_header(&header, entry.offset), Some(entry));
        let mut footer = Vec::new();
        entry.encode_footer(&mut footer);
        assert_eq!(footer.len(), FOOTER_ENTRY_LEN);
        assert_eq!(TableEntry::decode_footer(&footer), Some(entry));
    }
}
