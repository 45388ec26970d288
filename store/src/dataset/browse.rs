//! Browsing datasets without restoring them: path lookup, listing, `find`,
//! `cat`, chunk sharing for `stat`, and `diff` (which skips every subtree
//! whose id is equal on both sides, so its cost follows what changed).

use std::io::Write;

use serde::Serialize;

use super::display_path;
use super::record::DatasetRecord;
use super::tree::{Entry, EntryKind, Tree};
use crate::content::root_piece;
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::ingest::extract;
use crate::store::Store;

/// The components of a path inside a dataset (`/`, `.` and empty parts ignored).
fn components(path: &str) -> impl Iterator<Item = &[u8]> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::as_bytes)
}

/// How a file's chunks are shared (`stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChunkUse {
    /// Data chunks in the file.
    pub chunks: u64,
    /// Of those, how many something else references too.
    pub shared: u64,
    /// Content-list pieces.
    pub pieces: u64,
}

/// What `diff` found at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second dataset.
    Added,
    /// Only in the first.
    Removed,
    /// Content (or kind, or link target) differs.
    Modified,
    /// Same content, different metadata.
    Metadata,
}

/// One difference between two datasets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What changed.
    pub change: ChangeKind,
    /// The path inside the datasets.
    pub path: String,
    /// Size in the first dataset.
    pub old_size: Option<u64>,
    /// Size in the second.
    pub new_size: Option<u64>,
}

impl Store {
    /// The entry at `path` in `dataset` (the top directory for `""` or `/`).
    pub fn lookup(&self, dataset: &DatasetRecord, path: &str) -> Result<Entry> {
        let mut entry = dataset.root_entry();
        for name in components(path) {
            let found = match (entry.kind, entry.blob) {
                (EntryKind::Dir, Some(tree)) => self.tree(tree)?.get(name).cloned(),
                _ => None,
            };
            entry =
                found.ok_or_else(|| Error::NoSuchPath { dataset: dataset.id.to_string(), path: path.to_string() })?;
        }
        Ok(entry)
    }

    /// The entries of the directory at `path`, or the entry itself if it is not one.
    pub fn list(&self, dataset: &DatasetRecord, path: &str) -> Result<Vec<Entry>> {
        let entry = self.lookup(dataset, path)?;
        match (entry.kind, entry.blob) {
            (EntryKind::Dir, Some(tree)) => Ok(self.tree(tree)?.entries),
            _ => Ok(vec![entry]),
        }
    }

    /// Calls `visit` with the path and entry of everything under `path`
    /// (itself included), depth first in name order.
    pub fn walk(
        &self,
        dataset: &DatasetRecord,
        path: &str,
        visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
    ) -> Result<()> {
        let entry = self.lookup(dataset, path)?;
        let mut start: Vec<u8> = components(path).collect::<Vec<_>>().join(&b'/');
        if start.is_empty() {
            start.push(b'.');
        }
        self.walk_entry(&mut start, &entry, visit)
    }

    fn walk_entry(
        &self,
        path: &mut Vec<u8>,
        entry: &Entry,
        visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
    ) -> Result<()> {
        visit(path, entry)?;
        if let (EntryKind::Dir, Some(tree)) = (entry.kind, entry.blob) {
            for child in self.tree(tree)?.entries {
                let len = path.len();
                path.push(b'/');
                path.extend_from_slice(&child.name);
                self.walk_entry(path, &child, visit)?;
                path.truncate(len);
            }
        }
        Ok(())
    }

