//! Ranges of remote containers fetched ahead, whole: what a restore from a
//! remote reads instead of one request per run of records.
//!
//! A restore plans per container (`dataset/stage.rs`): for each remote
//! container it needs, one range from its first needed record to the end of
//! its last, unless the unneeded bytes in between cost more than a request
//! would, together with the last window of files that needs each range.
//! Those ranges are fetched many at once (`ContainerFiles::stage`) and held,
//! as each lands, **in memory** up to a budget ([`STAGE_MEMORY`]); reads of
//! a record inside a held range copy it from there, checked against the
//! record's id like any other read; anything else goes to the remote as
//! before. A range is dropped as soon as every window that needs it has
//! been written, so what is held follows the restore's progress, not the
//! dataset's size.
//!
//! A range's bytes are counted against the budget from the moment it is
//! requested, not when it lands: responses in flight are memory too, and a
//! range that lands always has room. When the budget is full, no more is
//! requested until windows are written, which is what keeps memory flat.
//! A reader that waits for a range not requested yet (the budget is full of
//! ranges that later windows need too) has it requested at once, over the
//! budget; if it lands with no room, it goes to a sparse file of its
//! container under the staging directory instead, so the restore never
//! stalls on its own budget. Such a range's bytes are released (a hole
//! punched) when its windows are written, like a range in memory.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::container::source::NextRange;
use crate::error::{Error, Result};
use crate::ids::ContainerId;

/// Bytes of fetched ranges held in memory at most (requests in flight
/// aside): enough to keep tens of windows ahead of the writers on a fast
/// link, small beside what a restore of terabytes would otherwise stage.
pub const STAGE_MEMORY: usize = 256 << 20;

/// A range planned for staging: its place in its container, and the first
/// and last windows of files (in the restore's order) that read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedRange {
    /// The remote container.
    pub container: ContainerId,
    /// The range's first byte in it.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The first window of files that reads from it.
    pub first_window: usize,
    /// The last window of files that reads from it.
    pub last_window: usize,
}

/// Where a landed range's bytes are.
#[derive(Clone)]
pub(crate) enum Held {
    /// In memory; the range's first byte is at index 0.
    Memory(Arc<Vec<u8>>),
    /// In the container's staging file, at their own offsets.
    File(Arc<File>),
}

/// A landed range, `[start, end)` of its container.
struct Landed {
    start: u64,
    end: u64,
    windows: (usize, usize),
    held: Held,
}

/// A planned range that has not landed yet: `[start, end)` of its
/// container, the windows that read it, and its place in the plan.
struct Pending {
    start: u64,
    end: u64,
    windows: (usize, usize),
    index: usize,
}

/// How far a planned range got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    /// Not requested yet.
    Queued,
    /// Requested, with its bytes counted against the budget.
    Reserved,
    /// Requested over the budget, because a reader waits for it.
    Unreserved,
    /// Landed, failed or dropped.
    Settled,
}

/// Staged ranges, by container: those that landed and are still needed,
/// and those planned that have not landed yet.
pub(crate) struct StagedRanges {
    dir: Option<PathBuf>,
    landed: HashMap<ContainerId, Vec<Landed>>,
    pending: HashMap<ContainerId, Vec<Pending>>,
    files: HashMap<ContainerId, Arc<File>>,
    /// Each planned range's length and how far it got, in the order to
    /// request them, and the first that may not have been requested yet.
    order: Vec<(usize, Fetch)>,
    cursor: usize,
    /// Bytes of ranges in memory or requested into it, and how many may be.
    memory: usize,
    budget: usize,
    /// Readers waiting for a range to land, by the range's place in the plan.
    waiting: HashMap<usize, usize>,
    /// Windows written: every one below `written_below`, and those past it.
    written_below: usize,
    written_past: BTreeSet<usize>,
    /// The writers are done: nothing more will be read from what lands.
    closed: bool,
}

impl Default for StagedRanges {
    fn default() -> StagedRanges {
        StagedRanges {
            dir: None,
            landed: HashMap::new(),
            pending: HashMap::new(),
            files: HashMap::new(),
            order: Vec::new(),
            cursor: 0,
            memory: 0,
            budget: STAGE_MEMORY,
            waiting: HashMap::new(),
            written_below: 0,
            written_past: BTreeSet::new(),
            closed: false,
        }
    }
}

