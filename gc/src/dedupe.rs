//! `cairn dedupe stats`: where the space goes, in the spirit of OneFS's
//! `isi dedupe stats` and `isi_sstore stats`.
//!
//! Store-wide figures, and the blobs by reference count, come from one
//! scan of the index (`Store::stats_visiting`). What each dataset
//! alone holds (what forgetting it would free) is a simulated cascade from
//! its root ([`Cascade`]), so its cost follows what the dataset alone holds,
//! not the size of the store.

use cairn_store::index::IndexEntry;
use cairn_store::{Result, Store};
use serde::Serialize;

use crate::plan::Cascade;

/// One dataset's share of the store.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetShare {
    /// The dataset.
    pub id: u64,
    /// Its label, if any.
    pub label: Option<String>,
    /// When it was taken (ns since the epoch).
    pub time_ns: i64,
    /// Sum of its file sizes.
    pub logical_bytes: u64,
    /// Stored bytes that only it names: what forgetting it (and collecting) frees.
    pub alone_bytes: u64,
    /// Plaintext of the data that only it names.
    pub alone_raw_bytes: u64,
    /// Logical bytes whose chunks something else also names (another
    /// dataset, an object, or another file of its own).
    pub shared_bytes: u64,
}

/// Blobs with a count of references in a range.
#[derive(Clone, Debug, Serialize)]
pub struct RefBucket {
    /// Lowest count in the bucket.
    pub refs_from: i64,
    /// Highest count in the bucket.
    pub refs_to: i64,
    /// Blobs.
    pub blobs: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
}

/// Containers in a range of fill or dead share.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerBucket {
    /// The range, as a percentage ("0–25%").
    pub range: String,
    /// Containers.
    pub containers: u64,
    /// Their bytes on disk.
    pub stored_bytes: u64,
    /// Their dead bytes.
    pub dead_bytes: u64,
}

/// Everything `dedupe stats` reports.
#[derive(Clone, Debug, Serialize)]
pub struct DedupeStats {
    /// What users put in (datasets' file sizes and objects' sizes).
    pub logical_bytes: u64,
    /// Distinct data after deduplication (plaintext).
    pub unique_bytes: u64,
    /// Container bytes on disk.
    pub stored_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// Plaintext / stored, over live blobs.
    pub compression_ratio: f64,
    /// logical − stored: what deduplication and compression save.
    pub saved_bytes: u64,
    /// Per dataset, oldest first.
    pub datasets: Vec<DatasetShare>,
    /// Live blobs by reference count (1, 2, 3–4, 5–8, ...).
    pub refs: Vec<RefBucket>,
    /// Containers by how full they are against the configured size.
    pub fill: Vec<ContainerBucket>,
    /// Containers by dead share.
    pub dead: Vec<ContainerBucket>,
}

/// Computes the statistics.
pub fn dedupe_stats(store: &Store) -> Result<DedupeStats> {
    // Live blobs by reference count, from the same scan as the totals.
    let mut refs: Vec<RefBucket> = Vec::new();
    let stats = store.stats_visiting(&mut |entry: &IndexEntry| {
        // Buckets 1, 2, 3–4, 5–8, ...: bucket k holds 2^(k-1)+1 ..= 2^k.
        let k = 64 - (entry.refs as u64 - 1).leading_zeros() as usize;
        while refs.len() <= k {
            let j = refs.len();
            let refs_from = if j == 0 { 1 } else { (1i64 << (j - 1)) + 1 };
            refs.push(RefBucket { refs_from, refs_to: 1i64 << j, blobs: 0, stored_bytes: 0 });
        }
        refs[k].blobs += 1;
        refs[k].stored_bytes += entry.stored_bytes();
    })?;
    let mut datasets = Vec::new();
    for record in store.datasets()? {
        let mut cascade = Cascade::new(store)?;
        cascade.release(record.root)?;
        cascade.run()?;
        datasets.push(DatasetShare {
            id: record.id.0,
            label: record.label.clone(),
            time_ns: record.time_ns,
            logical_bytes: record.logical_bytes,
            alone_bytes: cascade.record_bytes,
            alone_raw_bytes: cascade.data_raw_bytes,
            shared_bytes: record.logical_bytes.saturating_sub(cascade.data_raw_bytes),
        });
    }

    let container_size = store.config().container_size.max(1);
    let bucket = |edges: &[u64], value: u64| edges.iter().position(|edge| value < *edge).unwrap_or(edges.len());
    let fill_edges = [25, 50, 75, 100];
    let dead_edges = [1, 10, 20, 50, 100];
    let names = |edges: &[u64]| {
        let mut out = Vec::new();
        let mut low = 0;
        for edge in edges {
            out.push(ContainerBucket {
                range: format!("{low}–{edge}%"),
                containers: 0,
                stored_bytes: 0,
                dead_bytes: 0,
            });
            low = *edge;
        }
        out.push(ContainerBucket { range: format!("{low}%+"), containers: 0, stored_bytes: 0, dead_bytes: 0 });
        out
    };
    let (mut fill, mut dead) = (names(&fill_edges), names(&dead_edges));
    for (_, record) in store.containers()? {
        let fill_pct = record.stored_bytes * 100 / container_size;
        let dead_pct = (record.dead_share() * 100.0) as u64;
        for (buckets, i) in [(&mut fill, bucket(&fill_edges, fill_pct)), (&mut dead, bucket(&dead_edges, dead_pct))] {
            buckets[i].containers += 1;
            buckets[i].stored_bytes += record.stored_bytes;
            buckets[i].dead_bytes += record.dead_bytes;
        }
    }
    Ok(DedupeStats {
        logical_bytes: stats.logical_bytes,
        unique_bytes: stats.unique_bytes,
        stored_bytes: stats.stored_bytes,
        dedup_ratio: stats.dedup_ratio,
        compression_ratio: stats.compression_ratio,
        saved_bytes: stats.logical_bytes.saturating_sub(stats.stored_bytes),
        datasets,
        refs,
        fill,
        dead,
    })
}
