//! How the index holds up as it grows: fills a real index (the store's
//! RocksDB settings, through its batch writer) with synthetic blob entries
//! and prints, at each size, point lookups per second for hits and for
//! misses, disk bytes per entry, the process's RSS, and the blob family's
//! table files at each level (what a miss probes). Beside the point
//! lookups, the same ids looked up as the store does in a backup and a
//! restore: sorted batches of [`BATCH`] through `Index::blobs` (RocksDB's
//! batched multi-get). Then what a user sees of it: `cairn put` of new,
//! incompressible bytes (every chunk a miss) into the store whose index
//! this is, against the same put into an empty store just before it, as
//! a ratio of their speeds (CAIRN_BENCH_PUT_MIB, default 1024; 0 skips).
//!
//! `cargo bench --bench index_scale` (1 and 10 million entries;
//! CAIRN_BENCH_ENTRIES=100000000 goes to 100 million;
//! CAIRN_INDEX_CACHE_MIB sets the block cache, as the command line's
//! variable of that name does). Under `cargo test` it runs to 100,000 as a
//! smoke test. CAIRN_BENCH_INDEX_DIR=DIR keeps the index in DIR, and a
//! later run with the same DIR measures it again without filling it (at
//! the sizes not below what it holds): for profiling lookups, or measuring
//! two indexes in turn, without ten minutes of filling each time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cairn_store::index::{Index, IndexEntry, cf};
use cairn_store::{BlobId, BlobKind, ContainerId};

/// The id of synthetic entry `n`: a hash, spread like real ids.
fn id(n: u64) -> BlobId {
    BlobId::of(&n.to_le_bytes())
}

fn entry(n: u64) -> IndexEntry {
    IndexEntry {
        container: ContainerId(n / 500),
        offset: (n % 500) * 8234,
        stored_len: 4000,
        raw_len: 8192,
        kind: BlobKind::Data,
        flags: 1,
        member: 0,
        refs: 1,
    }
}

