//! [`Store`]: an open store directory, shared by every session and reader in
//! the process.
//!
//! ```text
//! STORE/
//!   config.json    settings fixed at creation (chunker, container size)
//!   lock           flock'ed by the writing process; holds its pid
//!   index/         RocksDB
//!   containers/    XXXXX/<16 hex digits>: one file per container
//!   remotes.json   remotes by name; in an attached store, the origin that
//!                  containers missing here are read from
//!   staging/       ranges of remote containers a running restore fetched
//!                  ahead (`dataset/stage.rs`)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_chunker::ChunkerConfig;

use crate::config::{StoreConfig, StoreOptions};
use crate::container::{Codec, ContainerFiles, Plain, container_id_of, is_partial_download, sync_dir};
use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId, IdKeys, IdScheme, SessionId, Tid};
use crate::index::{Index, IndexEntry, cf, meta};
use crate::lock::{LockWait, WriterLock};
use crate::session::WriteSession;

/// How a store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Exclusive writer: takes the lock and recovers from crashes.
    Write,
    /// Reader: no lock, index opened read-only; sees the store as of opening.
    ReadOnly,
}

/// An open store. Cheap to clone; all clones share one index and lock.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) root: PathBuf,
    pub(crate) config: StoreConfig,
    pub(crate) chunker: ChunkerConfig,
    /// How this process compresses new blobs (`config.json`'s `compression`).
    pub(crate) codec: Codec,
    /// How blobs are named (`config.json`'s `format`).
    pub(crate) ids: IdScheme,
    pub(crate) index: Index,
    pub(crate) files: ContainerFiles,
    /// Held while a commit (or anything else that lowers reference counts)
    /// reads and writes the index; see `session.rs`.
    pub(crate) commit_lock: Mutex<()>,
    pub(crate) next_container: AtomicU64,
    pub(crate) next_session: AtomicU64,
    /// Running write sessions and the tid each started at (the delete job's
    /// protection horizon).
    pub(crate) sessions: Mutex<BTreeMap<SessionId, Tid>>,
    /// Set when a commit's outcome is unknown (the index failed its write):
    /// what RocksDB holds is only known after reopening, so no more commits.
    poisoned: AtomicBool,
    /// Entries a commit's resolution holds in memory before it spills to
    /// the stage (`apply.rs`).
    pub(crate) stage_limit: std::sync::atomic::AtomicUsize,
    /// Commits this open redid from the log (`log/redo.rs`), described.
    pub(crate) redone: Mutex<Vec<String>>,
    _lock: Option<WriterLock>,
}

impl Store {
    /// Creates a store at `root` (mode 0700), which must not hold one already.
    pub fn create(root: &Path, options: &StoreOptions) -> Result<Store> {
        Store::create_with(root, StoreConfig::new(options))
    }

    /// Creates a store with the given settings (an attached store keeps its
    /// remote's, id included).
    pub fn create_with(root: &Path, config: StoreConfig) -> Result<Store> {
        if root.join("config.json").exists() {
            return Err(Error::BadStore {
                path: root.to_path_buf(),
                reason: "a store already exists here; use it, or choose another --store".into(),
            });
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::io("creating store directory", root, e))?;
        for sub in ["containers", "index"] {
            let path = root.join(sub);
            DirBuilder::new().mode(0o700).create(&path).map_err(|e| Error::io("creating store directory", &path, e))?;
        }
        sync_dir(root)?;
        // The store's own name too: a power cut right after `init` must
        // not take the store away.
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        config.save(root)?;
        Store::open(root, OpenMode::Write)
    }

    /// Opens the store at `root`, creating it with default options when it
    /// does not exist (the first write to the default store).
    pub fn open_or_create(root: &Path) -> Result<Store> {
        Store::open_or_create_waiting(root, LockWait::No, &mut |_| {})
    }

    /// [`Store::open_or_create`], waiting for the writer lock as `wait`
    /// says (see [`Store::open_waiting`]).
    pub fn open_or_create_waiting(root: &Path, wait: LockWait, waiting: &mut dyn FnMut(Option<&str>)) -> Result<Store> {
        if root.join("config.json").exists() {
            Store::open_waiting(root, OpenMode::Write, wait, waiting)
        } else {
            Store::create(root, &StoreOptions::default())
        }
    }

    /// Opens an existing store; a writer fails at once with
    /// [`Error::InUse`] when another process holds the store.
    pub fn open(root: &Path, mode: OpenMode) -> Result<Store> {
        Store::open_waiting(root, mode, LockWait::No, &mut |_| {})
    }

