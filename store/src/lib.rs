//! cairn-store: the storage engine.
//!
//! Blobs (data chunks and metadata) are appended to containers, located
//! through a RocksDB index that also holds their reference counts, and made
//! visible only by a write session's commit (see [`session`]). On top sit
//! objects, the flat key namespace (`put`, `get`, `clone`, `rm`), datasets
//! (versioned backups of directory trees), statistics and the integrity check.
//!
//! The store knows nothing of retention policy or the command line.

mod apply;
pub mod check;
mod check_recount;
pub mod clock;
pub mod commit;
pub mod compact;
pub mod config;
pub mod container;
pub mod content;
pub mod dataset;
pub mod error;
pub mod fault;
mod id_filter;
pub mod ids;
pub mod index;
pub mod ingest;
mod lock;
pub mod log;
pub mod objects;
mod pending;
pub mod reclaim;
pub mod refs;
pub mod remote;
pub mod scratch;
pub mod session;
pub mod sparse;
pub mod stats;
mod store;
mod upgrade;
mod varint;

#[cfg(test)]
mod fuzz_tests;

pub use cairn_chunker::{BlobId, ChunkerConfig};
pub use check::{CheckOptions, CheckReport};
pub use compact::{CompactReport, ContainerUsage};
pub use config::{DEFAULT_CONTAINER_SIZE, StoreConfig, StoreOptions};
pub use dataset::{DatasetId, DatasetRecord};
pub use error::{Error, Result};
pub use ids::{BlobKind, ContainerId, SessionId, Tid};
pub use lock::LockWait;
pub use objects::{ObjectInfo, ObjectRecord, PutOutcome};
pub use reclaim::ReclaimBatch;
pub use session::WriteSession;
pub use stats::StoreStats;
pub use store::{OpenMode, Store, open_to_others};
pub use upgrade::Upgrade;
