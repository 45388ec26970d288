//! Reading containers: single blobs by offset (verified against their id),
//! the footer table, and whole-file verification.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::container::container_path;
use crate::container::encode::{EncodedBlob, check_lengths, decode_blob};
use crate::container::footer::FooterLayout;
use crate::container::format::{
    FOOTER_ENTRY_LEN, FRAME_BITS, HEADER_LEN, MAGIC, RECORD_HEADER_LEN, TRAILER_LEN, TableEntry,
};
use crate::container::frame::{Frame, MAX_FRAME_MEMBERS, MAX_FRAME_RAW, Plain, decode_frame};
use crate::container::frame_cache::FrameCache;
use crate::container::source::{ContainerSource, NextRange, RangeSink};
use crate::container::staged::{Admit, Held, PlannedRange, StageReport, Staged, StagedRanges};
use crate::error::{Error, Result};
use crate::ids::BlobKind;
use crate::ids::{ContainerId, IdScheme};

/// Open container files, shared by readers. Holds at most `MAX_OPEN` handles;
/// when full it simply forgets them all (reads come in runs per container, so
/// anything smarter buys little).
///
/// In a store attached from a remote, a container with no local file is
/// read from a [`ContainerSource`] instead: ranges of just the records
/// asked for.
pub struct ContainerFiles {
    dir: PathBuf,
    /// What every record's plaintext must hash to.
    ids: IdScheme,
    open: Mutex<HashMap<ContainerId, Arc<File>>>,
    remote: OnceLock<Arc<dyn ContainerSource>>,
    fetched: Mutex<Fetched>,
    /// Ranges of remote containers fetched ahead (`staged.rs`), and the
    /// signal that one landed or was given up.
    staged: Mutex<StagedRanges>,
    landed: Condvar,
    /// Frames decoded lately, for reads of their other members.
    frames: FrameCache,
}

/// What [`ContainerFiles::stage`] gives the source: which range to fetch
/// next, and where each that lands goes.
struct Stager<'a> {
    files: &'a ContainerFiles,
    ranges: &'a [(ContainerId, u64, u64)],
    report: StageReport,
    failed: Option<Error>,
}

impl RangeSink for Stager<'_> {
    fn next(&mut self) -> NextRange {
        loop {
            let mut staged = self.files.staged.lock().expect("staged ranges poisoned");
            let next = staged.next_to_fetch();
            if next != NextRange::NotYet {
                return next;
            }
            // Memory is full: make room by moving a range that is past its
            // main use to its file (`StagedRanges::evictable`), written
            // outside the lock while readers go on reading it from memory.
            let Some((container, start, bytes)) = staged.evictable() else { return next };
            let Ok((file, _)) = staged.file(container) else { return next };
            drop(staged);
            if file.write_all_at(&bytes, start).is_err() {
                // (A full disk: fetching ahead waits for the writers instead.)
                return next;
            }
            // (If its windows were written meanwhile, the copy just written
            // stays in the file until the restore removes its staging
            // directory: it is read by no one.)
            if self.files.staged.lock().expect("staged ranges poisoned").evicted(container, start, &bytes, file) {
                self.report.spilled += bytes.len() as u64;
            }
        }
    }

    fn landed(&mut self, index: usize, fetched: Result<Vec<u8>>) {
        let Some(&(container, start, _)) = self.ranges.get(index) else { return };
        let files = self.files;
        let landed = fetched.and_then(|bytes| {
            let len = bytes.len() as u64;
            self.report.requests += 1;
            self.report.bytes += len;
            let admit = files.staged.lock().expect("staged ranges poisoned").admit(index, bytes.len());
            let held = match admit {
                Admit::Memory => Some(Held::Memory(Arc::new(bytes))),
                Admit::File => {
                    self.report.spilled += len;
                    Some(files.stage_to_file(container, start, &bytes)?)
                }
                Admit::Drop => None,
            };
            Ok(held.map(|held| (start + len, held)))
        });
        let landed = landed.unwrap_or_else(|error| {
            self.failed.get_or_insert(error);
            None
        });
        let mut staged = files.staged.lock().expect("staged ranges poisoned");
        if landed.is_none() {
            staged.abandon(index);
        }
        staged.settle(container, start, landed);
        drop(staged);
        files.landed.notify_all();
    }
}

/// Where a record is: its container and offset.
type Place = (ContainerId, u64);

