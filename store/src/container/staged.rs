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
//! When the budget is full, the fetcher waits for windows to be written,
//! which is what keeps memory flat. It waits only while no reader is
//! waiting for a range: if one is (the budget is full of ranges that later
//! windows need too), the range that landed goes to a sparse file of its
//! container under the staging directory instead, so the restore never
//! stalls on its own budget. Such a range's bytes are released (a hole
//! punched) when its windows are written, like a range in memory.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Staged ranges, by container: those that landed and are still needed,
/// and those planned that have not landed yet.
pub(crate) struct StagedRanges {
    dir: Option<PathBuf>,
    landed: HashMap<ContainerId, Vec<Landed>>,
    pending: HashMap<ContainerId, Vec<(u64, u64, (usize, usize))>>,
    files: HashMap<ContainerId, Arc<File>>,
    /// Bytes of landed ranges in memory, and how many may be.
    memory: usize,
    budget: usize,
    /// Readers waiting for a range to land.
    pub(crate) waiting: usize,
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
            memory: 0,
            budget: STAGE_MEMORY,
            waiting: 0,
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
    /// In a range still being fetched: wait and ask again.
    Coming,
    /// Not staged, nor going to be.
    No,
}

/// Where a range that just landed should go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// In memory (its bytes are counted from now on).
    Memory,
    /// To its container's file: memory is full and a reader is waiting.
    File,
    /// Nowhere: memory is full and no reader waits; ask again once a
    /// window is written or a reader starts waiting.
    Wait,
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
    /// are about to be fetched: reads inside them wait until each lands or
    /// is given up.
    pub(crate) fn begin(&mut self, dir: &Path, planned: &[PlannedRange], budget: usize) {
        self.clear();
        (self.dir, self.budget) = (Some(dir.to_path_buf()), budget);
        for range in planned {
            self.pending.entry(range.container).or_default().push((
                range.start,
                range.start.saturating_add(range.len),
                (range.first_window, range.last_window),
            ));
        }
    }

    /// Where a range of `len` bytes that just landed should go.
    pub(crate) fn admit(&mut self, len: usize) -> Admit {
        if self.closed {
            Admit::Drop
        } else if self.memory + len <= self.budget || self.memory == 0 {
            // (A range larger than the whole budget still fits an empty one.)
            self.memory += len;
            Admit::Memory
        } else if self.waiting > 0 {
            Admit::File
        } else {
            Admit::Wait
        }
    }

    /// The range fetched from `start` of `container` is done waiting for:
    /// it landed, up to `end`, and is held as given (readable from now on),
    /// or, with `None`, it failed or was dropped. Reads inside it stop
    /// waiting either way.
    pub(crate) fn settle(&mut self, container: ContainerId, start: u64, landed: Option<(u64, Held)>) {
        let Some(pending) = self.pending.get_mut(&container) else { return };
        let Some(at) = pending.iter().position(|(from, _, _)| *from == start) else { return };
        let (_, _, windows) = pending.swap_remove(at);
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
        match self.pending.get(&container) {
            Some(pending) if pending.iter().any(|(start, stop, _)| offset >= *start && end <= *stop) => Staged::Coming,
            _ => Staged::No,
        }
    }

    /// Drops everything staged and removes the staging files.
    pub(crate) fn clear(&mut self) {
        self.landed.clear();
        self.pending.clear();
        self.files.clear();
        (self.memory, self.waiting, self.closed) = (0, 0, false);
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
    /// (container 1, 100 bytes at 0) landed in memory.
    fn holding_the_first(planned: &[PlannedRange], budget: usize) -> (tempfile::TempDir, StagedRanges) {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedRanges::default();
        staged.begin(dir.path(), planned, budget);
        assert_eq!(staged.admit(100), Admit::Memory);
        staged.settle(ContainerId(1), 0, Some((100, Held::Memory(Arc::new(vec![7; 100])))));
        (dir, staged)
    }

    #[test]
    fn memory_is_given_back_when_the_last_window_that_needs_a_range_is_written() {
        let (_dir, mut staged) = holding_the_first(&[range(1, 0, 100, (0, 1)), range(2, 0, 100, (2, 2))], 150);
        // Full, and nobody waits: the fetcher waits.
        assert_eq!(staged.admit(100), Admit::Wait);
        assert!(matches!(staged.find(ContainerId(1), 10, 5), Staged::Here(_, 0)));
        assert!(matches!(staged.find(ContainerId(2), 10, 5), Staged::Coming));
        // Window 1 written alone: window 0 is not, so nothing goes.
        assert!(!staged.written(1));
        assert!(staged.written(0));
        assert!(matches!(staged.find(ContainerId(1), 10, 5), Staged::No));
        assert_eq!(staged.admit(100), Admit::Memory);
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
    fn a_waiting_reader_sends_what_lands_to_a_file_and_closing_drops_it() {
        let (_dir, mut staged) = holding_the_first(&[range(1, 0, 100, (5, 5)), range(2, 0, 100, (0, 0))], 100);
        staged.waiting += 1;
        assert_eq!(staged.admit(100), Admit::File);
        let (file, _) = staged.file(ContainerId(2)).unwrap();
        file.write_all_at(&[9; 100], 0).unwrap();
        staged.settle(ContainerId(2), 0, Some((100, Held::File(file))));
        match staged.find(ContainerId(2), 50, 10) {
            Staged::Here(held, start) => assert_eq!(held.read(start, 50, 10).unwrap(), vec![9; 10]),
            _ => panic!("the spilled range is readable"),
        }
        staged.close();
        assert_eq!(staged.admit(1), Admit::Drop);
    }
}
