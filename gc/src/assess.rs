//! `cairn dedupe assess PATH`: how much a directory would deduplicate and
//! compress, without storing anything (like `isi dedupe` assessment jobs).
//!
//! Every regular file is chunked with the store's chunker and compressed
//! with its codec (or the defaults), in frames of consecutive chunks as the
//! store would, hashed on all cores; unique chunks are counted once. With a store, chunks it already holds are counted too, which says
//! what a first backup into it would add.
//!
//! Memory stays flat in the size of the tree: files are taken in batches
//! as the walk finds them, and each chunk's id and lengths go to a map on
//! disk (`cairn_store::scratch`, about 40 bytes a distinct chunk under
//! `TMPDIR`), read back once in order at the end, with the store's index
//! looked up a sorted batch at a time. It used to be a hash map in memory:
//! about 80 bytes a distinct chunk, 10 GB for 1 TiB of unique data.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::config::{DEFAULT_CODEC, STORE_FORMAT, frame_target};
use cairn_store::container::{Codec, FrameBuilder, encode_blob};
use cairn_store::ids::{IdKeys, IdScheme};
use cairn_store::scratch::ScratchMap;
use cairn_store::{BlobId, BlobKind, ChunkerConfig, Error, Result, Store};
use rayon::prelude::*;
use serde::Serialize;

/// What an assessment found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Assessment {
    /// Regular files read.
    pub files: u64,
    /// Their bytes.
    pub logical_bytes: u64,
    /// Chunks cut.
    pub chunks: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Plaintext of the distinct chunks.
    pub unique_bytes: u64,
    /// The distinct chunks compressed with the store's codec (raw where that is smaller).
    pub compressed_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / compressed.
    pub compression_ratio: f64,
    /// Of the distinct chunks' compressed bytes, those the store already holds.
    pub already_stored_bytes: u64,
    /// Files that could not be read, and why.
    pub unreadable: Vec<String>,
}

/// Files chunked at once: a batch of the walk.
const FILES_PER_BATCH: usize = 256;

/// Chunks of one file written to the scratch map at once.
const CHUNKS_PER_WRITE: usize = 8192;

