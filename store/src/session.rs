//! Write sessions: the commit protocol.
//!
//! A session appends blobs to containers of its own and, at the end, commits
//! them in one synced RocksDB batch. Step by step:
//!
//! 1. **Write.** For each blob, [`WriteSession::missing`] asks the index. A
//!    blob with refs > 0 is deduplicated (not written). A blob that is absent,
//!    or present at refs 0 (condemned, about to be collected), is written again
//!    to the session's own container: a session never relies on a condemned
//!    copy. Nothing the session writes is visible to anyone yet: the index does
//!    not name its containers.
//! 2. **Seal.** At commit, the open containers get their footers and are
//!    fdatasync'ed, and their directories fsynced, *before* the commit lock is
//!    taken (slow I/O stays outside the lock) and before any index entry names
//!    them.
//! 3. **Commit.** Under the store's commit lock, references are resolved from
//!    the roots down (`commit.rs`), and one synced `WriteBatch` holds: the
//!    records (object, dataset), the new index entries, the reference deltas,
//!    the zero-queue entries for counts that reached zero, the session's
//!    container records (which is what makes the containers committed), and
//!    tid + 1.
//!
//! A crash before the batch is durable leaves container files with no record;
//! opening the store deletes them (`Store::recover`). A crash after it loses
//! nothing. So nothing committed is lost and nothing uncommitted is visible.
//!
//! Memory is flat in what the session writes: the blobs of its open
//! containers are in memory, the rest in the index's `pending` family
//! (`pending.rs`); a commit's resolution keeps at most a fixed number of
//! entries in memory, and a larger one is staged and applied in pieces
//! (`apply.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::commit::{Commit, Resolution, SessionBlobs};
use crate::config::StoreConfig;
use crate::container::{
    ContainerKind, ContainerWriter, EncodedBlob, FooterLayout, FrameBuilder, RECORD_HEADER_LEN, TableEntry, encode_blob,
};
use crate::error::{Error, Result};
use crate::fault::{crash_point, lost_acknowledgement};
use crate::ids::{BlobId, BlobKind, ContainerId, SessionId, Tid};
use crate::index::{ContainerRecord, ContainerShape, IndexEntry, cf, meta};
use crate::log::{Body, LogRecord};
use crate::pending::{self, Pending};
use crate::store::{Store, StoreInner};

/// Where a blob this session wrote lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    pub(crate) container: ContainerId,
    pub(crate) record: TableEntry,
    /// The index had no entry for the blob when this session looked: if no
    /// commit happened since the session started, it still has none, and
    /// the commit need not look again.
    pub(crate) absent: bool,
}

/// A container this session sealed.
#[derive(Clone, Copy, Debug)]
struct Sealed {
    id: ContainerId,
    shape: ContainerShape,
}

/// Full containers being sealed in the background at once: sealing ends in
/// an fdatasync and a directory fsync, which would otherwise stall ingest
/// for each container. The commit waits for all of them before it takes the
/// commit lock.
const MAX_SEALING: usize = 4;

/// Frames being compressed at once, per core, before a writer waits for
/// the oldest to be appended.
const COMPRESSING_PER_CORE: usize = 2;

/// Blobs past which a session, at its end, compacts its part of the
/// `pending` family away at once instead of leaving it to RocksDB. At
/// 100,000 a backup of `/usr/share` (85,000 new blobs) left a 6 MB table
/// file of dead scratch entries in the index, 2.5% of the store; its
/// files lie wholly in the session's range, so they are dropped, not
/// rewritten.
const LARGE_SESSION_BLOBS: u64 = 10_000;

/// One writer's unit of work; see the module documentation.
///
/// Its methods take `&self`, so many threads can write through one session
/// (a backup ingests files in parallel); appends are serialized by a mutex
/// held only for the copy into the container buffer.
pub struct WriteSession {
    store: Arc<StoreInner>,
    id: SessionId,
    start_tid: Tid,
    state: Mutex<SessionState>,
    finished: bool,
}

/// What a session has written so far.
#[derive(Default)]
struct SessionState {
    data: Option<ContainerWriter>,
    metadata: Option<ContainerWriter>,
    sealed: Vec<Sealed>,
    sealing: Vec<(ContainerId, JoinHandle<Result<Sealed>>)>,
    pending: Pending,
    blobs_written: u64,
    bytes_written: u64,
    /// In a store that frames data (format 4), the new data chunks not in
    /// a container yet: the open frame, and the full ones compressing.
    frames: Framing,
}