/// Records fetched from the remote lately, by place, so a chunk that many
/// files share is downloaded once and a window's prefetched records stay
/// until read. Least recently used goes first, at most [`FETCHED_BYTES`].
#[derive(Default)]
struct Fetched {
    /// Each record, with the last time (a counter) it was used.
    records: HashMap<Place, (Arc<[u8]>, u64)>,
    /// Places in the order they were used; an entry whose time is not the
    /// record's last is stale and skipped.
    order: std::collections::VecDeque<(Place, u64)>,
    bytes: usize,
    clock: u64,
}

const FETCHED_BYTES: usize = 64 << 20;
const MAX_OPEN: usize = 256;
/// Records next to each other in a remote container are fetched in one
/// GET of at most this many bytes.
const MAX_RUN: u64 = 8 << 20;

impl Fetched {
    fn get(&mut self, place: Place) -> Option<Arc<[u8]>> {
        self.clock += 1;
        let clock = self.clock;
        let (record, used) = self.records.get_mut(&place)?;
        *used = clock;
        let record = record.clone();
        self.order.push_back((place, clock));
        if self.order.len() > 4 * self.records.len() + 1024 {
            let records = &self.records;
            self.order.retain(|(place, used)| records.get(place).is_some_and(|(_, last)| last == used));
        }
        Some(record)
    }

    fn insert(&mut self, place: Place, record: &[u8]) {
        if self.records.contains_key(&place) {
            return;
        }
        while self.bytes + record.len() > FETCHED_BYTES {
            let Some((oldest, used)) = self.order.pop_front() else { break };
            if self.records.get(&oldest).is_some_and(|(_, last)| *last == used) {
                self.bytes -= self.records.remove(&oldest).map_or(0, |(r, _)| r.len());
            }
        }
        self.clock += 1;
        self.bytes += record.len();
        self.records.insert(place, (record.into(), self.clock));
        self.order.push_back((place, self.clock));
    }
}

impl ContainerFiles {
    /// Readers of the containers under `dir`.
    pub fn new(dir: PathBuf, ids: IdScheme) -> ContainerFiles {
        ContainerFiles {
            dir,
            ids,
            open: Mutex::new(HashMap::new()),
            remote: OnceLock::new(),
            fetched: Mutex::default(),
            staged: Mutex::default(),
            landed: Condvar::new(),
            frames: FrameCache::default(),
        }
    }

    /// Reads containers missing here from `source` from now on.
    pub fn set_remote(&self, source: Arc<dyn ContainerSource>) {
        let _ = self.remote.set(source);
    }

    /// Announces that the `planned` ranges of remote containers are about
    /// to be fetched, held in memory up to `memory` bytes and in files
    /// under `dir` past that (`staged.rs`): from now on, a read of a record
    /// inside one waits for it to land rather than asking the remote
    /// itself. [`stage`](ContainerFiles::stage) fetches them,
    /// [`window_written`](ContainerFiles::window_written) releases them,
    /// [`unstage`](ContainerFiles::unstage) forgets them.
    pub fn begin_staging(&self, dir: &Path, planned: &[PlannedRange], memory: usize) {
        if self.remote.get().is_some() {
            self.staged.lock().expect("staged ranges poisoned").begin(dir, planned, memory);
        }
    }

