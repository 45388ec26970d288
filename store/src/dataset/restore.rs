//! `restore`: puts a dataset (or parts of it) back under a target directory.
//!
//! The trees are walked in batches of steps (`plan.rs`), so memory holds
//! one batch and not the dataset, and each batch is carried out before the
//! next is planned: directories in order, files in parallel (rayon, every
//! chunk checked against its id), hard links and other entries, then the
//! metadata of the directories that ended in the batch, deepest first (so
//! writing files does not disturb restored directory times).
//!
//! Safety: every name was checked when its tree was decoded (one path
//! component, no `..`), and every path below the target is resolved from
//! the target's descriptor without following any symlink (`beneath.rs`):
//! a directory that another user swaps for a symlink while the restore
//! runs stops the entries under it, and never redirects a write, a chmod
//! or a chown outside the target. Directories are made 0700 and get their
//! own mode last; files are created with `O_EXCL | O_NOFOLLOW`, and all
//! metadata goes on through descriptors (`apply.rs`).
//!
//! One entry that cannot be restored (damaged blobs, a name the file
//! system refuses, a directory in the way) is listed and the restore goes
//! on; only a full or read-only file system, or a store that cannot be
//! read, ends it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};
use rayon::prelude::*;
use serde::Serialize;

use super::Progress;
use super::apply::{ApplyOptions, Has, Target, apply, creation_mode, make_special_at};
use super::beneath::{Beneath, LastDir, kind_at, remove_at};
use super::fsmeta::{Names, time_ns};
use super::gather::Gather;
use super::plan::{PLAN_BATCH, Planner, Step};
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
/// Files whose chunks are looked up together.
const LOCATE_WINDOW: usize = 512;
/// Files a thread of a local restore writes in turn (see `write_files`).
const IN_ORDER_WINDOW: usize = 32;

/// A file's chunks and where each is, found before the file is written.
pub(super) type Located = Vec<(ContentEntry, IndexEntry)>;

