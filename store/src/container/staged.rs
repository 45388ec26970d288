//! Ranges of remote containers fetched ahead, whole, into local files: what
//! a restore from a remote reads instead of one request per run of records.
//!
//! A restore plans per container (`dataset/stage.rs`): for each remote
//! container it needs, one range from its first needed record to the end of
//! its last, unless the unneeded bytes in between cost more than a request
//! would. Those ranges are fetched many at once (`ContainerFiles::stage`),
//! each written, as soon as it lands, at its own offset into a sparse file
//! named for its container, so memory holds only the requests in flight. Reads of a
//! record inside a staged range then come from that file, checked against
//! the record's id like any other read; anything else goes to the remote as
//! before.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::ContainerId;

/// Staged ranges, by container: the file and the ranges `[start, end)` it
/// holds; and the ranges planned that have not landed yet.
#[derive(Default)]
pub(crate) struct StagedRanges {
    dir: Option<PathBuf>,
    ranges: HashMap<ContainerId, (Arc<File>, Vec<(u64, u64)>)>,
    pending: HashMap<ContainerId, Vec<(u64, u64)>>,
}

/// Where a record's bytes are, as far as staging knows.
pub(crate) enum Staged {
    /// In this file, at the record's own offset.
    Here(Arc<File>),
    /// In a range still being fetched: wait and ask again.
    Coming,
    /// Not staged, nor going to be.
    No,
}

/// What staging fetched.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageReport {
    /// Ranges fetched (one request each).
    pub requests: u64,
    /// Bytes fetched.
    pub bytes: u64,
}

impl StagedRanges {
    /// Makes `dir` (if missing) the home of the staged files, and notes
    /// that the ranges `(container, start, len)` are about to be fetched:
    /// reads inside them wait until each lands or is given up.
    pub(crate) fn begin(&mut self, dir: &Path, planned: &[(ContainerId, u64, u64)]) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("making the staging directory", dir, e))?;
        self.dir = Some(dir.to_path_buf());
        for &(container, start, len) in planned {
            self.pending.entry(container).or_default().push((start, start.saturating_add(len)));
        }
        Ok(())
    }

    /// The range fetched from `start` of `container` is done waiting for:
    /// it landed in its file up to `landed` (readable from now on), or,
    /// with `None`, it failed. Reads inside it stop waiting either way.
    pub(crate) fn settle(&mut self, container: ContainerId, start: u64, landed: Option<u64>) {
        if let Some(pending) = self.pending.get_mut(&container) {
            pending.retain(|(from, _)| *from != start);
        }
        if let (Some(end), Some((_, held))) = (landed, self.ranges.get_mut(&container)) {
            held.push((start, end));
        }
    }

    /// Nothing more is coming (staging ended, however it ended).
    pub(crate) fn settle_all(&mut self) {
        self.pending.clear();
    }

    /// The staging file of `container`, made empty on first use. Writing
    /// to it happens outside the lock; [`settle`](StagedRanges::settle)
    /// then makes the range readable.
    pub(crate) fn file(&mut self, container: ContainerId) -> Result<(Arc<File>, PathBuf)> {
        let dir = self.dir.as_ref().expect("begin comes first");
        let path = dir.join(container.to_string());
        if !self.ranges.contains_key(&container) {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| Error::io("staging a container", &path, e))?;
            self.ranges.insert(container, (Arc::new(file), Vec::new()));
        }
        Ok((self.ranges[&container].0.clone(), path))
    }

    /// Where the bytes `[offset, offset + len)` of `container` are.
    pub(crate) fn find(&self, container: ContainerId, offset: u64, len: usize) -> Staged {
        let Some(end) = offset.checked_add(len as u64) else { return Staged::No };
        let inside = |ranges: &Vec<(u64, u64)>| ranges.iter().any(|(start, stop)| offset >= *start && end <= *stop);
        match (self.ranges.get(&container), self.pending.get(&container)) {
            (Some((file, held)), _) if inside(held) => Staged::Here(file.clone()),
            (_, Some(pending)) if inside(pending) => Staged::Coming,
            _ => Staged::No,
        }
    }

    /// Removes the staged files.
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.pending.clear();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for StagedRanges {
    fn drop(&mut self) {
        self.clear();
    }
}
