//! Dataset clones: a new dataset naming an existing tree, in O(1).
//!
//! Cloning a whole dataset adds one reference to its root tree; cloning a
//! directory inside one adds a reference to that directory's tree; cloning
//! a single file writes one small tree naming it. No data is read or
//! copied, and forgetting the original leaves the clone whole: the clone's
//! reference keeps the shared tree, and so everything below it, alive.

use crate::dataset::record::{next_id, put_record};
use crate::dataset::{DatasetRecord, EntryKind, Tree};
use crate::error::Result;
use crate::ids::BlobKind;
use crate::store::Store;

impl Store {
    /// Makes a dataset labelled `label` from `path` of the dataset `spec`
    /// (`""` or `/` for all of it). A whole clone copies the original's
    /// counts; a clone of a part counts its entries by walking its trees
    /// (metadata only).
    pub fn clone_dataset(&self, spec: &str, path: &str, label: &str) -> Result<DatasetRecord> {
        let started = std::time::Instant::now();
        // As in a backup, the session starts before anything is looked up,
        // so the delete job keeps what is found even if `spec` is forgotten
        // before the clone commits.
        let session = self.session()?;
        let source = self.dataset(spec)?;
        let whole = path.split('/').all(|c| c.is_empty() || c == ".");
        let mut record = DatasetRecord {
            label: Some(label.to_string()),
            parent: Some(source.id),
            bytes_added: 0,
            skipped: 0,
            expires_ns: None,
            time_ns: crate::clock::now_ns(),
            ..source.clone()
        };
        if !whole {
            let mut entry = self.lookup(&source, path)?;
            let (mut files, mut dirs, mut others, mut bytes) = (0, 0, 0, 0);
            self.walk(&source, path, &mut |_, e| {
                match e.kind {
                    EntryKind::File => {
                        files += 1;
                        bytes += e.size;
                    }
                    EntryKind::Dir => dirs += 1,
                    _ => others += 1,
                }
                Ok(())
            })?;
            record.sources = source.sources.iter().map(|s| format!("{s}:{}", path.trim_end_matches('/'))).collect();
            (record.files, record.others, record.logical_bytes) = (files, others, bytes);
            if entry.kind == EntryKind::Dir {
                record.dirs = dirs - 1;
                record.root = entry.blob.take().expect("a directory entry has a tree");
                record.root_meta = Some(entry);
            } else {
                let tree = Tree { entries: vec![entry] };
                record.dirs = dirs;
                record.root = session.write_metadata(BlobKind::Tree, tree.encode(), tree.children())?;
                record.root_meta = None;
            }
        }
        let (_, record) = session.commit(|commit| {
            record.id = next_id(commit)?;
            record.tid = commit.tid();
            record.seconds = started.elapsed().as_secs_f64();
            put_record(commit, &record)?; // with the reference on the root
            Ok(record)
        })?;
        Ok(record)
    }
}
