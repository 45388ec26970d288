//! The footer table, in its two layouts (docs/format.md, "Containers").
//!
//! - **Fixed** (container format 1, every store before format 5): 50 bytes
//!   per entry, each naming its record's offset, flags and lengths.
//! - **Compact** (container format 2, stores of format 5 on): records are
//!   back to back from the header on, so their offsets follow from their
//!   lengths; a frame's members share its kind, flags and stored length,
//!   so those are written once per record. What is left per entry is its
//!   id and its plaintext length as a varint: about 34 bytes where the
//!   fixed layout takes 50. On a store of 8 KiB chunks that is 0.3-0.4%
//!   of the store (ARCHITECTURE.md, "Compact footers and pieces").
//!
//! ```text
//! per record, in file order:
//!   kind u8 | flags u8 | stored_len varint | (frames only) members - 1 varint
//!   per member (one for a record that is not a frame): id (32) | raw_len varint
//! ```
//!
//! Varints are [`crate::varint`]'s. Decoding trusts nothing: every varint
//! is bounded to 32 bits, a frame to
//! [`MAX_FRAME_MEMBERS`], the entries to the trailer's count, and the
//! records must end exactly where the table begins.

use crate::container::format::{FLAG_FRAME, FOOTER_ENTRY_LEN, HEADER_LEN, RECORD_HEADER_LEN, TableEntry};
use crate::container::frame::MAX_FRAME_MEMBERS;
use crate::ids::{BlobId, BlobKind};
use crate::varint;

/// How a container's footer table is laid out; named by the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FooterLayout {
    /// 50 bytes per entry (container format 1).
    Fixed,
    /// Offsets implied, frames' shared fields once (container format 2).
    Compact,
}

impl FooterLayout {
    /// The trailer's code for this layout (its second u32, once reserved
    /// and zero, so every container written before has code 0).
    pub fn code(self) -> u32 {
        match self {
            FooterLayout::Fixed => 0,
            FooterLayout::Compact => 1,
        }
    }

    /// The layout a trailer names, if known.
    pub fn from_code(code: u32) -> Option<FooterLayout> {
        match code {
            0 => Some(FooterLayout::Fixed),
            1 => Some(FooterLayout::Compact),
            _ => None,
        }
    }

    /// The container format version its header carries.
    pub fn container_format(self) -> u32 {
        match self {
            FooterLayout::Fixed => 1,
            FooterLayout::Compact => 2,
        }
    }

    /// Appends `table` (every record of a container, in file order) in
    /// this layout.
    pub fn encode(self, table: &[TableEntry], out: &mut Vec<u8>) {
        match self {
            FooterLayout::Fixed => table.iter().for_each(|entry| entry.encode_footer(out)),
            FooterLayout::Compact => {
                for record in records(table) {
                    let first = &record[0];
                    out.push(first.kind as u8);
                    out.push(first.flags);
                    varint::put(out, first.stored_len.into());
                    if first.is_member() {
                        varint::put(out, (record.len() - 1) as u64);
                    }
                    for entry in record {
                        out.extend_from_slice(entry.id.as_bytes());
                        varint::put(out, entry.raw_len.into());
                    }
                }
            }
        }
    }

    /// Bytes `table` takes in this layout.
    pub fn table_len(self, table: &[TableEntry]) -> u64 {
        match self {
            FooterLayout::Fixed => (table.len() * FOOTER_ENTRY_LEN) as u64,
            // Encoded to be measured (once a container, tens of KiB), so
            // that the layout is written down in one place.
            FooterLayout::Compact => {
                let mut bytes = Vec::with_capacity(table.len() * FOOTER_ENTRY_LEN);
                self.encode(table, &mut bytes);
                bytes.len() as u64
            }
        }
    }

