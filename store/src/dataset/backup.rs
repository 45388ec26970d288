//! `backup`: one commit that stores a new dataset of one or more sources.
//!
//! Every entry is a task on rayon (a directory's task lists it and spawns
//! one task per name), files ingested on all cores through one shared write
//! session. The walk keeps no stack frame per level: a directory waits as a
//! [`Dir`] on the heap for its entries, and the task that delivers the last
//! one writes its tree and delivers it upwards, in a loop. So a hostile
//! tree thousands of levels deep costs heap, not the workers' 2 MiB stacks
//! (the recursive walk overflowed them on a chain of 2,000 one-letter
//! directories, which PATH_MAX still allows).
//!
//! A file whose size, mtime, ctime and inode match its entry in the parent
//! dataset keeps the parent's content list without being read. A file that
//! cannot be read, vanishes, is replaced after it was listed, or changes
//! while it is read is left out and reported; the backup still commits (a
//! "partial" dataset). Files are opened with `O_NOFOLLOW | O_NONBLOCK` (and
//! no symlink anywhere in their path, where `openat2` can refuse one) and
//! checked to be the regular file that was `lstat`ed, and read no further
//! than one byte past the size `lstat` saw: a file swapped for a fifo
//! cannot hang the backup, nor one swapped for a symlink to `/dev/zero`
//! fill the store.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::fsmeta::{Classified, Names, classify, read_entry, unchanged_since};
use super::record::{DatasetId, DatasetRecord, next_id, put_record};
use super::tree::{Entry, EntryKind, Tree};
use super::{Progress, display_path};
use crate::error::{Error, Result};

/// Entries walked and files read at once, per core. A first backup reads
/// from a cold page cache, and a thread waiting on the disk leaves its core
/// idle: measured on 2 cores, backing up `/usr/share` (526 MiB, cold) took
/// 4.9-5.1 s with one thread per core and 3.0 s with four (2.8 s with
/// eight), `/usr/lib` (4.3 GiB) 19.6-20.2 s and 15.0-15.2 s (15.6 s with
/// eight), and a warm `/usr/share` 1.90 s and 1.96 s. Peak RSS on
/// `/usr/lib` went from 151 to 220 MiB (more files in flight).
const BACKUP_THREADS_PER_CORE: usize = 4;
use crate::fault::pause_point;
use crate::ids::{BlobId, BlobKind};
use crate::ingest::ingest_file;
use crate::session::WriteSession;
use crate::sparse;
use crate::store::Store;

/// What to back up, and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Files and directories to back up.
    pub sources: Vec<PathBuf>,
    /// A label for the dataset.
    pub label: Option<String>,
    /// Tags for the dataset.
    pub tags: Vec<String>,
    /// Globs to leave out: one without `/` matches a name anywhere, one with
    /// `/` matches the absolute path.
    pub excludes: Vec<String>,
    /// Do not descend into other file systems (their mount points are kept, empty).
    pub one_file_system: bool,
    /// The dataset to compare with (a spec); by default the latest with the same sources and host.
    pub parent: Option<String>,
    /// Read every file, even those the parent saw unchanged.
    pub read_all: bool,
    /// Stamp the dataset to expire this many ns after it was taken.
    pub expire_after_ns: Option<i64>,
}

/// One entry left out of a dataset.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    /// Its path on the source.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What a backup did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    /// The new dataset.
    pub record: DatasetRecord,
    /// Files read that the parent did not have.
    pub files_new: u64,
    /// Files read that differ from the parent's.
    pub files_changed: u64,
    /// Files the parent had unchanged (not read).
    pub files_unchanged: u64,
    /// Bytes read from the sources.
    pub bytes_read: u64,
    /// Entries left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// Sockets met (never stored).
    pub sockets: u64,
}

#[derive(Default)]
struct Counts {
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    logical: AtomicU64,
    new: AtomicU64,
    changed: AtomicU64,
    unchanged: AtomicU64,
    read: AtomicU64,
    sockets: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A multiply-linked file already read: its entry then, and its content.
type LinkedFile = (Entry, Option<BlobId>);

/// The state of one backup's walk, shared by the worker threads.
struct Walk<'a> {
    store: &'a Store,
    session: &'a WriteSession,
    read_all: bool,
    one_file_system: bool,
    names_glob: GlobSet,
    paths_glob: GlobSet,
    names: Names,
    counts: Counts,
    skipped: Mutex<Vec<Skipped>>,
    /// Content of multiply-linked files already read, by (device, inode).
    linked: Mutex<HashMap<(u64, u64), LinkedFile>>,
    progress: &'a Progress,
    /// The first store error; once set, tasks stop and nothing commits.
    failed: Mutex<Option<Error>>,
}

