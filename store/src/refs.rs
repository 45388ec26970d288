//! What a metadata blob names: the one place that knows how to list a blob's
//! outgoing references, used by the integrity check (and the delete job's
//! cascade), and what kind of blob each reference must find.

use crate::content::Piece;
use crate::dataset::{EntryKind, Tree};
use crate::error::Result;
use crate::ids::{BlobId, BlobKind};

/// The blobs `bytes` (the plaintext of blob `id` of kind `kind`) names, with
/// multiplicity. Data blobs name nothing.
pub fn children_of(kind: BlobKind, id: BlobId, bytes: &[u8]) -> Result<Vec<BlobId>> {
    Ok(typed_children_of(kind, id, bytes)?.into_iter().map(|(child, _)| child).collect())
}

/// What a reference may name, by where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A directory's subtree, or a dataset's root: a tree.
    Tree,
    /// A file's or object's content: a content-list piece, or the one data
    /// chunk of content that is one chunk long.
    Content,
    /// An entry of a level-0 piece: a data chunk.
    Chunk,
    /// An entry of a piece above level 0: a lower piece.
    Piece,
    /// A checkpoint piece of a log record, or a record the log keeps.
    Log,
}

impl Expected {
    /// Whether a blob of `kind` may stand where this reference is.
    pub fn admits(self, kind: BlobKind) -> bool {
        match self {
            Expected::Tree => kind == BlobKind::Tree,
            Expected::Content => kind != BlobKind::Tree,
            Expected::Chunk => kind == BlobKind::Data,
            Expected::Piece => kind == BlobKind::ContentList,
            Expected::Log => kind == BlobKind::Log,
        }
    }

    /// What the reference names, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Expected::Tree => "a tree",
            Expected::Content => "content (a content list or one chunk)",
            Expected::Chunk => "a data chunk",
            Expected::Piece => "a content-list piece",
            Expected::Log => "a log blob",
        }
    }
}

/// [`children_of`], with what kind each child must be.
pub fn typed_children_of(kind: BlobKind, id: BlobId, bytes: &[u8]) -> Result<Vec<(BlobId, Expected)>> {
    match kind {
        BlobKind::Data => Ok(Vec::new()),
        BlobKind::ContentList => {
            let piece = Piece::decode(id, bytes)?;
            let expect = if piece.level == 0 { Expected::Chunk } else { Expected::Piece };
            Ok(piece.entries.iter().map(|e| (e.id, expect)).collect())
        }
        BlobKind::Tree => Ok(Tree::decode(id, bytes)?
            .entries
            .iter()
            .filter_map(|e| {
                let expect = if e.kind == EntryKind::Dir { Expected::Tree } else { Expected::Content };
                e.blob.map(|blob| (blob, expect))
            })
            .collect()),
        BlobKind::Log => {
            Ok(crate::log::LogBlob::decode(id, bytes)?.children().into_iter().map(|c| (c, Expected::Log)).collect())
        }
    }
}