impl SessionState {
    /// Whether this session holds `id` without looking at the index or
    /// `pending`: in an open container, spilled lately, or in a frame.
    fn holds(&self, id: &BlobId) -> bool {
        self.pending.is_open(id) || self.frames.ids.contains(id)
    }
}

/// New data chunks on their way into frames (`container/frame.rs`): a
/// frame being filled per writing thread, across the files each thread
/// writes, and full frames compressing on a pool of the session's own (not
/// the caller's: a backup's file threads wait for them, and must not wait
/// for work queued behind themselves).
///
/// One open frame per thread, not one for the session: a backup's threads
/// each work through their own stretch of the tree, and one shared frame
/// mixed the chunks of eight far-apart files, so that a restore, which
/// writes files in the tree's order, decoded most frames several times
/// (a local restore of the remote bench's tree ran at 383 MiB/s instead
/// of 520 with zstd records one per chunk).
#[derive(Default)]
struct Framing {
    open: HashMap<std::thread::ThreadId, OpenFrame>,
    compressing: VecDeque<Compressing>,
    /// Every chunk in the open frame or compressing: written, as far as
    /// the session's own duplicates go.
    ids: HashSet<BlobId>,
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// A chunk in a frame: its id, plaintext length, and whether the index
/// had no entry for it.
type Member = (BlobId, u32, bool);

/// A frame being filled, and its members so far.
#[derive(Default)]
struct OpenFrame {
    frame: FrameBuilder,
    members: Vec<Member>,
}

/// A frame being compressed: its members, and where its stored bytes
/// (and payload flag) will come.
type Compressing = (Vec<Member>, Receiver<(u8, Vec<u8>)>);

/// A sealed container found on disk with no record: a commit's, when the
/// index lost (or never got) that commit's batch.
pub(crate) struct Found {
    pub(crate) id: ContainerId,
    pub(crate) len: u64,
    pub(crate) table: Vec<TableEntry>,
    pub(crate) layout: FooterLayout,
}

impl WriteSession {
    /// A session holding what `found` holds, as if it had just written and
    /// sealed those containers: for redoing their commit (`log/redo.rs`).
    /// Reads every metadata blob in them for its children.
    pub(crate) fn replaying(store: Arc<StoreInner>, found: &[Found]) -> Result<WriteSession> {
        let id = SessionId(store.next_session.fetch_add(1, Ordering::SeqCst));
        let start_tid = store.index.tid()?;
        let mut state = SessionState::default();
        for container in found {
            let kind = ContainerKind::holding(&container.table);
            let shape = ContainerShape::of(kind, container.len, &container.table, container.layout);
            state.sealed.push(Sealed { id: container.id, shape });
            for entry in &container.table {
                if state.pending.is_open(&entry.id) {
                    continue;
                }
                if entry.kind.is_metadata() {
                    let bytes = store.files.read_blob(container.id, entry)?;
                    state.pending.set_children(entry.id, crate::refs::children_of(entry.kind, entry.id, &bytes)?);
                }
                state.pending.insert(entry.id, Written { container: container.id, record: *entry, absent: false });
                state.blobs_written += 1;
            }
            state.pending.spill(&store.index, id, container.id)?;
        }
        Ok(WriteSession { store, id, start_tid, state: Mutex::new(state), finished: false })
    }