    /// Fetches the ranges announced by
    /// [`begin_staging`](ContainerFiles::begin_staging), `jobs` requests at
    /// once, in the order given (a range a reader waits for first), each
    /// held as it lands; reads of records inside them are local from then
    /// on, until the windows that need each are written. While memory is
    /// full (ranges in flight count), no more is asked for. A range that
    /// fails is left to be read from the source by whoever needs it; the
    /// first error is returned once every range has been tried.
    pub fn stage(&self, planned: &[PlannedRange], jobs: usize) -> Result<StageReport> {
        // However staging ends, nothing more is coming: readers waiting on
        // a range go to the source.
        struct SettleAtEnd<'a>(&'a ContainerFiles);
        impl Drop for SettleAtEnd<'_> {
            fn drop(&mut self) {
                if let Ok(mut staged) = self.0.staged.lock() {
                    staged.settle_all();
                }
                self.0.landed.notify_all();
            }
        }
        let _settle = SettleAtEnd(self);
        let Some(source) = self.remote.get() else { return Ok(StageReport::default()) };
        let ranges: Vec<(ContainerId, u64, u64)> = planned.iter().map(|r| (r.container, r.start, r.len)).collect();
        let mut sink = Stager { files: self, ranges: &ranges, report: StageReport::default(), failed: None };
        source.read_ranges_each(&ranges, jobs, &mut sink);
        match sink.failed {
            Some(error) => Err(error),
            None => Ok(sink.report),
        }
    }

    /// Writes one fetched range into its staging file, outside the lock:
    /// reads of what landed before go on meanwhile.
    fn stage_to_file(&self, container: ContainerId, start: u64, bytes: &[u8]) -> Result<Held> {
        let (file, path) = self.staged.lock().expect("staged ranges poisoned").file(container)?;
        file.write_all_at(bytes, start).map_err(|e| Error::io("staging a container", &path, e))?;
        Ok(Held::File(file))
    }

    /// Window `window` of a restore's files is written: what staging held
    /// for it alone is released, and room is made for more requests.
    pub fn window_written(&self, window: usize) {
        self.staged.lock().expect("staged ranges poisoned").written(window);
    }

    /// The restore's writers are done (however they ended): nothing more
    /// is asked for, and whatever lands from now on is dropped.
    pub fn writers_done(&self) {
        self.staged.lock().expect("staged ranges poisoned").close();
        self.landed.notify_all();
    }

    /// Forgets and removes what [`stage`](ContainerFiles::stage) fetched.
    pub fn unstage(&self) {
        self.staged.lock().expect("staged ranges poisoned").clear();
    }

    /// A record of a remote container from its staged range, if it is in one.
    fn read_staged(&self, container: ContainerId, entry: &TableEntry) -> Option<Result<Vec<u8>>> {
        if let Some(member) = self.cached_member(container, entry) {
            return Some(member);
        }
        let (start, end) = match record_range(container, entry) {
            Ok(range) => range,
            Err(error) => return Some(Err(error)),
        };
        let mut staged = self.staged.lock().expect("staged ranges poisoned");
        let (held, from) = loop {
            match staged.find(container, start as u64, end - start) {
                Staged::Here(held, from) => break (held, from),
                Staged::Coming(index) => {
                    // A fetcher held back by a full memory budget must know
                    // someone waits, or both would wait for each other: it
                    // asks for this range next, over the budget if need be.
                    staged.wait_for(index, true);
                    staged = self.landed.wait(staged).expect("staged ranges poisoned");
                    staged.wait_for(index, false);
                }
                Staged::No => return None,
            }
        };
        drop(staged);
        let record = held.read(from, start as u64, end - start);
        Some(
            record
                .map_err(|e| Error::io("reading a staged container", self.path(container), e))
                .and_then(|record| self.check(container, entry, &record)),
        )
    }

    /// Where missing containers are read from, if anywhere.
    pub fn remote(&self) -> Option<&Arc<dyn ContainerSource>> {
        self.remote.get()
    }

    /// Whether the container has a file here.
    pub fn is_local(&self, id: ContainerId) -> bool {
        self.open.lock().expect("container file cache poisoned").contains_key(&id) || self.path(id).exists()
    }

    /// The `containers/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a container.
    pub fn path(&self, id: ContainerId) -> PathBuf {
        container_path(&self.dir, id)
    }

    /// The containers with a file here, in id order (downloads in
    /// progress aside).
    pub fn on_disk(&self) -> Result<Vec<ContainerId>> {
        let mut ids = Vec::new();
        for shard in crate::store::read_dir_paths(&self.dir)? {
            ids.extend(crate::store::read_dir_paths(&shard)?.iter().filter_map(|p| super::container_id_of(p)));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn file(&self, id: ContainerId) -> Result<Arc<File>> {
        if let Some(file) = self.open.lock().expect("container file cache poisoned").get(&id) {
            return Ok(file.clone());
        }
        // Opened outside the lock: other readers' cached files stay at hand.
        let path = self.path(id);
        let file = Arc::new(File::open(&path).map_err(|e| Error::io("opening container", &path, e))?);
        // Reads come many records at a time from each container, in no
        // order the kernel's readahead would guess: ask for the whole file
        // (a few MiB) now, in the background, so a read from a cold cache
        // waits for one large request instead of many small ones. Advice
        // only: if it fails, reads are just slower.
        let _ = nix::fcntl::posix_fadvise(&*file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED);
        let mut open = self.open.lock().expect("container file cache poisoned");
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        Ok(open.entry(id).or_insert(file).clone())
    }

    /// Forgets an open handle (before a container is deleted).
    pub fn forget(&self, id: ContainerId) {
        self.open.lock().expect("container file cache poisoned").remove(&id);
    }

    /// Reads one blob's plaintext, checked against its id.
    pub fn read_blob(&self, container: ContainerId, entry: &TableEntry) -> Result<Vec<u8>> {
        self.read_checked(container, entry).map(Plain::into_vec)
    }

    /// [`read_blob`](Self::read_blob), a frame member borrowed from its
    /// decoded frame rather than copied.
    pub fn read_plain(&self, container: ContainerId, entry: &TableEntry) -> Result<Plain> {
        self.read_checked(container, entry)
    }

    /// Reads records as stored (compressed or not), after checking that
    /// each decodes to its id: what compaction copies into new containers
    /// without compressing again (frame members: their plaintext). The file is read once, whole (containers
    /// are a few MiB), and the records are checked on all cores.
    pub fn read_encoded(&self, container: ContainerId, entries: &[TableEntry]) -> Result<Vec<EncodedBlob>> {
        use rayon::prelude::*;
        let file = self.read_whole(container)?;
        entries
            .par_iter()
            .map(|entry| {
                let (start, end) = record_range(container, entry)?;
                let record = file.get(start..end).ok_or_else(|| Error::CorruptBlob {
                    container,
                    blob: entry.id,
                    reason: "the container is shorter than its index entry says".into(),
                })?;
                if entry.is_member() {
                    // A frame's live members go to the new containers as
                    // plaintext, to be framed again without the dead ones.
                    let bytes = self.check(container, entry, record)?;
                    return Ok(EncodedBlob { id: entry.id, kind: entry.kind, flags: 0, raw_len: entry.raw_len, bytes });
                }
                check_record(&self.ids, container, entry, record)?;
                let bytes = record[RECORD_HEADER_LEN..].to_vec();
                Ok(EncodedBlob { id: entry.id, kind: entry.kind, flags: entry.flags, raw_len: entry.raw_len, bytes })
            })
            .collect()
    }

    /// A whole container file, from the remote when it is not here.
    pub fn read_whole(&self, container: ContainerId) -> Result<Vec<u8>> {
        let path = self.path(container);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.remote.get().is_some() => {
                self.remote.get().expect("checked").read_all(container)
            }
            Err(e) => Err(Error::io("reading container", &path, e)),
        }
    }

    /// Reads many blobs' plaintext, each checked; results in the order
    /// asked. Records of remote containers that lie next to each other are
    /// fetched together, in runs of up to 8 MiB, all runs at once.
    pub fn read_many(&self, items: &[(ContainerId, TableEntry)]) -> Vec<Result<Vec<u8>>> {
        use rayon::prelude::*;
        let remote_only: std::collections::HashSet<ContainerId> = match self.remote.get() {
            Some(_) => items.iter().map(|(c, _)| *c).filter(|&c| !self.is_local(c)).collect(),
            None => Default::default(),
        };
        let mut results: Vec<Option<Result<Vec<u8>>>> = items
            .par_iter()
            .map(|(container, entry)| match record_range(*container, entry) {
                // A record whose lengths are impossible is never fetched.
                Err(error) => Some(Err(error)),
                Ok(_) if remote_only.contains(container) => self.read_staged(*container, entry),
                Ok(_) => Some(self.read_checked(*container, entry).map(Plain::into_vec)),
            })
            .collect();
        if remote_only.is_empty() {
            return results.into_iter().map(|r| r.expect("read locally")).collect();
        }
        // Records fetched lately need no request.
        {
            let mut fetched = self.fetched.lock().expect("fetched records poisoned");
            for (i, (container, entry)) in items.iter().enumerate() {
                if results[i].is_none()
                    && let Some(record) = fetched.get((*container, entry.offset))
                {
                    results[i] = Some(self.check(*container, entry, &record));
                }
            }
        }
        // Runs of adjacent records, in container and offset order.
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        order.sort_by_key(|&i| (items[i].0, items[i].1.offset));
        let mut runs: Vec<((ContainerId, u64, u64), Vec<usize>)> = Vec::new();
        for i in order {
            let (container, entry) = &items[i];
            // Cannot overflow: `record_range` above checked that the record
            // ends within the address space.
            let len = RECORD_HEADER_LEN as u64 + entry.stored_len as u64;
            let end = entry.offset + len;
            match runs.last_mut() {
                Some(((c, start, run_len), members))
                    if c == container && entry.offset <= *start + *run_len && end - *start <= MAX_RUN.max(*run_len) =>
                {
                    *run_len = (*run_len).max(end - *start);
                    members.push(i);
                }
                _ => runs.push(((*container, entry.offset, len), vec![i])),
            }
        }
        let ranges: Vec<(ContainerId, u64, u64)> = runs.iter().map(|(range, _)| *range).collect();
        tracing::debug!(records = items.len(), runs = ranges.len(), "fetching from the remote");
        let fetched = self.remote.get().expect("remote containers need a remote").read_ranges(&ranges);
        for (((container, start, _), members), bytes) in runs.into_iter().zip(fetched) {
            match bytes {
                Ok(bytes) => {
                    let mut fetched = self.fetched.lock().expect("fetched records poisoned");
                    for i in members {
                        let entry = &items[i].1;
                        let from = (entry.offset - start) as usize;
                        let Some(record) = bytes.get(from..from + RECORD_HEADER_LEN + entry.stored_len as usize) else {
                            results[i] = Some(Err(Error::CorruptBlob {
                                container,
                                blob: entry.id,
                                reason: "the remote sent less than the record".into(),
                            }));
                            continue;
                        };
                        let checked = self.check(container, entry, record);
                        if checked.is_ok() {
                            fetched.insert((container, entry.offset), record);
                        }
                        results[i] = Some(checked);
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    let not_found = error.is_not_found();
                    for i in members {
                        results[i] = Some(Err(if not_found {
                            Error::RemoteNotFound { what: format!("reading container {container}") }
                        } else {
                            Error::Remote { what: format!("reading container {container}"), reason: message.clone() }
                        }));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every item read")).collect()
    }

    /// Reads one blob's plaintext, checked.
    fn read_checked(&self, container: ContainerId, entry: &TableEntry) -> Result<Plain> {
        let file = match self.file(container) {
            Err(error) if error.is_not_found() && self.remote.get().is_some() => {
                if let Some(record) = self.read_staged(container, entry) {
                    return record.map(Plain::from);
                }
                return self.read_many(&[(container, *entry)]).pop().expect("one record").map(Plain::from);
            }
            file => file?,
        };
        if entry.is_member() {
            // Read and decoded by one reader, whoever asks first.
            let place = (container, entry.offset);
            let frame = self.frames.get_or_decode(place, || {
                let record = self.read_record(&file, container, entry)?;
                decode_frame_record(container, entry, &record)
            })?;
            check_member(&self.ids, container, entry, &frame)?;
            return Ok(Plain::member(frame, entry.member as usize));
        }
        let record = self.read_record(&file, container, entry)?;
        self.check(container, entry, &record).map(Plain::from)
    }

    /// The bytes of `entry`'s record in `file`.
    fn read_record(&self, file: &File, container: ContainerId, entry: &TableEntry) -> Result<Vec<u8>> {
        // Lengths checked before allocating: they come from the index,
        // which an attach filled from a remote's deltas.
        let (start, end) = record_range(container, entry)?;
        let mut record = vec![0u8; end - start];
        file.read_exact_at(&mut record, entry.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::CorruptBlob {
                    container,
                    blob: entry.id,
                    reason: "the container is shorter than its index entry says".into(),
                }
            } else {
                Error::io("reading container", self.path(container), e)
            }
        })?;
        Ok(record)
    }

    /// `entry`'s plaintext from `record` (the bytes at its offset),
    /// checked: a record's own, or a frame member's from its frame, which
    /// is decoded once for all the members read while it is cached.
    fn check(&self, container: ContainerId, entry: &TableEntry, record: &[u8]) -> Result<Vec<u8>> {
        if !entry.is_member() {
            return check_record(&self.ids, container, entry, record);
        }
        let frame =
            self.frames.get_or_decode((container, entry.offset), || decode_frame_record(container, entry, record))?;
        check_member(&self.ids, container, entry, &frame).map(<[u8]>::to_vec)
    }

    /// How many frames this store's readers have decoded (each is decoded
    /// once while it stays in the shared cache).
    pub fn frames_decoded(&self) -> u64 {
        self.frames.decodes()
    }

    /// A frame member's plaintext, checked, if its frame was decoded lately
    /// (nothing to read then).
    fn cached_member(&self, container: ContainerId, entry: &TableEntry) -> Option<Result<Vec<u8>>> {
        if !entry.is_member() {
            return None;
        }
        let frame = self.frames.get((container, entry.offset))?;
        Some(check_member(&self.ids, container, entry, &frame).map(<[u8]>::to_vec))
    }
}

/// A frame member's lengths against what a frame can hold: a data chunk,
/// in a frame no larger than [`MAX_FRAME_RAW`] with its member table.
fn check_member_lengths(entry: &TableEntry) -> std::result::Result<(), String> {
    check_lengths(entry.kind, entry.raw_len, entry.raw_len)?;
    if entry.kind != BlobKind::Data {
        return Err(format!("a {} blob in a frame (frames hold data)", entry.kind));
    }
    let most = MAX_FRAME_RAW + 2 + 4 * MAX_FRAME_MEMBERS;
    if entry.stored_len as usize > most {
        return Err(format!("a frame of {} stored bytes (at most {most})", entry.stored_len));
    }
    if entry.member as usize >= MAX_FRAME_MEMBERS {
        return Err(format!("member {} of a frame (at most {MAX_FRAME_MEMBERS})", entry.member));
    }
    Ok(())
}

/// Where `entry`'s record lies in its container, `(start, end)`, once its
/// lengths are checked against its kind ([`check_lengths`]) and its end
/// against overflow: the offset and lengths come from disk or a remote.
fn record_range(container: ContainerId, entry: &TableEntry) -> Result<(usize, usize)> {
    let corrupt = |reason: String| Error::CorruptBlob { container, blob: entry.id, reason };
    if entry.is_member() {
        check_member_lengths(entry).map_err(corrupt)?;
    } else {
        check_lengths(entry.kind, entry.raw_len, entry.stored_len).map_err(corrupt)?;
    }
    let start = usize::try_from(entry.offset).map_err(|_| corrupt(format!("offset {} is impossible", entry.offset)))?;
    let end = start
        .checked_add(RECORD_HEADER_LEN + entry.stored_len as usize)
        .filter(|&end| u64::try_from(end).is_ok())
        .ok_or_else(|| corrupt(format!("a record at offset {} would end past 2^64", entry.offset)))?;
    Ok((start, end))
}

/// Checks a whole record (header and stored bytes) against what `entry`
/// says, decodes it and checks the plaintext against the id; returns the
/// plaintext. Any mismatch is an error naming the container and the blob.
/// The id is taken under the kind's key, so a record whose kind was changed
/// fails too.
fn check_record(ids: &IdScheme, container: ContainerId, entry: &TableEntry, record: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::CorruptBlob { container, blob: entry.id, reason };
    let header = TableEntry::decode_record_header(record, entry.offset)
        .ok_or_else(|| corrupt("record header does not decode".into()))?;
    if header.id != entry.id || header.stored_len != entry.stored_len || header.raw_len != entry.raw_len {
        return Err(corrupt(format!("record header names blob {:#} instead", header.id)));
    }
    if header.kind != entry.kind || header.flags != entry.flags {
        return Err(corrupt("record header disagrees with the index on kind or flags".into()));
    }
    let stored = record.get(RECORD_HEADER_LEN..).unwrap_or_default();
    let plain = decode_blob(header.kind, header.flags, header.raw_len, stored).map_err(corrupt)?;
    let actual = ids.id(header.kind, &plain);
    if actual != entry.id {
        return Err(corrupt(format!("content hashes to {actual:#}")));
    }
    Ok(plain)
}

/// Decodes the frame `record` holds, for `entry`, one of its members:
/// the record header must be a frame's with the entry's flags and stored
/// length.
fn decode_frame_record(container: ContainerId, entry: &TableEntry, record: &[u8]) -> Result<Frame> {
    let corrupt = |reason: String| Error::CorruptBlob { container, blob: entry.id, reason };
    let header = TableEntry::decode_record_header(record, entry.offset)
        .ok_or_else(|| corrupt("record header does not decode".into()))?;
    if header.kind != BlobKind::Data || header.flags != entry.flags || header.stored_len != entry.stored_len {
        return Err(corrupt("the record there is not the frame the index says".into()));
    }
    let frame = decode_frame(header.flags & !FRAME_BITS, record.get(RECORD_HEADER_LEN..).unwrap_or_default())
        .map_err(|reason| corrupt(format!("its frame does not decode: {reason}")))?;
    if frame.raw_len() != header.raw_len as usize {
        return Err(corrupt(format!("its frame holds {} bytes, the record says {}", frame.raw_len(), header.raw_len)));
    }
    Ok(frame)
}

/// `entry`'s plaintext from its decoded frame, checked against its id.
fn check_member<'f>(ids: &IdScheme, container: ContainerId, entry: &TableEntry, frame: &'f Frame) -> Result<&'f [u8]> {
    let corrupt = |reason: String| Error::CorruptBlob { container, blob: entry.id, reason };
    let plain = frame
        .member(entry.member as usize)
        .ok_or_else(|| corrupt(format!("its frame has no member {}", entry.member)))?;
    if plain.len() != entry.raw_len as usize {
        return Err(corrupt(format!(
            "member {} holds {} bytes, the index says {}",
            entry.member,
            plain.len(),
            entry.raw_len
        )));
    }
    let actual = ids.id(entry.kind, plain);
    if actual != entry.id {
        return Err(corrupt(format!("content hashes to {actual:#}")));
    }
    Ok(plain)
}

/// A sealed container's footer: its table, and the layout it was in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Every record, in file order.
    pub table: Vec<TableEntry>,
    /// How the table was laid out.
    pub layout: FooterLayout,
}

