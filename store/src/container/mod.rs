//! Containers: append-only files of blobs (cairn's shadow stores).
//!
//! A container is written once, front to back, by one write session: a header,
//! then one record per blob, then a footer with the table of every record and
//! a BLAKE3 of everything before it. Once sealed (footer written, file and
//! directory fsynced) it is never modified; it is deleted whole. The footer
//! alone is enough to rebuild the index entries of its blobs. The byte layout
//! is in `docs/format.md`.

mod direct;
mod encode;
mod footer;
mod format;
mod frame;
mod frame_cache;
mod reader;
mod source;
mod staged;
mod writer;

pub use encode::{Codec, DEFAULT_ZSTD_LEVEL, EncodedBlob, check_lengths, decode_blob, encode_blob};
pub use footer::{FooterLayout, records_len};
pub use format::{
    ContainerKind, FLAG_FRAME, FLAG_LZ4, FLAG_WIDE, FLAG_ZSTD, FOOTER_ENTRY_LEN, FRAME_BITS, HEADER_LEN,
    RECORD_HEADER_LEN, TRAILER_LEN, TableEntry, frame_slack, member_share,
};
pub use frame::{
    FRAME_TARGET, Frame, FrameBuilder, MAX_FRAME_MEMBERS, MAX_FRAME_RAW, Plain, WIDE_FRAME_TARGET, decode_frame,
};
#[cfg(test)]
pub(crate) use reader::parse_table;
pub use reader::{ContainerFiles, Footer, read_footer, read_table, verify_container};
pub use source::{ContainerSource, NextRange, RangeSink};
pub use staged::{PlannedRange, STAGE_MEMORY, StageReport};
pub use writer::{ContainerWriter, SealedContainer, sync_dir, sync_dir_of};

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::ids::ContainerId;

/// How many containers share one shard directory (by id / this).
const SHARD_SPAN: u64 = 4096;

/// The file of container `id` under the store's `containers/` directory.
pub fn container_path(containers_dir: &Path, id: ContainerId) -> PathBuf {
    containers_dir.join(format!("{:05x}", id.0 / SHARD_SPAN)).join(format!("{id}"))
}

/// Makes the shard directory that `path` (a container path) goes in, and
/// makes its name durable, before any container in it can be committed.
///
/// The name is durable only once `containers/` itself is fsynced; a writer
/// that merely finds the directory there (made by another writer a moment
/// ago) cannot know that happened, so each process syncs every shard it
/// writes into once, whoever made it.
pub fn ensure_shard(containers_dir: &Path, path: &Path) -> Result<()> {
    static DURABLE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let shard = path.parent().expect("container paths have a shard directory");
    if DURABLE.lock().expect("shard set poisoned").get_or_insert_default().contains(shard) {
        return Ok(());
    }
    match fs::create_dir(shard) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating container directory", shard, e)),
    }
    sync_dir(containers_dir)?;
    DURABLE.lock().expect("shard set poisoned").get_or_insert_default().insert(shard.to_path_buf());
    Ok(())
}

/// Whether `path` is a download that a killed attach left half done.
pub fn is_partial_download(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == PARTIAL_EXTENSION)
}

/// The extension of a container being downloaded (renamed when whole).
pub const PARTIAL_EXTENSION: &str = "part";

/// Parses a path made by [`container_path`] back into its id.
pub fn container_id_of(path: &Path) -> Option<ContainerId> {
    let name = path.file_name()?.to_str()?;
    if name.len() != 16 {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(ContainerId)
}
