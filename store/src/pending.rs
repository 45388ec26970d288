//! What a write session has written, kept out of memory.
//!
//! A session must find every blob it wrote: to write each once, and for
//! its commit to name its copies. Holding all of them in memory cost about
//! 100 bytes per new chunk before the commit added as much again (issue
//! 18: 2.2 GiB of RSS to put 32 GiB). So only the blobs of the session's
//! *open* containers are in memory; when a full container is handed off to
//! be sealed, its blobs (and the children of its metadata blobs) move to the
//! index's `pending` family, keyed by the session. Memory then holds at
//! most a container's worth of each kind, whatever the session writes.
//!
//! `pending` is scratch: written without RocksDB's write-ahead log, read
//! by nobody but its session, emptied when the session ends and whenever a
//! writer opens the store (no session outlives its process). Losing it in
//! a crash loses nothing: a session that did not commit is discarded
//! whole, and redoing a commit rebuilds it from the containers
//! (`log/redo.rs`).
//!
//! A blob moves to the family *before* it leaves the in-memory map, both
//! under the session's lock, so a lookup that checks memory first and the
//! family second never misses a blob that was written before it began.

use std::collections::{HashMap, HashSet, VecDeque};

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId, SessionId};
use crate::index::{Index, IndexEntry, cf};
use crate::session::Written;

const WRITTEN: u8 = b'w';
const CHILDREN: u8 = b'c';
const KEY_LEN: usize = 8 + 1 + 32;

/// A session's written blobs: the open containers' in memory, the rest in
/// the `pending` family.
#[derive(Default)]
pub(crate) struct Pending {
    open: HashMap<BlobId, Written>,
    children: HashMap<BlobId, Vec<BlobId>>,
    /// Whether anything moved to the family (if not, lookups stop at memory).
    spilled: bool,
    /// The ids of the containers spilled last, newest last, with their
    /// record bytes: see [`RECENT_BYTES`].
    recent: VecDeque<(Vec<BlobId>, u64)>,
    recent_ids: HashSet<BlobId>,
    recent_bytes: u64,
}

/// Ingest looks a batch up several batches before it appends it (the
/// pipeline holds about 6 MiB per file, `ingest.rs`), and the append skips
/// only what the session is known to have written: a blob whose container
/// spilled in between would be written twice. So the ids (not the
/// locations: 32 bytes a blob) of the containers spilled within this many
/// record bytes stay in memory for that check. A duplicate that still
/// slips through (parallel files with the same content) costs its bytes,
/// which the commit counts dead, never correctness.
const RECENT_BYTES: u64 = 8 << 20;

fn key(session: SessionId, tag: u8, id: &BlobId) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&session.0.to_be_bytes());
    key[8] = tag;
    key[9..].copy_from_slice(id.as_bytes());
    key
}

/// The first key of `session`'s range and the first key after it.
fn range(session: SessionId) -> ([u8; 8], [u8; 8]) {
    (session.0.to_be_bytes(), (session.0 + 1).to_be_bytes())
}

fn encode(written: &Written) -> crate::index::entry::EncodedEntry {
    IndexEntry::new(written.container, &written.record, written.absent as i64).encode()
}

fn decode(id: BlobId, bytes: &[u8]) -> Result<Written> {
    let entry = IndexEntry::decode(bytes).ok_or_else(|| Error::BadEntry {
        what: format!("pending blob {id}"),
        reason: format!("{} bytes do not decode", bytes.len()),
    })?;
    Ok(Written { container: entry.container, record: entry.record(id), absent: entry.refs != 0 })
}

impl Pending {
    /// Whether the session wrote `id` to a container still open (or
    /// spilled lately: [`RECENT_BYTES`]).
    pub(crate) fn is_open(&self, id: &BlobId) -> bool {
        self.open.contains_key(id) || self.recent_ids.contains(id)
    }

    /// Whether any blob moved to the family.
    pub(crate) fn spilled(&self) -> bool {
        self.spilled
    }

    /// Records a blob just appended to an open container.
    pub(crate) fn insert(&mut self, id: BlobId, written: Written) {
        self.open.insert(id, written);
    }

    /// Records a metadata blob's children (before the blob is appended).
    pub(crate) fn set_children(&mut self, id: BlobId, children: Vec<BlobId>) {
        self.children.insert(id, children);
    }