    pub(crate) fn new(store: Arc<StoreInner>, id: SessionId, start_tid: Tid) -> WriteSession {
        WriteSession { store, id, start_tid, state: Mutex::new(SessionState::default()), finished: false }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().expect("session state poisoned")
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The tid that was current when the session started.
    pub fn start_tid(&self) -> Tid {
        self.start_tid
    }

    /// Bytes appended to containers so far (records, compressed). New
    /// data chunks still gathering into frames are compressed and
    /// appended first, so that the count covers everything written.
    pub fn bytes_written(&self) -> Result<u64> {
        let mut state = self.state();
        self.finish_frames(&mut state)?;
        Ok(state.bytes_written)
    }

    /// For each id, whether it must be written: true unless this session wrote
    /// it already or the index has it with at least one reference.
    pub fn missing(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        Ok(self.lookup(ids)?.into_iter().map(|(missing, _)| missing).collect())
    }

    /// For each id: whether it must be written (as [`missing`](Self::missing)
    /// says), and whether the index had no entry at all for it.
    pub(crate) fn lookup(&self, ids: &[BlobId]) -> Result<Vec<(bool, bool)>> {
        let entries = self.store.index.blobs(ids)?;
        let live = |e: &Option<IndexEntry>| e.is_some_and(|e| e.refs > 0 && !e.is_orphan());
        let unknown: Vec<BlobId> = ids.iter().zip(&entries).filter(|(_, e)| !live(e)).map(|(id, _)| *id).collect();
        // Chunks in a frame not appended yet are written too. Asked first:
        // a frame's members move to the session's written blobs under the
        // lock, so one of the two answers finds each.
        let framing: Vec<bool> = {
            let state = self.state();
            unknown.iter().map(|id| state.frames.ids.contains(id)).collect()
        };
        // One answer per id the index does not have live, in `ids`' order.
        let mut written = self.written(&unknown)?.into_iter().zip(framing);
        Ok(entries
            .iter()
            .map(|entry| {
                if live(entry) {
                    return (false, false);
                }
                let (written, framing) = written.next().expect("one answer per unknown id");
                (written.is_none() && !framing, entry.is_none())
            })
            .collect())
    }

    /// Appends an encoded data blob (or a metadata blob without children).
    /// A blob this session wrote already is skipped; returns whether it was
    /// appended.
    pub fn write_blob(&self, blob: &EncodedBlob) -> Result<bool> {
        self.write_blob_seen(blob, false)
    }

    /// [`write_blob`](Self::write_blob) for a blob the index had no entry
    /// for when this session looked it up (`absent`), which spares the
    /// commit a lookup.
    pub(crate) fn write_blob_seen(&self, blob: &EncodedBlob, absent: bool) -> Result<bool> {
        // Data given as plaintext goes into a frame, in a store that has
        // them; anything else is a record of its own.
        if blob.kind == BlobKind::Data && blob.flags == 0 && self.store.config.frames() {
            return self.write_plain_chunk(blob.id, &blob.bytes, absent);
        }
        let mut guard = self.state();
        let state = &mut *guard;
        if state.holds(&blob.id) {
            return Ok(false);
        }
        let writer = self.room_for(state, ContainerKind::for_blob(blob.kind), RECORD_HEADER_LEN + blob.bytes.len())?;
        let record = writer.append(blob)?;
        let container = writer.id();
        state.bytes_written += record.record_len();
        state.blobs_written += 1;
        state.pending.insert(blob.id, Written { container, record, absent });
        Ok(true)
    }

    /// Puts a new data chunk's plaintext `data` in the calling thread's
    /// open frame, in a store with frames (`absent` as for
    /// [`write_blob_seen`](Self::write_blob_seen)). A chunk this session
    /// wrote already is skipped; returns whether it was taken.
    pub(crate) fn write_plain_chunk(&self, id: BlobId, data: &[u8], absent: bool) -> Result<bool> {
        let mut guard = self.state();
        let state = &mut *guard;
        if state.holds(&id) {
            return Ok(false);
        }
        let Some((members, result)) = self.add_to_frame(state, id, data, absent)? else { return Ok(true) };
        // Too many frames compressing: this writer waits for the oldest,
        // without the lock, so the others go on hashing and looking up
        // (waiting under it made every thread wait).
        drop(guard);
        let done = result.recv().map_err(|_| self.compressor_lost())?;
        self.append_frame(&mut self.state(), done, &members)?;
        Ok(true)
    }

    /// The open container of `kind`, with room for a record of `len`
    /// bytes: a full one is sealed in the background and a new one made.
    fn room_for<'s>(
        &self,
        state: &'s mut SessionState,
        kind: ContainerKind,
        len: usize,
    ) -> Result<&'s mut ContainerWriter> {
        let container_size = self.store.config.container_size;
        let slot = match kind {
            ContainerKind::Data => &mut state.data,
            ContainerKind::Metadata => &mut state.metadata,
        };
        if slot.as_ref().is_some_and(|w| !w.is_empty() && w.len() + len as u64 > container_size) {
            let full = slot.take().expect("checked above");
            // Only a full container's blobs leave memory: the last ones
            // stay until the commit, which then writes nothing to the
            // family for a session that fits in one container (and so
            // nothing that RocksDB would flush at close).
            state.pending.spill(&self.store.index, self.id, full.id())?;
            self.seal_in_background(state, full)?;
        }
        let slot = match kind {
            ContainerKind::Data => &mut state.data,
            ContainerKind::Metadata => &mut state.metadata,
        };
        if slot.is_none() {
            let id = ContainerId(self.store.next_container.fetch_add(1, Ordering::SeqCst));
            let layout = self.store.config.footer_layout();
            *slot = Some(ContainerWriter::create(self.store.files.dir(), id, kind, layout)?);
        }
        Ok(slot.as_mut().expect("created above"))
    }

