//! `restore`: puts a dataset (or parts of it) back under a target directory.
//!
//! A plan is made first (one walk of the trees), then carried out:
//! directories in order, files in parallel (rayon, every chunk checked
//! against its id), hard links, then directory metadata deepest first (so
//! writing files does not disturb restored directory times).
//!
//! Safety: every name was checked when its tree was decoded (one path
//! component, no `..`), so each restored path is the target plus those
//! components. Nothing restored is followed: a directory position that
//! holds anything but a real directory (a symlink planted to redirect the
//! restore, say) is replaced or skipped, never entered, and files are
//! created with `O_NOFOLLOW` after removing what was there.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::Progress;
use super::fsmeta::{Names, Target, apply, make_special};
use super::record::DatasetRecord;
use super::tree::{Entry, EntryKind};
use crate::content::{ContentEntry, ContentReader, Piece};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use crate::index::IndexEntry;
use crate::ingest::{check_length, read_chunks};
use crate::store::Store;

/// Files restored at once from a local store, per core.
const LOCAL_RESTORE_THREADS_PER_CORE: usize = 3;
/// Files restored at once from a store that reads from a remote.
const REMOTE_RESTORE_THREADS: usize = 16;
/// Content fetched ahead from a remote, per window of files.
const PREFETCH_WINDOW: u64 = 32 << 20;

impl Store {
    /// Files in the order their first chunks are stored, so that a window
    /// of them needs long runs of adjacent records (a backup interleaves
    /// the files it reads at once, so directory order would need many
    /// short ones).
    fn in_stored_order<'a>(&self, mut files: Vec<(&'a PathBuf, &'a Entry)>) -> Vec<(&'a PathBuf, &'a Entry)> {
        let roots: Vec<BlobId> = files.iter().filter_map(|(_, e)| e.blob).collect();
        self.fetch_remote(&roots);
        let first: HashMap<BlobId, (u64, u64)> = roots
            .par_iter()
            .filter_map(|root| {
                let chunk = ContentReader::new(self, *root).ok()?.next_chunk().ok()??;
                let entry = self.entry(&chunk.id).ok()?;
                Some((*root, (entry.container.0, entry.offset)))
            })
            .collect();
        files.sort_by_key(|(_, entry)| entry.blob.and_then(|root| first.get(&root).copied()).unwrap_or((0, 0)));
        files
    }
}

/// Files whose chunks are looked up together.
const LOCATE_WINDOW: usize = 512;

/// A file's chunks and where each is, found before the file is written.
type Located = Vec<(ContentEntry, IndexEntry)>;

impl Store {
    /// Finds where the chunks of `files` are, with two sorted batched
    /// lookups for the whole window: their roots, then the chunks their
    /// roots list. Files whose content is deeper than one piece, or whose
    /// content cannot be read here, get `None` and are read the usual way
    /// (which reports any damage for the file).
    fn locate(&self, files: &[(&PathBuf, &Entry)]) -> Vec<Option<Located>> {
        let entries = |ids: &mut Vec<BlobId>| -> HashMap<BlobId, IndexEntry> {
            ids.sort_unstable();
            ids.dedup();
            let found = self.index().blobs(ids).unwrap_or_default();
            ids.iter().zip(found).filter_map(|(id, e)| e.filter(|e| !e.is_orphan()).map(|e| (*id, e))).collect()
        };
        let mut roots: Vec<BlobId> = files.iter().filter_map(|(_, e)| e.blob).collect();
        let roots = entries(&mut roots);
        // Each file's chunk list: its root itself (one chunk), or the
        // entries of its root piece when that lists chunks.
        let lists: Vec<Option<Vec<ContentEntry>>> = files
            .par_iter()
            .map(|(_, file)| {
                let root = file.blob?;
                let entry = *roots.get(&root)?;
                if entry.kind == BlobKind::Data {
                    return Some(vec![ContentEntry { id: root, len: entry.raw_len.into() }]);
                }
                let piece = Piece::decode(root, &self.read_located(&root, entry).ok()?).ok()?;
                (piece.level == 0).then_some(piece.entries)
            })
            .collect();
        let mut chunks: Vec<BlobId> = lists.iter().flatten().flatten().map(|c| c.id).collect();
        let chunks = entries(&mut chunks);
        lists.into_iter().map(|list| list?.into_iter().map(|c| Some((c, *chunks.get(&c.id)?))).collect()).collect()
    }
}