    /// Moves the blobs of `container`, which is being sealed, and the
    /// children of its metadata blobs, to the family.
    pub(crate) fn spill(&mut self, index: &Index, session: SessionId, container: ContainerId) -> Result<()> {
        let mut ids: Vec<BlobId> =
            self.open.iter().filter(|(_, w)| w.container == container).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        // In key order (children's tag sorts before the written one's):
        // RocksDB's memtable inserts each key starting from where the last
        // one went, so a sorted batch skips most of the skip list's search
        // (`perf` on a first backup of `/usr/lib`: the skip list and its key
        // comparisons took 4.6% of the processor time in hash order, 3.3%
        // sorted, where the commit's own sorted inserts are most of it).
        ids.sort_unstable();
        let mut batch = WriteBatch::default();
        let family = index.cf(cf::PENDING);
        for id in &ids {
            if let Some(children) = self.children.get(id) {
                batch.put_cf(
                    family,
                    key(session, CHILDREN, id),
                    children.iter().flat_map(|c| *c.as_bytes()).collect::<Vec<u8>>(),
                );
            }
        }
        for id in &ids {
            batch.put_cf(family, key(session, WRITTEN, id), encode(&self.open[id]));
        }
        index.write_unlogged(batch)?;
        self.spilled = true;
        let mut bytes = 0;
        for id in &ids {
            bytes += self.open.remove(id).map_or(0, |w| w.record.accounted_len());
            self.children.remove(id);
        }
        self.recent_ids.extend(ids.iter().copied());
        self.recent.push_back((ids, bytes));
        self.recent_bytes += bytes;
        while self.recent_bytes > RECENT_BYTES && self.recent.len() > 1 {
            let (old, old_bytes) = self.recent.pop_front().expect("more than one");
            self.recent_bytes -= old_bytes;
            for id in &old {
                self.recent_ids.remove(id);
            }
        }
        Ok(())
    }

    /// Where memory says the session wrote each id (`None` for those to
    /// look up in the family, if it [`spilled`](Self::spilled)).
    pub(crate) fn in_memory(&self, ids: &[BlobId]) -> Vec<Option<Written>> {
        ids.iter().map(|id| self.open.get(id).copied()).collect()
    }

    /// The children of metadata blobs the session wrote, from memory when
    /// their container is open; `None` for those to look up in the family.
    pub(crate) fn children_in_memory(&self, ids: &[BlobId]) -> Vec<Option<Vec<BlobId>>> {
        ids.iter().map(|id| self.children.get(id).cloned()).collect()
    }
}

/// Completes `found` (memory's answer for `ids`) from the family.
pub(crate) fn written_spilled(
    index: &Index,
    session: SessionId,
    ids: &[BlobId],
    found: &mut [Option<Written>],
) -> Result<()> {
    fill_from_family(index, session, WRITTEN, ids, found, |id, bytes| decode(id, &bytes).map(Some))
}

/// Completes `found` (children from memory) from the family; a metadata
/// blob the session wrote always has its children recorded (an empty list
/// when it names none).
pub(crate) fn children_spilled(
    index: &Index,
    session: SessionId,
    ids: &[BlobId],
    found: &mut [Option<Vec<BlobId>>],
) -> Result<()> {
    fill_from_family(index, session, CHILDREN, ids, found, |id, bytes| {
        if bytes.len() % 32 != 0 {
            return Err(Error::BadEntry {
                what: format!("pending children of {id}"),
                reason: format!("{} bytes are not a list of ids", bytes.len()),
            });
        }
        Ok(Some(bytes.chunks_exact(32).filter_map(BlobId::from_slice).collect()))
    })
}

/// Looks up, in one batch, the `tag` keys of the ids `found` lacks, and
/// fills in what `decode` makes of each value found.
fn fill_from_family<T>(
    index: &Index,
    session: SessionId,
    tag: u8,
    ids: &[BlobId],
    found: &mut [Option<T>],
    decode: impl Fn(BlobId, Vec<u8>) -> Result<Option<T>>,
) -> Result<()> {
    let missing: Vec<usize> = (0..ids.len()).filter(|&i| found[i].is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let keys: Vec<[u8; KEY_LEN]> = missing.iter().map(|&i| key(session, tag, &ids[i])).collect();
    for (&i, value) in missing.iter().zip(index.get_many(cf::PENDING, &keys, keys.is_sorted())?) {
        if let Some(bytes) = value {
            found[i] = decode(ids[i], bytes)?;
        }
    }
    Ok(())
}

/// Every blob id the session moved to the family, in order.
pub(crate) fn spilled_ids(index: &Index, session: SessionId) -> Result<Vec<BlobId>> {
    let mut prefix = session.0.to_be_bytes().to_vec();
    prefix.push(WRITTEN);
    let mut ids = Vec::new();
    for item in index.scan(cf::PENDING, &prefix) {
        let (key, _) = item?;
        ids.extend(BlobId::from_slice(&key[9..]));
    }
    Ok(ids)
}

/// Empties the session's part of the family.
pub(crate) fn clear(index: &Index, session: SessionId, compact: bool) -> Result<()> {
    let (from, to) = range(session);
    index.clear(cf::PENDING, &from, &to, compact)
}

/// Empties the family (a writer's open: no session outlives its process).
pub(crate) fn clear_all(index: &Index) -> Result<()> {
    if index.scan(cf::PENDING, b"").next().is_some() {
        index.clear(cf::PENDING, &[0u8; 8], &[0xff; 9], true)?;
    }
    Ok(())
}
