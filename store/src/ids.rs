//! Typed ids: containers, transactions and sessions are never bare integers
//! across module boundaries.

use std::fmt;

pub use cairn_chunker::BlobId;

/// A container's number. Allocated in increasing order and never reused for a
/// container that any commit named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub u64);

impl ContainerId {
    /// The big-endian key under which the container is indexed, so RocksDB
    /// iterates containers in id order.
    pub fn key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Reads a key written by [`ContainerId::key`].
    pub fn from_key(key: &[u8]) -> Option<ContainerId> {
        Some(ContainerId(u64::from_be_bytes(key.try_into().ok()?)))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Transaction id: bumped by every commit. Orders everything for mirroring
/// and protects blobs from the delete job while a session that saw them runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Tid(pub u64);

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A write session, unique within the life of a store process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {}", self.0)
    }
}

/// What a blob holds. Stored as one byte in container records and index
/// entries; data and metadata blobs live in separate containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// A piece of file or object content.
    Data = 0,
    /// A piece of a content list: the (id, length) sequence of a file.
    ContentList = 1,
    /// A directory of a dataset's manifest.
    Tree = 2,
}

impl BlobKind {
    /// Every kind, in byte order.
    pub const ALL: [BlobKind; 3] = [BlobKind::Data, BlobKind::ContentList, BlobKind::Tree];

    /// Reads a kind byte.
    pub fn from_byte(byte: u8) -> Option<BlobKind> {
        BlobKind::ALL.get(byte as usize).copied()
    }

    /// Whether blobs of this kind name other blobs (and so count references).
    pub fn is_metadata(self) -> bool {
        self != BlobKind::Data
    }

    /// A short lowercase name for tables.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::ContentList => "content-list",
            BlobKind::Tree => "tree",
        }
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
