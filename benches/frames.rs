//! What compressing chunks in frames buys, and what it costs, before
//! containers hold frames (issue "Space": "frames of about 256 KiB; tune
//! it, and say why").
//!
//! Files are read from each source in directory order (as `backup` walks),
//! up to CAIRN_BENCH_MB (300 by default) each, cut by the store's default
//! chunker, and deduplicated by id, as a store keeps them. The distinct
//! chunks, in that order, are then stored each alone (today's records) and
//! in frames of several sizes, with each codec (CAIRN_BENCH_FRAME_CODECS,
//! default `zstd,lz4`). Printed for each:
//! - stored bytes over the chunks' bytes, counting what each layout adds
//!   per chunk and per record in a container (today: a 42-byte record
//!   header and a 50-byte footer entry per chunk; frames: a record header
//!   per frame, 4 bytes per member in the frame and a 52-byte footer
//!   entry per member);
//! - compression speed on all cores (rayon over records or frames);
//! - what reading one chunk from a cold cache costs: decoding its frame
//!   (the mean over the frames, on one core).
//!
//! Sources: a generated text-like tree, then CAIRN_BENCH_FRAME_DIRS
//! (`DIR:DIR`, default `/usr/share:/usr/lib` and, when present, the
//! crates' sources in `~/.cargo/registry/src`). `cargo bench --bench
//! frames`; under `cargo test` it runs a small generated tree as a smoke
//! test.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_chunker::{BlobId, ChunkerConfig, chunk_lengths};
use cairn_store::BlobKind;
use cairn_store::container::{Codec, FrameBuilder, decode_blob, decode_frame, encode_blob};
use rayon::prelude::*;

/// Frame sizes tried (plaintext bytes a frame is closed at).
const TARGETS: [usize; 6] = [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20];
/// Record header, and footer entry per record today.
const RECORD_HEADER: usize = 42;
const FOOTER_ENTRY: usize = 50;
/// The footer entry a frame member would take (today's, and its place).
const MEMBER_FOOTER_ENTRY: usize = 52;

/// Regular files under `dir`, in directory order, depth first.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            files(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// The distinct chunks of the first `limit` bytes of files under `dir`.
fn distinct_chunks(dir: &Path, limit: usize) -> (Vec<Vec<u8>>, usize) {
    let config = ChunkerConfig::default_cdc();
    let mut paths = Vec::new();
    files(dir, &mut paths);
    let (mut seen, mut chunks, mut read) = (HashSet::new(), Vec::new(), 0);
    for path in paths {
        if read >= limit {
            break;
        }
        let Ok(data) = std::fs::read(&path) else { continue };
        read += data.len();
        let mut start = 0;
        for len in chunk_lengths(&config, &data) {
            let chunk = &data[start..start + len];
            start += len;
            if seen.insert(BlobId::of(chunk)) {
                chunks.push(chunk.to_vec());
            }
        }
    }
    (chunks, read)
}

/// One layout's result.
struct Stored {
    bytes: usize,
    compress_seconds: f64,
    decode_micros: f64,
}

/// Every chunk stored alone, as today.
fn alone(chunks: &[Vec<u8>], codec: Codec) -> Stored {
    let started = Instant::now();
    let encoded: Vec<_> = chunks.par_iter().map(|c| encode_blob(BlobId::of(c), BlobKind::Data, c, codec)).collect();
    let compress_seconds = started.elapsed().as_secs_f64();
    let bytes = encoded.iter().map(|e| e.bytes.len() + RECORD_HEADER + FOOTER_ENTRY).sum();
    let sample: Vec<_> = encoded.iter().step_by((encoded.len() / 2000).max(1)).collect();
    let started = Instant::now();
    for blob in &sample {
        decode_blob(BlobKind::Data, blob.flags, blob.raw_len, &blob.bytes).unwrap();
    }
    let decode_micros = started.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    Stored { bytes, compress_seconds, decode_micros }
}

/// The chunks, in order, in frames closed at `target` bytes.
fn framed(chunks: &[Vec<u8>], codec: Codec, target: usize) -> Stored {
    let mut frames = vec![FrameBuilder::default()];
    for chunk in chunks {
        if frames.last().expect("one at least").is_full(chunk.len(), target) {
            frames.push(FrameBuilder::default());
        }
        frames.last_mut().expect("one at least").push(chunk);
    }
    let started = Instant::now();
    let encoded: Vec<(u8, Vec<u8>)> = frames.par_iter().map(|f| f.encode(codec)).collect();
    let compress_seconds = started.elapsed().as_secs_f64();
    let bytes =
        encoded.iter().map(|(_, b)| b.len() + RECORD_HEADER).sum::<usize>() + chunks.len() * MEMBER_FOOTER_ENTRY;
    let sample: Vec<_> = encoded.iter().step_by((encoded.len() / 200).max(1)).collect();
    let started = Instant::now();
    for (flags, stored) in &sample {
        decode_frame(*flags, stored).unwrap();
    }
    let decode_micros = started.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    Stored { bytes, compress_seconds, decode_micros }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(300) } else { 2 };
    let codecs: Vec<Codec> = std::env::var("CAIRN_BENCH_FRAME_CODECS")
        .unwrap_or_else(|_| "zstd,lz4".into())
        .split(',')
        .map(|c| c.parse().unwrap_or_else(|e| panic!("CAIRN_BENCH_FRAME_CODECS: {e}")))
        .collect();
    let work = common::work_dir();
    let generated = work.path().join("generated");
    common::tools::generate(&generated, mb.min(100) << 20);
    let mut sources = vec![generated];
    if benchmarking {
        let mut default = vec!["/usr/share".to_string(), "/usr/lib".to_string()];
        if let Some(registry) = dirs::home_dir().map(|h| h.join(".cargo/registry/src")).filter(|d| d.is_dir()) {
            default.push(registry.display().to_string());
        }
        let dirs = std::env::var("CAIRN_BENCH_FRAME_DIRS").unwrap_or_else(|_| default.join(":"));
        sources.extend(dirs.split(':').map(PathBuf::from).filter(|d| d.is_dir()));
    }
    println!(
        "{} cores; stored bytes over the distinct chunks' bytes, counting records and footers",
        rayon::current_num_threads()
    );
    for source in &sources {
        let (chunks, read) = distinct_chunks(source, mb << 20);
        let raw: usize = chunks.iter().map(Vec::len).sum();
        println!(
            "\n{}: {:.1} MiB read, {} distinct chunks, {:.1} MiB",
            source.display(),
            read as f64 / 1048576.0,
            chunks.len(),
            raw as f64 / 1048576.0
        );
        println!(
            "{:<8} {:>10} {:>10} {:>14} {:>14} {:>16}",
            "codec", "layout", "stored", "vs alone", "compress MiB/s", "µs to read one"
        );
        for &codec in &codecs {
            let base = alone(&chunks, codec);
            let row = |layout: &str, s: &Stored| {
                println!(
                    "{:<8} {:>10} {:>10.4} {:>14.3} {:>14.0} {:>16.1}",
                    codec.to_string(),
                    layout,
                    s.bytes as f64 / raw as f64,
                    s.bytes as f64 / base.bytes as f64,
                    raw as f64 / 1048576.0 / s.compress_seconds,
                    s.decode_micros
                );
            };
            row("alone", &base);
            for target in TARGETS {
                row(&format!("{} KiB", target >> 10), &framed(&chunks, codec, target));
            }
        }
    }
}