    /// Opens an existing store; a writer waits for the writer lock as
    /// `wait` says, calling `waiting` once, with the holder's pid and
    /// command line, if it has to wait. Readers take no lock.
    pub fn open_waiting(
        root: &Path,
        mode: OpenMode,
        wait: LockWait,
        waiting: &mut dyn FnMut(Option<&str>),
    ) -> Result<Store> {
        let config = StoreConfig::load(root)?;
        let chunker = config.chunker()?;
        let codec = config
            .compression
            .parse::<Codec>()
            .map_err(|reason| Error::BadStore { path: root.to_path_buf(), reason: format!("config.json: {reason}") })?;
        let lock = match mode {
            OpenMode::Write => Some(WriterLock::acquire_waiting(root, wait, waiting)?),
            OpenMode::ReadOnly => None,
        };
        let ids = config.id_scheme();
        let files = ContainerFiles::new(root.join("containers"), ids.clone());
        let index_dir = root.join("index");
        if !index_dir.join("CURRENT").exists() && !files.on_disk()?.is_empty() {
            return Err(Error::IndexDamaged { path: index_dir, reason: "is missing, but containers are there".into() });
        }
        let index = Index::open(&index_dir, mode == OpenMode::ReadOnly).map_err(|error| match error {
            Error::Index { path, cause } if crate::error::is_damage(&cause) => {
                Error::IndexDamaged { path, reason: format!("cannot be opened ({cause})") }
            }
            error => error,
        })?;
        let remotes = crate::remote::Remotes::load(root)?;
        if let Some(origin) = &remotes.origin {
            files.set_remote(Arc::new(crate::remote::RemoteSource::new(remotes.get(origin)?.clone())));
        }
        let inner = StoreInner {
            root: root.to_path_buf(),
            config,
            chunker,
            codec,
            ids,
            index,
            files,
            commit_lock: Mutex::new(()),
            next_container: AtomicU64::new(0),
            next_session: AtomicU64::new(1),
            sessions: Mutex::new(BTreeMap::new()),
            poisoned: AtomicBool::new(false),
            stage_limit: std::sync::atomic::AtomicUsize::new(crate::apply::stage_limit()),
            redone: Mutex::new(Vec::new()),
            _lock: lock,
        };
        if mode == OpenMode::Write {
            // First, a large commit that a crash interrupted while it was
            // applied is finished (`apply.rs`): its containers get their
            // records, so what follows does not take them for orphans.
            if crate::apply::resume(&inner.index)? {
                let line = "a large commit was interrupted while its entries were applied; finished it".to_string();
                inner.redone.lock().expect("redone list poisoned").push(line);
            }
            crate::pending::clear_all(&inner.index)?;
        }
        let (next, orphans) = if mode == OpenMode::Write { inner.recover()? } else { (0, Vec::new()) };
        inner.next_container.store(next, Ordering::SeqCst);
        let store = Store { inner: Arc::new(inner) };
        store.settle_orphans(&orphans)?;
        Ok(store)
    }

    /// Crash recovery, second part: redoes the commits whose log records
    /// the orphan containers hold (`log/redo.rs`), then deletes the rest
    /// whole (sessions that never committed: no committed entry names them).
    fn settle_orphans(&self, orphans: &[ContainerId]) -> Result<()> {
        let committed = crate::log::redo::roll_forward(self, orphans)?;
        let mut shards = std::collections::BTreeSet::new();
        for id in orphans.iter().filter(|id| !committed.contains(id)) {
            let path = self.inner.files.path(*id);
            tracing::info!(container = %id, "removing container left by an interrupted session");
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing uncommitted container", &path, e)),
            }
            shards.extend(path.parent().map(Path::to_path_buf));
        }
        for shard in shards {
            sync_dir(&shard)?;
        }
        Ok(())
    }

    /// The commits that opening the store redid from the log, because the
    /// index lacked them (an interrupted commit, or an index that lost its
    /// newest writes), one line each.
    pub fn redone(&self) -> Vec<String> {
        self.inner.redone.lock().expect("redone list poisoned").clone()
    }

    /// Makes commits of more than `entries` changed index entries go
    /// through the stage (`CAIRN_STAGE_ENTRIES` does the same for a whole
    /// process): for tests of that path with commits of test size.
    #[doc(hidden)]
    pub fn set_stage_limit(&self, entries: usize) {
        self.inner.stage_limit.store(entries.max(1), Ordering::SeqCst);
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The store's chunker.
    pub fn chunker(&self) -> &ChunkerConfig {
        &self.inner.chunker
    }

    /// How new blobs are compressed.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// How the store names blobs.
    pub fn ids(&self) -> &IdScheme {
        &self.inner.ids
    }

    /// The keys to name new blobs with; an error for a store of a format
    /// that takes no new blobs.
    pub fn keys_for_writing(&self) -> Result<&IdKeys> {
        self.inner.keys_for_writing()
    }

    /// The index, for read-only inspection (statistics, checks).
    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Container files.
    pub fn files(&self) -> &ContainerFiles {
        &self.inner.files
    }

    /// The last committed transaction id.
    pub fn tid(&self) -> Result<Tid> {
        self.inner.index.tid()
    }

    /// Starts a write session.
    pub fn session(&self) -> Result<WriteSession> {
        if self.inner.index.is_read_only() {
            return Err(Error::ReadOnly);
        }
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let id = SessionId(self.inner.next_session.fetch_add(1, Ordering::SeqCst));
        // Taking the commit lock orders the session's start against commits:
        // the tid it records is one that no later commit can precede.
        let start_tid = {
            let _commit = self.inner.lock_commits();
            let tid = self.inner.index.tid()?;
            self.inner.sessions.lock().expect("session table poisoned").insert(id, tid);
            tid
        };
        Ok(WriteSession::new(self.inner.clone(), id, start_tid))
    }

    /// The start tid of the oldest running session, if any.
    pub fn oldest_session_tid(&self) -> Option<Tid> {
        self.inner.sessions.lock().expect("session table poisoned").values().min().copied()
    }

    /// Reads one blob by id, checked against the id.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_located(id, self.entry(id)?)
    }

    /// Reads a blob at the location `entry` gives. If that container is gone
    /// (compaction moved the blob after `entry` was read, in this process or,
    /// for a reader, in the writing one), looks the blob up again, after
    /// catching up with the writer's commits, and reads it from its new place.
    pub fn read_located(&self, id: &BlobId, entry: IndexEntry) -> Result<Vec<u8>> {
        self.read_located_plain(id, entry).map(Plain::into_vec)
    }

    /// [`read_located`](Self::read_located), a frame member borrowed from
    /// its decoded frame rather than copied (what a restore writes).
    pub fn read_located_plain(&self, id: &BlobId, entry: IndexEntry) -> Result<Plain> {
        match self.inner.files.read_plain(entry.container, &entry.record(*id)) {
            Err(error) if error.is_not_found() => match self.inner.index.catch_up().and_then(|()| self.entry(id)) {
                Ok(moved) if moved.container != entry.container => {
                    self.inner.files.read_plain(moved.container, &moved.record(*id))
                }
                _ => Err(error),
            },
            result => result,
        }
    }

    /// The live index entries of `ids` (sorted and deduplicated in place,
    /// then looked up in one batch), by id; missing and orphaned ones left
    /// out.
    pub(crate) fn live_entries(&self, ids: &mut Vec<BlobId>) -> Result<HashMap<BlobId, IndexEntry>> {
        ids.sort_unstable();
        ids.dedup();
        let found = self.inner.index.blobs(ids)?;
        Ok(ids.iter().zip(found).filter_map(|(id, e)| e.filter(|e| !e.is_orphan()).map(|e| (*id, e))).collect())
    }

    /// A blob's index entry, or an error when it is missing.
    pub fn entry(&self, id: &BlobId) -> Result<IndexEntry> {
        match self.inner.index.blob(id)? {
            Some(entry) if !entry.is_orphan() => Ok(entry),
            _ => Err(Error::MissingBlob(*id)),
        }
    }
}