/// Where a record's bytes are, as far as staging knows.
pub(crate) enum Staged {
    /// In this landed range, which starts at the given offset.
    Here(Held, u64),
    /// In a range still to land (its place in the plan): wait and ask again.
    Coming(usize),
    /// Not staged, nor going to be.
    No,
}

/// Where a range that just landed should go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// In memory (its bytes are counted).
    Memory,
    /// To its container's file: it was requested over the budget, for a
    /// waiting reader, and memory is still full.
    File,
    /// Nowhere: the writers are done.
    Drop,
}

/// What staging fetched.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageReport {
    /// Ranges fetched (one request each).
    pub requests: u64,
    /// Bytes fetched.
    pub bytes: u64,
    /// Of those, bytes that went to staging files because memory was full.
    pub spilled: u64,
}

impl StagedRanges {
    /// Makes `dir` the home of staging files if any are needed, holds at
    /// most `budget` bytes in memory, and notes that the `planned` ranges
    /// are about to be fetched, in that order: reads inside them wait until
    /// each lands or is given up.
    pub(crate) fn begin(&mut self, dir: &Path, planned: &[PlannedRange], budget: usize) {
        self.clear();
        (self.dir, self.budget) = (Some(dir.to_path_buf()), budget);
        for (index, range) in planned.iter().enumerate() {
            self.pending.entry(range.container).or_default().push(Pending {
                start: range.start,
                end: range.start.saturating_add(range.len),
                windows: (range.first_window, range.last_window),
                index,
            });
            self.order.push((usize::try_from(range.len).unwrap_or(usize::MAX), Fetch::Queued));
        }
    }

    /// Which planned range to request next: one a reader waits for, at
    /// once; else the next in order, if the budget has room for it (or
    /// holds nothing: a range larger than the whole budget still goes).
    pub(crate) fn next_to_fetch(&mut self) -> NextRange {
        if self.closed {
            return NextRange::Done;
        }
        let order = &self.order;
        let awaited =
            self.waiting.keys().copied().filter(|&i| order.get(i).is_some_and(|(_, f)| *f == Fetch::Queued)).min();
        if let Some(index) = awaited {
            self.reserve(index, true);
            return NextRange::Start(index);
        }
        while self.order.get(self.cursor).is_some_and(|(_, fetch)| *fetch != Fetch::Queued) {
            self.cursor += 1;
        }
        if self.cursor == self.order.len() {
            return NextRange::Done;
        }
        if self.reserve(self.cursor, false) { NextRange::Start(self.cursor) } else { NextRange::NotYet }
    }

    /// Marks range `index` requested, counting its bytes if they fit
    /// (whether they did); with `anyway`, requested even if they do not.
    fn reserve(&mut self, index: usize, anyway: bool) -> bool {
        let len = self.order[index].0;
        let fits = self.memory == 0 || self.memory.saturating_add(len) <= self.budget;
        if fits {
            self.memory = self.memory.saturating_add(len);
            self.order[index].1 = Fetch::Reserved;
        } else if anyway {
            self.order[index].1 = Fetch::Unreserved;
        }
        fits
    }

    /// Where range `index`, which landed with `len` bytes, should go.
    pub(crate) fn admit(&mut self, index: usize, len: usize) -> Admit {
        let Some((planned, fetch)) = self.order.get_mut(index) else { return Admit::Drop };
        let (planned, was) = (*planned, std::mem::replace(fetch, Fetch::Settled));
        if was == Fetch::Reserved {
            // What was counted for it goes; what it holds is counted below.
            self.memory -= planned;
        }
        if self.closed || was == Fetch::Settled {
            Admit::Drop
        } else if was == Fetch::Reserved || self.memory == 0 || self.memory.saturating_add(len) <= self.budget {
            self.memory = self.memory.saturating_add(len);
            Admit::Memory
        } else {
            Admit::File
        }
    }