/// A directory whose entries are being backed up. Its tasks fill `slots`
/// in any order; the one that fills the last writes the tree.
struct Dir {
    /// Its path (empty for the top of the walk).
    path: PathBuf,
    /// Its own entry, whose `blob` the tree fills in; `None` for the top of
    /// the walk (the sources), whose entries the caller takes.
    entry: Mutex<Option<Entry>>,
    /// One slot per name listed; `None` stays for what was left out.
    slots: Mutex<Vec<Option<Entry>>>,
    /// Slots not filled yet.
    remaining: AtomicUsize,
    /// Where the finished entry goes: the directory above, and the slot.
    up: Option<(Arc<Dir>, usize)>,
    /// What the parent dataset had here.
    before: Before,
}

/// What the parent dataset had for a directory's entries.
enum Before {
    /// Nothing (a new directory, or no parent dataset).
    Nothing,
    /// The directory's tree: looked up by name.
    Tree(Tree),
    /// The top of the walk: one per source, by slot.
    Sources(Vec<Option<Entry>>),
}

impl Dir {
    fn new(
        path: PathBuf,
        entry: Option<Entry>,
        slots: usize,
        up: Option<(Arc<Dir>, usize)>,
        before: Before,
    ) -> Arc<Dir> {
        Arc::new(Dir {
            path,
            entry: Mutex::new(entry),
            slots: Mutex::new(vec![None; slots]),
            remaining: AtomicUsize::new(slots),
            up,
            before,
        })
    }

    /// The parent dataset's entry for the name in `slot`.
    fn before(&self, slot: usize, name: &[u8]) -> Option<&Entry> {
        match &self.before {
            Before::Nothing => None,
            Before::Tree(tree) => tree.get(name),
            Before::Sources(entries) => entries.get(slot).and_then(Option::as_ref),
        }
    }
}

impl Drop for Dir {
    /// Unlinks the chain of directories above one by one: dropping the last
    /// reference to a directory 10,000 levels deep (as a failed walk does)
    /// must not recurse 10,000 drops deep.
    fn drop(&mut self) {
        let mut up = self.up.take();
        while let Some((dir, _)) = up {
            up = match Arc::try_unwrap(dir) {
                Ok(mut dir) => dir.up.take(),
                Err(_) => None,
            };
        }
    }
}

/// One name to back up, and the slot of its directory it fills. Its path
/// is made when it runs, so a listed directory of a million names costs
/// a million names, not a million paths.
struct Task {
    /// The path of a source; `None` for a name in `up`.
    source: Option<PathBuf>,
    name: Vec<u8>,
    /// The device of the source it is under; `None` for a source itself.
    top_dev: Option<u64>,
    up: Arc<Dir>,
    slot: usize,
}

/// What a task made: an entry (or nothing, when left out), or a directory
/// whose own tasks will deliver it.
enum Visited {
    Done(Option<Entry>),
    Pending,
}