    /// Puts a new data chunk's plaintext in the open frame; a frame it
    /// would overfill goes to be compressed first, and frames compressed
    /// by now are appended. Returns the oldest frame still compressing
    /// when too many are, for the caller to wait for and append (its
    /// members stay known to the session as written meanwhile).
    fn add_to_frame(
        &self,
        state: &mut SessionState,
        id: BlobId,
        data: &[u8],
        absent: bool,
    ) -> Result<Option<Compressing>> {
        let thread = std::thread::current().id();
        let open = state.frames.open.entry(thread).or_default();
        if open.frame.is_full(data.len(), self.store.config.frame_target()) {
            let full = std::mem::take(open);
            self.compress(state, full);
        }
        let raw_len = u32::try_from(data.len())
            .map_err(|_| Error::Usage(format!("chunk {id} of {} bytes is too large for a frame", data.len())))?;
        let open = state.frames.open.entry(thread).or_default();
        open.frame.push(data);
        open.members.push((id, raw_len, absent));
        state.frames.ids.insert(id);
        while let Some((_, result)) = state.frames.compressing.front() {
            let Ok(done) = result.try_recv() else { break };
            let (members, _) = state.frames.compressing.pop_front().expect("looked at above");
            self.append_frame(state, done, &members)?;
        }
        let most = COMPRESSING_PER_CORE * rayon::current_num_threads().max(1);
        Ok(if state.frames.compressing.len() > most { state.frames.compressing.pop_front() } else { None })
    }