/// Consecutive runs of files holding about `bytes` of content (at least
/// one file each).
fn windows<'a, 'b>(files: &'a [(&'b PathBuf, &'b Entry)], bytes: u64) -> Vec<&'a [(&'b PathBuf, &'b Entry)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, entry)) in files.iter().enumerate() {
        if size > 0 && size + entry.size > bytes {
            out.push(&files[start..i]);
            (start, size) = (i, 0);
        }
        size += entry.size;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// What to do about a path that exists already in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Leave it, and say so.
    #[default]
    Never,
    /// Replace it unless it is a file with the same content (same size and
    /// mtime, or the same chunks); metadata is put back either way.
    IfChanged,
    /// Replace it.
    Always,
}

/// How to restore.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Existing paths in the target.
    pub overwrite: Overwrite,
    /// Only count what would be done.
    pub dry_run: bool,
    /// Restore owners (only root can).
    pub owners: bool,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// Files whose content was written.
    pub files_written: u64,
    /// Existing files found identical and kept.
    pub files_unchanged: u64,
    /// Existing paths left alone (`--overwrite never`).
    pub skipped_existing: u64,
    /// Directories.
    pub dirs: u64,
    /// Hard links made to files restored earlier in the same run.
    pub hardlinks: u64,
    /// Symlinks, fifos and devices.
    pub others: u64,
    /// Content bytes written.
    pub bytes_written: u64,
    /// Files not restored because blobs they need are damaged or missing
    /// (each is listed in `problems`; no partial file is left).
    pub files_failed: u64,
    /// Metadata that could not be put back, or paths that could not be restored.
    pub problems: Vec<String>,
}

/// One step of a restore, with the path relative to the target.
enum Step {
    Dir(PathBuf, Entry),
    File(PathBuf, Entry),
    Link(PathBuf, PathBuf),
    Other(PathBuf, Entry),
}

/// Blocks of zeros at this granularity (and alignment) become holes.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];
const BATCH_CHUNKS: usize = 128;