impl Store {
    /// Finds where the chunks of `files` are, with two sorted batched
    /// lookups for the whole window: their roots, then the chunks their
    /// roots list. Files whose content is deeper than one piece, or whose
    /// content cannot be read here, get `None` and are read the usual way
    /// (which reports any damage for the file).
    fn locate(&self, files: &[(&PathBuf, &Entry)]) -> Vec<Option<Located>> {
        if files.is_empty() {
            return Vec::new();
        }
        // A failed lookup leaves the files to be read the usual way.
        let entries = |ids: &mut Vec<BlobId>| self.live_entries(ids).unwrap_or_default();
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

impl Store {
    /// `located`, with the files of `files` it lacks looked up by
    /// [`Store::locate`].
    fn locate_rest(&self, files: &[(&PathBuf, &Entry)], mut located: Vec<Option<Located>>) -> Vec<Option<Located>> {
        located.resize(files.len(), None);
        let missing: Vec<usize> = (0..files.len()).filter(|&i| located[i].is_none()).collect();
        let found = self.locate(&missing.iter().map(|&i| files[i]).collect::<Vec<_>>());
        for (i, found) in missing.into_iter().zip(found) {
            located[i] = found;
        }
        located
    }
}

/// Removes what a restore staged when it ends, however it ends.
struct Unstage<'a>(&'a Store);

impl Drop for Unstage<'_> {
    fn drop(&mut self) {
        self.0.files().unstage();
    }
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
#[derive(Clone, Copy, Debug)]
pub struct RestoreOptions {
    /// Existing paths in the target.
    pub overwrite: Overwrite,
    /// Only count what would be done.
    pub dry_run: bool,
    /// Restore owners (only root can).
    pub owners: bool,
    /// Restore extended attributes and ACLs.
    pub xattrs: bool,
    /// Restore device nodes and setuid/setgid bits.
    pub special: bool,
    /// Called with each warning before the restore writes anything.
    pub on_warning: Option<fn(&str)>,
    /// From a remote: requests in flight at once while staging.
    pub jobs: usize,
    /// From a remote: bytes of fetched ranges held in memory at most.
    pub memory: usize,
    /// Steps of the trees' walk planned and restored at a time (memory
    /// holds one batch): [`PLAN_BATCH`], or fewer to test many batches.
    pub batch: usize,
}

impl Default for RestoreOptions {
    /// Faithful, as tar and rsync are: everything the dataset holds that
    /// the caller may set (owners are for the caller to ask for).
    fn default() -> RestoreOptions {
        RestoreOptions {
            overwrite: Overwrite::Never,
            dry_run: false,
            owners: false,
            xattrs: true,
            special: true,
            on_warning: None,
            jobs: super::stage::STAGE_JOBS,
            memory: crate::container::STAGE_MEMORY,
            batch: PLAN_BATCH,
        }
    }
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
    /// Device nodes left out (`--no-special`).
    pub devices_skipped: u64,
    /// Content bytes written.
    pub bytes_written: u64,
    /// Files not restored because blobs they need are damaged or missing
    /// (each is listed in `problems`; no partial file is left).
    pub files_failed: u64,
    /// What the caller was warned of before the restore began.
    pub warnings: Vec<String>,
    /// Entries not restored, and metadata not put back: one line each,
    /// naming the path.
    pub problems: Vec<String>,
}

const BATCH_CHUNKS: usize = 128;

/// The files and bytes of `steps` that a restore writes (hard links'
/// later names are linked, not written).
fn files_and_bytes(steps: &[Step]) -> (u64, u64) {
    steps.iter().fold((0, 0), |(f, b), s| match s {
        Step::File(_, e) => (f + 1, b.saturating_add(e.size)),
        _ => (f, b),
    })
}

/// What a restore carries from one batch to the next.
#[derive(Default)]
struct Carried {
    /// Whether each directory the walk is inside was made (or found) and
    /// so gets its metadata at its end: pushed at [`Step::Dir`], popped at
    /// [`Step::DirEnd`], which nest.
    made: Vec<bool>,
    /// For a hard-link group whose first name was not restored, the name
    /// written instead, which later names link to.
    stand_ins: HashMap<PathBuf, PathBuf>,
}

impl Store {
    /// Restores `paths` of `dataset` (everything when empty) under `target`,
    /// one batch of the trees' walk at a time (`plan.rs`).
    pub fn restore(
        &self,
        dataset: &DatasetRecord,
        paths: &[String],
        target: &Path,
        options: &RestoreOptions,
        progress: &Progress,
    ) -> Result<RestoreReport> {
        let started = std::time::Instant::now();
        let mut planner = Planner::new(self, dataset, paths)?;
        let mut steps = planner.next_batch(options.batch)?;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            steps = steps.len(),
            all = planner.is_done(),
            "walked the trees"
        );
        let mut planned = (0u64, 0u64);
        let mut show_planned = |steps: &[Step], done: bool| {
            let (files, bytes) = files_and_bytes(steps);
            planned = (planned.0 + files, planned.1.saturating_add(bytes));
            // While the walk goes on, a whole dataset's totals are its
            // record's (what `datasets` shows), and the walk's own once
            // it is over.
            let (files, bytes) = match done || !paths.is_empty() {
                true => planned,
                false => (planned.0.max(dataset.files), planned.1.max(dataset.logical_bytes)),
            };
            progress.total_files.store(files, Ordering::Relaxed);
            progress.total_bytes.store(bytes, Ordering::Relaxed);
        };
        let mut report = RestoreReport {
            warnings: self.unauthenticated(dataset, paths, (&steps, planner.is_done()), options)?,
            ..Default::default()
        };
        if let Some(warn) = options.on_warning {
            report.warnings.iter().for_each(|w| warn(w));
        }
        if options.dry_run {
            loop {
                show_planned(&steps, planner.is_done());
                dry_run(&steps, target, options, &mut report);
                if planner.is_done() {
                    return Ok(report);
                }
                steps = planner.next_batch(options.batch)?;
            }
        }
        if std::fs::metadata(target).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::Usage(format!(
                "{} exists and is not a directory: restore into a directory (--to DIR), which is made if missing",
                target.display()
            )));
        }
        std::fs::create_dir_all(target).map_err(|e| Error::io("creating the restore target", target, e))?;
        let root = Beneath::open(target).map_err(|e| Error::io("opening the restore target", target, e))?;
        let run = Run {
            store: self,
            target,
            root,
            options,
            apply: ApplyOptions { owners: options.owners, xattrs: options.xattrs, setid: options.special },
            names: Names::default(),
            progress,
            problems: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
            unchanged: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            blocked: Mutex::new(Vec::new()),
            heads: Mutex::new(HashSet::new()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(LOCAL_RESTORE_THREADS_PER_CORE * rayon::current_num_threads())
            .build()
            .map_err(|e| Error::Usage(format!("cannot start restore threads: {e}")))?;
        let _staged = Unstage(self);
        let mut carried = Carried::default();
        loop {
            show_planned(&steps, planner.is_done());
            self.restore_batch(&run, &pool, &steps, &mut carried, &mut report)?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), steps = steps.len(), "batch restored");
            if planner.is_done() {
                break;
            }
            // The batch's memory goes before the next is planned.
            drop(std::mem::take(&mut steps));
            steps = planner.next_batch(options.batch)?;
        }
        if paths.is_empty()
            && let Some(meta) = &dataset.root_meta
        {
            run.dir_metadata(Path::new(""), meta);
        }
        report.files_written = run.written.into_inner();
        report.files_unchanged = run.unchanged.into_inner();
        report.skipped_existing = run.skipped.into_inner();
        report.bytes_written = run.bytes.into_inner();
        report.files_failed = run.failed.into_inner();
        report.problems = run.problems.into_inner().expect("problem list poisoned");
        Ok(report)
    }

    /// Carries out one batch of steps: its directories in order, its files
    /// in parallel (each checks every chunk), its hard links and other
    /// entries, then the metadata of the directories that end in it,
    /// deepest first (a directory gets its own mode only once nothing more
    /// is written into it, and writing files does not disturb its times).
    fn restore_batch(
        &self,
        run: &Run<'_>,
        pool: &rayon::ThreadPool,
        steps: &[Step],
        carried: &mut Carried,
        report: &mut RestoreReport,
    ) -> Result<()> {
        // Directories, in order (parents first), private until they end.
        let mut ended = Vec::new();
        for step in steps {
            match step {
                Step::Dir(path) => {
                    let made = run.settle(path, run.make_dir(path))?.unwrap_or(false);
                    report.dirs += u64::from(made);
                    carried.made.push(made);
                }
                Step::DirEnd(path, entry) => {
                    if carried.made.pop().unwrap_or(false) {
                        ended.push((path, entry));
                    }
                }
                _ => {}
            }
        }
        tracing::debug!("directories made");
        crate::fault::pause_point("restore:dirs-made", None);
        self.write_files(run, pool, steps)?;
        // Later names of hard-linked files. A group whose first name was
        // not restored (damaged, or left alone by --overwrite never) has
        // its next name restored as a file instead, and the rest linked to
        // that: a link is never made to a file this restore did not write.
        for step in steps {
            match step {
                Step::Link(path, first, entry) => {
                    let head = match carried.stand_ins.get(first) {
                        Some(stand_in) => Some(stand_in.clone()),
                        None => run.restored_head(first).then(|| first.clone()),
                    };
                    match head {
                        Some(head) => {
                            if run.settle(path, run.link(path, &head))?.unwrap_or(false) {
                                report.hardlinks += 1;
                            }
                        }
                        None => {
                            run.settle(path, run.file(&mut LastDir::default(), path, entry, None))?;
                            if run.restored_head(path) {
                                carried.stand_ins.insert(first.clone(), path.clone());
                            }
                        }
                    }
                }
                Step::Other(path, entry) => match run.settle(path, run.other(path, entry))? {
                    Some(Made::Yes) => report.others += 1,
                    Some(Made::LeftOut) => report.devices_skipped += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        crate::fault::pause_point("restore:files-written", None);
        for (path, entry) in ended {
            run.dir_metadata(path, entry);
        }
        Ok(())
    }

    /// Writes the files of `steps`, in parallel, each checking every chunk.
    fn write_files(&self, run: &Run<'_>, pool: &rayon::ThreadPool, steps: &[Step]) -> Result<()> {
        let started = std::time::Instant::now();
        let mut files: Vec<(&PathBuf, &Entry)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::File(path, entry) => Some((path, entry)),
                _ => None,
            })
            .collect();
        let write_files = |files: &[(&PathBuf, &Entry)], located: Vec<Option<Located>>| {
            files.par_iter().zip(located).try_for_each_init(LastDir::default, |last, ((path, entry), located)| {
                run.settle(path, run.file(last, path, entry, located)).map(drop)
            })
        };
        // From a remote, files are written in the order their bytes were
        // stored, and the ranges of its containers that they need are
        // fetched many at once (`stage.rs`) and held in memory, in the
        // order the windows of files need them, until the last window that
        // needs each is written; each file is written once its bytes have
        // landed, while the next are fetched.
        // On the restore's threads, not the global pool's one per core: from
        // a cold disk the plan waits on content lists and index blocks.
        let mut plan = pool.install(|| self.plan_stage(&mut files, LOCATE_WINDOW))?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), ranges = plan.ranges.len(), "planned the files");
        // The plan found where the first files' chunks are, and put the
        // files in the order their chunks were stored; the writers look
        // up the rest.
        let mut located = std::mem::take(&mut plan.located).into_iter();
        // The remote's ranges are held for the windows the plan counted.
        let window_len = if plan.ranges.is_empty() { IN_ORDER_WINDOW } else { LOCATE_WINDOW };
        let located: Vec<Vec<Option<Located>>> =
            files.chunks(window_len).map(|window| located.by_ref().take(window.len()).collect()).collect();
        if plan.ranges.is_empty() {
            // More files at once than cores: each waits in turn for its
            // container's bytes from a cold disk and for the file system,
            // and meanwhile another can use the core (measured on 2 cores:
            // 6 threads restore a cold 18,652-file tree about 10% faster
            // than 2). The threads take small windows of files in the
            // order their bytes were stored, each writing its window's
            // files in turn, so that together they read one stretch of
            // frames that the frame cache holds: split among the threads
            // as a parallel iterator splits (each thread far from the
            // others in the order), /usr/share's 1,934 frames were decoded
            // about 3,000 times; so, about 2,700 (the rest are chunks that
            // files far apart share). Windows of files the plan did not
            // locate have their chunks looked up together.
            pool.install(|| {
                files.chunks(IN_ORDER_WINDOW).zip(located).par_bridge().try_for_each_init(
                    LastDir::default,
                    |last, (window, located)| {
                        let located = self.locate_rest(window, located);
                        for ((path, entry), located) in window.iter().zip(located) {
                            run.settle(path, run.file(last, path, entry, located)).map(drop)?;
                        }
                        Ok::<(), Error>(())
                    },
                )
            })?;
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                frames_decoded = self.files().frames_decoded(),
                "files written"
            );
            return Ok(());
        }
        self.begin_staging(&plan, run.options.memory);
        let staged = std::thread::scope(|scope| {
            let stager = scope.spawn(|| self.stage(&plan, run.options.jobs));
            // Windows in order, several at once as threads free up; a
            // file whose bytes have not landed waits for them, and a
            // written window releases what only it needed.
            let windows = files.chunks(LOCATE_WINDOW).zip(located).enumerate();
            let written = pool.install(|| {
                windows.par_bridge().try_for_each(|(number, (window, located))| {
                    write_files(window, self.locate_rest(window, located))?;
                    self.files().window_written(number);
                    Ok::<(), Error>(())
                })
            });
            // However the writers ended, the fetcher must not wait for
            // them to release memory.
            self.files().writers_done();
            let staged = stager.join().expect("the staging thread panicked");
            written.map(|()| staged)
        })?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "files written");
        // What failed to stage was read from the remote by the files
        // that needed it, which report their own errors.
        if let Err(error) = staged {
            tracing::warn!(%error, "fetching ahead from the remote failed; the files read what they needed themselves");
        }
        Ok(())
    }

    /// What a root restore from a remote would take on trust: nothing
    /// authenticates a bucket's contents until encryption exists, so
    /// whoever could write to it chose the owners, devices and security
    /// attributes that root would now apply. `first` is the walk's first
    /// batch, and whether it was all of it; if not, the devices and
    /// attributes are counted with a walk of their own before anything
    /// is restored.
    fn unauthenticated(
        &self,
        dataset: &DatasetRecord,
        paths: &[String],
        first: (&[Step], bool),
        options: &RestoreOptions,
    ) -> Result<Vec<String>> {
        let Some(remote) = self.files().remote() else { return Ok(Vec::new()) };
        let (steps, all) = first;
        if !nix::unistd::geteuid().is_root() || steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut trusted = Trusted::default();
        if all || !(options.special || options.xattrs) {
            trusted.count(steps);
        } else {
            let mut survey = Planner::new(self, dataset, paths)?;
            while !survey.is_done() {
                trusted.count(&survey.next_batch(options.batch)?);
            }
        }
        let from = remote.to_string();
        let mut warnings = Vec::new();
        if options.owners {
            warnings.push(format!(
                "restoring owners as root from {from}, whose contents nothing authenticates: anyone who could \
                 write there chose them (--no-owner makes everything yours)"
            ));
        }
        if options.special && trusted.devices > 0 {
            warnings.push(format!(
                "restoring {} device nodes as root from {from}, whose contents nothing authenticates \
                 (--no-special leaves them out)",
                trusted.devices
            ));
        }
        if options.xattrs && trusted.privileged > 0 {
            warnings.push(format!(
                "restoring {} security.* or trusted.* xattrs as root from {from}, whose contents \
                 nothing authenticates (--no-xattrs leaves them out)",
                trusted.privileged
            ));
        }
        Ok(warnings)
    }
}