impl Store {
    /// Backs up `options.sources` as a new dataset. Fails (committing
    /// nothing) on store errors and on sources that do not exist; entries
    /// that cannot be read are left out and listed in the report.
    pub fn backup(&self, options: &BackupOptions, progress: &Progress) -> Result<BackupReport> {
        let started = Instant::now();
        let time_ns = crate::clock::now_ns();
        let sources = absolute_sources(&options.sources)?;
        let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let source_names: Vec<String> = sources.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let (names_glob, paths_glob) = excludes(&options.excludes)?;
        // The session starts before the parent is read: the delete job keeps
        // everything the parent names for as long as the session runs, even
        // if the parent is forgotten meanwhile (its unchanged files' content
        // lists are reused without being written again).
        let session = self.session()?;
        let parent = match &options.parent {
            Some(spec) => Some(self.dataset(spec)?),
            None => self.datasets()?.into_iter().rev().find(|d| d.sources == source_names && d.host == host),
        };
        let walk = Walk {
            store: self,
            session: &session,
            read_all: options.read_all,
            one_file_system: options.one_file_system,
            names_glob,
            paths_glob,
            names: Names::default(),
            counts: Counts::default(),
            skipped: Mutex::new(Vec::new()),
            linked: Mutex::new(HashMap::new()),
            progress,
            failed: Mutex::new(None),
        };
        let (root, root_meta) = match sources.as_slice() {
            [single] if std::fs::symlink_metadata(single).is_ok_and(|m| m.is_dir()) => {
                let parent_root = parent.as_ref().map(|p| p.root_entry());
                let entry = walk.run(vec![(single.clone(), Vec::new(), parent_root)])?.pop().flatten();
                let mut entry = entry.ok_or_else(|| {
                    let skipped = walk.skipped.lock().expect("skip list poisoned");
                    let reason = skipped.last().map_or("unreadable", |s| s.reason.as_str());
                    Error::Usage(format!("cannot back up {}: {reason}", single.display()))
                })?;
                let root = entry.blob.take().expect("a directory entry has a tree");
                (root, Some(entry))
            }
            _ => {
                let parent_tree = parent.as_ref().map(|p| walk.tree(p.root)).transpose()?;
                let tops = sources
                    .iter()
                    .map(|source| {
                        let name = source.file_name().map_or(b"/".as_slice(), |n| n.as_bytes());
                        let name = if name == b"/" { b"root".as_slice() } else { name };
                        let parent_entry = parent_tree.as_ref().and_then(|t| t.get(name)).cloned();
                        (source.clone(), name.to_vec(), parent_entry)
                    })
                    .collect();
                let mut entries: Vec<Entry> = walk.run(tops)?.into_iter().flatten().collect();
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                if let Some(pair) = entries.windows(2).find(|w| w[0].name == w[1].name) {
                    return Err(Error::Usage(format!(
                        "two sources are called '{}'; back them up as separate datasets, or back up their common parent",
                        pair[0].display_name()
                    )));
                }
                (walk.write_tree(Tree { entries })?, None)
            }
        };
        let bytes_added = session.bytes_written()?;
        let counts = &walk.counts;
        let skipped = walk.skipped.into_inner().expect("skip list poisoned");
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (_, record) = session.commit(|commit| {
            let record = DatasetRecord {
                id: next_id(commit)?,
                time_ns,
                host,
                sources: source_names,
                label: options.label.clone(),
                tags: options.tags.clone(),
                root,
                root_meta,
                files: get(&counts.files),
                dirs: get(&counts.dirs),
                others: get(&counts.others),
                logical_bytes: get(&counts.logical),
                bytes_added,
                skipped: skipped.len() as u64,
                parent: parent.as_ref().map(|p| p.id),
                tid: commit.tid(),
                seconds: started.elapsed().as_secs_f64(),
                expires_ns: options.expire_after_ns.map(|after| time_ns.saturating_add(after)),
            };
            put_record(commit, &record)?;
            Ok(record)
        })?;
        tracing::debug!(dataset = %record.id, seconds = started.elapsed().as_secs_f64(), "backup committed");
        Ok(BackupReport {
            record,
            files_new: get(&counts.new),
            files_changed: get(&counts.changed),
            files_unchanged: get(&counts.unchanged),
            bytes_read: get(&counts.read),
            skipped,
            sockets: get(&counts.sockets),
        })
    }

    /// Reads and decodes a tree blob.
    pub fn tree(&self, id: BlobId) -> Result<Tree> {
        Tree::decode(id, &self.read_blob(&id)?)
    }
}

/// The sources as absolute paths (symlinks in them resolved, so a later
/// backup finds the same parent), each checked to exist.
fn absolute_sources(sources: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if sources.is_empty() {
        return Err(Error::Usage("nothing to back up: name at least one file or directory".into()));
    }
    sources
        .iter()
        .map(|source| {
            std::fs::canonicalize(source)
                .map_err(|e| Error::Usage(format!("cannot back up {}: {e}; check the path", source.display())))
        })
        .collect()
}

fn excludes(patterns: &[String]) -> Result<(GlobSet, GlobSet)> {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| Error::Usage(format!("bad --exclude pattern '{pattern}': {e}")))?;
        if pattern.contains('/') {
            paths.add(glob)
        } else {
            names.add(glob)
        };
    }
    let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::Usage(format!("bad --exclude pattern: {e}")));
    Ok((build(names)?, build(paths)?))
}

