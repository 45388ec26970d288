//! Store-wide statistics (`cairn stats`): logical vs stored bytes, dedup and
//! compression ratios, blobs by kind, containers and dead bytes.
//!
//! Computed by scanning the index (one pass over `blobs`, `containers`,
//! `objects` and `datasets`); about a second per million blobs.

use serde::Serialize;

use crate::container::ContainerKind;
use crate::error::Result;
use crate::ids::{BlobId, BlobKind};
use crate::index::{ContainerRecord, IndexEntry, cf};
use crate::store::Store;

/// Counts for one blob kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindStats {
    /// Kind name.
    pub kind: String,
    /// Blobs with at least one reference.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their stored bytes (compressed, without record headers). Data
    /// chunks in frames count their shares of their frames, and the
    /// bytes of live frames that no share covers (their slack, about a
    /// half chunk a frame) are added to data's, so that the kinds add up
    /// to what the records take.
    pub stored_bytes: u64,
    /// Blobs at zero references, waiting for the delete job.
    pub garbage_blobs: u64,
    /// Their stored bytes.
    pub garbage_bytes: u64,
}

/// Everything `cairn stats` reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreStats {
    /// Objects in the namespace.
    pub objects: u64,
    /// Datasets (backups).
    pub datasets: u64,
    /// Sum of object sizes and dataset file sizes (what users put in).
    pub logical_bytes: u64,
    /// Sum of the plaintext of live data blobs (what is left after dedup).
    pub unique_bytes: u64,
    /// Total size of container files (what the disk holds).
    pub stored_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// live raw / live stored, over all blob kinds.
    pub compression_ratio: f64,
    /// Per blob kind.
    pub kinds: Vec<KindStats>,
    /// Committed containers.
    pub containers: u64,
    /// Of which metadata containers.
    pub metadata_containers: u64,
    /// Bytes in containers that no index entry names.
    pub dead_bytes: u64,
    /// Last committed tid.
    pub tid: u64,
    /// Bytes the index (RocksDB) takes on disk.
    pub index_bytes: u64,
    /// Index bytes per live blob.
    pub index_bytes_per_blob: f64,
    /// Bytes of the index's bloom filters for blob lookups.
    pub index_filter_bytes: u64,
    /// Bytes of the block cache this process gives the index.
    pub index_cache_bytes: u64,
}

impl StoreStats {
    /// The block cache, in MiB, to suggest when the index's filters no
    /// longer fit in the one it has (`None` while they do): then every
    /// lookup of a new chunk reads filter partitions from disk or the
    /// page cache. The filters get half again their size, rounded up to
    /// 32 MiB, as index blocks and the filters of newer tables share the
    /// cache. At 100 million entries (125 MiB of filters), 192 MiB instead
    /// of 64 made misses 1.25-1.7x as fast, and puts of new data up to a
    /// fifth faster, though not in every round (ARCHITECTURE.md, "The
    /// index at scale").
    pub fn suggested_cache_mib(&self) -> Option<u64> {
        const MIB: u64 = 1 << 20;
        if self.index_filter_bytes.saturating_mul(4) <= self.index_cache_bytes.saturating_mul(3) {
            return None;
        }
        let wanted = self.index_filter_bytes.saturating_add(self.index_filter_bytes / 2);
        Some(wanted.div_ceil(32 * MIB).saturating_mul(32))
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 { 1.0 } else { numerator as f64 / denominator as f64 }
}

impl Store {
    /// Scans the index and returns the store's statistics.
    pub fn stats(&self) -> Result<StoreStats> {
        self.stats_visiting(&mut |_| {})
    }

    /// [`stats`](Store::stats), showing `visit` every live blob entry on
    /// the way: a caller that wants more figures from the blobs (`dedupe
    /// stats`) gets them from the same scan instead of a second one.
    pub fn stats_visiting(&self, visit: &mut dyn FnMut(&IndexEntry)) -> Result<StoreStats> {
        let index = self.index();
        let mut stats = StoreStats { tid: self.tid()?.0, ..StoreStats::default() };
        let mut kinds: Vec<KindStats> =
            BlobKind::ALL.iter().map(|k| KindStats { kind: k.name().to_string(), ..KindStats::default() }).collect();
        for item in index.scan(cf::BLOBS, b"") {
            let (key, value) = item?;
            let Some(entry) = IndexEntry::decode(&value) else { continue };
            if entry.is_orphan() || BlobId::from_slice(&key).is_none() {
                continue;
            }
            let kind = &mut kinds[entry.kind as usize];
            if entry.refs > 0 {
                visit(&entry);
                kind.blobs += 1;
                kind.raw_bytes += entry.raw_len as u64;
                kind.stored_bytes += entry.stored_bytes();
            } else {
                kind.garbage_blobs += 1;
                kind.garbage_bytes += entry.stored_bytes();
            }
        }
        for item in index.scan(cf::CONTAINERS, b"") {
            let (_, value) = item?;
            let Some(record) = ContainerRecord::decode(&value) else { continue };
            stats.containers += 1;
            stats.metadata_containers += (record.kind == ContainerKind::Metadata) as u64;
            // Saturating: the lengths are the index's (an attach copies
            // them from a remote), and a crafted one must not overflow.
            stats.stored_bytes = stats.stored_bytes.saturating_add(record.stored_bytes);
            stats.dead_bytes = stats.dead_bytes.saturating_add(record.dead_bytes);
            let data = &mut kinds[BlobKind::Data as usize];
            data.stored_bytes = data.stored_bytes.saturating_add(record.slack_bytes);
        }
        for object in self.objects("")? {
            stats.objects += 1;
            stats.logical_bytes += object.record.size;
        }
        for dataset in self.datasets()? {
            stats.datasets += 1;
            stats.logical_bytes += dataset.logical_bytes;
        }
        stats.unique_bytes = kinds[BlobKind::Data as usize].raw_bytes;
        stats.dedup_ratio = ratio(stats.logical_bytes, stats.unique_bytes);
        let raw: u64 = kinds.iter().map(|k| k.raw_bytes).sum();
        let stored: u64 = kinds.iter().map(|k| k.stored_bytes).sum();
        stats.compression_ratio = ratio(raw, stored);
        stats.index_bytes = index.disk_bytes()?;
        let live: u64 = kinds.iter().map(|k| k.blobs).sum();
        stats.index_bytes_per_blob = stats.index_bytes as f64 / live.max(1) as f64;
        stats.index_filter_bytes = index.filter_bytes()?;
        stats.index_cache_bytes = index.cache_bytes()?;
        stats.kinds = kinds;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache is suggested once the filters pass three quarters of the
    /// one there is, and it holds them with half again to spare.
    #[test]
    fn a_larger_cache_is_suggested_when_the_filters_outgrow_it() {
        const MIB: u64 = 1 << 20;
        let stats = |filters: u64, cache: u64| StoreStats {
            index_filter_bytes: filters,
            index_cache_bytes: cache,
            ..StoreStats::default()
        };
        assert_eq!(stats(0, 64 * MIB).suggested_cache_mib(), None);
        assert_eq!(stats(48 * MIB, 64 * MIB).suggested_cache_mib(), None);
        assert_eq!(stats(48 * MIB + 1, 64 * MIB).suggested_cache_mib(), Some(96));
        assert_eq!(stats(119 * MIB, 64 * MIB).suggested_cache_mib(), Some(192));
        assert_eq!(stats(119 * MIB, 192 * MIB).suggested_cache_mib(), None);
        // Sizes from a damaged index's properties do not overflow.
        assert!(stats(u64::MAX, 64 * MIB).suggested_cache_mib().is_some());
    }
}