/// Device nodes, and xattrs only root may set, among steps.
#[derive(Default)]
struct Trusted {
    devices: usize,
    privileged: usize,
}

impl Trusted {
    fn count(&mut self, steps: &[Step]) {
        for entry in steps.iter().filter_map(Step::entry) {
            self.devices += usize::from(matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice));
            self.privileged += entry
                .xattrs
                .iter()
                .filter(|(name, _)| name.starts_with(b"security.") || name.starts_with(b"trusted."))
                .count();
        }
    }
}

/// Counts what restoring `steps` into `target` would do, writing nothing.
fn dry_run(steps: &[Step], target: &Path, options: &RestoreOptions, report: &mut RestoreReport) {
    for step in steps {
        match step {
            Step::Dir(..) => report.dirs += 1,
            Step::File(path, entry) => match std::fs::symlink_metadata(target.join(path)) {
                Ok(_) if options.overwrite == Overwrite::Never => report.skipped_existing += 1,
                _ => {
                    report.files_written += 1;
                    report.bytes_written = report.bytes_written.saturating_add(entry.size);
                }
            },
            Step::Link(..) => report.hardlinks += 1,
            Step::Other(..) => report.others += 1,
            Step::DirEnd(..) => {}
        }
    }
}

/// Why one entry was not restored.
enum NotRestored {
    /// Something about this entry only: it is listed, and the restore goes on.
    Entry(String),
    /// Blobs it needs are damaged or missing: listed and counted.
    Damaged(Error),
    /// Nothing more can be restored (a full or read-only file system, a
    /// store or remote that cannot be read): the restore ends.
    Stop(Error),
}

