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
    /// A log record or checkpoint piece: the store's own history (`log/`).
    Log = 3,
}

impl BlobKind {
    /// Every kind, in byte order.
    pub const ALL: [BlobKind; 4] = [BlobKind::Data, BlobKind::ContentList, BlobKind::Tree, BlobKind::Log];

    /// Reads a kind byte.
    pub fn from_byte(byte: u8) -> Option<BlobKind> {
        BlobKind::ALL.get(byte as usize).copied()
    }

    /// Whether blobs of this kind name other blobs (and so count references).
    pub fn is_metadata(self) -> bool {
        self != BlobKind::Data
    }

    /// The longest plaintext a blob of this kind can have. Writers never
    /// produce more and readers refuse more before allocating for it (the
    /// length fields are u32s from disk or a remote): a data chunk is at
    /// most the chunker's longest, a content-list piece holds at most
    /// [`crate::content::MAX_ENTRIES`] entries, and a tree is refused by
    /// the writer above [`crate::dataset::tree::MAX_TREE_LEN`].
    pub fn max_len(self) -> usize {
        match self {
            BlobKind::Data => cairn_chunker::MAX_CHUNK_SIZE,
            BlobKind::ContentList => crate::content::MAX_PIECE_LEN,
            BlobKind::Tree => crate::dataset::tree::MAX_TREE_LEN,
            BlobKind::Log => crate::log::record::MAX_LOG_LEN,
        }
    }

    /// A short lowercase name for tables.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::ContentList => "content-list",
            BlobKind::Tree => "tree",
            BlobKind::Log => "log",
        }
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `store_id_key` of every unencrypted store: a public constant, so two
/// plain stores name the same bytes alike (a mirror or a copy between them
/// needs no rehash). An encrypted store will derive a secret one from its
/// master key, so that ids reveal nothing about content.
pub const PUBLIC_STORE_ID_KEY: [u8; 32] = *b"cairn: unencrypted store id key.";

/// How a store names its blobs.
///
/// From store format 3 an id is BLAKE3 in keyed mode with one key per blob
/// kind, `K(kind) = derive_key("cairn blob id v3 " + kind, store_id_key)`:
/// a data chunk whose bytes equal a tree or a content-list piece gets
/// another id, so one can never be taken for the other. Stores of format 1
/// and 2 named every blob by plain BLAKE3; they can still be read and
/// verified ([`IdScheme::Plain`]) but take no new blobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdScheme {
    /// Format 3: keyed, one key per kind.
    Keyed(IdKeys),
    /// Formats 1 and 2: plain BLAKE3 for every kind.
    Plain,
}

/// The keys of a format-3 store, one per kind, indexed by kind byte.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKeys([[u8; 32]; BlobKind::ALL.len()]);

impl fmt::Debug for IdKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKeys(..)")
    }
}

impl IdKeys {
    /// Derives the per-kind keys from a store's `store_id_key`.
    pub fn derive(store_id_key: &[u8; 32]) -> IdKeys {
        // One constant context string per kind, as derive_key asks.
        let context = |kind: BlobKind| match kind {
            BlobKind::Data => "cairn blob id v3 data",
            BlobKind::ContentList => "cairn blob id v3 content-list",
            BlobKind::Tree => "cairn blob id v3 tree",
            BlobKind::Log => "cairn blob id v3 log",
        };
        IdKeys(BlobKind::ALL.map(|kind| blake3::derive_key(context(kind), store_id_key)))
    }

    /// The keys of an unencrypted store.
    pub fn public() -> IdKeys {
        IdKeys::derive(&PUBLIC_STORE_ID_KEY)
    }

    /// The key of `kind`.
    pub fn key(&self, kind: BlobKind) -> &[u8; 32] {
        &self.0[kind as usize]
    }

    /// The id of `bytes` as a blob of `kind`.
    pub fn id(&self, kind: BlobKind, bytes: &[u8]) -> BlobId {
        BlobId::keyed(self.key(kind), bytes)
    }
}

impl IdScheme {
    /// The scheme of a store of `format`.
    pub fn for_format(format: u32) -> IdScheme {
        if format >= 3 { IdScheme::Keyed(IdKeys::public()) } else { IdScheme::Plain }
    }

    /// The id `bytes` must have as a blob of `kind`: what every read checks.
    pub fn id(&self, kind: BlobKind, bytes: &[u8]) -> BlobId {
        match self {
            IdScheme::Keyed(keys) => keys.id(kind, bytes),
            IdScheme::Plain => BlobId::of(bytes),
        }
    }

    /// The keys new blobs are named with, if this store takes new blobs.
    pub fn for_writing(&self) -> Option<&IdKeys> {
        match self {
            IdScheme::Keyed(keys) => Some(keys),
            IdScheme::Plain => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_get_different_ids_for_the_same_bytes() {
        let keys = IdKeys::public();
        for bytes in [&b""[..], b"\x01\x00", b"\x01\0\0\0\0\0\0\0"] {
            let ids: Vec<BlobId> = BlobKind::ALL.iter().map(|&kind| keys.id(kind, bytes)).collect();
            assert_ne!(ids[0], ids[1]);
            assert_ne!(ids[1], ids[2]);
            assert_ne!(ids[0], ids[2]);
            assert!(!ids.contains(&BlobId::of(bytes)));
        }
        // The derivation of docs/format.md, computed independently (the
        // Python `blake3` package): a change here renames every blob.
        assert_eq!(
            keys.id(BlobKind::Data, b"cairn").to_hex(),
            "91f8ad5aaf23a54bb2f28fe55005f986b40a3c5d617f96c3b78c34e1aa19af1f"
        );
        assert_eq!(
            keys.id(BlobKind::Tree, b"").to_hex(),
            "9aced8af6b28d5977bb8b459d28dd54f767ebc3b80e18848a265bcfada05e061"
        );
        assert_eq!(IdScheme::for_format(2).id(BlobKind::Tree, b"x"), BlobId::of(b"x"));
        assert!(IdScheme::for_format(2).for_writing().is_none());
    }
}