    /// Decodes the `n_entries` entries of a table whose bytes are `bytes`,
    /// found at `table_offset` (where the records end). The reason names
    /// what is wrong; the caller names the container.
    pub fn decode(self, bytes: &[u8], n_entries: usize, table_offset: u64) -> Result<Vec<TableEntry>, String> {
        match self {
            FooterLayout::Fixed => decode_fixed(bytes, table_offset),
            FooterLayout::Compact => decode_compact(bytes, n_entries, table_offset),
        }
    }
}

/// The table cut into records: a frame's members, or one entry alone.
fn records(table: &[TableEntry]) -> impl Iterator<Item = &[TableEntry]> {
    table.chunk_by(|a, b| b.is_member() && a.is_member() && a.offset == b.offset)
}

/// Bytes of the records `table` names, headers included, each frame
/// once: what a container's record in the index must count, whatever its
/// footer's layout (saturating: a crafted table's lengths are the file's).
pub fn records_len(table: &[TableEntry]) -> u64 {
    records(table).fold(0u64, |sum, record| sum.saturating_add(record[0].record_len()))
}

fn decode_fixed(bytes: &[u8], table_offset: u64) -> Result<Vec<TableEntry>, String> {
    bytes
        .chunks_exact(FOOTER_ENTRY_LEN)
        .map(|bytes| {
            let entry = TableEntry::decode_footer(bytes).ok_or("footer entry does not decode")?;
            // Every record lies between the header and the table; checked,
            // since both the offset and the length are the file's.
            let end = entry.offset.checked_add(entry.record_len());
            if entry.offset < HEADER_LEN as u64 || end.is_none_or(|end| end > table_offset) {
                return Err(format!(
                    "footer entry for blob {:#} places its record ({} bytes at {}) outside the records",
                    entry.id,
                    entry.record_len(),
                    entry.offset
                ));
            }
            Ok(entry)
        })
        .collect()
}

fn decode_compact(bytes: &[u8], n_entries: usize, table_offset: u64) -> Result<Vec<TableEntry>, String> {
    let mut reader = Reader { bytes, at: 0 };
    // Sized by what the bytes can hold, not by what the trailer claims.
    let mut table = Vec::with_capacity(n_entries.min(bytes.len() / (32 + 1)));
    let mut offset = HEADER_LEN as u64;
    while table.len() < n_entries {
        let kind = reader.byte()?;
        let kind = BlobKind::from_byte(kind).ok_or_else(|| format!("unknown blob kind {kind} in the footer"))?;
        let flags = reader.byte()?;
        let stored_len = reader.varint()?;
        let members = if flags & FLAG_FRAME != 0 { reader.varint()? as usize + 1 } else { 1 };
        if members > MAX_FRAME_MEMBERS {
            return Err(format!("a frame of {members} members in the footer (at most {MAX_FRAME_MEMBERS})"));
        }
        if members > n_entries - table.len() {
            return Err(format!("the footer lists more than the {n_entries} entries its trailer counts"));
        }
        let end =
            offset.checked_add(RECORD_HEADER_LEN as u64 + u64::from(stored_len)).filter(|&end| end <= table_offset);
        let Some(end) = end else {
            return Err(format!("the footer places a record ({stored_len} bytes at {offset}) past the records"));
        };
        for member in 0..members {
            let id = BlobId::from_slice(reader.take(32)?).expect("32 bytes");
            let raw_len = reader.varint()?;
            let member = if flags & FLAG_FRAME != 0 { member as u16 } else { 0 };
            table.push(TableEntry { id, kind, flags, offset, raw_len, stored_len, member });
        }
        offset = end;
    }
    if offset != table_offset {
        return Err(format!("the footer's records end at {offset}, the table begins at {table_offset}"));
    }
    if reader.at != bytes.len() {
        return Err(format!("the footer has {} bytes after its last entry", bytes.len() - reader.at));
    }
    Ok(table)
}