impl StoreInner {
    pub(crate) fn keys_for_writing(&self) -> Result<&IdKeys> {
        self.ids.for_writing().ok_or_else(|| Error::OldFormat { path: self.root.clone(), format: self.config.format })
    }

    /// See `poisoned`.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn lock_commits(&self) -> MutexGuard<'_, ()> {
        self.commit_lock.lock().expect("commit lock poisoned")
    }

    /// Crash recovery, run when a writer opens the store: every container
    /// file that the index has no record of was written by a session whose
    /// commit the index lacks (it never committed, or its batch was lost).
    /// Returns the next container id to allocate (above every id on disk or
    /// in the index, so ids only grow) and those orphans, for
    /// [`Store::settle_orphans`].
    fn recover(&self) -> Result<(u64, Vec<ContainerId>)> {
        let containers_dir = self.files.dir();
        // What restores from a remote staged (`dataset/stage.rs`) and left
        // when they were killed; a restore still running keeps its open files.
        let staging = self.root.join("staging");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::io("removing staged containers", &staging, e))?;
        }
        let mut next = self.index.meta_u64(meta::NEXT_CONTAINER)?;
        for (key, _) in self.index.scan(cf::CONTAINERS, b"").collect::<Result<Vec<_>>>()? {
            if let Some(id) = ContainerId::from_key(&key) {
                next = next.max(id.0 + 1);
            }
        }
        let mut orphans = Vec::new();
        for shard in read_dir_paths(containers_dir)? {
            let mut removed = 0;
            for path in read_dir_paths(&shard)? {
                if is_partial_download(&path) {
                    tracing::info!(path = %path.display(), "removing a download left by an interrupted attach");
                    fs::remove_file(&path).map_err(|e| Error::io("removing partial download", &path, e))?;
                    removed += 1;
                    continue;
                }
                let Some(id) = container_id_of(&path) else {
                    continue;
                };
                next = next.max(id.0 + 1);
                if self.index.container(id)?.is_none() {
                    orphans.push(id);
                }
            }
            if removed > 0 {
                sync_dir(&shard)?;
            }
        }
        orphans.sort_unstable();
        Ok((next, orphans))
    }
}

/// The mode of the store directory at `root` when users other than its
/// owner may read, list or write it (`None` when they may not, or when it
/// cannot be found out). cairn makes a store directory 0700 when it creates
/// it, but leaves one that existed as it was: callers warn about it, since
/// whoever can read the containers can read every file backed up.
pub fn open_to_others(root: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

pub(crate) fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    entries.map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io("listing", dir, e))).collect()
}
