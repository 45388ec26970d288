//! Content lists: the ordered (chunk id, length) sequence of a file or object,
//! stored as a tree of pieces so that editing a huge file rewrites only the
//! pieces around the edit.
//!
//! Level-0 pieces list data chunks; a level-k piece lists level-(k-1) pieces
//! with the bytes each covers. A piece ends after an entry whose id's low bits
//! match a pattern (on average every [`FANOUT`] entries, at most
//! [`MAX_ENTRIES`]), so the split points are defined by content, like the
//! chunker's: an insertion changes one level-0 piece and the pieces above it,
//! and every other piece keeps its id. The root is the single piece at the
//! top; an empty stream is one empty level-0 piece.
//!
//! Content of exactly one chunk has no piece: its root is the chunk itself
//! (readers tell the two apart by the root's kind in the index). Most files
//! of a home directory are that small, and a piece of one entry would cost
//! as much again in record, footer and index entry as the entry it holds,
//! and a second read on every restore.
//!
//! Piece layouts (docs/format.md), after an 8-byte header `[version u8]
//! [level u8][reserved u16][n u32]`:
//! - version 1 (stores before format 5): `n` entries of `[id 32][length u64]`;
//! - version 2 (format 5 on): the `n` ids (32 each), then the `n` lengths as
//!   varints ([`crate::varint`]). The ids cannot be compressed; apart from
//!   them the lengths compress well, and interleaved with them not at all:
//!   a data chunk's entry stores in about 33 bytes where version 1's took
//!   about 38 (ARCHITECTURE.md, "Compact footers and pieces").

use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use crate::index::entry::IndexEntry;
use crate::session::WriteSession;
use crate::store::Store;
use crate::varint;

/// Average entries per piece.
pub const FANOUT: u32 = 64;
/// Most entries in one piece.
pub const MAX_ENTRIES: usize = 1024;
const PIECE_HEADER_LEN: usize = 8;
/// A version-1 entry: id and u64 length.
const FIXED_ENTRY_LEN: usize = 40;
/// The longest piece: a header and [`MAX_ENTRIES`] entries of an id and
/// the longest varint (43,016 bytes; version 1's longest is 40,968).
pub const MAX_PIECE_LEN: usize = PIECE_HEADER_LEN + MAX_ENTRIES * (32 + 10);

/// How a piece's entries are laid out: the store's format decides which
/// a writer uses; readers take both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PieceLayout {
    /// Version 1: `[id 32][length u64]` per entry.
    Fixed,
    /// Version 2: every id, then every length as a varint.
    Compact,
}

impl PieceLayout {
    fn version(self) -> u8 {
        match self {
            PieceLayout::Fixed => 1,
            PieceLayout::Compact => 2,
        }
    }
}

/// One entry of a piece: a chunk (level 0) or a lower piece, and the bytes it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentEntry {
    /// Chunk or piece id.
    pub id: BlobId,
    /// Bytes of content it covers.
    pub len: u64,
}

/// A decoded piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// 0 for pieces that list chunks.
    pub level: u8,
    /// Its entries, in content order.
    pub entries: Vec<ContentEntry>,
}

