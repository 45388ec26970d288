//! The restore's walk of a dataset's trees, handed out in batches of
//! steps, so that a restore holds one batch of entries in memory and not
//! the whole dataset: an entry planned with its path takes about a
//! kilobyte by the time its file is written (measured: a restore of
//! 300,000 small files peaked at 313 MB when it planned them all at once),
//! so a share of ten million files would have needed gigabytes.
//!
//! Steps come in the trees' order, depth first, parents before children,
//! each directory's entries in name order. A directory has two steps:
//! [`Step::Dir`] where it is made, and [`Step::DirEnd`] after everything
//! under it, where its own metadata (mode, times) can go on once the batch
//! holding that step is written, since nothing is written into it after
//! that. What the planner keeps between batches is bounded by the trees'
//! shape, not their size: the walk's stack (the unvisited siblings of each
//! directory on the way down), the directories it is inside, and the first
//! name of each hard-link group (a restore must know where to link later
//! names to; one path per hard-linked file, as in every tool that restores
//! links).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::record::DatasetRecord;
use super::tree::{Entry, EntryKind};
use super::walk::{TreeBudget, TreeLimits};
use crate::error::{Error, Result};
use crate::store::Store;

/// Steps planned at a time. A restore's memory holds about a kilobyte per
/// step of its batch (16 MiB here); a larger batch sorts more files into
/// the order their chunks were stored (a frame is then decoded once for
/// more of its files, and a remote's containers are fetched in fewer,
/// longer ranges), and a smaller one waits more often for its slowest
/// file before the next batch starts. With frames of 512 KiB, 16,384
/// instead of 65,536 decoded 1-3% more frames, took the same time and
/// peaked 25-45 MiB lower (ARCHITECTURE.md, "A restore in batches").
pub const PLAN_BATCH: usize = 16_384;

/// One step of a restore, with the path relative to the target.
pub(super) enum Step {
    /// Make the directory.
    Dir(PathBuf),
    /// Everything under the directory has been planned: once this step's
    /// batch is written, its own metadata goes on.
    DirEnd(PathBuf, Entry),
    File(PathBuf, Entry),
    /// A later name of a hard-linked file, and the first name of its group.
    Link(PathBuf, PathBuf, Entry),
    Other(PathBuf, Entry),
}

impl Step {
    /// The entry the step restores (none for making a directory: its
    /// entry comes with its end).
    pub(super) fn entry(&self) -> Option<&Entry> {
        match self {
            Step::Dir(_) => None,
            Step::DirEnd(_, e) | Step::File(_, e) | Step::Link(_, _, e) | Step::Other(_, e) => Some(e),
        }
    }
}

/// A path to restore, found before anything is restored.
struct Start {
    /// Its ancestors below the target, as directories to make first.
    ancestors: Vec<(PathBuf, Entry)>,
    rel: PathBuf,
    entry: Entry,
    depth: usize,
}

/// A restore's walk, in progress.
pub(super) struct Planner<'a> {
    store: &'a Store,
    /// Paths not yet walked, the next one last.
    starts: Vec<Start>,
    /// Entries still to visit under the current path, with their depth
    /// (1 for the children of the dataset's top directory).
    stack: Vec<(PathBuf, Entry, usize)>,
    /// Directories made under the current path whose ends are not planned.
    open: Vec<(PathBuf, Entry, usize)>,
    /// Ancestors made for all paths; they end after the last path.
    ancestors: Vec<(PathBuf, Entry)>,
    /// The first name of each hard-link group, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    /// Depth and entries, against the limits.
    budget: TreeBudget,
}

