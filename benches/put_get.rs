//! End-to-end `put` and `get` throughput beside the machine's own ceiling.
//!
//! The ceiling is FastCDC + BLAKE3 + lz4 over the same data on all cores
//! (the data split into one slice per core), i.e. the work `put` cannot
//! avoid, without any I/O. `put` is measured on new (never stored) data, so
//! every chunk is compressed and written; `get` reads it back, verifying
//! every chunk. All three run in the same process, one after the other, so
//! the ratios hold even on a noisy machine.
//!
//! `cargo bench --bench put_get` (CAIRN_BENCH_MB=256 by default). Under
//! `cargo test` it runs once on 8 MiB as a smoke test.

use std::io::Write;
use std::time::Instant;

use cairn_chunker::{BlobId, ChunkerConfig};
use cairn_store::{Store, StoreOptions};
use rayon::prelude::*;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let words = ["cairn ", "store ", "chunk ", "blob ", "tree\n", "backup ", "restore ", "index "];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % 8) as usize].as_bytes());
        if state % 5 == 0 {
            out.extend_from_slice(&state.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn mb_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / seconds
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mb: usize =
        if benchmarking { std::env::var("CAIRN_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256) } else { 8 };
    let input = data(mb << 20, 0x5eed);
    let config = ChunkerConfig::default_cdc();
    let cores = rayon::current_num_threads();

    // Ceiling: chunk + hash + compress on all cores, no I/O.
    let slice = input.len().div_ceil(cores);
    let started = Instant::now();
    let stored: usize = input
        .par_chunks(slice)
        .map(|part| {
            config
                .stream(part)
                .map(|chunk| {
                    let chunk = chunk.unwrap();
                    std::hint::black_box(BlobId::of(&chunk.data));
                    lz4_flex::block::compress(&chunk.data).len()
                })
                .sum::<usize>()
        })
        .sum();
    let ceiling = mb_per_s(input.len(), started.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("input");
    std::fs::File::create(&source).unwrap().write_all(&input).unwrap();
    let store = Store::create(&dir.path().join("store"), &StoreOptions::default()).unwrap();

    let started = Instant::now();
    let file = std::fs::File::open(&source).unwrap();
    let outcome = store.put_object("bench", file, "input", &|_| {}).unwrap();
    let put = mb_per_s(input.len(), started.elapsed().as_secs_f64());
    assert_eq!(outcome.object.record.size, input.len() as u64);

    let started = Instant::now();
    let mut sink = std::io::sink();
    let read = store.get_object("bench", &mut sink, "sink", &|_| {}).unwrap();
    let get = mb_per_s(input.len(), started.elapsed().as_secs_f64());
    assert_eq!(read, input.len() as u64);

    let stats = store.stats().unwrap();
    println!("put_get: {mb} MiB of new text-like data, {cores} cores");
    println!(
        "  ceiling (FastCDC+BLAKE3+lz4, all cores): {ceiling:8.1} MiB/s (compresses to {:.1}%)",
        100.0 * stored as f64 / input.len() as f64
    );
    println!("  put:                                     {put:8.1} MiB/s = {:.0}% of ceiling", 100.0 * put / ceiling);
    println!("  get (to /dev/null, every chunk verified): {get:7.1} MiB/s");
    println!(
        "  store: {} bytes stored for {} logical ({:.2}x compression)",
        stats.stored_bytes, stats.logical_bytes, stats.compression_ratio
    );
}