impl Piece {
    /// Serializes the piece as a store of today's format holds it.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(PieceLayout::Compact)
    }

    /// Serializes the piece in `layout`.
    pub fn encode_as(&self, layout: PieceLayout) -> Vec<u8> {
        let mut out = Vec::with_capacity(PIECE_HEADER_LEN + self.entries.len() * FIXED_ENTRY_LEN);
        out.extend_from_slice(&[layout.version(), self.level, 0, 0]);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        match layout {
            PieceLayout::Fixed => {
                for entry in &self.entries {
                    out.extend_from_slice(entry.id.as_bytes());
                    out.extend_from_slice(&entry.len.to_le_bytes());
                }
            }
            PieceLayout::Compact => {
                self.entries.iter().for_each(|entry| out.extend_from_slice(entry.id.as_bytes()));
                self.entries.iter().for_each(|entry| varint::put(&mut out, entry.len));
            }
        }
        out
    }

    /// The layout `bytes` (a piece that decodes) are in.
    pub fn layout_of(bytes: &[u8]) -> Option<PieceLayout> {
        match bytes.first()? {
            1 => Some(PieceLayout::Fixed),
            2 => Some(PieceLayout::Compact),
            _ => None,
        }
    }

    /// Parses a piece; `id` is only used in the error.
    ///
    /// Refuses more than [`MAX_ENTRIES`] entries (no builder writes more)
    /// and entries covering no bytes: no chunk is empty and no empty piece
    /// is ever named by another, and with empty entries a crafted list
    /// could name the same piece over and over while its length stayed 0,
    /// so readers that stop at the recorded size would never stop.
    pub fn decode(id: BlobId, bytes: &[u8]) -> Result<Piece> {
        let malformed = |reason: String| Error::Malformed { what: "content list", blob: id, reason };
        let layout = Piece::layout_of(bytes);
        let (header, body, layout) = match (bytes.split_first_chunk::<PIECE_HEADER_LEN>(), layout) {
            (Some((header, body)), Some(layout)) => (header, body, layout),
            _ => return Err(malformed("unknown version or truncated header".into())),
        };
        let n = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if n > MAX_ENTRIES {
            return Err(malformed(format!("{n} entries, more than the {MAX_ENTRIES} a piece holds")));
        }
        let wrong_size = || malformed(format!("{} bytes for {n} entries", bytes.len()));
        let entries: Vec<(&[u8], u64)> = match layout {
            PieceLayout::Fixed => {
                if body.len() != n * FIXED_ENTRY_LEN {
                    return Err(wrong_size());
                }
                body.chunks_exact(FIXED_ENTRY_LEN)
                    .map(|e| (&e[..32], u64::from_le_bytes(e[32..].try_into().expect("8 bytes"))))
                    .collect()
            }
            PieceLayout::Compact => {
                // The ids, then a varint per id from `at` to the end.
                let (ids, mut at) = (body.get(..n * 32).ok_or_else(wrong_size)?, n * 32);
                let entries = ids
                    .chunks_exact(32)
                    .map(|id| Ok((id, varint::take(body, &mut at).map_err(|e| malformed(e.into()))?)))
                    .collect::<Result<Vec<_>>>()?;
                if at != body.len() {
                    return Err(wrong_size());
                }
                entries
            }
        };
        let entries = entries
            .into_iter()
            .map(|(id, len)| {
                let id = BlobId::from_slice(id).expect("32 bytes");
                if len == 0 {
                    return Err(malformed(format!("entry {id:#} covers no bytes")));
                }
                Ok(ContentEntry { id, len })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Piece { level: header[1], entries })
    }

    /// Ids this piece names, with multiplicity (its references).
    pub fn children(&self) -> Vec<BlobId> {
        self.entries.iter().map(|e| e.id).collect()
    }

    /// Bytes of content under this piece. Saturates: the lengths come from
    /// disk, and a crafted piece's sum past 2^64 is simply a wrong length.
    pub fn len(&self) -> u64 {
        self.entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.len))
    }

    /// Whether the piece covers no content.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Builds the piece tree of one stream as its chunks arrive, holding at most
/// one unfinished piece per level.
#[derive(Default)]
pub struct ContentBuilder {
    levels: Vec<Vec<ContentEntry>>,
    total: u64,
    /// The first chunk, held back until a second one shows the content
    /// needs pieces at all (so it is `Some` at the end only for one chunk).
    first: Option<ContentEntry>,
}

/// What a finished content list is: its root piece and total length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRef {
    /// The root piece.
    pub root: BlobId,
    /// Bytes of content.
    pub size: u64,
}

impl ContentBuilder {
    /// An empty builder.
    pub fn new() -> ContentBuilder {
        ContentBuilder::default()
    }