/// The process's resident and peak resident memory, MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            >> 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Point lookups of `ids`, one at a time as a backup's misses and a
/// restore's hits come; per second.
fn lookups(index: &Index, ids: &[BlobId], expect_hit: bool) -> f64 {
    let started = Instant::now();
    for id in ids {
        let found = index.blob(id).unwrap();
        assert_eq!(found.is_some(), expect_hit);
    }
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

/// Ids per batched lookup: about one ingest batch of 8 KiB chunks (1 MiB).
const BATCH: usize = 128;

/// The same lookups in sorted batches of [`BATCH`], as `WriteSession`
/// and a restore's windows make them; per second.
fn batched_lookups(index: &Index, ids: &[BlobId], expect_hit: bool) -> f64 {
    let started = Instant::now();
    for batch in ids.chunks(BATCH) {
        let mut batch = batch.to_vec();
        batch.sort_unstable();
        for found in index.blobs(&batch).unwrap() {
            assert_eq!(found.is_some(), expect_hit);
        }
    }
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

/// MiB/s of `cairn put` of `mib` MiB of new incompressible bytes (seeded
/// from the clock, so that a kept store has never seen them) into `store`.
fn put(store: &Path, mib: u64) -> f64 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--store").arg(store).args(["--no-progress", "put"]);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    command.arg(format!("new-{seed}")).arg("-");
    let (output, seconds, _) =
        common::peak::run_watched(&mut command, Some(&|out| common::incompressible(out, mib << 20, seed)));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    mib as f64 / seconds
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let top: u64 = if benchmarking {
        std::env::var("CAIRN_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
    } else {
        100_000
    };
    let mut sizes: Vec<u64> = [100_000, 1_000_000, 10_000_000, 100_000_000].into_iter().filter(|s| *s <= top).collect();
    if sizes.last() != Some(&top) {
        sizes.push(top);
    }
    if let Some(mib) = std::env::var("CAIRN_INDEX_CACHE_MIB").ok().and_then(|v| v.parse().ok()) {
        cairn_store::index::set_cache_mib(mib);
    }
    let put_mib: u64 = if benchmarking {
        std::env::var("CAIRN_BENCH_PUT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
    } else {
        8
    };
    let temporary = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("CAIRN_BENCH_INDEX_DIR").map_or(temporary.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("filled");
    let mut filled: u64 = std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    sizes.retain(|&size| size >= filled);
    // The index is a store's, so that a put can go into it; the synthetic
    // entries name containers that do not exist, which nothing a put
    // does reads.
    let store = dir.join("store");
    assert!(
        !dir.join("index").exists() || store.exists(),
        "{} holds a bare index, which this bench made before it filled a store's: remove the directory",
        dir.display()
    );
    if !store.join("config.json").exists() {
        drop(cairn_store::Store::create(&store, &Default::default()).unwrap());
    }
    println!(
        "{:>12} {:>12} {:>12} {:>12} {:>14} {:>14} {:>9} {:>8} {:>8} {:>7} {:>8} {:>9} {:>11} {:>9}  {}",
        "entries",
        "hits/s",
        "misses/s",
        "then misses",
        "batched hits",
        "batched misses",
        "B/entry",
        "RSS MiB",
        "peak MiB",
        "fill s",
        "settle s",
        "put MiB/s",
        "empty MiB/s",
        "put ratio",
        "files per level"
    );
    let probes = if benchmarking { 200_000 } else { 20_000 };
    for size in sizes {
        let index = Index::open(&store.join("index"), false).unwrap();
        let started = Instant::now();
        while filled < size {
            let mut batch = rocksdb::WriteBatch::default();
            let end = (filled + 100_000).min(size);
            for n in filled..end {
                batch.put_cf(index.cf(cf::BLOBS), id(n).as_bytes(), entry(n).encode());
            }
            index.write(batch, false).unwrap();
            filled = end;
        }
        index.flush().unwrap();
        std::fs::write(&marker, filled.to_string()).unwrap();
        let fill = started.elapsed().as_secs_f64();
        // A real index grows over months, with compaction keeping up; this
        // one was filled in minutes. Measure it settled (up to 20 minutes),
        // as a store would be: right after the fill, misses check every
        // level-0 file's filter.
        let settling = Instant::now();
        let (mut debt, mut level0) = index.compaction_debt().unwrap();
        while (debt > 0 || level0 > 4) && settling.elapsed().as_secs() < 1200 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            (debt, level0) = index.compaction_debt().unwrap();
        }
        let settle = settling.elapsed().as_secs_f64();
        // Spread over everything written, in no order.
        let step = (size / probes as u64).max(1);
        let hits: Vec<BlobId> = (0..probes as u64).map(|i| id((i * step * 7919) % size)).collect();
        let misses: Vec<BlobId> = (0..probes as u64).map(|i| id(u64::MAX - i)).collect();
        let hit_rate = lookups(&index, &hits, true);
        let miss_rate = lookups(&index, &misses, false);
        // Again, other ids: what the rest of a long backup's misses cost,
        // once the first ones have brought the filters they probe into the
        // cache (as many as fit).
        let misses: Vec<BlobId> = (0..probes as u64).map(|i| id(u64::MAX / 4 - i)).collect();
        let warm_miss_rate = lookups(&index, &misses, false);
        // Other ids than the point lookups', so neither finds the blocks
        // the other just brought into the cache.
        let hits: Vec<BlobId> = (0..probes as u64).map(|i| id((i * step * 7919 + 1) % size)).collect();
        let misses: Vec<BlobId> = (0..probes as u64).map(|i| id(u64::MAX / 2 - i)).collect();
        let batched_hits = batched_lookups(&index, &hits, true);
        let batched_misses = batched_lookups(&index, &misses, false);
        let bytes = index.disk_bytes().unwrap();
        let levels: Vec<String> = index.blob_levels().unwrap().iter().map(u64::to_string).collect();
        let (now, peak) = rss();
        drop(index);
        // Back to back, so that the machine's drift over a long run
        // (fills of minutes) cancels out of the ratio.
        let (loaded, empty) = if put_mib > 0 {
            let empty_store = tempfile::tempdir_in(&dir).unwrap();
            let empty = put(&empty_store.path().join("store"), put_mib);
            (put(&store, put_mib), empty)
        } else {
            (0.0, 0.0)
        };
        println!(
            "{size:>12} {hit_rate:>12.0} {miss_rate:>12.0} {warm_miss_rate:>12.0} {batched_hits:>14.0} {batched_misses:>14.0} {:>9.1} {now:>8} {peak:>8} {fill:>7.1} {settle:>8.1} {loaded:>9.1} {empty:>11.1} {:>9.2}  {}",
            bytes as f64 / size as f64,
            loaded / empty,
            levels.join("/")
        );
    }
}