impl Store {
    /// Restores `paths` of `dataset` (everything when empty) under `target`.
    pub fn restore(
        &self,
        dataset: &DatasetRecord,
        paths: &[String],
        target: &Path,
        options: &RestoreOptions,
        progress: &Progress,
    ) -> Result<RestoreReport> {
        let steps = self.plan(dataset, paths)?;
        let (files, bytes) = steps.iter().fold((0, 0), |(f, b), s| match s {
            Step::File(_, e) => (f + 1, b + e.size),
            _ => (f, b),
        });
        progress.total_files.store(files, Ordering::Relaxed);
        progress.total_bytes.store(bytes, Ordering::Relaxed);
        let mut report = RestoreReport::default();
        if options.dry_run {
            for step in &steps {
                match step {
                    Step::Dir(..) => report.dirs += 1,
                    Step::File(path, entry) => match std::fs::symlink_metadata(target.join(path)) {
                        Ok(_) if options.overwrite == Overwrite::Never => report.skipped_existing += 1,
                        _ => {
                            report.files_written += 1;
                            report.bytes_written += entry.size;
                        }
                    },
                    Step::Link(..) => report.hardlinks += 1,
                    Step::Other(..) => report.others += 1,
                }
            }
            return Ok(report);
        }
        std::fs::create_dir_all(target).map_err(|e| Error::io("creating the restore target", target, e))?;
        let run = Run {
            store: self,
            target,
            options,
            names: Names::default(),
            progress,
            problems: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            blocked: Mutex::new(Vec::new()),
        };
        // Directories, in order (parents first).
        let mut dirs = Vec::new();
        for step in &steps {
            if let Step::Dir(path, entry) = step
                && run.make_dir(path)?
            {
                dirs.push((path, entry));
            }
        }
        report.dirs = dirs.len() as u64;
        // Files, in parallel; each checks every chunk.
        let files: Vec<(&PathBuf, &Entry)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::File(path, entry) => Some((path, entry)),
                _ => None,
            })
            .collect();
        let write_files = |files: &[(&PathBuf, &Entry)], located: Vec<Option<Located>>| {
            files.par_iter().zip(located).try_for_each(|((path, entry), located)| {
                match run.file(path, entry, located) {
                    // A damaged blob costs the files that use it, not the restore.
                    Err(e) if e.is_damage() => {
                        run.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = std::fs::remove_file(target.join(path));
                        run.problem(&target.join(path), format!("not restored: {e}"));
                        Ok(())
                    }
                    other => other,
                }
            })
        };
        match self.files().remote() {
            // More files at once than cores: each waits in turn for its
            // container's bytes from a cold disk and for the file system,
            // and meanwhile another can use the core (measured on 2 cores:
            // 6 threads restore a cold 18,652-file tree about 10% faster than 2).
            // Windows of files have their chunks looked up together (sorted
            // batches: a lookup per file cost a fifth of a restore's CPU),
            // several windows at once.
            None => rayon::ThreadPoolBuilder::new()
                .num_threads(LOCAL_RESTORE_THREADS_PER_CORE * rayon::current_num_threads())
                .build()
                .map_err(|e| Error::Usage(format!("cannot start restore threads: {e}")))?
                .install(|| {
                    files.par_chunks(LOCATE_WINDOW).try_for_each(|window| write_files(window, self.locate(window)))
                })?,
            // From a remote: requests, not cores, set the pace. Files go in
            // windows of about 32 MiB whose chunks are fetched first, all
            // together (adjacent records in one ranged GET, many at once),
            // then written from what was fetched, many files at once.
            Some(_) => rayon::ThreadPoolBuilder::new()
                .num_threads(REMOTE_RESTORE_THREADS)
                .build()
                .map_err(|e| Error::Usage(format!("cannot start restore threads: {e}")))?
                .install(|| {
                    let files = self.in_stored_order(files);
                    for window in windows(&files, PREFETCH_WINDOW) {
                        self.prefetch(window.iter().filter_map(|(_, e)| e.blob), PREFETCH_WINDOW);
                        write_files(window, window.iter().map(|_| None).collect())?;
                    }
                    Ok::<(), Error>(())
                })?,
        }
        for step in &steps {
            match step {
                Step::Link(path, first) if run.link(path, first)? => {
                    report.hardlinks += 1;
                }
                Step::Other(path, entry) if run.other(path, entry)? => {
                    report.others += 1;
                }
                _ => {}
            }
        }
        // Directory metadata last, deepest first.
        for (path, entry) in dirs.into_iter().rev() {
            run.metadata(path, entry);
        }
        if paths.is_empty()
            && let Some(meta) = &dataset.root_meta
        {
            run.metadata(Path::new(""), meta);
        }
        report.files_written = run.written.into_inner();
        report.files_unchanged = run.unchanged.into_inner();
        report.skipped_existing = run.skipped.into_inner();
        report.bytes_written = run.bytes.into_inner();
        report.files_failed = run.failed.into_inner();
        report.problems = run.problems.into_inner().expect("problem list poisoned");
        Ok(report)
    }

    /// The steps restoring `paths` take: the ancestors of each path as
    /// directories, then everything under it.
    fn plan(&self, dataset: &DatasetRecord, paths: &[String]) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        let mut links = HashMap::new();
        let whole = [String::new()];
        let paths = if paths.is_empty() { &whole[..] } else { paths };
        let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        for path in paths {
            // One walk down: each ancestor becomes a directory step, the last part the entry.
            let no_such = || Error::NoSuchPath { dataset: dataset.id.to_string(), path: path.to_string() };
            let mut rel = PathBuf::new();
            let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            let mut entry = dataset.root_entry();
            for (i, part) in parts.iter().enumerate() {
                let tree = match (entry.kind, entry.blob) {
                    (EntryKind::Dir, Some(tree)) => self.tree(tree)?,
                    _ => return Err(no_such()),
                };
                entry = tree.get(part.as_bytes()).cloned().ok_or_else(no_such)?;
                if i + 1 < parts.len() {
                    rel.push(part);
                    if made.insert(rel.clone()) {
                        steps.push(Step::Dir(rel.clone(), entry.clone()));
                    }
                }
            }
            if let Some(last) = parts.last() {
                rel.push(last);
            }
            if rel.as_os_str().is_empty() {
                // The whole dataset: the top directory is the target itself.
                self.plan_children(&rel, &entry, &mut steps, &mut links)?;
            } else {
                self.plan_entry(rel, entry, &mut steps, &mut links)?;
            }
        }
        Ok(steps)
    }

    fn plan_entry(
        &self,
        rel: PathBuf,
        entry: Entry,
        steps: &mut Vec<Step>,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<()> {
        match entry.kind {
            EntryKind::Dir => self.plan_children(&rel, &entry, steps, links)?,
            EntryKind::File if entry.is_hardlinked() => {
                let key = (entry.dev, entry.inode);
                match links.get(&key) {
                    Some(first) => steps.push(Step::Link(rel, first.clone())),
                    None => {
                        links.insert(key, rel.clone());
                        steps.push(Step::File(rel, entry));
                    }
                }
            }
            EntryKind::File => steps.push(Step::File(rel, entry)),
            _ => steps.push(Step::Other(rel, entry)),
        }
        Ok(())
    }

    /// Pushes the directory itself (unless it is the target) and its children.
    fn plan_children(
        &self,
        rel: &Path,
        entry: &Entry,
        steps: &mut Vec<Step>,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<()> {
        if !rel.as_os_str().is_empty() {
            steps.push(Step::Dir(rel.to_path_buf(), entry.clone()));
        }
        if let Some(tree) = entry.blob {
            for child in self.tree(tree)?.entries {
                let path = rel.join(std::ffi::OsStr::from_bytes(&child.name));
                self.plan_entry(path, child, steps, links)?;
            }
        }
        Ok(())
    }
}

/// A restore being carried out.
struct Run<'a> {
    store: &'a Store,
    target: &'a Path,
    options: &'a RestoreOptions,
    names: Names,
    progress: &'a Progress,
    problems: Mutex<Vec<String>>,
    written: AtomicU64,
    unchanged: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    /// Directories that could not be made: nothing is restored under them.
    blocked: Mutex<Vec<PathBuf>>,
}