/// Reads a sealed container's footer table. Checks the trailer's shape, not
/// the whole-file hash (see [`verify_container`]).
pub fn read_table(path: &Path, id: ContainerId) -> Result<Vec<TableEntry>> {
    read_footer(path, id).map(|footer| footer.table)
}

/// [`read_table`], with the layout the table was in.
pub fn read_footer(path: &Path, id: ContainerId) -> Result<Footer> {
    let file = File::open(path).map_err(|e| Error::io("opening container", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("reading container", path, e))?.len();
    parse_footer(id, path, len, |offset, len| {
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset).map_err(|e| Error::io("reading container", path, e))?;
        Ok(bytes)
    })
}

/// Parses the footer table of a container `len` bytes long, reading its
/// parts with `read_at(offset, len)`.
#[cfg(test)]
pub(crate) fn parse_table(
    id: ContainerId,
    path: &Path,
    len: u64,
    read_at: impl Fn(u64, usize) -> Result<Vec<u8>>,
) -> Result<Vec<TableEntry>> {
    parse_footer(id, path, len, read_at).map(|footer| footer.table)
}

/// Parses the footer of a container `len` bytes long, reading its parts
/// with `read_at(offset, len)`.
fn parse_footer(
    id: ContainerId,
    path: &Path,
    len: u64,
    read_at: impl Fn(u64, usize) -> Result<Vec<u8>>,
) -> Result<Footer> {
    let corrupt = |reason: String| Error::CorruptContainer { container: id, path: path.to_path_buf(), reason };
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(corrupt(format!("only {len} bytes long; it was never sealed")));
    }
    let trailer = read_at(len - TRAILER_LEN as u64, TRAILER_LEN)?;
    if trailer[48..] != MAGIC {
        return Err(corrupt("no footer magic; it was never sealed or is truncated".into()));
    }
    let n_entries = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let code = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    let layout = FooterLayout::from_code(code).ok_or_else(|| {
        corrupt(format!("its footer is in layout {code}, which a newer cairn writes; upgrade cairn to read it"))
    })?;
    let table_offset = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
    let table_len = match layout {
        FooterLayout::Fixed => n_entries * FOOTER_ENTRY_LEN as u64,
        // Whatever lies between the table's start and the trailer (the
        // check below refuses a start past the trailer).
        FooterLayout::Compact => (len - TRAILER_LEN as u64).saturating_sub(table_offset),
    };
    // Checked: the offset comes from disk (or a remote), and one near 2^64
    // would wrap past this test.
    let end = table_offset.checked_add(table_len).and_then(|e| e.checked_add(TRAILER_LEN as u64));
    if table_offset < HEADER_LEN as u64 || end != Some(len) {
        return Err(corrupt(format!("footer table ({n_entries} entries at {table_offset}) does not fit the file")));
    }
    let bytes = read_at(table_offset, table_len as usize)?;
    let table = layout.decode(&bytes, n_entries as usize, table_offset).map_err(corrupt)?;
    Ok(Footer { table, layout })
}