impl From<Error> for NotRestored {
    fn from(e: Error) -> NotRestored {
        match e {
            e if e.is_damage() => NotRestored::Damaged(e),
            Error::Output { cause, .. } if !ends_restore(&cause) => NotRestored::Entry(format!("writing it: {cause}")),
            e => NotRestored::Stop(e),
        }
    }
}

/// Errors of the target file system after which nothing else would be
/// restored either.
fn ends_restore(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS))
}

type Done<T> = std::result::Result<T, NotRestored>;

/// A failed operation on the target, for the entry at `path`.
fn target_error(action: &str, path: &Path, e: impl Into<io::Error>) -> NotRestored {
    let e = e.into();
    if ends_restore(&e) {
        NotRestored::Stop(Error::Output { what: path.display().to_string(), cause: e })
    } else {
        NotRestored::Entry(format!("{action}: {e}"))
    }
}

/// Whether `other` made its entry, or left it out as asked.
enum Made {
    Yes,
    LeftOut,
    No,
}

/// A restore being carried out.
struct Run<'a> {
    store: &'a Store,
    target: &'a Path,
    /// The target, open: every path below it is resolved from here.
    root: Beneath,
    options: &'a RestoreOptions,
    apply: ApplyOptions,
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
    /// Hard-linked files this restore wrote (or found identical): the
    /// only files later names of their groups are linked to.
    heads: Mutex<HashSet<PathBuf>>,
}