/// Opens the regular file at `path` that `lstat` saw as `seen`, without
/// updating its atime where allowed (the owner or root), so backing up does
/// not change what the next backup sees.
///
/// A hostile user can swap the file between the `lstat` and the open. So it
/// is opened with `O_NOFOLLOW` (a symlink to `/dev/zero` fails with ELOOP
/// instead of being read forever) and `O_NONBLOCK` (opening a fifo with no
/// writer returns at once instead of hanging the backup), and the open file
/// must be a regular file with the same device and inode. `Ok(Err(why))`
/// says it was not: the caller skips it.
fn open_source(path: &Path, seen: &Metadata) -> std::io::Result<std::result::Result<File, String>> {
    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let opened = match open_no_symlinks(path, flags | OFlag::O_NOATIME) {
        Err(Errno::EPERM) => open_no_symlinks(path, flags),
        other => other,
    };
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(Errno::ELOOP) => return Ok(Err(replaced("a symlink, or under one"))),
        Err(e) => return Err(e.into()),
    };
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Ok(Err(replaced("not a regular file")));
    }
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) {
        return Ok(Err(replaced("another file")));
    }
    // Regular files ignore O_NONBLOCK; clearing it keeps it that way on
    // file systems that might not (FUSE passes the flag through).
    let status = OFlag::from_bits_retain(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(status.difference(OFlag::O_NONBLOCK)))?;
    Ok(Ok(file))
}

/// Opens `path` with `flags` (and `O_NOFOLLOW | O_CLOEXEC`), refusing a
/// symlink anywhere in it where the kernel can (`openat2` with
/// `RESOLVE_NO_SYMLINKS`, Linux 5.6). The walk's paths start canonical and
/// go on with names it listed, so a symlink in one is a directory swapped
/// after it was listed: followed, it would take the walk into files the
/// swapper may not read, and store them under the swapper's path. Where
/// `openat2` is missing (or filtered), only the last component is checked.
fn open_no_symlinks(path: &Path, flags: nix::fcntl::OFlag) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, open, openat2};
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if super::beneath::has_openat2() {
        openat2(AT_FDCWD, path, OpenHow::new().flags(flags).resolve(ResolveFlag::RESOLVE_NO_SYMLINKS))
    } else {
        open(path, flags, nix::sys::stat::Mode::empty())
    }
}

/// The reason a file swapped after its `lstat` is left out.
fn replaced(now: &str) -> String {
    format!("replaced after it was listed (now {now}); left out, back it up again")
}

