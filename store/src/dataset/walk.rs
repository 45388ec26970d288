//! Descending a dataset's trees without trusting them: an explicit stack
//! instead of recursion, and limits on depth and on entries visited.
//!
//! Trees come from a store or a remote that someone else may have written.
//! Two shapes are dangerous to a naive recursive walk: a chain of trees
//! thousands of levels deep (recursion overflows the thread's stack and
//! aborts the process), and a few small trees whose entries all name the
//! same subtree (content addressing makes this a DAG, not a cycle, but a
//! walk that follows every name visits 2^k entries for k trees of two
//! entries each). So every descent goes through a [`TreeBudget`], which
//! fails, naming the tree, at [`MAX_TREE_DEPTH`] levels or after
//! [`MAX_TREE_ENTRIES`] entries, and walks keep their own stack on the heap.

use super::tree::{Entry, EntryKind, Tree};
use crate::error::{Error, Result};
use crate::ids::BlobId;

/// Deepest nesting of directories a walk follows below where it starts.
///
/// A real path is at most `PATH_MAX` (4096) bytes, and every level takes a
/// name and a `/`, so a backup (which opens files by their full path) never
/// stores more than 2048 levels; a 2,000-level tree must and does walk. Twice
/// that leaves room for datasets of several sources and for paths made with
/// `openat` by other tools, and still bounds the heap a walk's stack takes.
pub const MAX_TREE_DEPTH: usize = 4096;

/// Most entries one walk visits, counting an entry once per path it is
/// reached by. 2^32 is ext4's and XFS's limit on inodes in one file
/// system (hard links aside); a walk past it is a tree that names the same
/// subtrees over and over, which no backup writes.
pub const MAX_TREE_ENTRIES: u64 = 1 << 32;

/// Limits on one walk; [`TreeLimits::DEFAULT`] everywhere but tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Deepest level followed (1 = the children of the starting directory).
    pub max_depth: usize,
    /// Most entries visited in all.
    pub max_entries: u64,
}

impl TreeLimits {
    /// [`MAX_TREE_DEPTH`] and [`MAX_TREE_ENTRIES`].
    pub const DEFAULT: TreeLimits = TreeLimits { max_depth: MAX_TREE_DEPTH, max_entries: MAX_TREE_ENTRIES };
}

impl Default for TreeLimits {
    fn default() -> TreeLimits {
        TreeLimits::DEFAULT
    }
}

/// What one walk has used of its [`TreeLimits`]. A walker calls
/// [`TreeBudget::enter`] for every tree it descends into, before it visits
/// the tree's entries.
#[derive(Debug)]
pub struct TreeBudget {
    limits: TreeLimits,
    entries: u64,
}

impl TreeBudget {
    /// A fresh budget.
    pub fn new(limits: TreeLimits) -> TreeBudget {
        TreeBudget { limits, entries: 0 }
    }

    /// Accounts for descending into `tree`, whose entries will sit at
    /// `depth` (1 for the children of the starting directory) and which
    /// holds `n_entries`. Fails, naming the tree, past either limit.
    pub fn enter(&mut self, tree: BlobId, depth: usize, n_entries: usize) -> Result<()> {
        let malformed = |reason: String| Error::Malformed { what: "tree", blob: tree, reason };
        if depth > self.limits.max_depth {
            return Err(malformed(format!(
                "directories nest more than {} deep; no backup stores such a tree, so the dataset is damaged or crafted",
                self.limits.max_depth
            )));
        }
        self.entries = self.entries.saturating_add(n_entries as u64);
        if self.entries > self.limits.max_entries {
            return Err(malformed(format!(
                "the walk reaches more than {} entries through it; the trees name the same subtrees over and over, \
                 which no backup writes, so the dataset is damaged or crafted",
                self.limits.max_entries
            )));
        }
        Ok(())
    }
}

/// The subtree an entry descends into, if it is a directory.
pub fn subtree(entry: &Entry) -> Option<BlobId> {
    match (entry.kind, entry.blob) {
        (EntryKind::Dir, Some(tree)) => Some(tree),
        _ => None,
    }
}