/// Assesses `root` (a file or a directory, recursively; symlinks are not
/// followed). `store`, when given, supplies the chunker and the chunks it
/// already holds; `progress` is called with bytes read so far.
pub fn assess(root: &Path, store: Option<&Store>, progress: &(dyn Fn(u64) + Sync)) -> Result<Assessment> {
    let chunker = store.map_or_else(ChunkerConfig::default_cdc, |s| s.chunker().clone());
    let codec = store.map_or(DEFAULT_CODEC, Store::codec);
    // A new store compresses data in frames, as do stores of format 4 on,
    // each filled to its format's target.
    let frames = match store {
        None => Some(frame_target(STORE_FORMAT)),
        Some(store) => store.config().frames().then(|| store.config().frame_target()),
    };
    // Chunks are named as the store names them, so "already stored" compares like with like.
    let ids = store.map_or_else(|| IdScheme::Keyed(IdKeys::public()), |s| s.ids().clone());
    // Per distinct chunk: its plaintext and compressed lengths.
    let seen = ScratchMap::new("making scratch space for the assessment")?;
    let totals = Mutex::new((0u64, 0u64, 0u64)); // files, bytes, chunks
    let failures = Mutex::new(Vec::new());
    let mut unlisted = Vec::new();
    walk_files(root, &mut unlisted, &mut |batch| {
        batch.par_iter().try_for_each(|path| {
            match chunk_file(&chunker, (codec, frames), &ids, path, &seen) {
                Ok((bytes, chunks)) => {
                    let read_so_far = {
                        let mut totals = totals.lock().expect("totals poisoned");
                        totals.0 += 1;
                        totals.1 += bytes;
                        totals.2 += chunks;
                        totals.1
                    };
                    progress(read_so_far);
                }
                // The scratch map failing (a full TMPDIR) ends the
                // assessment; a file that cannot be read is listed.
                Err(error @ Error::Io { .. }) => return Err(error),
                Err(error) => failures.lock().expect("failures poisoned").push(error.to_string()),
            }
            Ok(())
        })
    })?;
    let (files, logical_bytes, chunks) = totals.into_inner().expect("totals poisoned");
    let mut unreadable = failures.into_inner().expect("failures poisoned");
    unreadable.append(&mut unlisted);
    let mut report = Assessment { files, logical_bytes, chunks, unreadable, ..Assessment::default() };
    // One pass over the distinct chunks, in id order; with a store, its
    // index is asked about a sorted batch at a time.
    let mut batch: Vec<(BlobId, u32)> = Vec::with_capacity(4096);
    let already_stored = |batch: &mut Vec<(BlobId, u32)>| -> Result<u64> {
        let Some(store) = store else { return Ok(0) };
        let ids: Vec<BlobId> = batch.iter().map(|(id, _)| *id).collect();
        let entries = store.index().blobs_once(&ids)?;
        let bytes = batch
            .drain(..)
            .zip(entries)
            .filter(|(_, entry)| entry.is_some_and(|e| e.refs > 0 && !e.is_orphan()))
            .map(|((_, compressed), _)| u64::from(compressed))
            .sum();
        Ok(bytes)
    };
    seen.for_each(|key, value| {
        let (Ok(id), Some(raw), Some(compressed)) = (<[u8; 32]>::try_from(key), value.get(..4), value.get(4..8)) else {
            return Ok(());
        };
        let raw = u32::from_le_bytes(raw.try_into().expect("4 bytes"));
        let compressed = u32::from_le_bytes(compressed.try_into().expect("4 bytes"));
        report.unique_chunks += 1;
        report.unique_bytes += u64::from(raw);
        report.compressed_bytes += u64::from(compressed);
        batch.push((BlobId(id), compressed));
        if batch.len() == batch.capacity() {
            report.already_stored_bytes += already_stored(&mut batch)?;
        }
        Ok(())
    })?;
    report.already_stored_bytes += already_stored(&mut batch)?;
    report.dedup_ratio = ratio(report.logical_bytes, report.unique_bytes);
    report.compression_ratio = ratio(report.unique_bytes, report.compressed_bytes);
    report.unreadable.sort();
    Ok(report)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Chunks one file into `seen` (id to plaintext and compressed length);
/// its bytes and chunks. A file that cannot be read is `Error::Input`.
fn chunk_file(
    chunker: &ChunkerConfig,
    (codec, frames): (Codec, Option<usize>),
    ids: &IdScheme,
    path: &Path,
    seen: &ScratchMap,
) -> Result<(u64, u64)> {
    let what = || path.display().to_string();
    let file = File::open(path).map_err(|cause| Error::Input { what: what(), cause })?;
    // A sparse file's holes are filled in, not read, as `backup` does.
    let file: Box<dyn std::io::Read> = match file.metadata() {
        Ok(meta) => cairn_store::sparse::reader(file, &meta),
        Err(_) => Box::new(file),
    };
    let (mut bytes, mut chunks) = (0u64, 0u64);
    let mut pending: Vec<([u8; 32], [u8; 8])> = Vec::new();
    let write = |pending: &mut Vec<([u8; 32], [u8; 8])>| {
        let written = seen.insert(pending.iter().map(|(key, value)| (&key[..], &value[..])));
        pending.clear();
        written
    };
    let mut frame = Frame::default();
    for chunk in chunker.stream(file) {
        let chunk = chunk.map_err(|cause| Error::Input { what: what(), cause })?;
        let id = ids.id(BlobKind::Data, &chunk.data);
        let raw = chunk.data.len() as u32;
        if let Some(target) = frames {
            if frame.builder.is_full(chunk.data.len(), target) {
                frame.close(codec, &mut pending);
            }
            frame.builder.push(&chunk.data);
            frame.members.push((id, raw));
        } else {
            let encoded = encode_blob(id, BlobKind::Data, &chunk.data, codec);
            pending.push(entry(id, raw, encoded.bytes.len() as u64));
        }
        (bytes, chunks) = (bytes + u64::from(raw), chunks + 1);
        if pending.len() >= CHUNKS_PER_WRITE {
            write(&mut pending)?;
        }
    }
    frame.close(codec, &mut pending);
    write(&mut pending)?;
    Ok((bytes, chunks))
}

/// A chunk's scratch entry: id, and plaintext and compressed lengths.
fn entry(id: BlobId, raw: u32, compressed: u64) -> ([u8; 32], [u8; 8]) {
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&raw.to_le_bytes());
    value[4..].copy_from_slice(&(compressed.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    (id.0, value)
}

/// Consecutive chunks of one file compressed together, as a store with
/// frames stores them (a backup's frames also run across files, so small
/// files compress a little better there than estimated here).
#[derive(Default)]
struct Frame {
    builder: FrameBuilder,
    members: Vec<(BlobId, u32)>,
}

impl Frame {
    /// Compresses the frame and gives each member its share of the
    /// compressed bytes, in proportion to its plaintext (the shares add up
    /// to the whole).
    fn close(&mut self, codec: Codec, pending: &mut Vec<([u8; 32], [u8; 8])>) {
        if self.members.is_empty() {
            return;
        }
        let compressed = self.builder.encode(codec).1.len() as u64;
        let total = self.builder.raw_len().max(1) as u64;
        let mut start = 0u64;
        for (id, raw) in self.members.drain(..) {
            let end = start + u64::from(raw);
            pending.push(entry(id, raw, compressed * end / total - compressed * start / total));
            start = end;
        }
        self.builder = FrameBuilder::default();
    }
}

/// Regular files under `root`, not following symlinks, handed to `batch`
/// a few hundred at a time as the walk finds them; what cannot be listed
/// goes to `unreadable`. A missing `root` is an error.
fn walk_files(
    root: &Path,
    unreadable: &mut Vec<String>,
    batch: &mut dyn FnMut(&[PathBuf]) -> Result<()>,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io("assessing", root, e))?;
    if meta.is_file() {
        return batch(&[root.to_path_buf()]);
    }
    let mut files = Vec::with_capacity(FILES_PER_BATCH);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                unreadable.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => files.push(entry.path()),
                _ => {}
            }
            if files.len() == FILES_PER_BATCH {
                batch(&files)?;
                files.clear();
            }
        }
    }
    batch(&files)
}