    /// A range in memory worth moving to its container's file to make
    /// room for ranges ahead: one whose first window is written, so that
    /// what is left of its use is the odd later read (a chunk that later
    /// files share), and of those the one needed longest. Without this, a
    /// restore of a store that deduplicates across many files fills its
    /// budget with such ranges, stops fetching ahead, and waits a round
    /// trip for each range it needs next.
    pub(crate) fn evictable(&self) -> Option<(ContainerId, u64, Arc<Vec<u8>>)> {
        let tail = |range: &&Landed| range.windows.0 < self.written_below && matches!(range.held, Held::Memory(_));
        let (container, range) = self
            .landed
            .iter()
            .flat_map(|(container, ranges)| ranges.iter().filter(tail).map(move |range| (*container, range)))
            .max_by_key(|(_, range)| range.windows.1)?;
        match &range.held {
            Held::Memory(bytes) => Some((container, range.start, bytes.clone())),
            Held::File(_) => None,
        }
    }

    /// The range of `container` at `start`, holding `bytes`, was written to
    /// `file` at its own offsets: it is read from there from now on, and
    /// its memory goes. False if it was released meanwhile.
    pub(crate) fn evicted(
        &mut self,
        container: ContainerId,
        start: u64,
        bytes: &Arc<Vec<u8>>,
        file: Arc<File>,
    ) -> bool {
        let range = self.landed.get_mut(&container).and_then(|ranges| ranges.iter_mut().find(|r| r.start == start));
        match range {
            Some(range) if matches!(&range.held, Held::Memory(held) if Arc::ptr_eq(held, bytes)) => {
                range.held = Held::File(file);
                self.memory -= bytes.len();
                true
            }
            _ => false,
        }
    }

    /// Range `index` failed: what was counted for it goes.
    pub(crate) fn abandon(&mut self, index: usize) {
        if let Some((planned, fetch)) = self.order.get_mut(index) {
            if std::mem::replace(fetch, Fetch::Settled) == Fetch::Reserved {
                self.memory -= *planned;
            }
        }
    }