/// The names in a directory, listed without updating its atime where
/// allowed (as `open_source` does for files), so an unchanged directory
/// stays byte-for-byte the same tree blob in the next backup; opened by a
/// path with no symlink in it, like files.
fn list_dir(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    use nix::dir::Dir;
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let fd = match open_no_symlinks(path, flags | OFlag::O_NOATIME) {
        Err(Errno::EPERM) => open_no_symlinks(path, flags),
        other => other,
    }?;
    let mut dir = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for item in dir.iter() {
        let name = item?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

impl Walk<'_> {
    fn skip(&self, path: &Path, reason: impl std::fmt::Display) {
        tracing::warn!("skipping {}: {reason}", path.display());
        self.skipped
            .lock()
            .expect("skip list poisoned")
            .push(Skipped { path: display_path(path.as_os_str().as_bytes()), reason: reason.to_string() });
    }

    fn tree(&self, id: BlobId) -> Result<Tree> {
        self.store.tree(id)
    }

    fn write_tree(&self, tree: Tree) -> Result<BlobId> {
        self.session.write_metadata(BlobKind::Tree, tree.encode(), tree.children())
    }

    /// Writes the tree of the directory at `path`; one too large for any
    /// reader is refused naming the directory.
    fn write_dir_tree(&self, path: &Path, tree: Tree) -> Result<BlobId> {
        self.write_tree(tree).map_err(|error| match error {
            Error::BlobTooLarge { kind, len, max, .. } => {
                Error::BlobTooLarge { what: format!("the tree of directory {}", path.display()), kind, len, max }
            }
            error => error,
        })
    }

    fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        let name = std::ffi::OsStr::from_bytes(name);
        self.names_glob.is_match(name) || self.paths_glob.is_match(path)
    }

    /// Backs up `tops` (path, name, the parent dataset's entry) in parallel
    /// and returns their entries, `None` for those left out. Fails with the
    /// first store error.
    fn run(&self, tops: Vec<(PathBuf, Vec<u8>, Option<Entry>)>) -> Result<Vec<Option<Entry>>> {
        let befores = tops.iter().map(|(_, _, before)| before.clone()).collect();
        let top = Dir::new(PathBuf::new(), None, tops.len(), None, Before::Sources(befores));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(BACKUP_THREADS_PER_CORE * rayon::current_num_threads())
            .build()
            .map_err(|e| Error::Usage(format!("cannot start backup threads: {e}")))?;
        pool.install(|| {
            rayon::scope(|scope| {
                for (slot, (path, name, _)) in tops.into_iter().enumerate() {
                    let task = Task { source: Some(path), name, top_dev: None, up: top.clone(), slot };
                    scope.spawn(move |scope| self.visit(scope, task));
                }
            })
        });
        if let Some(error) = self.failed.lock().expect("walk error poisoned").take() {
            return Err(error);
        }
        let entries = std::mem::take(&mut *top.slots.lock().expect("slots poisoned"));
        Ok(entries)
    }

    /// Runs one task: its entry is delivered now, or (a directory) by the
    /// last of the tasks it spawns.
    fn visit<'s>(&'s self, scope: &rayon::Scope<'s>, task: Task) {
        if self.failed.lock().expect("walk error poisoned").is_some() {
            return;
        }
        match self.entry(scope, &task) {
            Ok(Visited::Done(entry)) => self.deliver(task.up, task.slot, entry),
            Ok(Visited::Pending) => {}
            Err(error) => self.fail(error),
        }
    }

    fn fail(&self, error: Error) {
        self.failed.lock().expect("walk error poisoned").get_or_insert(error);
    }

    /// Puts `entry` in `slot` of `dir`. The delivery that fills a
    /// directory's last slot writes its tree and delivers the directory's
    /// entry to the one above, and so on up: a loop, not a recursion.
    fn deliver(&self, mut dir: Arc<Dir>, mut slot: usize, mut entry: Option<Entry>) {
        loop {
            dir.slots.lock().expect("slots poisoned")[slot] = entry;
            if dir.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            let Some(mut own) = dir.entry.lock().expect("entry poisoned").take() else {
                return; // the top: `run` takes the entries
            };
            let entries = std::mem::take(&mut *dir.slots.lock().expect("slots poisoned"));
            match self.write_dir_tree(&dir.path, Tree { entries: entries.into_iter().flatten().collect() }) {
                Ok(id) => own.blob = Some(id),
                Err(error) => return self.fail(error),
            }
            let (up, up_slot) = dir.up.clone().expect("only the top has nothing above");
            (dir, slot, entry) = (up, up_slot, Some(own));
        }
    }

    /// The entry for the task's path, with its content stored, or its
    /// directory listed and its tasks spawned; `Done(None)` if it is
    /// excluded, a socket, or could not be read (then reported).
    fn entry<'s>(&'s self, scope: &rayon::Scope<'s>, task: &Task) -> Result<Visited> {
        let path = match &task.source {
            Some(source) => source.clone(),
            None => task.up.path.join(std::ffi::OsStr::from_bytes(&task.name)),
        };
        let (path, name, top_dev) = (path.as_path(), task.name.as_slice(), task.top_dev);
        if top_dev.is_some() && self.excluded(path, name) {
            return Ok(Visited::Done(None));
        }
        pause_point("backup:before-lstat", Some(name));
        let metadata = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.skip(path, e);
                return Ok(Visited::Done(None));
            }
        };
        let kind = match classify(&metadata) {
            Classified::Kind(kind) => kind,
            Classified::Socket => {
                bump(&self.counts.sockets, 1);
                return Ok(Visited::Done(None));
            }
        };
        let mut entry = match read_entry(path, name, kind, &metadata, &self.names) {
            Ok(entry) => entry,
            Err(e) => {
                self.skip(path, e);
                return Ok(Visited::Done(None));
            }
        };
        let parent = task.up.before(task.slot, name).filter(|p| p.kind == kind);
        match kind {
            EntryKind::Dir => {
                if top_dev.is_some() {
                    bump(&self.counts.dirs, 1);
                }
                let dev = top_dev.unwrap_or(metadata.dev());
                if self.one_file_system && metadata.dev() != dev {
                    entry.blob = Some(self.write_tree(Tree::default())?);
                    return Ok(Visited::Done(Some(entry)));
                }
                let before = match parent.and_then(|p| p.blob) {
                    Some(id) => Before::Tree(self.tree(id)?),
                    None => Before::Nothing,
                };
                let mut names = list_dir(path).unwrap_or_else(|e| {
                    self.skip(path, format!("listing the directory: {e}"));
                    Vec::new()
                });
                if names.is_empty() {
                    entry.blob = Some(self.write_tree(Tree::default())?);
                    return Ok(Visited::Done(Some(entry)));
                }
                names.sort_unstable();
                let up = Some((task.up.clone(), task.slot));
                let dir = Dir::new(path.to_path_buf(), Some(entry), names.len(), up, before);
                for (slot, name) in names.into_iter().enumerate() {
                    let child = Task { source: None, name, top_dev: Some(dev), up: dir.clone(), slot };
                    scope.spawn(move |scope| self.visit(scope, child));
                }
                return Ok(Visited::Pending);
            }
            EntryKind::File => {
                if !self.file(path, &metadata, &mut entry, parent)? {
                    return Ok(Visited::Done(None));
                }
                bump(&self.counts.files, 1);
                bump(&self.counts.logical, entry.size);
            }
            _ => bump(&self.counts.others, 1),
        }
        Ok(Visited::Done(Some(entry)))
    }

    /// Fills in a file's content list; false if the file was skipped.
    fn file(&self, path: &Path, listed: &Metadata, entry: &mut Entry, parent: Option<&Entry>) -> Result<bool> {
        let same = |p: &Entry| {
            p.size == entry.size
                && p.mtime_ns == entry.mtime_ns
                && p.ctime_ns == entry.ctime_ns
                && p.inode == entry.inode
        };
        if !self.read_all && parent.is_some_and(same) {
            entry.blob = parent.and_then(|p| p.blob);
            bump(&self.counts.unchanged, 1);
            self.progress.add(1, 0);
            return Ok(true);
        }
        let key = (entry.dev, entry.inode);
        if entry.links > 1
            && let Some((seen, blob)) = self.linked.lock().expect("link table poisoned").get(&key)
            && same(seen)
        {
            entry.blob = *blob;
            self.progress.add(1, 0);
            return Ok(true);
        }
        pause_point("backup:before-open", Some(&entry.name));
        let file = match open_source(path, listed) {
            Ok(Ok(file)) => file,
            Ok(Err(why)) => {
                self.skip(path, why);
                return Ok(false);
            }
            Err(e) => {
                self.skip(path, e);
                return Ok(false);
            }
        };
        let what = path.display().to_string();
        let progress = |bytes| self.progress.add(0, bytes);
        // One byte past the size `lstat` saw is enough to see that the file
        // grew (it is then skipped as changed); a file that grows as fast
        // as it is read is never read to an end that does not come.
        let source = sparse::reader(&file, listed).take(entry.size.saturating_add(1));
        let (content, stats) = match ingest_file(self.session, source, entry.size, &what, &progress) {
            Ok(done) => done,
            Err(Error::Input { cause, .. }) => {
                self.skip(path, cause);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        bump(&self.counts.read, stats.bytes_read);
        let after = file.metadata().map_err(|e| Error::Input { what, cause: e })?;
        if !unchanged_since(entry, &after) || content.size != entry.size {
            self.skip(path, "changed while it was being read; back it up again");
            return Ok(false);
        }
        entry.blob = (content.size > 0).then_some(content.root);
        bump(if parent.is_some() { &self.counts.changed } else { &self.counts.new }, 1);
        self.progress.add(1, 0);
        if entry.links > 1 {
            self.linked.lock().expect("link table poisoned").insert(key, (entry.clone(), entry.blob));
        }
        Ok(true)
    }
}

/// The id a dataset's entry is known by in messages.
pub fn describe(id: DatasetId, path: &[u8]) -> String {
    format!("{id}:/{}", display_path(path))
}