    /// Hands a frame to the session's compression pool.
    fn compress(&self, state: &mut SessionState, OpenFrame { frame, members }: OpenFrame) {
        if members.is_empty() {
            return;
        }
        let pool = state.frames.pool.get_or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("cairn-frames-{i}"))
                    .build()
                    .expect("starting the threads that compress frames"),
            )
        });
        let (sender, receiver) = sync_channel(1);
        let codec = self.store.codec;
        pool.spawn(move || {
            let _ = sender.send(frame.encode(codec));
        });
        state.frames.compressing.push_back((members, receiver));
    }

    /// Appends a compressed frame (`flags`, stored bytes) of `members` to
    /// the open data container, and notes where each member went.
    fn append_frame(&self, state: &mut SessionState, (flags, stored): (u8, Vec<u8>), members: &[Member]) -> Result<()> {
        let writer = self.room_for(state, ContainerKind::Data, RECORD_HEADER_LEN + stored.len())?;
        let ids: Vec<(BlobId, u32)> = members.iter().map(|(id, len, _)| (*id, *len)).collect();
        let records = writer.append_frame(flags, &stored, &ids, self.store.config.frame_target())?;
        let container = writer.id();
        state.bytes_written += (RECORD_HEADER_LEN + stored.len()) as u64;
        for (record, (id, _, absent)) in records.into_iter().zip(members) {
            state.blobs_written += 1;
            state.frames.ids.remove(id);
            state.pending.insert(*id, Written { container, record, absent: *absent });
        }
        Ok(())
    }

    /// Puts every new chunk in a container: the open frame is compressed
    /// and every frame still compressing appended.
    fn finish_frames(&self, state: &mut SessionState) -> Result<()> {
        for (_, open) in std::mem::take(&mut state.frames.open) {
            self.compress(state, open);
        }
        while let Some((members, result)) = state.frames.compressing.pop_front() {
            let done = result.recv().map_err(|_| self.compressor_lost())?;
            self.append_frame(state, done, &members)?;
        }
        Ok(())
    }

    fn compressor_lost(&self) -> Error {
        Error::BadStore {
            path: self.store.files.dir().to_path_buf(),
            reason: "a thread compressing a frame panicked".into(),
        }
    }

    /// Stores a metadata blob (a content-list piece or a tree) naming
    /// `children`, unless it is stored already, and returns its id.
    pub fn write_metadata(&self, kind: BlobKind, raw: Vec<u8>, children: Vec<BlobId>) -> Result<BlobId> {
        debug_assert!(kind.is_metadata());
        if raw.len() > kind.max_len() {
            return Err(Error::BlobTooLarge {
                what: format!("a {kind}"),
                kind,
                len: raw.len() as u64,
                max: kind.max_len() as u64,
            });
        }
        let id = self.store.keys_for_writing()?.id(kind, &raw);
        let [(missing, absent)] = self.lookup(&[id])?[..] else { unreachable!("one id, one answer") };
        if !missing {
            return Ok(id);
        }
        // Children first: whoever sees the blob written also finds its children.
        self.state().pending.set_children(id, children);
        self.write_blob_seen(&encode_blob(id, kind, &raw, self.store.codec), absent)?;
        Ok(id)
    }

    /// Seals the open containers and waits for the background seals;
    /// with `keep_metadata`, leaves the metadata container open (the
    /// commit appends its log record to it under the commit lock).
    pub(crate) fn seal_open(&self, keep_metadata: bool) -> Result<()> {
        let mut state = self.state();
        let state = &mut *state;
        self.finish_frames(state)?;
        let metadata = if keep_metadata { None } else { state.metadata.take() };
        for writer in [state.data.take(), metadata].into_iter().flatten() {
            self.seal_in_background(state, writer)?;
        }
        while !state.sealing.is_empty() {
            self.join_oldest_seal(state)?;
        }
        Ok(())
    }

    /// Hands a full container to a sealing thread, first waiting for the
    /// oldest one when `MAX_SEALING` are in flight (this bounds open files and
    /// buffered bytes when the disk is slower than ingest).
    fn seal_in_background(&self, state: &mut SessionState, writer: ContainerWriter) -> Result<()> {
        if state.sealing.len() >= MAX_SEALING {
            self.join_oldest_seal(state)?;
        }
        let id = writer.id();
        let handle = std::thread::spawn(move || {
            let sealed = writer.seal()?;
            crash_point("session:container-sealed");
            let shape = ContainerShape::of(sealed.kind, sealed.len, &sealed.table, sealed.layout);
            Ok(Sealed { id: sealed.id, shape })
        });
        state.sealing.push((id, handle));
        Ok(())
    }

    fn join_oldest_seal(&self, state: &mut SessionState) -> Result<()> {
        let (id, handle) = state.sealing.remove(0);
        let sealed = handle.join().map_err(|_| Error::BadStore {
            path: self.store.files.path(id),
            reason: "the thread sealing this container panicked".into(),
        })?;
        state.sealed.push(sealed?);
        Ok(())
    }

    /// Commits: seals the containers, then, under the commit lock, lets
    /// `build` read the index and describe the change (records to put and
    /// delete, root references to add and drop), resolves references and
    /// writes everything in one synced batch. Returns the new tid.
    ///
    /// If `build` or anything else fails, nothing is committed and the
    /// session's containers are deleted.
    pub fn commit<T>(self, build: impl FnOnce(&mut Commit<'_>) -> Result<T>) -> Result<(Tid, T)> {
        self.commit_noted(String::new(), false, build)
    }

    /// [`commit`](Self::commit), with `note` in the log record (a line for
    /// people), and making the record a checkpoint when `checkpoint`.
    pub fn commit_noted<T>(
        mut self,
        note: String,
        checkpoint: bool,
        build: impl FnOnce(&mut Commit<'_>) -> Result<T>,
    ) -> Result<(Tid, T)> {
        self.seal_open(true)?;
        crash_point("commit:sealed");
        log_index_memory(&self.store.index, "before the commit");
        let store = self.store.clone();
        let _guard = store.lock_commits();
        let index = &store.index;
        let tid = Tid(index.tid()?.0 + 1);
        let mut commit = Commit::new(index, tid);
        let value = build(&mut commit)?;
        let started = std::time::Instant::now();
        let body = Body::Commit { containers: self.container_ids(), changes: commit.changes() };
        self.append_log(&mut commit, body, note, checkpoint)?;
        // Nothing committed since this session began: what it found absent
        // is absent still (entries are only ever inserted by commits).
        let unchanged_since_start = tid.0 == self.start_tid.0 + 1;
        let resolution = Resolution::resolve(index, &commit, &self, unchanged_since_start)?;
        let resolve_seconds = started.elapsed().as_secs_f64();
        // The log record is durable before the batch: from here on the
        // commit is (see `log/mod.rs`).
        self.seal_open(false)?;
        crash_point("commit:logged");
        let state = self.state.get_mut().expect("session state poisoned");
        let written = write_batch(&store, &state.sealed, commit.into_batch(), tid, resolution, COMMIT_POINTS);
        let blobs = state.blobs_written;
        self.settle(written, tid)?;
        tracing::debug!(resolve_seconds, total_seconds = started.elapsed().as_secs_f64(), blobs, "commit {tid}");
        log_index_memory(index, "after the commit");
        Ok((tid, value))
    }

    /// Redoes the commit that log record `log` (of blob `log_id`) describes,
    /// from this session's state, which holds the containers that commit
    /// wrote (`log/redo.rs`), under the commit lock. The record is in those
    /// containers already; nothing is written but the index batch.
    pub(crate) fn redo(mut self, log_id: BlobId, log: &LogRecord) -> Result<Tid> {
        // The containers hold a durable commit: an error here (the index
        // failing) must not remove them; only a commit that cannot be
        // resolved (it names a blob nobody has) never happened.
        self.finished = true;
        let store = self.store.clone();
        let _guard = store.lock_commits();
        let index = &store.index;
        let tid = log.tid();
        let mut commit = Commit::new(index, tid);
        let Body::Commit { changes, .. } = &log.body else { unreachable!("relocations are redone by redo_relocation") };
        for change in changes {
            match &change.value {
                Some(value) => commit.put(change.family.cf(), change.key.clone(), value.clone())?,
                None => commit.delete(change.family.cf(), change.key.clone())?,
            }
        }
        crate::log::write::log_ops(&mut commit, log_id, log.checkpoint.is_some())?;
        let resolution = match Resolution::resolve(index, &commit, &self, false) {
            Err(error @ Error::MissingBlob(_)) => {
                self.finished = false;
                return Err(error);
            }
            result => result?,
        };
        let state = self.state.get_mut().expect("session state poisoned");
        let written = write_batch(&store, &state.sealed, commit.into_batch(), tid, resolution, REDO_POINTS);
        self.settle(written, tid)?;
        Ok(tid)
    }

    /// The ids of the containers this session wrote or is writing.
    pub(crate) fn container_ids(&self) -> Vec<u64> {
        let state = self.state();
        let open = [&state.data, &state.metadata].into_iter().flatten().map(|w| w.id());
        let sealing = state.sealing.iter().map(|(id, _)| *id);
        state.sealed.iter().map(|s| s.id).chain(sealing).chain(open).map(|id| id.0).collect()
    }

    /// Commits a compaction: every blob this session copied whose index
    /// entry still points into one of `old` is repointed at the copy (same
    /// count, same everything else); then the records of `old` are deleted,
    /// in the same synced batch. Fails, committing nothing, if an entry
    /// would still point into `old` afterwards (`tables` are the old
    /// containers' footer tables). The caller removes the old files.
    pub(crate) fn commit_relocation(
        mut self,
        old: &[ContainerId],
        tables: &HashMap<ContainerId, Vec<TableEntry>>,
    ) -> Result<Relocation> {
        self.seal_open(true)?;
        crash_point("compact:sealed");
        let store = self.store.clone();
        let _guard = store.lock_commits();
        let index = &store.index;
        let tid = Tid(index.tid()?.0 + 1);
        // Every record the old containers hold: each entry still pointing
        // into one of them is repointed at this session's copy.
        let candidates =
            tables.iter().filter(|(c, _)| old.contains(c)).flat_map(|(_, table)| table.iter().map(|t| t.id)).collect();
        let moves = repoint(&store, old, candidates, &self)?;
        let body = Body::Relocation {
            containers: self.container_ids(),
            old: old.iter().map(|c| c.0).collect(),
            moved: moves.len() as u64,
        };
        let mut commit = Commit::new(index, tid);
        self.append_log(&mut commit, body, String::new(), false)?;
        let mut resolution = Resolution::resolve(index, &commit, &self, false)?;
        self.seal_open(false)?;
        crash_point("compact:logged");
        let state = self.state.get_mut().expect("session state poisoned");
        let batch = relocation_batch(index, commit, &mut resolution, &moves, old);
        let sealed = state.sealed.iter().map(|s| s.id).collect();
        let written = write_batch(&store, &state.sealed, batch, tid, resolution, COMPACT_POINTS);
        self.settle(written, tid)?;
        Ok(Relocation { moved: moves.len() as u64, new_containers: sealed })
    }

    /// Redoes a compaction whose log record `log` is durable but whose
    /// batch is not: the entries still pointing into its old containers
    /// are repointed at the copies this session's state holds.
    pub(crate) fn redo_relocation(mut self, log_id: BlobId, log: &LogRecord) -> Result<Tid> {
        self.finished = true;
        let Body::Relocation { old, .. } = &log.body else { unreachable!("commits are redone by redo") };
        let old: Vec<ContainerId> = old.iter().map(|c| ContainerId(*c)).collect();
        let store = self.store.clone();
        let _guard = store.lock_commits();
        let index = &store.index;
        let tid = log.tid();
        // A replaying session holds nothing in memory: every blob it
        // found is in the family.
        let candidates = pending::spilled_ids(index, self.id)?;
        let moves = repoint(&store, &old, candidates, &self)?;
        let mut commit = Commit::new(index, tid);
        crate::log::write::log_ops(&mut commit, log_id, log.checkpoint.is_some())?;
        let mut resolution = Resolution::resolve(index, &commit, &self, false)?;
        let batch = relocation_batch(index, commit, &mut resolution, &moves, &old);
        let state = self.state.get_mut().expect("session state poisoned");
        let written = write_batch(&store, &state.sealed, batch, tid, resolution, REDO_POINTS);
        self.settle(written, tid)?;
        for container in &old {
            crate::compact::remove_container_file(&store.files, *container)?;
        }
        Ok(tid)
    }

    /// After the commit batch was handed to the index: either way the
    /// session is over. If the write failed, it may still have reached
    /// RocksDB's log and come back when the index is next opened, naming
    /// this session's containers: so nothing is removed (the next writer's
    /// open keeps the containers that have a record and deletes the rest),
    /// and this process takes no more commits.
    fn settle(&mut self, written: Result<()>, tid: Tid) -> Result<()> {
        self.finished = true;
        if written.is_ok() {
            self.clear_pending();
        }
        written.map_err(|error| {
            self.store.poison();
            Error::CommitUnknown { tid, cause: error.to_string() }
        })
    }

    /// Gives up: deletes the session's containers. Same as dropping it.
    pub fn abort(self) {}

    /// Empties the session's part of the `pending` family (best effort: a
    /// writer's next open empties the whole family anyway).
    fn clear_pending(&self) {
        let (spilled, large) = match self.state.lock() {
            Ok(state) => (state.pending.spilled(), state.blobs_written > LARGE_SESSION_BLOBS),
            Err(_) => (true, true),
        };
        if spilled && let Err(error) = pending::clear(&self.store.index, self.id, large) {
            tracing::warn!(%error, session = %self.id, "could not empty the session's scratch entries");
        }
    }

    fn cleanup(&mut self) -> Result<()> {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for writer in [state.data.take(), state.metadata.take()].into_iter().flatten() {
            writer.discard()?;
        }
        for (id, handle) in state.sealing.drain(..) {
            // Sealed or not, the file is this session's to remove.
            let _ = handle.join();
            let path = self.store.files.path(id);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing abandoned container", &path, e))?;
        }
        for sealed in state.sealed.drain(..) {
            let path = self.store.files.path(sealed.id);
            std::fs::remove_file(&path).map_err(|e| Error::io("removing abandoned container", &path, e))?;
        }
        Ok(())
    }
}

/// The entries among `candidates` that still point into one of `old`, each
/// repointed at this session's copy (same count, same everything else).
/// An entry pointing into `old` with no copy stops the compaction.
fn repoint(
    store: &StoreInner,
    old: &[ContainerId],
    mut candidates: Vec<BlobId>,
    session: &dyn SessionBlobs,
) -> Result<Vec<(BlobId, IndexEntry, u64)>> {
    candidates.sort_unstable();
    candidates.dedup();
    let written = session.written(&candidates)?;
    let mut moves = Vec::new();
    for ((id, entry), written) in candidates.iter().zip(store.index.blobs(&candidates)?).zip(written) {
        let Some(entry) = entry.filter(|e| !e.is_orphan() && old.contains(&e.container)) else { continue };
        let Some(written) = written else {
            return Err(Error::BadStore {
                path: store.files.path(entry.container),
                reason: format!("compaction did not copy live blob {id}; nothing was changed"),
            });
        };
        moves.push((
            *id,
            IndexEntry::new(written.container, &written.record, entry.refs),
            written.record.accounted_len(),
        ));
    }
    Ok(moves)
}

/// A relocation's batch: the log's changes, the repointed entries (whose
/// copies count as live), and the old containers' records deleted; the
/// log record's own entry follows with the resolution.
fn relocation_batch(
    index: &crate::index::Index,
    commit: Commit<'_>,
    resolution: &mut Resolution<'_>,
    moves: &[(BlobId, IndexEntry, u64)],
    old: &[ContainerId],
) -> rocksdb::WriteBatch {
    let mut batch = commit.into_batch();
    for (id, entry, record_len) in moves {
        batch.put_cf(index.cf(cf::BLOBS), id.as_bytes(), entry.encode());
        resolution.add_live(entry.container, *record_len);
    }
    for container in old {
        batch.delete_cf(index.cf(cf::CONTAINERS), container.key());
    }
    batch
}

/// The crash points around a commit's batch, and a compaction's.
const COMMIT_POINTS: [&str; 2] = ["commit:resolved", "commit:written"];
const COMPACT_POINTS: [&str; 2] = ["compact:resolved", "compact:written"];
const REDO_POINTS: [&str; 2] = ["redo:resolved", "redo:written"];

/// What a compaction commit did.
#[derive(Clone, Debug)]
pub(crate) struct Relocation {
    /// Entries repointed at new copies.
    pub(crate) moved: u64,
    /// The containers the copies went to.
    pub(crate) new_containers: Vec<ContainerId>,
}

/// The end of every commit, under the commit lock: the session's sealed
/// containers get their records (the bytes of copies that no entry names,
/// the ones the resolution did not count live, counted as dead), the tid
/// and the container counter move on, and the batch is written and
/// synced, with the resolution's entries in it or, when they spilled,
/// applied from the stage first (`apply.rs`). The two crash points
/// surround the final write.
fn write_batch(
    store: &StoreInner,
    sealed: &[Sealed],
    mut batch: rocksdb::WriteBatch,
    tid: Tid,
    resolution: Resolution<'_>,
    crash_points: [&'static str; 2],
) -> Result<()> {
    let index = &store.index;
    for sealed in sealed {
        let record = ContainerRecord::new(&sealed.shape, tid, false, resolution.live_bytes(sealed.id));
        batch.put_cf(index.cf(cf::CONTAINERS), sealed.id.key(), record.encode());
    }
    batch.put_cf(index.cf(cf::META), meta::TID, tid.0.to_le_bytes());
    let next_container = store.next_container.load(Ordering::SeqCst);
    batch.put_cf(index.cf(cf::META), meta::NEXT_CONTAINER, next_container.to_le_bytes());
    let sync = !crate::fault::skip_sync("commit");
    if resolution.write_to(&mut batch, tid)? {
        return crate::apply::commit_staged(index, batch, sync, crash_points);
    }
    crash_point(crash_points[0]);
    index.write(batch, sync)?;
    crash_point(crash_points[1]);
    lost_acknowledgement(crash_points[1])
}

impl SessionBlobs for WriteSession {
    fn written(&self, ids: &[BlobId]) -> Result<Vec<Option<Written>>> {
        let (mut found, spilled) = {
            let state = self.state();
            (state.pending.in_memory(ids), state.pending.spilled())
        };
        if spilled {
            pending::written_spilled(&self.store.index, self.id, ids, &mut found)?;
        }
        Ok(found)
    }

    fn stage_limit(&self) -> usize {
        self.store.stage_limit.load(Ordering::SeqCst)
    }

    fn children(&self, ids: &[BlobId]) -> Result<Vec<Vec<BlobId>>> {
        let mut found = self.state().pending.children_in_memory(ids);
        pending::children_spilled(&self.store.index, self.id, ids, &mut found)?;
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        if !self.finished {
            self.clear_pending();
            // Best effort: a file left behind is removed by the next open.
            if let Err(error) = self.cleanup() {
                tracing::warn!(%error, session = %self.id, "could not remove an abandoned session's containers");
            }
        }
        self.store.sessions.lock().expect("session table poisoned").remove(&self.id);
    }
}

impl WriteSession {
    /// The store's settings.
    pub(crate) fn config(&self) -> &StoreConfig {
        &self.store.config
    }

    /// The store's chunker.
    pub fn chunker(&self) -> &cairn_chunker::ChunkerConfig {
        &self.store.chunker
    }

    /// The store this session writes to.
    pub fn store(&self) -> Store {
        Store { inner: self.store.clone() }
    }
}

/// What the index holds in memory at `when`, in MiB, at debug level.
fn log_index_memory(index: &crate::index::Index, when: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    if let Ok(uses) = index.memory_use() {
        let uses: Vec<String> =
            uses.iter().map(|(what, bytes)| format!("{what}={:.1}", *bytes as f64 / 1048576.0)).collect();
        tracing::debug!("index memory {when}, MiB: {}", uses.join(" "));
    }
}
