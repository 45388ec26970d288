//! Browsing datasets without restoring them: path lookup, listing, `find`,
//! `cat`, chunk sharing for `stat`, and `diff` (which skips every subtree
//! whose id is equal on both sides, so its cost follows what changed).

use std::io::Write;

use serde::Serialize;

use super::display_path;
use super::record::DatasetRecord;
use super::tree::{Entry, EntryKind};
use super::walk::{TreeBudget, TreeLimits, subtree, walk_tree};
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
    /// (itself included), depth first in name order. Iterative and bounded
    /// (`walk.rs`): a crafted dataset gets an error naming a tree, never a
    /// stack overflow or a walk without end.
    pub fn walk(
        &self,
        dataset: &DatasetRecord,
        path: &str,
        visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
    ) -> Result<()> {
        self.walk_within(dataset, path, TreeLimits::DEFAULT, visit)
    }

    /// [`Store::walk`] within `limits`.
    pub(crate) fn walk_within(
        &self,
        dataset: &DatasetRecord,
        path: &str,
        limits: TreeLimits,
        visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
    ) -> Result<()> {
        let entry = self.lookup(dataset, path)?;
        let mut start: Vec<u8> = components(path).collect::<Vec<_>>().join(&b'/');
        if start.is_empty() {
            start.push(b'.');
        }
        walk_tree(&mut |id| self.tree(id), limits, &mut start, &entry, visit)
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
            // Every chunk holds at least a byte, so a list naming more chunks
            // than the file has bytes is crafted (pieces naming one piece
            // over and over): stop there rather than count them all.
            self.count_piece(root, refs > 1, &mut counts, None, entry.size)?;
        }
        Ok(counts)
    }

    /// Recursive, but only as deep as content lists go: each step must go
    /// one level down, and levels are bytes, so at most 256 frames.
    fn count_piece(
        &self,
        id: BlobId,
        shared: bool,
        counts: &mut ChunkUse,
        above: Option<u8>,
        max_chunks: u64,
    ) -> Result<()> {
        let piece = root_piece(self, id)?;
        if let Some(above) = above
            && piece.level.checked_add(1) != Some(above)
        {
            return Err(Error::Malformed {
                what: "content list",
                blob: id,
                reason: format!("level {} under level {above}", piece.level),
            });
        }
        // A one-chunk file has no piece of its own.
        counts.pieces += u64::from(piece.entries.first().is_none_or(|e| e.id != id));
        let ids = piece.children();
        let entries = self.index().blobs(&ids)?;
        for (child, entry) in ids.into_iter().zip(entries) {
            let child_shared = shared || entry.is_some_and(|e| e.refs > 1);
            if piece.level == 0 {
                counts.chunks += 1;
                counts.shared += u64::from(child_shared);
                if counts.chunks > max_chunks.max(1) {
                    return Err(Error::Malformed {
                        what: "content list",
                        blob: id,
                        reason: format!("names more chunks than the file's {max_chunks} bytes"),
                    });
                }
            } else {
                self.count_piece(child, child_shared, counts, Some(piece.level), max_chunks)?;
            }
        }
        Ok(())
    }

    /// What differs between `old` and `new` under `path`.
    pub fn diff(&self, old: &DatasetRecord, new: &DatasetRecord, path: &str) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        self.diff_each(old, new, path, &mut |change| {
            changes.push(change);
            Ok(())
        })?;
        Ok(changes)
    }

    /// Calls `each` with what differs between `old` and `new` under
    /// `path`, in order, as it is found: memory holds the walk's stack,
    /// not the changes (two datasets of ten million files each, every file
    /// changed, are ten million changes).
    pub fn diff_each(
        &self,
        old: &DatasetRecord,
        new: &DatasetRecord,
        path: &str,
        each: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        self.diff_within(old, new, path, TreeLimits::DEFAULT, each)
    }

    /// [`Store::diff_each`] within `limits`. Iterative, like [`walk_tree`]:
    /// a stack of comparisons still to make, each with its depth, and of
    /// changes held back until everything under them is reported (a
    /// directory's own metadata change comes after its contents').
    pub(crate) fn diff_within(
        &self,
        old: &DatasetRecord,
        new: &DatasetRecord,
        path: &str,
        limits: TreeLimits,
        each: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        let a = self.lookup(old, path).ok();
        let b = self.lookup(new, path).ok();
        if a.is_none() && b.is_none() {
            return Err(Error::NoSuchPath { dataset: format!("{} or {}", old.id, new.id), path: path.to_string() });
        }
        let prefix: Vec<u8> = components(path).collect::<Vec<_>>().join(&b'/');
        // The directory asked about is the frame, not a change in it.
        let top = display_path(&absolute(&prefix));
        let mut emit = |change: Change| match change.change == ChangeKind::Metadata && change.path == top {
            true => Ok(()),
            false => each(change),
        };
        let mut budget = TreeBudget::new(limits);
        let mut stack = vec![Step::Compare { path: prefix.clone(), a, b, depth: 0 }];
        while let Some(step) = stack.pop() {
            match step {
                Step::Emit(change) => emit(change)?,
                Step::Compare { path, a, b, depth } => {
                    self.diff_step(path, a, b, depth, &mut budget, &mut stack, &mut emit)?
                }
                Step::OneSide { path, entry, kind, depth } => {
                    emit(one_side_change(&path, &entry, kind))?;
                    if let Some(tree) = subtree(&entry) {
                        let entries = self.tree(tree)?.entries;
                        budget.enter(tree, depth + 1, entries.len())?;
                        // Pushed last first, so they come off the stack in name order.
                        for child in entries.into_iter().rev() {
                            let path = join(&path, &child.name);
                            stack.push(Step::OneSide { path, entry: child, kind, depth: depth + 1 });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Compares one path's entries: reports a change now, or pushes what
    /// to compare under it.
    #[allow(clippy::too_many_arguments)]
    fn diff_step(
        &self,
        path: Vec<u8>,
        a: Option<Entry>,
        b: Option<Entry>,
        depth: usize,
        budget: &mut TreeBudget,
        stack: &mut Vec<Step>,
        out: &mut dyn FnMut(Change) -> Result<()>,
    ) -> Result<()> {
        let size = |e: &Entry| (e.kind == EntryKind::File).then_some(e.size);
        let change = |change, a: &Entry, b: &Entry| Change {
            change,
            path: display_path(&absolute(&path)),
            old_size: size(a),
            new_size: size(b),
        };
        match (a, b) {
            (None, None) => {}
            (Some(a), Some(b)) if a.kind == EntryKind::Dir && b.kind == EntryKind::Dir => {
                if !same_metadata(&a, &b) {
                    // Held back until the comparisons pushed below are done.
                    stack.push(Step::Emit(change(ChangeKind::Metadata, &a, &b)));
                }
                if a.blob != b.blob {
                    let mut load = |id: Option<BlobId>| -> Result<Vec<Entry>> {
                        let Some(id) = id else { return Ok(Vec::new()) };
                        let entries = self.tree(id)?.entries;
                        budget.enter(id, depth + 1, entries.len())?;
                        Ok(entries)
                    };
                    let (a, b) = (load(a.blob)?, load(b.blob)?);
                    let mut pairs = Vec::new();
                    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
                    loop {
                        let order = match (a.peek(), b.peek()) {
                            (Some(x), Some(y)) => x.name.cmp(&y.name),
                            (Some(_), None) => std::cmp::Ordering::Less,
                            (None, Some(_)) => std::cmp::Ordering::Greater,
                            (None, None) => break,
                        };
                        let (x, y) = match order {
                            std::cmp::Ordering::Less => (a.next(), None),
                            std::cmp::Ordering::Greater => (None, b.next()),
                            std::cmp::Ordering::Equal => (a.next(), b.next()),
                        };
                        let Some(name) = x.as_ref().or(y.as_ref()).map(|e| join(&path, &e.name)) else { break };
                        pairs.push(Step::Compare { path: name, a: x, b: y, depth: depth + 1 });
                    }
                    stack.extend(pairs.into_iter().rev());
                }
            }
            (Some(a), Some(b)) if a.kind == b.kind => {
                if a.blob != b.blob || a.size != b.size || a.target != b.target || a.rdev != b.rdev {
                    out(change(ChangeKind::Modified, &a, &b))?;
                } else if !same_metadata(&a, &b) {
                    out(change(ChangeKind::Metadata, &a, &b))?;
                }
            }
            (a, b) => {
                // Everything removed under `a`, then everything added under `b`.
                if let Some(b) = b {
                    stack.push(Step::OneSide { path: path.clone(), entry: b, kind: ChangeKind::Added, depth });
                }
                if let Some(a) = a {
                    stack.push(Step::OneSide { path, entry: a, kind: ChangeKind::Removed, depth });
                }
            }
        }
        Ok(())
    }
}

/// Work left for [`Store::diff_within`].
enum Step {
    /// Compare the entries at `path` (either may be missing).
    Compare { path: Vec<u8>, a: Option<Entry>, b: Option<Entry>, depth: usize },
    /// Report `entry` and everything under it as added or removed.
    OneSide { path: Vec<u8>, entry: Entry, kind: ChangeKind, depth: usize },
    /// Report a change held back until the steps above it were done.
    Emit(Change),
}

/// `entry` at `path` reported as added or removed.
fn one_side_change(path: &[u8], entry: &Entry, kind: ChangeKind) -> Change {
    let size = (entry.kind == EntryKind::File).then_some(entry.size);
    let (old_size, new_size) = if kind == ChangeKind::Added { (None, size) } else { (size, None) };
    Change { change: kind, path: display_path(&absolute(path)), old_size, new_size }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::record::{next_id, put_record};
    use crate::dataset::tree::Tree;
    use crate::ids::{BlobKind, Tid};
    use crate::{StoreOptions, WriteSession};

    fn dir_entry(name: &str, tree: BlobId) -> Entry {
        Entry::bare(name.as_bytes(), EntryKind::Dir, 0, Some(tree))
    }

    fn write_tree(session: &WriteSession, entries: Vec<Entry>) -> BlobId {
        let tree = Tree { entries };
        session.write_metadata(BlobKind::Tree, tree.encode(), tree.children()).unwrap()
    }

    fn commit_dataset(session: WriteSession, root: BlobId) -> DatasetRecord {
        let (_, record) = session
            .commit(|commit| {
                let record = DatasetRecord::bare(next_id(commit)?, root, 0, "/bomb", Tid(0));
                put_record(commit, &record)?;
                Ok(record)
            })
            .unwrap();
        record
    }

    /// Regression (issue 15): 24 trees, each of two directories naming the
    /// next, are 2^25 paths; `walk` and `diff` followed every one. With
    /// limits a test can reach, both stop at the entry limit, naming a tree.
    #[test]
    fn trees_naming_one_subtree_over_and_over_stop_at_the_entry_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("store"), &StoreOptions::default()).unwrap();
        let session = store.session().unwrap();
        let mut below = write_tree(&session, Vec::new());
        for _ in 0..24 {
            below = write_tree(&session, vec![dir_entry("a", below), dir_entry("b", below)]);
        }
        let bomb = commit_dataset(session, below);
        let session = store.session().unwrap();
        let empty = write_tree(&session, Vec::new());
        let empty = commit_dataset(session, empty);

        let limits = TreeLimits { max_entries: 100_000, ..TreeLimits::DEFAULT };
        let mut visited = 0u64;
        let error = store.walk_within(&bomb, "", limits, &mut |_, _| {
            visited += 1;
            Ok(())
        });
        let error = error.unwrap_err().to_string();
        assert!(error.contains("tree") && error.contains("more than 100000 entries"), "{error}");
        assert!(visited <= 100_001, "{visited}");
        let error = store.diff_within(&empty, &bomb, "", limits, &mut |_| Ok(())).unwrap_err().to_string();
        assert!(error.contains("more than 100000 entries"), "{error}");
        let error = store.diff_within(&bomb, &empty, "/a/b", limits, &mut |_| Ok(())).unwrap_err().to_string();
        assert!(error.contains("more than 100000 entries"), "{error}");
    }
}