impl Run<'_> {
    fn problem(&self, path: &Path, what: impl std::fmt::Display) {
        tracing::warn!("{}: {what}", path.display());
        self.problems.lock().expect("problem list poisoned").push(format!("{}: {what}", path.display()));
    }

    fn is_blocked(&self, rel: &Path) -> bool {
        self.blocked.lock().expect("blocked list poisoned").iter().any(|b| rel.starts_with(b))
    }

    fn metadata(&self, rel: &Path, entry: &Entry) {
        let path = self.target.join(rel);
        for problem in apply(Target::Path(&path), entry, self.options.owners, &self.names).0 {
            self.problem(&path, problem);
        }
    }

    /// Makes room at `path` for a new entry: true if nothing is there now.
    /// Honors `--overwrite never` by leaving what is there (false).
    fn clear(&self, path: &Path) -> Result<bool> {
        let existing = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(Error::io("checking the restore target", path, e)),
        };
        if self.options.overwrite == Overwrite::Never {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let removed = if existing.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        removed.map_err(|e| Error::io("replacing an existing path", path, e))?;
        Ok(true)
    }

    /// Makes the directory (true), or finds a real one there (true), or
    /// leaves what is there and blocks everything under it (false).
    fn make_dir(&self, rel: &Path) -> Result<bool> {
        if self.is_blocked(rel) {
            return Ok(false);
        }
        let path = self.target.join(rel);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Ok(true);
        }
        if !self.clear(&path)? {
            self.problem(&path, "exists and is not a directory; left alone (see --overwrite)");
            self.blocked.lock().expect("blocked list poisoned").push(rel.to_path_buf());
            return Ok(false);
        }
        std::fs::create_dir(&path).map_err(|e| Error::io("creating a directory", &path, e))?;
        Ok(true)
    }

    fn file(&self, rel: &Path, entry: &Entry, located: Option<Located>) -> Result<()> {
        if self.is_blocked(rel) {
            return Ok(());
        }
        let path = self.target.join(rel);
        if self.options.overwrite == Overwrite::IfChanged && self.same_file(&path, entry)? {
            self.unchanged.fetch_add(1, Ordering::Relaxed);
            self.progress.add(1, entry.size);
            self.metadata(rel, entry);
            return Ok(());
        }
        let Some(file) = self.create(&path)? else {
            self.progress.add(1, entry.size);
            return Ok(());
        };
        let (written, ends_in_hole) = match (entry.blob, located) {
            (Some(_), Some(chunks)) => self.write_located(&file, &path, &chunks)?,
            (Some(root), None) => self.write_content(&file, &path, root)?,
            (None, _) => (0, false),
        };
        if written != entry.size {
            return Err(Error::Malformed {
                what: "content list",
                blob: entry.blob.unwrap_or(BlobId::of(b"")),
                reason: format!("{} holds {written} bytes, its entry says {}", path.display(), entry.size),
            });
        }
        // A file that ends in a hole is short until its length is set.
        if ends_in_hole {
            file.set_len(entry.size).map_err(|e| Error::io("setting a file's length", &path, e))?;
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        self.progress.add(1, 0);
        // Through the open file: no path walks, and nothing can be swapped in.
        for problem in apply(Target::File(&file), entry, self.options.owners, &self.names).0 {
            self.problem(&path, problem);
        }
        Ok(())
    }

    /// Creates the file at `path` (never following a symlink there), after
    /// clearing what is in the way as `--overwrite` allows; `None` when
    /// something is there and stays.
    fn create(&self, path: &Path) -> Result<Option<File>> {
        let open =
            || File::options().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path);
        // Trying first saves a lookup per file in the usual case, an empty target.
        match open() {
            Ok(file) => return Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating a file", path, e)),
        }
        if !self.clear(path)? {
            return Ok(None);
        }
        open().map(Some).map_err(|e| Error::io("creating a file", path, e))
    }

    /// Writes chunks found by [`Store::locate`] to `file`, each checked;
    /// returns what `write_content` does.
    fn write_located(&self, file: &File, path: &Path, chunks: &Located) -> Result<(u64, bool)> {
        let (mut offset, mut ends_in_hole) = (0u64, false);
        for (chunk, entry) in chunks {
            let data = check_length(chunk, self.store.read_located(&chunk.id, *entry)?)?;
            ends_in_hole = write_sparse(file, offset, &data)
                .map_err(|e| Error::Output { what: path.display().to_string(), cause: e })?;
            offset += data.len() as u64;
            self.progress.add(0, data.len() as u64);
        }
        Ok((offset, ends_in_hole))
    }

    /// Writes a content list to `file`, leaving zero blocks as holes.
    /// Returns the bytes it holds and whether its last block is a hole.
    fn write_content(&self, file: &File, path: &Path, root: BlobId) -> Result<(u64, bool)> {
        let mut reader = ContentReader::new(self.store, root)?;
        let mut offset = 0u64;
        let mut ends_in_hole = false;
        loop {
            let entries = reader.next_batch(BATCH_CHUNKS)?;
            if entries.is_empty() {
                return Ok((offset, ends_in_hole));
            }
            for chunk in read_chunks(self.store, &entries)? {
                ends_in_hole = write_sparse(file, offset, &chunk)
                    .map_err(|e| Error::Output { what: path.display().to_string(), cause: e })?;
                offset += chunk.len() as u64;
                self.progress.add(0, chunk.len() as u64);
            }
        }
    }

    /// Whether the file at `path` has the entry's content already.
    fn same_file(&self, path: &Path, entry: &Entry) -> Result<bool> {
        let Ok(m) = std::fs::symlink_metadata(path) else { return Ok(false) };
        if !m.is_file() || m.size() != entry.size {
            return Ok(false);
        }
        if m.mtime() * 1_000_000_000 + m.mtime_nsec() == entry.mtime_ns {
            return Ok(true);
        }
        let Some(root) = entry.blob else { return Ok(true) };
        let file = File::open(path).map_err(|e| Error::io("reading an existing file", path, e))?;
        let mut reader = ContentReader::new(self.store, root)?;
        for chunk in self.store.chunker().stream(&file) {
            let chunk = chunk.map_err(|e| Error::io("reading an existing file", path, e))?;
            match reader.next_chunk()? {
                Some(expected) if expected.id == self.store.ids().id(BlobKind::Data, &chunk.data) => {}
                _ => return Ok(false),
            }
        }
        Ok(reader.next_chunk()?.is_none())
    }

    fn link(&self, rel: &Path, first: &Path) -> Result<bool> {
        if self.is_blocked(rel) || self.is_blocked(first) {
            return Ok(false);
        }
        let path = self.target.join(rel);
        if !self.clear(&path)? {
            return Ok(false);
        }
        std::fs::hard_link(self.target.join(first), &path).map_err(|e| Error::io("making a hard link", &path, e))?;
        Ok(true)
    }

    fn other(&self, rel: &Path, entry: &Entry) -> Result<bool> {
        if self.is_blocked(rel) {
            return Ok(false);
        }
        let path = self.target.join(rel);
        if !self.clear(&path)? {
            return Ok(false);
        }
        let made = match entry.kind {
            EntryKind::Symlink => std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&entry.target), &path),
            EntryKind::CharDevice | EntryKind::BlockDevice if !self.options.owners => {
                self.problem(&path, "device files can only be restored by root; skipped");
                return Ok(false);
            }
            _ => make_special(&path, entry),
        };
        made.map_err(|e| Error::io("creating a special file", &path, e))?;
        self.metadata(rel, entry);
        Ok(true)
    }
}