    /// A reader starts (`true`) or stops waiting for range `index`.
    pub(crate) fn wait_for(&mut self, index: usize, waits: bool) {
        let count = self.waiting.entry(index).or_default();
        if waits {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.waiting.remove(&index);
            }
        }
    }

    /// The range fetched from `start` of `container` is done waiting for:
    /// it landed, up to `end`, and is held as given (readable from now on),
    /// or, with `None`, it failed or was dropped. Reads inside it stop
    /// waiting either way.
    pub(crate) fn settle(&mut self, container: ContainerId, start: u64, landed: Option<(u64, Held)>) {
        let Some(pending) = self.pending.get_mut(&container) else { return };
        let Some(at) = pending.iter().position(|range| range.start == start) else { return };
        let windows = pending.swap_remove(at).windows;
        if let Some((end, held)) = landed {
            let range = Landed { start, end, windows, held };
            if self.all_written(windows) {
                // Every window that needed it is written already (they
                // read around it): keep nothing.
                self.release(container, range);
            } else {
                self.landed.entry(container).or_default().push(range);
            }
        }
    }

    /// Nothing more is coming (staging ended, however it ended).
    pub(crate) fn settle_all(&mut self) {
        self.pending.clear();
    }

    /// The writers are done: ranges that land from now on are dropped.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Window `window` of the restore's files is written: drops every
    /// range whose windows are all written (a window that takes long, one
    /// large file, holds back only the ranges it reads). Whether anything
    /// was dropped.
    pub(crate) fn written(&mut self, window: usize) -> bool {
        if window < self.written_below || !self.written_past.insert(window) {
            return false;
        }
        while self.written_past.remove(&self.written_below) {
            self.written_below += 1;
        }
        let mut done = Vec::new();
        let mut landed = std::mem::take(&mut self.landed);
        for (container, ranges) in landed.iter_mut() {
            let mut i = 0;
            while i < ranges.len() {
                if self.all_written(ranges[i].windows) {
                    done.push((*container, ranges.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        landed.retain(|_, ranges| !ranges.is_empty());
        self.landed = landed;
        let released = !done.is_empty();
        for (container, range) in done {
            self.release(container, range);
        }
        released
    }

    /// Whether every window from `first` to `last` is written.
    fn all_written(&self, (first, last): (usize, usize)) -> bool {
        last < self.written_below
            || (first.max(self.written_below)..=last).all(|window| self.written_past.contains(&window))
    }

    /// Gives back what a landed range held.
    fn release(&mut self, container: ContainerId, range: Landed) {
        match range.held {
            Held::Memory(bytes) => self.memory -= bytes.len(),
            Held::File(file) => {
                // Advice to the file system: if punching fails, the bytes
                // stay until the restore ends and removes the file.
                let _ = nix::fcntl::fallocate(
                    &*file,
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    range.start as i64,
                    (range.end - range.start) as i64,
                );
                if !self.landed.contains_key(&container) && !self.pending.contains_key(&container) {
                    self.files.remove(&container);
                }
            }
        }
    }

    /// The staging file of `container`, made empty on first use. Writing
    /// to it happens outside the lock; [`settle`](StagedRanges::settle)
    /// then makes the range readable.
    pub(crate) fn file(&mut self, container: ContainerId) -> Result<(Arc<File>, PathBuf)> {
        let dir = self.dir.as_ref().expect("begin comes first");
        let path = dir.join(container.to_string());
        if !self.files.contains_key(&container) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("making the staging directory", dir, e))?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| Error::io("staging a container", &path, e))?;
            self.files.insert(container, Arc::new(file));
        }
        Ok((self.files[&container].clone(), path))
    }

    /// Where the bytes `[offset, offset + len)` of `container` are.
    pub(crate) fn find(&self, container: ContainerId, offset: u64, len: usize) -> Staged {
        let Some(end) = offset.checked_add(len as u64) else { return Staged::No };
        let landed = self
            .landed
            .get(&container)
            .and_then(|ranges| ranges.iter().find(|range| offset >= range.start && end <= range.end));
        if let Some(range) = landed {
            return Staged::Here(range.held.clone(), range.start);
        }
        let pending = self.pending.get(&container).into_iter().flatten();
        match pending.into_iter().find(|range| offset >= range.start && end <= range.end) {
            Some(range) => Staged::Coming(range.index),
            None => Staged::No,
        }
    }

    /// Drops everything staged and removes the staging files.
    pub(crate) fn clear(&mut self) {
        self.landed.clear();
        self.pending.clear();
        self.files.clear();
        (self.order, self.cursor, self.waiting) = (Vec::new(), 0, HashMap::new());
        (self.memory, self.closed) = (0, false);
        (self.written_below, self.written_past) = (0, BTreeSet::new());
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Held {
    /// The bytes `[offset, offset + len)` of the container, from a range
    /// held like this that starts at `start` and holds them.
    pub(crate) fn read(&self, start: u64, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Held::Memory(bytes) => {
                let from = (offset - start) as usize;
                bytes.get(from..from + len).map(<[u8]>::to_vec).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a staged range shorter than planned")
                })
            }
            Held::File(file) => {
                let mut record = vec![0u8; len];
                file.read_exact_at(&mut record, offset).map(|()| record)
            }
        }
    }
}