    /// Appends a chunk (already stored or deduplicated by the caller).
    pub fn push(&mut self, session: &WriteSession, id: BlobId, len: u64) -> Result<()> {
        self.total += len;
        let entry = ContentEntry { id, len };
        if self.levels.is_empty() && self.first.is_none() {
            self.first = Some(entry);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.push_at(session, 0, first)?;
        }
        self.push_at(session, 0, entry)
    }

    fn push_at(&mut self, session: &WriteSession, level: usize, entry: ContentEntry) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(entry);
        let ends_piece = entry.id.low_u32() % FANOUT == FANOUT - 1;
        if ends_piece || self.levels[level].len() >= MAX_ENTRIES {
            let piece = self.flush(session, level)?;
            self.push_at(session, level + 1, piece)?;
        }
        Ok(())
    }

    /// Writes the unfinished piece at `level` and returns its entry.
    fn flush(&mut self, session: &WriteSession, level: usize) -> Result<ContentEntry> {
        let piece = Piece { level: level as u8, entries: std::mem::take(&mut self.levels[level]) };
        let len = piece.len();
        let bytes = piece.encode_as(session.config().piece_layout());
        let id = session.write_metadata(BlobKind::ContentList, bytes, piece.children())?;
        Ok(ContentEntry { id, len })
    }

    /// Writes the remaining pieces and returns the root.
    pub fn finish(mut self, session: &WriteSession) -> Result<ContentRef> {
        if let Some(only) = self.first {
            return Ok(ContentRef { root: only.id, size: self.total });
        }
        let mut level = 0;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let is_top = self.levels.len() == level + 1;
            // The top level holding exactly one lower piece: that piece is the root.
            if is_top && level > 0 && self.levels[level].len() == 1 {
                return Ok(ContentRef { root: self.levels[level][0].id, size: self.total });
            }
            if is_top && level == 0 || !self.levels[level].is_empty() {
                let entry = self.flush(session, level)?;
                if self.levels.len() <= level + 1 {
                    self.levels.push(Vec::new());
                }
                self.levels[level + 1].push(entry);
            }
            level += 1;
        }
    }
}

/// The piece at `root`; for content of one chunk (a data blob as root),
/// a level-0 piece listing it.
pub fn root_piece(store: &Store, root: BlobId) -> Result<Piece> {
    root_piece_at(store, root, store.entry(&root)?)
}

/// [`root_piece`], with the root's index entry already looked up.
fn root_piece_at(store: &Store, root: BlobId, entry: IndexEntry) -> Result<Piece> {
    if entry.kind == BlobKind::Data {
        return Ok(Piece { level: 0, entries: vec![ContentEntry { id: root, len: entry.raw_len.into() }] });
    }
    Piece::decode(root, &store.read_located(&root, entry)?)
}

/// Walks a content list depth-first, yielding its chunks in order.
pub struct ContentReader<'a> {
    store: &'a Store,
    /// Pieces being walked, with the index of the next entry in each.
    stack: Vec<(Piece, usize)>,
}