/// Writes `data` at `offset`, skipping blocks of zeros (aligned to the
/// file) so they stay holes; the caller sets the final length. Returns
/// whether the last block was left a hole.
fn write_sparse(file: &File, offset: u64, data: &[u8]) -> std::io::Result<bool> {
    let mut at = 0usize;
    let mut run_start: Option<usize> = None;
    while at < data.len() {
        let block_end = ((offset as usize + at) / HOLE_BLOCK + 1) * HOLE_BLOCK - offset as usize;
        let end = block_end.min(data.len());
        let zero = data[at..end] == ZEROS[..end - at];
        match (zero, run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                file.write_all_at(&data[start..at], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        at = end;
    }
    match run_start {
        Some(start) => file.write_all_at(&data[start..], offset + start as u64).map(|()| false),
        None => Ok(!data.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_the_rest_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 5 * HOLE_BLOCK];
        data[10] = 1;
        data[4 * HOLE_BLOCK + 5] = 2;
        // The data ends 100 bytes into a block of zeros: a hole the caller must close.
        assert!(write_sparse(&file, 100, &data).unwrap(), "the last block is a hole");
        file.set_len(100 + data.len() as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[100..], &data[..]);
        // Only the two blocks holding data are allocated.
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 <= 3 * HOLE_BLOCK as u64);

        // Zeros at the end are not written: the caller must set the length.
        let tail = dir.path().join("tail");
        let file = File::create(&tail).unwrap();
        let mut data = vec![0u8; 3 * HOLE_BLOCK];
        data[0] = 7;
        assert!(write_sparse(&file, 0, &data).unwrap(), "the last block is a hole");
        assert_eq!(std::fs::metadata(&tail).unwrap().len(), HOLE_BLOCK as u64);
        data[3 * HOLE_BLOCK - 1] = 8;
        assert!(!write_sparse(&file, 0, &data).unwrap(), "the last block holds data");
        assert_eq!(std::fs::metadata(&tail).unwrap().len(), 3 * HOLE_BLOCK as u64);
    }
}
