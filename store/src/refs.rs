//! What a metadata blob names: the one place that knows how to list a blob's
//! outgoing references, used by the integrity check (and the delete job's
//! cascade).

use crate::content::Piece;
use crate::dataset::Tree;
use crate::error::Result;
use crate::ids::{BlobId, BlobKind};

/// The blobs `bytes` (the plaintext of blob `id` of kind `kind`) names, with
/// multiplicity. Data blobs name nothing.
pub fn children_of(kind: BlobKind, id: BlobId, bytes: &[u8]) -> Result<Vec<BlobId>> {
    match kind {
        BlobKind::Data => Ok(Vec::new()),
        BlobKind::ContentList => Ok(Piece::decode(id, bytes)?.children()),
        BlobKind::Tree => Ok(Tree::decode(id, bytes)?.children()),
    }
}
