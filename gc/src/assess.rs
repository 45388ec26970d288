//! `cairn dedupe assess PATH`: how much a directory would deduplicate and
//! compress, without storing anything (like `isi dedupe` assessment jobs).
//!
//! Every regular file is chunked with the store's chunker and compressed
//! with its codec (or the defaults), hashed on all cores; unique chunks are counted
//! once. With a store, chunks it already holds are counted too, which says
//! what a first backup into it would add. Memory: about 80 bytes per
//! distinct chunk (10 GiB of unique data at 8 KiB chunks: ~100 MB).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::config::DEFAULT_CODEC;
use cairn_store::container::{Codec, encode_blob};
use cairn_store::ids::{IdKeys, IdScheme};
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

/// Per distinct chunk: plaintext and compressed length.
type Seen = HashMap<BlobId, (u32, u32)>;

/// Assesses `root` (a file or a directory, recursively; symlinks are not
/// followed). `store`, when given, supplies the chunker and the chunks it
/// already holds; `progress` is called with bytes read so far.
pub fn assess(root: &Path, store: Option<&Store>, progress: &(dyn Fn(u64) + Sync)) -> Result<Assessment> {
    let chunker = store.map_or_else(ChunkerConfig::default_cdc, |s| s.chunker().clone());
    let codec = store.map_or(DEFAULT_CODEC, Store::codec);
    // Chunks are named as the store names them, so "already stored" compares like with like.
    let ids = store.map_or_else(|| IdScheme::Keyed(IdKeys::public()), |s| s.ids().clone());
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    list_files(root, &mut files, &mut unreadable)?;
    let seen: Mutex<Seen> = Mutex::new(HashMap::new());
    let totals = Mutex::new((0u64, 0u64, 0u64)); // files, bytes, chunks
    let failures = Mutex::new(unreadable);
    files.par_iter().for_each(|path| match chunk_file(&chunker, codec, &ids, path) {
        Ok(chunks) => {
            let bytes: u64 = chunks.iter().map(|(_, raw, _)| *raw as u64).sum();
            let read_so_far = {
                let mut totals = totals.lock().expect("totals poisoned");
                totals.0 += 1;
                totals.1 += bytes;
                totals.2 += chunks.len() as u64;
                totals.1
            };
            let mut seen = seen.lock().expect("chunk set poisoned");
            for (id, raw, compressed) in chunks {
                seen.entry(id).or_insert((raw, compressed));
            }
            drop(seen);
            progress(read_so_far);
        }
        Err(error) => failures.lock().expect("failures poisoned").push(error.to_string()),
    });
    let seen = seen.into_inner().expect("chunk set poisoned");
    let (files, logical_bytes, chunks) = totals.into_inner().expect("totals poisoned");
    let mut report = Assessment {
        files,
        logical_bytes,
        chunks,
        unique_chunks: seen.len() as u64,
        unreadable: failures.into_inner().expect("failures poisoned"),
        ..Assessment::default()
    };
    for (raw, compressed) in seen.values() {
        report.unique_bytes += *raw as u64;
        report.compressed_bytes += *compressed as u64;
    }
    if let Some(store) = store {
        let ids: Vec<BlobId> = seen.keys().copied().collect();
        for batch in ids.chunks(4096) {
            for (id, entry) in batch.iter().zip(store.index().blobs(batch)?) {
                if entry.is_some_and(|e| e.refs > 0 && !e.is_orphan()) {
                    report.already_stored_bytes += seen[id].1 as u64;
                }
            }
        }
    }
    report.dedup_ratio = ratio(report.logical_bytes, report.unique_bytes);
    report.compression_ratio = ratio(report.unique_bytes, report.compressed_bytes);
    report.unreadable.sort();
    Ok(report)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Each chunk of a file: id, plaintext length, compressed length.
fn chunk_file(chunker: &ChunkerConfig, codec: Codec, ids: &IdScheme, path: &Path) -> Result<Vec<(BlobId, u32, u32)>> {
    let what = || path.display().to_string();
    let file = File::open(path).map_err(|cause| Error::Input { what: what(), cause })?;
    let mut out = Vec::new();
    for chunk in chunker.stream(file) {
        let chunk = chunk.map_err(|cause| Error::Input { what: what(), cause })?;
        let id = ids.id(BlobKind::Data, &chunk.data);
        let raw = chunk.data.len() as u32;
        let encoded = encode_blob(id, BlobKind::Data, &chunk.data, codec);
        out.push((id, raw, encoded.bytes.len() as u32));
    }
    Ok(out)
}

/// Regular files under `root`, not following symlinks; what cannot be
/// listed goes to `unreadable`. A missing `root` is an error.
fn list_files(root: &Path, out: &mut Vec<PathBuf>, unreadable: &mut Vec<String>) -> Result<()> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io("assessing", root, e))?;
    if meta.is_file() {
        out.push(root.to_path_buf());
        return Ok(());
    }
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
                Ok(t) if t.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    Ok(())
}