impl ContainerFiles {
    /// A container's footer table: from its file, or, for a container on
    /// the remote only, with two ranged GETs (`len` is its length).
    pub fn table(&self, id: ContainerId, len: u64) -> Result<Vec<TableEntry>> {
        let path = self.path(id);
        match (self.is_local(id), self.remote.get()) {
            (false, Some(remote)) => parse_footer(id, &path, len, |offset, n| {
                remote.read_ranges(&[(id, offset, n as u64)]).pop().expect("one range")
            })
            .map(|footer| footer.table),
            _ => read_table(&path, id),
        }
    }
}

/// Checks a whole container: the BLAKE3 in its trailer, its header, and every
/// record against its id. Returns the table on success.
pub fn verify_container(files: &ContainerFiles, id: ContainerId) -> Result<Vec<TableEntry>> {
    let path = files.path(id);
    let bytes = files.read_whole(id)?;
    let Footer { table, layout } = parse_footer(id, &path, bytes.len() as u64, |offset, n| {
        Ok(bytes[offset as usize..offset as usize + n].to_vec())
    })?;
    let corrupt = |reason: String| Error::CorruptContainer { container: id, path: path.clone(), reason };
    let body_end = bytes.len() - 40;
    if blake3::hash(&bytes[..body_end]).as_bytes() != &bytes[body_end..body_end + 32] {
        return Err(corrupt("checksum mismatch: some bytes changed since it was sealed".into()));
    }
    if bytes[..8] != MAGIC || u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) != id.0 {
        return Err(corrupt("header does not belong to this container".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != layout.container_format() {
        return Err(corrupt(format!(
            "its header says container format {version}, its footer is in format {}'s layout",
            layout.container_format()
        )));
    }
    for entry in &table {
        let (start, end) = record_range(id, entry)?;
        let record = bytes.get(start..end).ok_or_else(|| Error::CorruptBlob {
            container: id,
            blob: entry.id,
            reason: "the record runs past the end of the file".into(),
        })?;
        files.check(id, entry, record)?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Codec, ContainerKind, ContainerWriter, encode_blob};
    use crate::ids::{BlobId, BlobKind};

    /// A sealed data container of one blob; its files and table.
    fn one_blob_container(dir: &Path) -> (ContainerFiles, Vec<TableEntry>) {
        let bytes = b"hostile input".repeat(100);
        let mut writer =
            ContainerWriter::create(dir, ContainerId(1), ContainerKind::Data, FooterLayout::Fixed).unwrap();
        writer.append(&encode_blob(BlobId::of(&bytes), BlobKind::Data, &bytes, Codec::Lz4)).unwrap();
        let sealed = writer.seal().unwrap();
        (ContainerFiles::new(dir.to_path_buf(), IdScheme::Plain), sealed.table)
    }

    /// Regression (issue 15): an entry's offset near 2^64 overflowed the
    /// record's end (a panic), and a stored length of 4 GiB was allocated
    /// before the read found the file shorter.
    #[test]
    fn entries_with_impossible_places_or_lengths_are_refused_naming_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let (files, table) = one_blob_container(dir.path());
        let good = table[0];
        assert!(files.read_blob(ContainerId(1), &good).is_ok());
        let far = TableEntry { offset: u64::MAX - 8, ..good };
        for error in [
            files.read_encoded(ContainerId(1), &[far]).unwrap_err(),
            files.read_blob(ContainerId(1), &far).unwrap_err(),
        ] {
            let message = error.to_string();
            assert!(matches!(error, Error::CorruptBlob { .. }) && message.contains("past 2^64"), "{message}");
        }
        let huge = TableEntry { stored_len: u32::MAX, raw_len: u32::MAX, ..good };
        let error = files.read_blob(ContainerId(1), &huge).unwrap_err().to_string();
        assert!(error.contains(&format!("{}", good.id)) && error.contains("more than a data blob can hold"), "{error}");
        let results = files.read_many(&[(ContainerId(1), huge), (ContainerId(1), good)]);
        assert!(results[0].is_err() && results[1].is_ok());
    }

    /// A footer in a layout this cairn does not know is refused with the
    /// fix named, not misread; a header whose container format disagrees
    /// with its footer's layout fails `verify_container`.
    #[test]
    fn an_unknown_footer_layout_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = one_blob_container(dir.path());
        let path = files.path(ContainerId(1));
        let good = std::fs::read(&path).unwrap();
        let mut bytes = good.clone();
        let at = bytes.len() - TRAILER_LEN + 4;
        bytes[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let error = read_table(&path, ContainerId(1)).unwrap_err().to_string();
        assert!(error.contains("layout 9") && error.contains("upgrade cairn"), "{error}");
        // Format 2 in the header of a container whose footer is fixed
        // (the checksum made right again, as a crafted file would).
        let mut bytes = good;
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let body_end = bytes.len() - 40;
        let digest = blake3::hash(&bytes[..body_end]);
        bytes[body_end..body_end + 32].copy_from_slice(digest.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let error = verify_container(&files, ContainerId(1)).unwrap_err().to_string();
        assert!(error.contains("container format 2"), "{error}");
    }

    /// Regression (issue 15): a footer entry placing its record past the
    /// table (or before the header) was accepted by `read_table`, and so
    /// entered into the index by an attach or a rebuild.
    #[test]
    fn a_footer_entry_outside_the_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = one_blob_container(dir.path());
        let path = files.path(ContainerId(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let table_offset = u64::from_le_bytes(bytes[bytes.len() - 48..bytes.len() - 40].try_into().unwrap()) as usize;
        for offset in [u64::MAX - 10, 0, table_offset as u64] {
            bytes[table_offset + 34..table_offset + 42].copy_from_slice(&offset.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            let error = read_table(&path, ContainerId(1)).unwrap_err().to_string();
            assert!(error.contains("outside the records"), "offset {offset}: {error}");
        }
    }
}