impl Run<'_> {
    fn problem(&self, rel: &Path, what: impl std::fmt::Display) {
        let path = self.target.join(rel);
        tracing::debug!("{}: {what}", path.display());
        self.problems.lock().expect("problem list poisoned").push(format!("{}: {what}", path.display()));
    }

    /// The outcome of one entry: its value, or `None` once a failure of
    /// this entry alone is listed; an error only when the restore must end.
    fn settle<T>(&self, rel: &Path, done: Done<T>) -> Result<Option<T>> {
        match done {
            Ok(value) => Ok(Some(value)),
            Err(NotRestored::Entry(why)) => {
                self.problem(rel, format!("not restored: {why}"));
                Ok(None)
            }
            Err(NotRestored::Damaged(e)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.problem(rel, format!("not restored: {e}"));
                Ok(None)
            }
            Err(NotRestored::Stop(e)) => Err(e),
        }
    }

    fn is_blocked(&self, rel: &Path) -> bool {
        self.blocked.lock().expect("blocked list poisoned").iter().any(|b| rel.starts_with(b))
    }

    fn restored_head(&self, rel: &Path) -> bool {
        self.heads.lock().expect("head list poisoned").contains(rel)
    }

    /// The directory holding `rel`, never reached through a symlink, and
    /// `rel`'s name in it.
    fn parent<'p>(&self, rel: &'p Path) -> Done<(OwnedFd, &'p OsStr)> {
        self.root.parent(rel).map_err(|e| self.parent_error(rel, e))
    }

    fn parent_error(&self, rel: &Path, e: io::Error) -> NotRestored {
        target_error("opening its directory (was it replaced by a symlink while the restore ran?)", rel, e)
    }

    /// Puts a directory's own metadata on it, through the directory itself.
    fn dir_metadata(&self, rel: &Path, entry: &Entry) {
        let dir = match self.root.dir(rel) {
            Ok(dir) => File::from(dir),
            Err(e) => return self.problem(rel, format!("metadata not restored: opening it: {e}")),
        };
        for problem in apply(Target::File(&dir), entry, &self.apply, &self.names, None) {
            self.problem(rel, problem);
        }
    }

    /// Makes room at `name` in `dir` for a new entry: true if nothing is
    /// there now. Honors `--overwrite never` by leaving what is there
    /// (false). Whatever is there is removed without following it.
    fn clear(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Done<bool> {
        if kind_at(dir, name).map_err(|e| target_error("looking at what is there", rel, e))?.is_none() {
            return Ok(true);
        }
        if self.options.overwrite == Overwrite::Never {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        remove_at(dir, name).map_err(|e| target_error("replacing what was there", rel, e))?;
        Ok(true)
    }

    /// Makes the directory, 0700 until its own mode is put on last (true),
    /// or finds a real one there (true), or leaves what is there and
    /// blocks everything under it (false).
    fn make_dir(&self, rel: &Path) -> Done<bool> {
        if self.is_blocked(rel) {
            return Ok(false);
        }
        let block = || self.blocked.lock().expect("blocked list poisoned").push(rel.to_path_buf());
        let (dir, name) = self.parent(rel).inspect_err(|_| block())?;
        match kind_at(dir.as_fd(), name) {
            Ok(Some(kind)) if kind == SFlag::S_IFDIR => return Ok(true),
            Ok(_) => {}
            Err(e) => {
                block();
                return Err(target_error("looking at what is there", rel, e));
            }
        }
        if !self.clear(dir.as_fd(), name, rel).inspect_err(|_| block())? {
            block();
            self.problem(
                rel,
                "exists and is not a directory, so nothing under it was restored; \
                 move it away, or restore with --overwrite always",
            );
            return Ok(false);
        }
        if let Err(e) = mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            block();
            return Err(target_error("creating the directory", rel, e));
        }
        Ok(true)
    }

    /// Restores one file; true when the file at `rel` now holds the
    /// entry's content (written, or found identical).
    fn file(&self, last: &mut LastDir, rel: &Path, entry: &Entry, located: Option<Located>) -> Done<bool> {
        if self.is_blocked(rel) {
            return Ok(false);
        }
        let (dir, name) = last.parent(&self.root, rel).map_err(|e| self.parent_error(rel, e))?;
        if self.options.overwrite == Overwrite::IfChanged
            && let Some(same) = self.same_file(dir, name, entry)?
        {
            self.unchanged.fetch_add(1, Ordering::Relaxed);
            self.progress.add(1, entry.size);
            self.metadata(rel, &same, entry, None);
            self.note_head(rel, entry);
            return Ok(true);
        }
        let Some(file) = self.create(dir, name, rel, creation_mode(entry))? else {
            self.progress.add(1, entry.size);
            return Ok(false);
        };
        let path = self.target.join(rel);
        let written = self.write(&file, &path, entry, located);
        if written.is_err() {
            // No partial file is left: it would pass for the real one.
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
        let written = written?;
        self.written.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        self.progress.add(1, 0);
        self.metadata(rel, &file, entry, Has::of(&file));
        self.note_head(rel, entry);
        Ok(true)
    }

    fn note_head(&self, rel: &Path, entry: &Entry) {
        if entry.is_hardlinked() {
            self.heads.lock().expect("head list poisoned").insert(rel.to_path_buf());
        }
    }

    /// Through the open file: no path walks, and nothing can be swapped in.
    /// `has`: what the file has already, when the restore just made it.
    fn metadata(&self, rel: &Path, file: &File, entry: &Entry, has: Option<Has>) {
        for problem in apply(Target::File(file), entry, &self.apply, &self.names, has) {
            self.problem(rel, problem);
        }
    }

    /// Writes the entry's content to `file`, which must come to exactly
    /// the entry's size: a content list that says otherwise is refused
    /// before anything is written, and writing stops at the size whatever
    /// the lists below it claim (a crafted list can name one chunk a
    /// million times).
    fn write(&self, file: &File, path: &Path, entry: &Entry, located: Option<Located>) -> Result<u64> {
        let wrong = |actual: u64, over: bool| Error::WrongLength {
            what: path.display().to_string(),
            expected: entry.size,
            actual,
            over,
        };
        let (written, ends_in_hole) = match (entry.blob, located) {
            (Some(_), Some(chunks)) => {
                let total = chunks.iter().try_fold(0u64, |sum, (c, _)| sum.checked_add(c.len));
                if total != Some(entry.size) {
                    return Err(wrong(total.unwrap_or(u64::MAX), total.is_none()));
                }
                self.write_located(file, path, &chunks)?
            }
            (Some(root), None) => {
                let reader = ContentReader::new(self.store, root)?;
                match reader.root_len() {
                    Some(len) if len == entry.size => self.write_content(file, path, reader, entry.size)?,
                    other => return Err(wrong(other.unwrap_or(u64::MAX), other.is_none())),
                }
            }
            (None, _) => (0, false),
        };
        if written != entry.size {
            return Err(wrong(written, false));
        }
        // A file that ends in a hole is short until its length is set.
        if ends_in_hole {
            file.set_len(entry.size).map_err(|e| Error::Output { what: path.display().to_string(), cause: e })?;
        }
        Ok(written)
    }

    /// Creates the file `name` in `dir` (never following a symlink there)
    /// with the permission bits `mode` (less the umask), after clearing
    /// what is in the way as `--overwrite` allows; `None` when something is
    /// there and stays. Created with its own bits rather than 0600 and
    /// changed later, it mostly needs no `fchmod`; while it is written, the
    /// directory that holds it is still 0700 if the restore made it.
    fn create(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path, mode: u32) -> Done<Option<File>> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = || openat(dir, name, flags, Mode::from_bits_truncate(mode)).map(File::from);
        // Trying first saves a lookup per file in the usual case, an empty target.
        match open() {
            Ok(file) => return Ok(Some(file)),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(target_error("creating it", rel, e)),
        }
        if !self.clear(dir, name, rel)? {
            return Ok(None);
        }
        open().map(Some).map_err(|e| target_error("creating it", rel, e))
    }

    /// Writes chunks found by [`Store::locate`] to `file`, each checked;
    /// returns what `write_content` does.
    fn write_located(&self, file: &File, path: &Path, chunks: &Located) -> Result<(u64, bool)> {
        let output = |e| Error::Output { what: path.display().to_string(), cause: e };
        let (mut gather, mut offset) = (Gather::new(file), 0u64);
        for (chunk, entry) in chunks {
            let data = check_length(chunk, self.store.read_located_plain(&chunk.id, *entry)?)?;
            let len = data.len() as u64;
            gather.push(offset, data).map_err(output)?;
            offset += len;
            self.progress.add(0, len);
        }
        Ok((offset, gather.finish().map_err(output)?))
    }

    /// Writes a content list to `file`, leaving zero blocks as holes, and
    /// stops with an error before passing `size`. Returns the bytes it
    /// holds and whether its last block is a hole.
    fn write_content(&self, file: &File, path: &Path, mut reader: ContentReader, size: u64) -> Result<(u64, bool)> {
        let output = |e| Error::Output { what: path.display().to_string(), cause: e };
        let (mut gather, mut offset) = (Gather::new(file), 0u64);
        loop {
            let entries = reader.next_batch(BATCH_CHUNKS)?;
            if entries.is_empty() {
                return Ok((offset, gather.finish().map_err(output)?));
            }
            let listed = entries.iter().try_fold(offset, |sum, c| sum.checked_add(c.len));
            if listed.is_none_or(|end| end > size) {
                return Err(Error::WrongLength {
                    what: path.display().to_string(),
                    expected: size,
                    actual: listed.unwrap_or(u64::MAX),
                    over: true,
                });
            }
            for chunk in read_chunks(self.store, &entries)? {
                let len = chunk.len() as u64;
                gather.push(offset, chunk.into()).map_err(output)?;
                offset += len;
                self.progress.add(0, len);
            }
        }
    }

    /// The file `name` in `dir`, open, if it has the entry's content
    /// already (it is opened without following a symlink or blocking on
    /// a fifo, and must be a regular file).
    fn same_file(&self, dir: BorrowedFd<'_>, name: &OsStr, entry: &Entry) -> Done<Option<File>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let Ok(file) = openat(dir, name, flags, Mode::empty()).map(File::from) else { return Ok(None) };
        let Ok(m) = file.metadata() else { return Ok(None) };
        if !m.is_file() || m.size() != entry.size {
            return Ok(None);
        }
        if time_ns(m.mtime(), m.mtime_nsec()) == Some(entry.mtime_ns) {
            return Ok(Some(file));
        }
        let Some(root) = entry.blob else { return Ok(Some(file)) };
        let mut reader = ContentReader::new(self.store, root)?;
        for chunk in self.store.chunker().stream(&file) {
            let Ok(chunk) = chunk else { return Ok(None) };
            match reader.next_chunk()? {
                Some(expected) if expected.id == self.store.ids().id(BlobKind::Data, &chunk.data) => {}
                _ => return Ok(None),
            }
        }
        Ok(reader.next_chunk()?.is_none().then_some(file))
    }

    /// Links `rel` to `first`, which this restore wrote; true when made.
    fn link(&self, rel: &Path, first: &Path) -> Done<bool> {
        if self.is_blocked(rel) || self.is_blocked(first) {
            return Ok(false);
        }
        let (first_dir, first_name) = self.parent(first)?;
        let (dir, name) = self.parent(rel)?;
        if !self.clear(dir.as_fd(), name, rel)? {
            return Ok(false);
        }
        // No AT_SYMLINK_FOLLOW: whatever is at `first` now is linked
        // itself, never what a symlink swapped in there points at.
        linkat(first_dir.as_fd(), first_name, dir.as_fd(), name, AtFlags::empty())
            .map_err(|e| target_error("making the hard link", rel, e))?;
        Ok(true)
    }

    fn other(&self, rel: &Path, entry: &Entry) -> Done<Made> {
        if self.is_blocked(rel) {
            return Ok(Made::No);
        }
        let device = matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice);
        if device && !self.options.special {
            return Ok(Made::LeftOut);
        }
        if device && !nix::unistd::geteuid().is_root() {
            self.problem(rel, "not restored: device files can only be restored by root");
            return Ok(Made::No);
        }
        let (dir, name) = self.parent(rel)?;
        if !self.clear(dir.as_fd(), name, rel)? {
            return Ok(Made::No);
        }
        let made = match entry.kind {
            EntryKind::Symlink => {
                symlinkat(OsStr::from_bytes(&entry.target), dir.as_fd(), name).map_err(io::Error::from)
            }
            _ => make_special_at(dir.as_fd(), name, entry),
        };
        made.map_err(|e| target_error("creating it", rel, e))?;
        for problem in apply(Target::At(dir.as_fd(), name), entry, &self.apply, &self.names, None) {
            self.problem(rel, problem);
        }
        Ok(Made::Yes)
    }
}