impl<'a> ContentReader<'a> {
    /// Starts at the root: a piece, or the only chunk.
    pub fn new(store: &'a Store, root: BlobId) -> Result<ContentReader<'a>> {
        let piece = root_piece(store, root)?;
        Ok(ContentReader { store, stack: vec![(piece, 0)] })
    }

    /// [`new`](ContentReader::new), with the root's index entry already
    /// looked up (in a batch with others').
    pub fn at(store: &'a Store, root: BlobId, entry: IndexEntry) -> Result<ContentReader<'a>> {
        let piece = root_piece_at(store, root, entry)?;
        Ok(ContentReader { store, stack: vec![(piece, 0)] })
    }

    /// The next chunk, `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<ContentEntry>> {
        loop {
            let Some((piece, next)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(entry) = piece.entries.get(*next).copied() else {
                self.stack.pop();
                continue;
            };
            *next += 1;
            if piece.level == 0 {
                return Ok(Some(entry));
            }
            let child = Piece::decode(entry.id, &self.store.read_blob(&entry.id)?)?;
            // Checked: a crafted level of 255 must not overflow. Levels fall
            // by one per step, so the stack is at most 256 pieces deep.
            if child.level.checked_add(1) != Some(piece.level) {
                return Err(Error::Malformed {
                    what: "content list",
                    blob: entry.id,
                    reason: format!("level {} under level {}", child.level, piece.level),
                });
            }
            self.stack.push((child, 0));
        }
    }

    /// The bytes the root piece says the content covers (checked, since
    /// a crafted piece can claim lengths that overflow): what a reader
    /// compares with the size its entry names before writing anything.
    pub fn root_len(&self) -> Option<u64> {
        let (root, _) = self.stack.first()?;
        root.entries.iter().try_fold(0u64, |sum, e| sum.checked_add(e.len))
    }

    /// Up to `max` next chunks.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<ContentEntry>> {
        let mut batch = Vec::with_capacity(max);
        while batch.len() < max {
            match self.next_chunk()? {
                Some(entry) => batch.push(entry),
                None => break,
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_round_trip_and_reject_garbage() {
        let piece = Piece {
            level: 2,
            entries: vec![ContentEntry { id: BlobId::of(b"a"), len: 5 }, ContentEntry { id: BlobId::of(b"b"), len: 7 }],
        };
        for layout in [PieceLayout::Fixed, PieceLayout::Compact] {
            let bytes = piece.encode_as(layout);
            assert_eq!(Piece::layout_of(&bytes), Some(layout));
            assert_eq!(Piece::decode(BlobId::of(&bytes), &bytes).unwrap(), piece);
            assert!(Piece::decode(BlobId::of(b""), &bytes[..bytes.len() - 1]).is_err());
            assert!(Piece::decode(BlobId::of(b""), &[bytes.clone(), vec![0]].concat()).is_err());
        }
        assert_eq!(piece.len(), 12);
        // Two ids, then 5 and 7 a byte each.
        assert_eq!(piece.encode().len(), 8 + 64 + 2);
        assert!(Piece::decode(BlobId::of(b""), b"\x09\0\0\0\0\0\0\0").is_err());
    }

    /// Regression (issue 15): a piece of more entries than any builder
    /// writes, or of entries covering no bytes (with which a crafted list
    /// names one piece over and over and reading it never ends), decoded.
    #[test]
    fn pieces_no_builder_writes_are_refused() {
        let entry = |len| ContentEntry { id: BlobId::of(b"c"), len };
        let big = Piece { level: 0, entries: vec![entry(1); MAX_ENTRIES + 1] }.encode();
        let error = Piece::decode(BlobId::of(&big), &big).unwrap_err().to_string();
        assert!(error.contains("1025 entries"), "{error}");
        let full = Piece { level: 0, entries: vec![entry(u64::MAX); MAX_ENTRIES] }.encode();
        assert_eq!(full.len(), MAX_PIECE_LEN);
        assert!(Piece::decode(BlobId::of(&full), &full).is_ok());
        for layout in [PieceLayout::Fixed, PieceLayout::Compact] {
            let empty_entry = Piece { level: 1, entries: vec![entry(5), entry(0)] }.encode_as(layout);
            let error = Piece::decode(BlobId::of(&empty_entry), &empty_entry).unwrap_err().to_string();
            assert!(error.contains("covers no bytes"), "{error}");
        }
        // A compact piece whose lengths are missing, or not in their
        // shortest form, is refused.
        let mut short = Piece { level: 0, entries: vec![entry(1); 3] }.encode();
        short.truncate(8 + 96 + 2);
        assert!(Piece::decode(BlobId::of(&short), &short).unwrap_err().to_string().contains("truncated"));
        short.extend_from_slice(&[0x81, 0x00]);
        assert!(Piece::decode(BlobId::of(&short), &short).unwrap_err().to_string().contains("shortest form"));
        // Lengths whose sum passes 2^64 saturate instead of overflowing.
        assert_eq!(Piece { level: 0, entries: vec![entry(u64::MAX), entry(2)] }.len(), u64::MAX);
    }
}