impl<'a> Planner<'a> {
    /// A walk of `paths` of `dataset` (everything when empty). Every path
    /// is looked up now, so one that does not exist fails the restore
    /// before anything is written.
    pub(super) fn new(store: &'a Store, dataset: &DatasetRecord, paths: &[String]) -> Result<Planner<'a>> {
        let whole = [String::new()];
        let paths = if paths.is_empty() { &whole[..] } else { paths };
        let mut made: HashSet<PathBuf> = HashSet::new();
        let mut starts = Vec::with_capacity(paths.len());
        for path in paths {
            // One walk down: each ancestor becomes a directory to make, the last part the entry.
            let no_such = || Error::NoSuchPath { dataset: dataset.id.to_string(), path: path.to_string() };
            let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            let (mut rel, mut entry, mut ancestors) = (PathBuf::new(), dataset.root_entry(), Vec::new());
            for (i, part) in parts.iter().enumerate() {
                let tree = match (entry.kind, entry.blob) {
                    (EntryKind::Dir, Some(tree)) => store.tree(tree)?,
                    _ => return Err(no_such()),
                };
                entry = tree.get(part.as_bytes()).cloned().ok_or_else(no_such)?;
                if i + 1 < parts.len() {
                    rel.push(part);
                    if made.insert(rel.clone()) {
                        ancestors.push((rel.clone(), entry.clone()));
                    }
                }
            }
            if let Some(last) = parts.last() {
                rel.push(last);
            }
            starts.push(Start { ancestors, rel, entry, depth: parts.len() });
        }
        starts.reverse();
        Ok(Planner {
            store,
            starts,
            stack: Vec::new(),
            open: Vec::new(),
            ancestors: Vec::new(),
            links: HashMap::new(),
            budget: TreeBudget::new(TreeLimits::DEFAULT),
        })
    }

    /// Whether every step has been handed out.
    pub(super) fn is_done(&self) -> bool {
        self.starts.is_empty() && self.stack.is_empty() && self.open.is_empty() && self.ancestors.is_empty()
    }

    /// The next `max` steps or so (at least one; the ends of the
    /// directories a step leaves come with it); none once the walk is done.
    pub(super) fn next_batch(&mut self, max: usize) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        while steps.len() < max.max(1) && !self.is_done() {
            if let Some((rel, entry, depth)) = self.stack.pop() {
                self.end_dirs(depth, &mut steps);
                self.visit(rel, entry, depth, &mut steps)?;
            } else if let Some(start) = self.starts.pop() {
                self.end_dirs(0, &mut steps);
                for (rel, entry) in start.ancestors {
                    steps.push(Step::Dir(rel.clone()));
                    self.ancestors.push((rel, entry));
                }
                self.stack.push((start.rel, start.entry, start.depth));
            } else {
                self.end_dirs(0, &mut steps);
                // The ancestors of all paths, the deepest (last made) first.
                while let Some((rel, entry)) = self.ancestors.pop() {
                    steps.push(Step::DirEnd(rel, entry));
                }
            }
        }
        Ok(steps)
    }

    /// Ends the open directories at `depth` or deeper: the walk has left them.
    fn end_dirs(&mut self, depth: usize, steps: &mut Vec<Step>) {
        while self.open.last().is_some_and(|(_, _, d)| *d >= depth) {
            let (rel, entry, _) = self.open.pop().expect("checked above");
            steps.push(Step::DirEnd(rel, entry));
        }
    }

    /// Plans `entry` at `rel`; a directory's entries go on the stack, so
    /// a deep tree (real, or crafted) cannot overflow the thread's stack.
    /// The top directory of a whole dataset (`rel` empty) is the target
    /// itself, neither made nor ended here.
    fn visit(&mut self, rel: PathBuf, entry: Entry, depth: usize, steps: &mut Vec<Step>) -> Result<()> {
        match entry.kind {
            EntryKind::Dir => {
                let tree = entry.blob;
                if !rel.as_os_str().is_empty() {
                    steps.push(Step::Dir(rel.clone()));
                    self.open.push((rel.clone(), entry, depth));
                }
                let Some(tree) = tree else { return Ok(()) };
                let children = self.store.tree(tree)?.entries;
                self.budget.enter(tree, depth + 1, children.len())?;
                for child in children.into_iter().rev() {
                    let path = rel.join(OsStr::from_bytes(&child.name));
                    self.stack.push((path, child, depth + 1));
                }
            }
            EntryKind::File if entry.is_hardlinked() => {
                let key = (entry.dev, entry.inode);
                match self.links.get(&key) {
                    Some(first) => steps.push(Step::Link(rel, first.clone(), entry)),
                    None => {
                        self.links.insert(key, rel.clone());
                        steps.push(Step::File(rel, entry));
                    }
                }
            }
            EntryKind::File => steps.push(Step::File(rel, entry)),
            _ => steps.push(Step::Other(rel, entry)),
        }
        Ok(())
    }
}