impl Drop for StagedRanges {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container: u64, start: u64, len: u64, windows: (usize, usize)) -> PlannedRange {
        PlannedRange { container: ContainerId(container), start, len, first_window: windows.0, last_window: windows.1 }
    }

    /// Staging `planned` with `budget` bytes of memory, the first range
    /// (container 1, 100 bytes at 0) requested and landed in memory.
    fn holding_the_first(planned: &[PlannedRange], budget: usize) -> (tempfile::TempDir, StagedRanges) {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedRanges::default();
        staged.begin(dir.path(), planned, budget);
        assert_eq!(staged.next_to_fetch(), NextRange::Start(0));
        assert_eq!(staged.admit(0, 100), Admit::Memory);
        staged.settle(ContainerId(1), 0, Some((100, Held::Memory(Arc::new(vec![7; 100])))));
        (dir, staged)
    }

    #[test]
    fn memory_is_given_back_when_the_last_window_that_needs_a_range_is_written() {
        let (_dir, mut staged) = holding_the_first(&[range(1, 0, 100, (0, 1)), range(2, 0, 100, (2, 2))], 150);
        // Full, and nobody waits: nothing more is asked for.
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        assert!(matches!(staged.find(ContainerId(1), 10, 5), Staged::Here(_, 0)));
        assert!(matches!(staged.find(ContainerId(2), 10, 5), Staged::Coming(1)));
        // Window 1 written alone: window 0 is not, so nothing goes.
        assert!(!staged.written(1));
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        assert!(staged.written(0));
        assert!(matches!(staged.find(ContainerId(1), 10, 5), Staged::No));
        assert_eq!(staged.next_to_fetch(), NextRange::Start(1));
        assert_eq!(staged.admit(1, 100), Admit::Memory);
        assert_eq!(staged.next_to_fetch(), NextRange::Done);
    }

    #[test]
    fn a_request_in_flight_counts_against_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedRanges::default();
        staged.begin(dir.path(), &[range(1, 0, 100, (0, 0)), range(2, 0, 100, (1, 1))], 150);
        assert_eq!(staged.next_to_fetch(), NextRange::Start(0));
        // Nothing landed yet, and still no room for the second.
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        // A failed request gives its room back.
        staged.abandon(0);
        assert_eq!(staged.next_to_fetch(), NextRange::Start(1));
    }

    #[test]
    fn a_range_past_its_first_window_moves_to_its_file_to_make_room() {
        let planned = [range(1, 0, 100, (0, 9)), range(2, 0, 100, (1, 1))];
        let (_dir, mut staged) = holding_the_first(&planned, 150);
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        // Its first window is still being written: it stays.
        assert!(staged.evictable().is_none());
        assert!(!staged.written(0));
        let (container, start, bytes) = staged.evictable().expect("past its first window");
        assert_eq!((container, start), (ContainerId(1), 0));
        let (file, _) = staged.file(container).unwrap();
        file.write_all_at(&bytes, start).unwrap();
        assert!(staged.evicted(container, start, &bytes, file));
        // Room for the next, and the moved range still reads the same.
        assert_eq!(staged.next_to_fetch(), NextRange::Start(1));
        match staged.find(ContainerId(1), 10, 5) {
            Staged::Here(held @ Held::File(_), start) => assert_eq!(held.read(start, 10, 5).unwrap(), vec![7; 5]),
            _ => panic!("the moved range is readable from its file"),
        }
        assert!(staged.evictable().is_none());
    }

    #[test]
    fn a_range_goes_once_its_own_windows_are_written_whatever_came_before() {
        let (_dir, mut staged) = holding_the_first(&[range(1, 0, 100, (3, 4)), range(2, 0, 100, (0, 0))], 1000);
        assert!(!staged.written(3));
        // Window 0 is still being written (one large file, say): the
        // range of windows 3 and 4 goes all the same.
        assert!(staged.written(4));
        assert!(matches!(staged.find(ContainerId(1), 10, 5), Staged::No));
    }

    #[test]
    fn a_range_a_reader_waits_for_is_asked_for_at_once_and_goes_to_a_file_if_memory_is_full() {
        let planned = [range(1, 0, 100, (5, 5)), range(3, 0, 100, (1, 1)), range(2, 0, 100, (0, 0))];
        let (_dir, mut staged) = holding_the_first(&planned, 100);
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        // A reader waits for the third range: it jumps the queue.
        let Staged::Coming(index) = staged.find(ContainerId(2), 50, 10) else { panic!("planned") };
        staged.wait_for(index, true);
        assert_eq!(staged.next_to_fetch(), NextRange::Start(2));
        assert_eq!(staged.next_to_fetch(), NextRange::NotYet);
        assert_eq!(staged.admit(2, 100), Admit::File);
        let (file, _) = staged.file(ContainerId(2)).unwrap();
        file.write_all_at(&[9; 100], 0).unwrap();
        staged.settle(ContainerId(2), 0, Some((100, Held::File(file))));
        staged.wait_for(index, false);
        match staged.find(ContainerId(2), 50, 10) {
            Staged::Here(held, start) => assert_eq!(held.read(start, 50, 10).unwrap(), vec![9; 10]),
            _ => panic!("the spilled range is readable"),
        }
        staged.close();
        assert_eq!(staged.next_to_fetch(), NextRange::Done);
    }
}
