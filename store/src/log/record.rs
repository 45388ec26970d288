//! The log's blobs: records and checkpoint pieces, and how they are encoded.
//!
//! A log blob is `[version u8 = 1]` followed by the postcard encoding of a
//! [`LogBlob`]. Both kinds of log blob have blob kind `log` and live in
//! metadata containers. A record names its checkpoint pieces (its only
//! children, for reference counting); the previous record is named by id
//! (`prev`) but not counted: the log keeps its own records alive (see
//! `log/mod.rs`).

use serde::{Deserialize, Serialize};

use crate::container::{ContainerFiles, TableEntry};
use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId, Tid};
use crate::index::{cf, meta};

const LOG_VERSION: u8 = 1;

/// The longest log blob. A commit whose record would be longer fails before
/// anything is written (forget fewer datasets at once); checkpoints are cut
/// into pieces of at most [`PIECE_TARGET`].
pub const MAX_LOG_LEN: usize = 16 << 20;

/// Checkpoint pieces are cut once they pass this many bytes.
pub const PIECE_TARGET: usize = 1 << 20;

/// Which records a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// Dataset records (key: the dataset id, 8 bytes big-endian).
    Datasets,
    /// Object records (key: the object's key).
    Objects,
    /// A counter in `meta` (only `next_dataset`).
    Meta,
}

impl Family {
    /// The column family.
    pub fn cf(self) -> &'static str {
        match self {
            Family::Datasets => cf::DATASETS,
            Family::Objects => cf::OBJECTS,
            Family::Meta => cf::META,
        }
    }

    /// The family of a column family whose changes the log keeps, if it keeps them.
    pub fn of(family: &str, key: &[u8]) -> Option<Family> {
        match family {
            cf::DATASETS => Some(Family::Datasets),
            cf::OBJECTS => Some(Family::Objects),
            cf::META if key == meta::NEXT_DATASET => Some(Family::Meta),
            _ => None,
        }
    }
}

/// One record put (`value` is `Some`) or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Which records.
    pub family: Family,
    /// The record's key.
    pub key: Vec<u8>,
    /// The new value, as the index holds it; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Records put and deleted by a write session (backup, put, forget,
    /// rm, clone), and the containers it wrote, the one holding this record
    /// aside.
    Commit {
        /// The session's other containers.
        containers: Vec<u64>,
        /// The record changes, in order.
        changes: Vec<Change>,
    },
    /// A compaction: the live blobs of `old` were copied to `containers`.
    Relocation {
        /// The containers the copies went to (the one holding this record aside).
        containers: Vec<u64>,
        /// The containers emptied and deleted.
        old: Vec<u64>,
        /// Blobs moved.
        moved: u64,
    },
}

/// One commit's entry in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The commit's tid.
    pub tid: u64,
    /// When, ns since the epoch.
    pub time_ns: i64,
    /// The machine, user and command line that made it.
    pub host: String,
    /// The user name (or uid).
    pub user: String,
    /// The command line.
    pub command: String,
    /// The previous record's id; `None` for the first record of a log.
    pub prev: Option<[u8; 32]>,
    /// When this record is a checkpoint: the pieces that hold every live
    /// record (dataset, object, `next_dataset`) as of just before this
    /// commit. Replaying starts from the newest checkpoint.
    pub checkpoint: Option<Vec<[u8; 32]>>,
    /// A line for people ("gc: collected 120 blobs"); may be empty.
    pub note: String,
    /// What the commit changed.
    pub body: Body,
}

/// A part of a checkpoint: records, each as a put.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The records.
    pub records: Vec<Change>,
}

/// A log blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogBlob {
    /// A commit's record.
    Record(LogRecord),
    /// A part of a checkpoint.
    Piece(Piece),
}

impl LogBlob {
    /// The blob's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![LOG_VERSION];
        postcard::to_io(self, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Parses a log blob; `id` names it in errors.
    pub fn decode(id: BlobId, bytes: &[u8]) -> Result<LogBlob> {
        let malformed = |reason: String| Error::Malformed { what: "log blob", blob: id, reason };
        let Some((&version, body)) = bytes.split_first() else {
            return Err(malformed("empty".into()));
        };
        if version != LOG_VERSION {
            return Err(malformed(format!("unknown log version {version}")));
        }
        postcard::from_bytes(body).map_err(|e| malformed(e.to_string()))
    }

    /// Reads and parses the log blob `entry` of `container`.
    pub fn read(files: &ContainerFiles, container: ContainerId, entry: &TableEntry) -> Result<LogBlob> {
        files.read_blob(container, entry).and_then(|bytes| LogBlob::decode(entry.id, &bytes))
    }

    /// The blobs this one names for counting: a record's checkpoint pieces.
    pub fn children(&self) -> Vec<BlobId> {
        match self {
            LogBlob::Record(record) => record.checkpoint.iter().flatten().map(|id| BlobId(*id)).collect(),
            LogBlob::Piece(_) => Vec::new(),
        }
    }
}

impl LogRecord {
    /// The commit's tid.
    pub fn tid(&self) -> Tid {
        Tid(self.tid)
    }

    /// The previous record.
    pub fn prev(&self) -> Option<BlobId> {
        self.prev.map(BlobId)
    }

    /// The containers the commit wrote besides the one holding this record.
    pub fn containers(&self) -> Vec<ContainerId> {
        let ids = match &self.body {
            Body::Commit { containers, .. } | Body::Relocation { containers, .. } => containers,
        };
        ids.iter().map(|id| ContainerId(*id)).collect()
    }

    /// What the commit did, in a few words.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.body {
            Body::Commit { changes, .. } => {
                for change in changes {
                    let what = match change.family {
                        Family::Datasets => match <[u8; 8]>::try_from(change.key.as_slice()) {
                            Ok(key) => format!("dataset {}", u64::from_be_bytes(key)),
                            Err(_) => "dataset ?".to_string(),
                        },
                        Family::Objects => format!("object '{}'", String::from_utf8_lossy(&change.key)),
                        Family::Meta => continue,
                    };
                    parts.push(format!("{} {what}", if change.value.is_some() { "put" } else { "deleted" }));
                }
            }
            Body::Relocation { old, moved, .. } => {
                parts.push(format!("compacted {} containers ({moved} blobs moved)", old.len()))
            }
        }
        if self.checkpoint.is_some() {
            parts.push("checkpoint".into());
        }
        if !self.note.is_empty() {
            parts.push(self.note.clone());
        }
        parts.join(", ")
    }
}