    /// Writes the file at `path` to `out`; returns its length.
    pub fn cat(&self, dataset: &DatasetRecord, path: &str, out: &mut dyn Write) -> Result<u64> {
        let entry = self.lookup(dataset, path)?;
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(format!("'{path}' is not a regular file; list it with `cairn ls`")));
        }
        match entry.blob {
            Some(root) => extract(self, root, entry.size, out, path, &|_| {}),
            None if entry.size == 0 => Ok(0),
            None => Err(Error::WrongLength { what: path.to_string(), expected: entry.size, actual: 0, over: false }),
        }
    }

    /// Counts a file's chunks and how many of them are shared: a chunk is
    /// shared if it, or a content-list piece above it, has more than one
    /// reference (a piece shared by two versions shares all its chunks).
    pub fn chunk_use(&self, entry: &Entry) -> Result<ChunkUse> {
        let mut counts = ChunkUse::default();
        if let (EntryKind::File, Some(root)) = (entry.kind, entry.blob) {
            let refs = self.index().blob(&root)?.map_or(0, |e| e.refs);
            self.count_piece(root, refs > 1, &mut counts)?;
        }
        Ok(counts)
    }

    fn count_piece(&self, id: BlobId, shared: bool, counts: &mut ChunkUse) -> Result<()> {
        let piece = root_piece(self, id)?;
        // A one-chunk file has no piece of its own.
        counts.pieces += u64::from(piece.entries.first().is_none_or(|e| e.id != id));
        let ids = piece.children();
        let entries = self.index().blobs(&ids)?;
        for (child, entry) in ids.into_iter().zip(entries) {
            let child_shared = shared || entry.is_some_and(|e| e.refs > 1);
            if piece.level == 0 {
                counts.chunks += 1;
                counts.shared += u64::from(child_shared);
            } else {
                self.count_piece(child, child_shared, counts)?;
            }
        }
        Ok(())
    }

    /// What differs between `old` and `new` under `path`.
    pub fn diff(&self, old: &DatasetRecord, new: &DatasetRecord, path: &str) -> Result<Vec<Change>> {
        let a = self.lookup(old, path).ok();
        let b = self.lookup(new, path).ok();
        if a.is_none() && b.is_none() {
            return Err(Error::NoSuchPath { dataset: format!("{} or {}", old.id, new.id), path: path.to_string() });
        }
        let mut changes = Vec::new();
        let prefix: Vec<u8> = components(path).collect::<Vec<_>>().join(&b'/');
        self.diff_entries(&prefix, a.as_ref(), b.as_ref(), &mut changes)?;
        // The directory asked about is the frame, not a change in it.
        let top = display_path(&absolute(&prefix));
        changes.retain(|c| !(c.change == ChangeKind::Metadata && c.path == top));
        Ok(changes)
    }

    fn diff_entries(&self, path: &[u8], a: Option<&Entry>, b: Option<&Entry>, out: &mut Vec<Change>) -> Result<()> {
        let size = |e: &Entry| (e.kind == EntryKind::File).then_some(e.size);
        let change = |change, a: Option<&Entry>, b: Option<&Entry>| Change {
            change,
            path: display_path(&absolute(path)),
            old_size: a.and_then(size),
            new_size: b.and_then(size),
        };
        match (a, b) {
            (None, None) => {}
            (Some(a), Some(b)) if a.kind == EntryKind::Dir && b.kind == EntryKind::Dir => {
                if a.blob != b.blob {
                    self.diff_trees(path, a.blob, b.blob, out)?;
                }
                if !same_metadata(a, b) {
                    out.push(change(ChangeKind::Metadata, Some(a), Some(b)));
                }
            }
            (Some(a), Some(b)) if a.kind == b.kind => {
                if a.blob != b.blob || a.size != b.size || a.target != b.target || a.rdev != b.rdev {
                    out.push(change(ChangeKind::Modified, Some(a), Some(b)));
                } else if !same_metadata(a, b) {
                    out.push(change(ChangeKind::Metadata, Some(a), Some(b)));
                }
            }
            (a, b) => {
                if let Some(a) = a {
                    self.diff_one_side(path, a, ChangeKind::Removed, out)?;
                }
                if let Some(b) = b {
                    self.diff_one_side(path, b, ChangeKind::Added, out)?;
                }
            }
        }
        Ok(())
    }

    /// Reports `entry` and everything under it as added or removed.
    fn diff_one_side(&self, path: &[u8], entry: &Entry, kind: ChangeKind, out: &mut Vec<Change>) -> Result<()> {
        let size = (entry.kind == EntryKind::File).then_some(entry.size);
        let (old_size, new_size) = if kind == ChangeKind::Added { (None, size) } else { (size, None) };
        out.push(Change { change: kind, path: display_path(&absolute(path)), old_size, new_size });
        if let (EntryKind::Dir, Some(tree)) = (entry.kind, entry.blob) {
            for child in self.tree(tree)?.entries {
                self.diff_one_side(&join(path, &child.name), &child, kind, out)?;
            }
        }
        Ok(())
    }

    fn diff_trees(&self, path: &[u8], a: Option<BlobId>, b: Option<BlobId>, out: &mut Vec<Change>) -> Result<()> {
        let load = |id: Option<BlobId>| id.map_or(Ok(Tree::default()), |id| self.tree(id));
        let (a, b) = (load(a)?.entries, load(b)?.entries);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (x, y) = match order {
                std::cmp::Ordering::Less => (a.get(i), None),
                std::cmp::Ordering::Greater => (None, b.get(j)),
                std::cmp::Ordering::Equal => (a.get(i), b.get(j)),
            };
            let name = x.or(y).expect("one side has an entry").name.as_slice();
            self.diff_entries(&join(path, name), x, y, out)?;
            i += usize::from(x.is_some());
            j += usize::from(y.is_some());
        }
        Ok(())
    }
}

/// A path inside a dataset as users write it: `/a/b` (`/` for the top).
fn absolute(path: &[u8]) -> Vec<u8> {
    [b"/", path].concat()
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    if path.is_empty() { name.to_vec() } else { [path, b"/", name].concat() }
}

/// Whether two entries carry the same restorable metadata (atime aside:
/// reading a file changes it, and that is not a change worth listing).
fn same_metadata(a: &Entry, b: &Entry) -> bool {
    (a.mode, a.uid, a.gid, a.mtime_ns, &a.xattrs) == (b.mode, b.uid, b.gid, b.mtime_ns, &b.xattrs)
}
