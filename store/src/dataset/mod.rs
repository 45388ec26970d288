//! Datasets: versioned backups of directory trees.
//!
//! A dataset is a record (`record.rs`) naming the root of a manifest: a
//! Merkle tree of directory blobs (`tree.rs`) whose file entries name
//! content lists (`content.rs`). An unchanged directory encodes to the same
//! tree blob, so a backup of a mostly unchanged source stores new metadata
//! only along the changed paths, and `diff` skips equal subtrees by id.
//!
//! `backup.rs` walks sources and ingests files in parallel, reusing the
//! content of files the parent dataset saw unchanged; `restore.rs` puts a
//! dataset back with its metadata and never writes outside its target;
//! `browse.rs` answers `ls`, `find`, `stat`, `cat` and `diff`; `fsmeta.rs`
//! reads and applies file metadata; `gather.rs` writes a restored file's
//! chunks in few calls; `walk.rs` holds the limits and the
//! iterative walk that everything descending trees from a store uses.

mod apply;
pub mod backup;
mod beneath;
pub mod browse;
mod clone;
pub mod fsmeta;
mod gather;
mod plan;
pub mod record;
pub mod restore;
mod stage;
pub mod tree;
pub mod walk;

use std::sync::atomic::{AtomicU64, Ordering};

pub use backup::{BackupOptions, BackupReport};
pub use browse::{Change, ChangeKind, ChunkUse};
pub use plan::PLAN_BATCH;
pub use record::{DatasetId, DatasetRecord};
pub use restore::{Overwrite, RestoreOptions, RestoreReport};
pub use stage::STAGE_JOBS;
pub use tree::{Entry, EntryKind, Tree};

/// Counters a long backup or restore updates as it goes, for a progress
/// display polling from another thread. Totals stay 0 when unknown.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files done.
    pub files: AtomicU64,
    /// Content bytes done.
    pub bytes: AtomicU64,
    /// Files to do, when known.
    pub total_files: AtomicU64,
    /// Bytes to do, when known.
    pub total_bytes: AtomicU64,
}

impl Progress {
    pub(crate) fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Path bytes for messages and JSON (lossy where not UTF-8).
pub fn display_path(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