/// Reads a compact table front to back, every read bounded.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let taken = self.bytes.get(self.at..self.at + n).ok_or("the footer table is truncated")?;
        self.at += n;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A varint of at most 32 bits; larger ones are refused.
    fn varint(&mut self) -> Result<u32, String> {
        let value = varint::take(self.bytes, &mut self.at).map_err(|e| format!("the footer table has {e}"))?;
        u32::try_from(value).map_err(|_| "a length in the footer is past 2^32".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{FLAG_LZ4, FLAG_ZSTD};

    /// A table as a writer makes one: a lone blob, a frame of three, a
    /// frame of one and another lone blob, back to back from the header.
    fn table() -> (Vec<TableEntry>, u64) {
        let mut table = Vec::new();
        let mut offset = HEADER_LEN as u64;
        let mut record = |members: &[u32], flags: u8, stored_len: u32| {
            for (place, raw_len) in members.iter().enumerate() {
                let id = BlobId::of(format!("{offset} {place}").as_bytes());
                let kind = BlobKind::Data;
                table.push(TableEntry { id, kind, flags, offset, raw_len: *raw_len, stored_len, member: place as u16 });
            }
            offset += RECORD_HEADER_LEN as u64 + u64::from(stored_len);
        };
        record(&[70_000], FLAG_LZ4, 1234);
        record(&[8192, 3, 0], FLAG_FRAME | FLAG_ZSTD, 5000);
        record(&[u32::MAX], FLAG_FRAME, 300);
        record(&[0], 0, 0);
        (table, offset)
    }

    #[test]
    fn both_layouts_round_trip_and_the_compact_one_is_smaller() {
        let (table, end) = table();
        for layout in [FooterLayout::Fixed, FooterLayout::Compact] {
            let mut bytes = Vec::new();
            layout.encode(&table, &mut bytes);
            assert_eq!(bytes.len() as u64, layout.table_len(&table));
            assert_eq!(layout.decode(&bytes, table.len(), end).unwrap(), table, "{layout:?}");
        }
        // 6 ids of 32; headers 2+2, 2+2+1, 2+2+1, 2+1; lengths 3+2+1+1+5+1.
        assert_eq!(FooterLayout::Compact.table_len(&table), 6 * 32 + 17 + 13);
    }

    /// Every way a compact table can lie is refused with a reason, never
    /// a panic or an allocation of what it claims.
    #[test]
    fn a_compact_table_that_does_not_fit_its_container_is_refused() {
        let (table, end) = table();
        let mut bytes = Vec::new();
        FooterLayout::Compact.encode(&table, &mut bytes);
        let decode = |bytes: &[u8], n: usize, end: u64| FooterLayout::Compact.decode(bytes, n, end).unwrap_err();
        assert!(decode(&bytes, table.len(), end + 1).contains("records end at"));
        assert!(decode(&bytes, table.len(), end - 1).contains("past the records"));
        assert!(decode(&bytes, table.len() + 1, end).contains("truncated"));
        assert!(decode(&bytes, 2, end).contains("more than the 2 entries"));
        assert!(decode(&bytes[..bytes.len() - 1], table.len(), end).contains("truncated"));
        assert!(decode(&[bytes.clone(), vec![0]].concat(), table.len(), end).contains("after its last entry"));
        assert!(decode(&[9, 0, 0], 1, end).contains("unknown blob kind 9"));
        assert!(decode(&[0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f], 1, u64::MAX).contains("past 2^32"));
        assert!(decode(&[0, 0, 0x80, 0x80, 0], 1, u64::MAX).contains("shortest form"));
        let mut frame = vec![0, FLAG_FRAME | FLAG_ZSTD, 10];
        varint::put(&mut frame, MAX_FRAME_MEMBERS as u64);
        assert!(decode(&frame, usize::MAX, u64::MAX).contains("4097 members"));
        let mut lone = vec![0, FLAG_ZSTD];
        varint::put(&mut lone, u32::MAX.into());
        assert!(decode(&lone, 1, u64::MAX).contains("truncated"));
        assert!(decode(&lone, 1, 100).contains("past the records"));
    }
}