/// Calls `visit` with the path and entry of `entry` and of everything
/// under it, depth first in name order; child paths are the parent's path,
/// `/` and the name. `load` reads a tree (`Store::tree`). Iterative, and
/// within `limits`; `path` is as it was when this returns `Ok`.
pub fn walk_tree(
    load: &mut dyn FnMut(BlobId) -> Result<Tree>,
    limits: TreeLimits,
    path: &mut Vec<u8>,
    entry: &Entry,
    visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
) -> Result<()> {
    /// A directory being walked: its entries still to visit, and the
    /// length of its own path (children's paths are cut back to it).
    struct Frame {
        entries: std::vec::IntoIter<Entry>,
        path_len: usize,
    }
    let mut budget = TreeBudget::new(limits);
    let start_len = path.len();
    let mut stack: Vec<Frame> = Vec::new();
    visit(path, entry)?;
    if let Some(id) = subtree(entry) {
        let tree = load(id)?;
        budget.enter(id, 1, tree.entries.len())?;
        stack.push(Frame { entries: tree.entries.into_iter(), path_len: start_len });
    }
    while let Some(frame) = stack.last_mut() {
        path.truncate(frame.path_len);
        let Some(child) = frame.entries.next() else {
            stack.pop();
            continue;
        };
        path.push(b'/');
        path.extend_from_slice(&child.name);
        visit(path, &child)?;
        if let Some(id) = subtree(&child) {
            let depth = stack.len() + 1;
            let tree = load(id)?;
            budget.enter(id, depth, tree.entries.len())?;
            stack.push(Frame { entries: tree.entries.into_iter(), path_len: path.len() });
        }
    }
    path.truncate(start_len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(name: &str, subtree: Option<BlobId>) -> Entry {
        let kind = if subtree.is_some() { EntryKind::Dir } else { EntryKind::File };
        Entry::bare(name.as_bytes(), kind, 0, subtree)
    }

    /// A chain of `depth` directories `d/d/d/...`, the last holding a file.
    fn chain(depth: usize) -> (HashMap<BlobId, Tree>, Entry) {
        let mut trees = HashMap::new();
        let mut below = Tree { entries: vec![entry("f", None)] };
        for level in 0..depth {
            let id = BlobId::of(&level.to_le_bytes());
            trees.insert(id, below);
            below = Tree { entries: vec![entry("d", Some(id))] };
        }
        let top = BlobId::of(b"top");
        trees.insert(top, below);
        (trees, entry("top", Some(top)))
    }

    fn walk(trees: &HashMap<BlobId, Tree>, top: &Entry, limits: TreeLimits) -> Result<Vec<Vec<u8>>> {
        let mut seen = Vec::new();
        let mut load = |id: BlobId| -> Result<Tree> { Ok(trees[&id].clone()) };
        walk_tree(&mut load, limits, &mut b".".to_vec(), top, &mut |path: &[u8], _: &Entry| {
            seen.push(path.to_vec());
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn visits_in_order_with_paths() {
        let sub = BlobId::of(b"sub");
        let top = BlobId::of(b"top");
        let trees = HashMap::from([
            (sub, Tree { entries: vec![entry("x", None)] }),
            (top, Tree { entries: vec![entry("a", Some(sub)), entry("b", None), entry("c", Some(sub))] }),
        ]);
        let seen = walk(&trees, &entry("top", Some(top)), TreeLimits::DEFAULT).unwrap();
        let seen: Vec<&str> = seen.iter().map(|p| std::str::from_utf8(p).unwrap()).collect();
        assert_eq!(seen, [".", "./a", "./a/x", "./b", "./c", "./c/x"]);
    }

    #[test]
    fn a_real_depth_walks_and_a_deeper_chain_fails_without_overflowing() {
        // 2,048 levels: the deepest a 4096-byte path holds.
        let (trees, top) = chain(2048);
        assert_eq!(walk(&trees, &top, TreeLimits::DEFAULT).unwrap().len(), 2048 + 2);
        // 100,000 levels would overflow any thread's stack if recursed.
        let (trees, top) = chain(100_000);
        let error = walk(&trees, &top, TreeLimits::DEFAULT).unwrap_err().to_string();
        assert!(error.contains("nest more than 4096"), "{error}");
    }

    #[test]
    fn a_tree_naming_one_subtree_over_and_over_fails_at_the_entry_limit() {
        // 40 trees of two entries each naming the next: 2^40 paths.
        let mut trees = HashMap::new();
        let mut below = BlobId::of(b"leaf");
        trees.insert(below, Tree { entries: vec![entry("f", None)] });
        for level in 0..40u32 {
            let id = BlobId::of(&level.to_le_bytes());
            trees.insert(id, Tree { entries: vec![entry("a", Some(below)), entry("b", Some(below))] });
            below = id;
        }
        let limits = TreeLimits { max_entries: 1 << 20, ..TreeLimits::DEFAULT };
        let error = walk(&trees, &entry("top", Some(below)), limits).unwrap_err().to_string();
        assert!(error.contains("more than 1048576 entries"), "{error}");
    }
}
