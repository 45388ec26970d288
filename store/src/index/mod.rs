//! The index: a RocksDB database with one column family per concern.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `blobs` | BlobId (32) | [`IndexEntry`], refs changed by the merge operator |
//! | `containers` | ContainerId (u64 BE) | [`ContainerRecord`] |
//! | `zero` | BlobId | tid (u64 LE) at which its count reached zero |
//! | `datasets` | DatasetId (u64 BE) | dataset record |
//! | `objects` | object key bytes | object record (JSON) |
//! | `meta` | name | counters and settings |
//! | `log` | tid (u64 BE) | id of the live log record of that commit |
//! | `pending` | session (u64 BE), tag, BlobId | what a running session wrote (scratch, `pending.rs`) |
//! | `stage` | BlobId | a large commit's entries before they are applied (`apply.rs`) |
//!
//! This module only encodes and decodes; the rules for who may change what,
//! and when, live in `session` (commits) and the delete job.

pub mod entry;
pub mod merge;

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DataBlockIndexType, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
};

pub use entry::{ContainerRecord, ContainerShape, IndexEntry};

use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId, Tid};

/// Column family names.
pub mod cf {
    /// Blob id → entry.
    pub const BLOBS: &str = "blobs";
    /// Container id → record.
    pub const CONTAINERS: &str = "containers";
    /// Blob id → tid at which it reached zero references.
    pub const ZERO: &str = "zero";
    /// Dataset id → record.
    pub const DATASETS: &str = "datasets";
    /// Object key → record.
    pub const OBJECTS: &str = "objects";
    /// Counters and settings.
    pub const META: &str = "meta";
    /// Tid → the live log record of that commit (since the newest checkpoint).
    pub const LOG: &str = "log";
    /// Session id, tag, blob id → where a running session wrote a blob, or
    /// a metadata blob's children: scratch that no reader consults, written
    /// without the write-ahead log and emptied whenever a writer opens.
    pub const PENDING: &str = "pending";
    /// Blob id → the entry a commit too large for one batch will put
    /// (`apply.rs`); empty except while such a commit is applied.
    pub const STAGE: &str = "stage";
    /// What the index's values are written as (`entries`: the number of the
    /// `blobs` entry layout, u64 little-endian). Its presence alone makes a
    /// cairn from before compact entries refuse the index (RocksDB opens a
    /// database only with every family it has), since it could not read
    /// them; later cairns read the number and refuse a newer one.
    pub const FORMAT: &str = "format";
    /// Every family, in creation order.
    pub const ALL: [&str; 10] = [BLOBS, CONTAINERS, ZERO, DATASETS, OBJECTS, META, LOG, PENDING, STAGE, FORMAT];
}

/// Keys one multi-get asks for at most: RocksDB holds every block it
/// read for the call until the call returns (a commit's 100,000 sorted
/// lookups at once raised a backup's peak RSS by 50-60 MiB), while in
/// sorted batches of this size each block is still read once for the keys
/// it holds.
const MULTI_GET_KEYS: usize = 4096;

/// Keys in the `format` column family.
pub mod format_key {
    /// The layout of `blobs` entries ([`super::entry::ENTRIES_FORMAT`]).
    pub const ENTRIES: &[u8] = b"entries";
}

/// Keys in the `meta` column family.
pub mod meta {
    /// The last committed transaction id.
    pub const TID: &[u8] = b"tid";
    /// The next container id to allocate (a lower bound; files on disk may be higher).
    pub const NEXT_CONTAINER: &[u8] = b"next_container";
    /// The next dataset id to allocate.
    pub const NEXT_DATASET: &[u8] = b"next_dataset";
    /// The id of the newest log record (32 bytes); absent before the first.
    pub const LOG_HEAD: &[u8] = b"log_head";
    /// A staged commit's final batch (RocksDB's serialized write batch),
    /// present from when its staged entries are durable until it is
    /// applied: a writer's open finishes such a commit (`apply.rs`).
    pub const STAGED: &[u8] = b"staged";
    /// The last `stage` key a staged commit has applied to `blobs`.
    pub const STAGED_THROUGH: &[u8] = b"staged_through";
}

/// The open RocksDB database.
pub struct Index {
    db: DB,
    path: PathBuf,
    read_only: bool,
    /// For a reader: the secondary instance's own directory (dropped after `db`).
    secondary: Option<SecondaryDir>,
}

/// The block cache of the scratch families (`pending`, `stage`).
const SCRATCH_CACHE_BYTES: usize = 8 << 20;

/// The data blocks of the scratch families: see [`family_options`].
const SCRATCH_BLOCK_BYTES: usize = 16 << 10;

/// All column families' memtables together (RocksDB's write buffer
/// manager): see [`Index::open`].
const MEMTABLES_BYTES: usize = 16 << 20;

/// The key [`Index::flush`] deletes in every family after flushing: no
/// family has it (blob ids are 32 bytes, numbered keys 8, object keys and
/// `meta` names valid UTF-8, which this is not).
const FLUSHED_KEY: &[u8] = b"\xffcairn: flushed";

/// A writer leaving more write-ahead log than this writes its memtables
/// out to table files when it closes.
const FLUSH_AT_CLOSE_LOG_BYTES: u64 = 1 << 20;

impl Drop for Index {
    /// Whatever a writer left in its memtables lives only in the
    /// write-ahead log, which every later open by a reader replays into
    /// memory (a writer's open writes it out; a reader's cannot): after a
    /// backup of 250,000 files (18 MB of log, no table file) `stats`
    /// peaked at 101 MiB, most of it that replay. Writing the memtables
    /// out once, here, costs the writer a fraction of a second and spares
    /// every reader after it. Measured on the log files themselves, not on
    /// the memtables' size, which counts the arenas every family allocates
    /// up front (several MiB for an empty index). Small writes (a `put`, a
    /// `forget`) leave it to RocksDB.
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        let log_bytes: u64 = std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.len())
            .sum();
        if log_bytes > FLUSH_AT_CLOSE_LOG_BYTES
            && let Err(error) = self.flush()
        {
            tracing::warn!(%error, "could not write the index's memtables out at close; the next open replays its log");
        }
    }
}

/// A reader opens the index as a RocksDB *secondary* instance, which can
/// catch up with the writer's later commits (`Index::catch_up`): a reader
/// whose blob was moved by a concurrent gc finds its new place. The
/// instance keeps its own small files in a temporary directory, removed
/// when the index closes.
struct SecondaryDir(PathBuf);

impl Drop for SecondaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A key and its value, as RocksDB hands them out.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

impl Index {
    /// Opens (creating if needed, unless read-only) the index at `path`,
    /// refusing one whose entries are in a layout newer than this cairn's.
    pub fn open(path: &Path, read_only: bool) -> Result<Index> {
        let index = Self::open_database(path, read_only)?;
        index.check_entries_format()?;
        Ok(index)
    }

    /// The RocksDB database, with every family this cairn knows (a
    /// reader: every one the database has).
    fn open_database(path: &Path, read_only: bool) -> Result<Index> {
        // The block cache bounds what reading the index keeps in memory
        // (index and filter blocks included, below).
        let cache_mib = cache_mib();
        tracing::debug!(cache_mib, read_only, "opening the index");
        let cache = Cache::new_lru_cache(cache_mib.max(1) << 20);
        let mut db_options = Options::default();
        db_options.create_if_missing(!read_only);
        db_options.create_missing_column_families(!read_only);
        db_options.set_max_open_files(512);
        // RocksDB's own diagnostics: warnings only, one file. At the
        // default (info, a file per open, several kept) they were a tenth
        // of a small store's index.
        db_options.set_log_level(rocksdb::LogLevel::Warn);
        db_options.set_keep_log_file_num(1);
        // A write-ahead log past this forces the memtables out to tables,
        // so the log stays bounded whatever a process writes.
        db_options.set_max_total_wal_size(64 << 20);
        // All memtables together stay under this (the largest is written
        // out first): a large session fills `pending`, then its commit
        // `stage` and `blobs`, and each family's own budget (64 MiB, two
        // of them, for `blobs`) would add up to the process's largest
        // share of memory. 16 MiB, not 32: large puts peak 10-20 MiB lower
        // at the same speed; 8 MiB slowed them (measured: ARCHITECTURE.md,
        // "Memory of the writing commands").
        db_options.set_db_write_buffer_size(MEMTABLES_BYTES);
        // A store made before a family existed lacks it until a writer
        // opens it (and creates it); a reader opens what there is.
        let existing = DB::list_cf(&db_options, path).unwrap_or_default();
        let families = cf::ALL.iter().filter(|name| !read_only || existing.iter().any(|e| e == *name));
        // The scratch families' index and filter blocks get a small cache
        // of their own: a large session looks each of its blobs up there,
        // and through the shared cache that filled it by 64 MiB over a
        // 32 GiB put, blocks no later command reads.
        let scratch_cache = Cache::new_lru_cache(SCRATCH_CACHE_BYTES);
        let descriptors = families.map(|name| {
            let cache = if *name == cf::PENDING || *name == cf::STAGE { &scratch_cache } else { &cache };
            ColumnFamilyDescriptor::new(*name, family_options(name, cache))
        });
        if read_only {
            // A secondary needs every table file kept open.
            db_options.set_max_open_files(-1);
            static READERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("cairn-reader-{}-{n}", std::process::id()));
            let secondary = DB::open_cf_descriptors_as_secondary(&db_options, path, &dir, descriptors.clone());
            match secondary {
                Ok(db) => {
                    let secondary = Some(SecondaryDir(dir));
                    return Ok(Index { db, path: path.to_path_buf(), read_only, secondary });
                }
                Err(error) => {
                    // A temporary directory we cannot use: a plain read-only
                    // view (no catching up) still serves every command.
                    let _ = std::fs::remove_dir_all(&dir);
                    tracing::debug!(%error, "opening the index as a secondary failed; opening it read-only");
                }
            }
        }
        let result = if read_only {
            DB::open_cf_descriptors_read_only(&db_options, path, descriptors, false)
        } else {
            DB::open_cf_descriptors(&db_options, path, descriptors)
        };
        let db = result.map_err(|source| Error::Index { path: path.to_path_buf(), cause: source })?;
        if !read_only {
            remove_older_options_files(path);
        }
        Ok(Index { db, path: path.to_path_buf(), read_only, secondary: None })
    }

    /// Refuses an index whose entries a newer cairn wrote in a layout this
    /// one does not know; a writer records the layout it writes (compact
    /// entries, beside any old ones it still reads).
    fn check_entries_format(&self) -> Result<()> {
        if !self.has(cf::FORMAT) {
            return Ok(()); // a reader of an index no writer of this version opened: old entries only
        }
        let found = match self.get(cf::FORMAT, format_key::ENTRIES)? {
            Some(bytes) => Some(bytes.as_slice().try_into().map(u64::from_le_bytes).map_err(|_| Error::BadEntry {
                what: "format/entries".into(),
                reason: format!("{} bytes, not a number", bytes.len()),
            })?),
            None => None,
        };
        match found {
            Some(format) if format > entry::ENTRIES_FORMAT => Err(Error::BadStore {
                path: self.path.clone(),
                reason: format!(
                    "its index entries are in layout {format}, newer than this cairn reads ({}); upgrade cairn",
                    entry::ENTRIES_FORMAT
                ),
            }),
            Some(_) => Ok(()),
            None if self.read_only => Ok(()),
            None => self.put_unsynced(cf::FORMAT, format_key::ENTRIES, &entry::ENTRIES_FORMAT.to_le_bytes()),
        }
    }

    /// For a reader: sees the writer's commits made since it opened (or
    /// since the last call). Does nothing for the writer itself.
    pub fn catch_up(&self) -> Result<()> {
        if self.secondary.is_some() {
            self.db.try_catch_up_with_primary().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Maps a RocksDB error to the store's error.
    pub fn err(&self, source: rocksdb::Error) -> Error {
        Error::Index { path: self.path.clone(), cause: source }
    }

    /// A column family handle.
    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened with the index")
    }

    /// Whether the index has the family (a reader of a store that no writer
    /// of this version has opened may lack the newest).
    pub fn has(&self, name: &str) -> bool {
        self.db.cf_handle(name).is_some()
    }

    /// The blob's entry, merges applied.
    pub fn blob(&self, id: &BlobId) -> Result<Option<IndexEntry>> {
        match self.db.get_pinned_cf(self.cf(cf::BLOBS), id.as_bytes()).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(bytes) => decode_entry(id, &bytes).map(Some),
        }
    }

    /// Entries for many blobs at once (RocksDB's batched multi-get, which is
    /// faster still when `ids` are sorted).
    pub fn blobs(&self, ids: &[BlobId]) -> Result<Vec<Option<IndexEntry>>> {
        self.blobs_with(ids, &read_options(cf::BLOBS, false))
    }

    /// Entries for ids that a sweep looks up about once each (`dedupe
    /// assess`'s pass over every distinct chunk, a simulated collection's
    /// cascade), read outside the block cache: each block serves one batch
    /// and is seldom wanted again, so caching it would only grow the
    /// process by the cache's size and push out the blocks that other
    /// lookups reuse.
    pub fn blobs_once(&self, ids: &[BlobId]) -> Result<Vec<Option<IndexEntry>>> {
        self.blobs_with(ids, &read_options(cf::BLOBS, true))
    }

    fn blobs_with(&self, ids: &[BlobId], options: &ReadOptions) -> Result<Vec<Option<IndexEntry>>> {
        let mut found = Vec::with_capacity(ids.len());
        for ids in ids.chunks(MULTI_GET_KEYS) {
            let keys = ids.iter().map(|id| id.as_bytes().as_slice());
            for (result, id) in self
                .db
                .batched_multi_get_cf_opt(self.cf(cf::BLOBS), keys, ids.is_sorted(), options)
                .into_iter()
                .zip(ids)
            {
                found.push(match result.map_err(|e| self.err(e))? {
                    None => None,
                    Some(bytes) => Some(decode_entry(id, bytes.as_ref())?),
                });
            }
        }
        Ok(found)
    }

    /// Raw values for many keys of one family at once (`sorted` if the
    /// keys are in ascending order).
    pub fn get_many<K: AsRef<[u8]>>(&self, family: &str, keys: &[K], sorted: bool) -> Result<Vec<Option<Vec<u8>>>> {
        let mut found = Vec::with_capacity(keys.len());
        let options = read_options(family, false);
        for keys in keys.chunks(MULTI_GET_KEYS) {
            for result in
                self.db.batched_multi_get_cf_opt(self.cf(family), keys.iter().map(|k| k.as_ref()), sorted, &options)
            {
                found.push(result.map_err(|e| self.err(e))?.map(|value| value.to_vec()));
            }
        }
        Ok(found)
    }

    /// Removes every key of a scratch family (`pending`, `stage`) from
    /// `from` on, without the write-ahead log, and compacts the range away
    /// when `compact` (after a large commit, so its tombstones and table
    /// files go at once).
    pub fn clear(&self, family: &str, from: &[u8], to: &[u8], compact: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(family), from, to);
        self.write_unlogged(batch)?;
        if compact {
            // Table files wholly in the range go at once; the rest are
            // rewritten without the deleted keys.
            self.db.delete_file_in_range_cf(self.cf(family), from, to).map_err(|e| self.err(e))?;
            self.db.compact_range_cf(self.cf(family), Some(from), Some(to));
        }
        Ok(())
    }

    /// Writes one family's memtable out to table files (durable when it
    /// returns): what makes writes made without the log survive a crash.
    pub fn flush_family(&self, family: &str) -> Result<()> {
        self.db.flush_cf(self.cf(family)).map_err(|e| self.err(e))
    }

    /// A raw value.
    pub fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(handle) = self.db.cf_handle(family) else { return Ok(None) };
        self.db.get_cf(handle, key).map_err(|e| self.err(e))
    }

    /// A `u64` counter in `meta` (0 when absent).
    pub fn meta_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self.get(cf::META, key)?.and_then(|bytes| bytes.try_into().ok().map(u64::from_le_bytes)).unwrap_or(0))
    }

    /// The last committed transaction id.
    pub fn tid(&self) -> Result<Tid> {
        self.meta_u64(meta::TID).map(Tid)
    }

    /// A container's record, if it was committed.
    pub fn container(&self, id: ContainerId) -> Result<Option<ContainerRecord>> {
        self.get(cf::CONTAINERS, &id.key())?
            .map(|bytes| {
                ContainerRecord::decode(&bytes).ok_or_else(|| Error::BadEntry {
                    what: format!("container {id}"),
                    reason: "does not decode".into(),
                })
            })
            .transpose()
    }

    /// Every key/value of a column family whose key starts with `prefix`, in key order.
    pub fn scan<'a>(&'a self, family: &str, prefix: &'a [u8]) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.db
            .iterator_cf_opt(
                self.cf(family),
                read_options(family, true),
                IteratorMode::From(prefix, Direction::Forward),
            )
            .map(|item| item.map_err(|e| self.err(e)))
            .take_while(move |item| item.as_ref().map_or(true, |(key, _)| key.starts_with(prefix)))
    }

    /// Every key/value of a column family after `after` (exclusive; from the
    /// start when `None`), in key order.
    pub fn scan_after<'a>(
        &'a self,
        family: &str,
        after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        let mode = match after {
            Some(key) => IteratorMode::From(key, Direction::Forward),
            None => IteratorMode::Start,
        };
        self.db
            .iterator_cf_opt(self.cf(family), read_options(family, true), mode)
            .map(|item| item.map_err(|e| self.err(e)))
            .skip_while(move |item| item.as_ref().is_ok_and(|(key, _)| Some(&**key) == after))
    }

    /// Applies a batch atomically; `sync` makes it durable before returning.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(|e| self.err(e))
    }

    /// Makes every write so far durable (syncs the write-ahead log), for
    /// callers that wrote several batches without syncing each.
    pub fn sync(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    /// Writes a batch without the write-ahead log: for building an index
    /// that is not in use yet (`cairn repair`), made durable by
    /// [`Index::flush`] before anyone relies on it.
    pub fn write_unlogged(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options).map_err(|e| self.err(e))
    }

    /// Puts `entries` (keys ascending, each once) into `family` as one
    /// table file written beside the database and copied in: for filling a
    /// family that is empty (an attach), several times faster than
    /// batches, which go through the memtable and are written again by
    /// its flush. Durable when it returns.
    pub fn ingest_sorted<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        family: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<u64> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let options = family_options(family, &Cache::new_lru_cache(1 << 20));
        let mut writer = rocksdb::SstFileWriter::create(&options);
        let path = self.path.join(format!("ingest-{family}.sst"));
        writer.open(&path).map_err(|e| self.err(e))?;
        let mut written = 0;
        for (key, value) in entries {
            writer.put(key, value).map_err(|e| self.err(e))?;
            written += 1;
        }
        if written == 0 {
            drop(writer);
            let _ = std::fs::remove_file(&path);
            return Ok(0);
        }
        writer.finish().map_err(|e| self.err(e))?;
        // Copied in, not linked: not every file system has hard links (the
        // power-cut tests' does not), and the copy is a few megabytes.
        let ingested = self.db.ingest_external_file_cf(self.cf(family), vec![&path]).map_err(|e| self.err(e));
        let _ = std::fs::remove_file(&path);
        ingested.map(|()| written)
    }

    /// What RocksDB's background compaction still owes the blob family:
    /// the bytes it estimates it must rewrite, and the table files at
    /// level 0 (each of which a lookup that misses must check). A store
    /// filled faster than two cores compact shows its lookups at their
    /// worst until this reaches zero.
    pub fn compaction_debt(&self) -> Result<(u64, u64)> {
        let property = |name: &str| {
            self.db.property_int_value_cf(self.cf(cf::BLOBS), name).map(|v| v.unwrap_or(0)).map_err(|e| self.err(e))
        };
        Ok((property("rocksdb.estimate-pending-compaction-bytes")?, property("rocksdb.num-files-at-level0")?))
    }

    /// Table files of the blob family at each of RocksDB's seven levels
    /// (0 first): a lookup that misses checks a filter in every level-0
    /// file and in each other level that has files.
    pub fn blob_levels(&self) -> Result<Vec<u64>> {
        (0..7)
            .map(|level| {
                let name = format!("rocksdb.num-files-at-level{level}");
                let files = self.db.property_int_value_cf(self.cf(cf::BLOBS), &name).map_err(|e| self.err(e))?;
                Ok(files.unwrap_or(0))
            })
            .collect()
    }

    /// What the index holds in memory, in bytes, for `CAIRN_LOG=debug`:
    /// the shared block cache and its pinned part, the scratch families'
    /// cache, all memtables, and the table readers outside the caches.
    pub fn memory_use(&self) -> Result<[(&'static str, u64); 5]> {
        let property = |family: &str, name: &str| {
            let value = self.db.property_int_value_cf(self.cf(family), name).map_err(|e| self.err(e))?;
            Ok::<u64, Error>(value.unwrap_or(0))
        };
        let mut memtables = 0;
        let mut readers = 0;
        for family in cf::ALL.iter().filter(|family| self.has(family)) {
            memtables += property(family, "rocksdb.cur-size-all-mem-tables")?;
            readers += property(family, "rocksdb.estimate-table-readers-mem")?;
        }
        Ok([
            ("block_cache", property(cf::BLOBS, "rocksdb.block-cache-usage")?),
            ("pinned", property(cf::BLOBS, "rocksdb.block-cache-pinned-usage")?),
            ("scratch_cache", property(cf::PENDING, "rocksdb.block-cache-usage")?),
            ("memtables", memtables),
            ("table_readers", readers),
        ])
    }

    /// The bytes the index's files take on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::io("listing the index", &self.path, e))?;
        Ok(entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
    }

    /// Bytes of the blob family's bloom filters (RocksDB's aggregated
    /// table properties): what a lookup of a chunk the store does not have
    /// reads, one partition per level. While they fit in the block cache,
    /// such lookups stay in memory; past it, each reads a partition from
    /// the page cache (ARCHITECTURE.md, "The index at scale").
    pub fn filter_bytes(&self) -> Result<u64> {
        let properties = self
            .db
            .property_value_cf(self.cf(cf::BLOBS), "rocksdb.aggregated-table-properties")
            .map_err(|e| self.err(e))?
            .unwrap_or_default();
        Ok(table_property(&properties, "filter block size").unwrap_or(0))
    }

    /// Bytes the block cache that blob lookups go through may hold: what
    /// this index was opened with, whatever [`set_cache_mib`] says now.
    pub fn cache_bytes(&self) -> Result<u64> {
        let capacity = self
            .db
            .property_int_value_cf(self.cf(cf::BLOBS), "rocksdb.block-cache-capacity")
            .map_err(|e| self.err(e))?;
        Ok(capacity.unwrap_or(0))
    }

    /// After the delete job: the memtables go to table files (so the
    /// write-ahead log they held can go), and when the job removed at
    /// least a twentieth of the blob entries (`removed` of about
    /// `remaining` left), the blob and zero-queue families are compacted,
    /// dropping the tombstones: the cost of rewriting the index is paid
    /// only when the job freed a share of it that size.
    pub fn tidy_after_collecting(&self, removed: u64) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush()?;
        let remaining = self
            .db
            .property_int_value_cf(self.cf(cf::BLOBS), "rocksdb.estimate-num-keys")
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        if removed > 0 && removed.saturating_mul(20) >= remaining {
            for name in [cf::BLOBS, cf::ZERO] {
                self.db.compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
            }
        }
        Ok(())
    }

    /// Flushes every family's memtable to table files and syncs them.
    ///
    /// Then writes to the new write-ahead log one deletion per family of
    /// a key no family uses. A reader (a RocksDB secondary) keeps in its
    /// memtable what it replayed from the log, and replaces that memtable
    /// only when a newer log brings it a write for the same family
    /// (RocksDB issues 14444 and 15051): after a flush followed by no
    /// write, its catch-up took the flushed table files and still answered
    /// from the stale memtable, so a blob the delete job had just moved was
    /// looked for in the container it left
    /// (`gc::a_reader_opened_before_compaction_still_reads` fails without
    /// this once the job flushes last; a marker in one family alone did not
    /// help the others).
    pub fn flush(&self) -> Result<()> {
        for name in cf::ALL {
            self.db.flush_cf(self.cf(name)).map_err(|e| self.err(e))?;
        }
        let mut batch = WriteBatch::default();
        for name in cf::ALL {
            batch.delete_cf(self.cf(name), FLUSHED_KEY);
        }
        self.write(batch, false)?;
        self.sync()
    }

    /// Puts one value without syncing (hints that are safe to lose).
    pub fn put_unsynced(&self, family: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(family), key, value);
        self.write(batch, false)
    }
}

/// The block cache's size, MiB, when nothing sets it: index and filter
/// blocks of a store of 100 million chunks no longer fit, and misses
/// there cost a read from the page cache, but a larger cache did not make
/// them faster (measured: ARCHITECTURE.md, "The index at scale").
pub const DEFAULT_CACHE_MIB: usize = 64;

/// The block cache's size, MiB, for indexes this process opens.
static CACHE_MIB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(DEFAULT_CACHE_MIB);

/// Sets the block cache's size, MiB, for every index this process opens
/// from now on (the command line's `--index-cache-mib`, the index bench's
/// `CAIRN_INDEX_CACHE_MIB`).
pub fn set_cache_mib(mib: usize) {
    CACHE_MIB.store(mib, std::sync::atomic::Ordering::Relaxed);
}

fn cache_mib() -> usize {
    CACHE_MIB.load(std::sync::atomic::Ordering::Relaxed)
}

/// The number named `name` in RocksDB's text form of table properties
/// (`name=value; ` pairs).
fn table_property(properties: &str, name: &str) -> Option<u64> {
    properties.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// RocksDB writes a text file of every family's options at each open and
/// keeps the two newest (`OPTIONS-<number>`). Nothing reads them to open
/// the database: they are for tools. Each is about 6 KiB per family, 66
/// KiB with cairn's families: the older one was 0.1% of the whole store
/// of a 400 MiB disk image (ARCHITECTURE.md, "One OPTIONS file"), and 8 B
/// per live blob of a small store's index. The newest, which RocksDB
/// names among the database's live files, stays; the rest go, best effort
/// (RocksDB would remove them at a later open anyway).
fn remove_older_options_files(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else { return };
    let numbered: Vec<(u64, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let number = entry.file_name().to_str()?.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    let Some(newest) = numbered.iter().map(|(number, _)| *number).max() else { return };
    for (number, file) in numbered {
        if number < newest {
            if let Err(error) = std::fs::remove_file(&file) {
                tracing::debug!(%error, file = %file.display(), "removing an older RocksDB options file");
            }
        }
    }
}

/// Options for reading `family`: by lookups that may come back, or
/// (`once`) by a scan or a sweep that reads each block about once.
///
/// Reads of the scratch families (`pending`, `stage`) touch each block
/// about once, in a session's or a commit's own order: they would only
/// push the blocks that lookups of `blobs` reuse out of the block cache,
/// and grow the process by the cache's whole size on a large commit. So
/// do a scan of `blobs` (`stats`, `dedupe stats`, `check`, `repair`),
/// which reads each of its blocks once, in order, and a sweep's lookups
/// ([`Index::blobs_once`]).
fn read_options(family: &str, once: bool) -> ReadOptions {
    let mut options = ReadOptions::default();
    if family == cf::PENDING || family == cf::STAGE || (once && family == cf::BLOBS) {
        options.fill_cache(false);
    }
    options
}

pub(crate) fn decode_entry(id: &BlobId, bytes: &[u8]) -> Result<IndexEntry> {
    IndexEntry::decode(bytes).ok_or_else(|| Error::BadEntry {
        what: format!("blob {id}"),
        reason: format!("{} bytes that are not an entry in either layout", bytes.len()),
    })
}

/// A family's options (tables read through `cache`): what it is opened
/// with, and what a table file made for it outside the database
/// ([`Index::ingest_sorted`]) is written with.
fn family_options(name: &str, cache: &Cache) -> Options {
    let mut options = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    // At scale (13 billion entries for 100 TB of 8 KiB chunks) the
    // index and filter blocks alone would be gigabytes: partition
    // them, keep them in the bounded block cache (index and filters
    // first), and pin only the small top level of each.
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    if name == cf::BLOBS || name == cf::ZERO {
        // Table files where the delete job removed many entries are
        // compacted by RocksDB on its own (their tombstones would
        // otherwise stay until the keys' level is rewritten).
        options.add_compact_on_deletion_collector_factory(1024, 256, 0.25);
    }
    if name == cf::PENDING || name == cf::STAGE {
        // Scratch: hashes, never compressible, looked up by every write
        // of a large session (mostly misses), and written out rather than
        // held: small memtables with a bloom filter.
        options.set_compression_type(DBCompressionType::None);
        options.set_write_buffer_size(8 << 20);
        // Read outside the block cache, mostly by a commit's sorted
        // batches of thousands of neighbouring ids, where one block read
        // serves every id in it. 16 KiB blocks instead of 1 KiB: a first
        // backup of `/usr/lib` (468,726 new blobs) committed in 1.43-1.64 s
        // against 1.64-1.92 s, five runs each; a backup that finds most of
        // its chunks among the ones it wrote earlier (a tree held three
        // times) was no slower.
        table.set_block_size(SCRATCH_BLOCK_BYTES);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.1);
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    } else if name == cf::BLOBS {
        // Not compressed, measured: LZ4 makes the table files a third
        // smaller (the values' high bytes are zeros: 80.5 -> 54.1 B per
        // entry at 10 million, 83 -> 67 B per live blob on `/usr/share`),
        // but point lookups a quarter slower (hits 129k -> 93k/s at 10
        // million, `cargo bench --bench index_scale`), and the index is
        // 1-3% of a store.
        options.set_compression_type(DBCompressionType::None);
        options.set_merge_operator(merge::NAME, merge::full_merge, merge::partial_merge);
        // No memtable larger than all of them may be (RocksDB's default is
        // 64 MiB): the memtable bloom below is sized from this, and a large
        // commit applying millions of staged entries here piled up
        // memtables beyond the cap while flushes caught up. A 48 GiB put
        // peaked at 151-164 MiB in that step, 110 MiB with this.
        options.set_write_buffer_size(MEMTABLES_BYTES);
        // Point lookups are most of what this family sees (a restore
        // makes one or two per file, a backup one per chunk): a hash
        // index in each data block instead of a binary search, and a
        // bloom filter on the memtable, which most lookups miss.
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.1);
    } else {
        options.set_compression_type(DBCompressionType::Lz4);
    }
    options.set_block_based_table_factory(&table);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_files(dir: &Path) -> Vec<String> {
        let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
        names.filter(|name| name.starts_with("OPTIONS-")).collect()
    }

    /// The memory report counts what was written into the memtables, and
    /// the scratch cache once a scratch table is read.
    #[test]
    fn memory_use_counts_memtables_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), false).unwrap();
        let used = |name: &str| index.memory_use().unwrap().iter().find(|(n, _)| *n == name).unwrap().1;
        let before = used("memtables");
        let mut batch = WriteBatch::default();
        for n in 0..100_000u32 {
            batch.put_cf(index.cf(cf::PENDING), BlobId::of(&n.to_le_bytes()).as_bytes(), [7u8; 20]);
        }
        index.write(batch, false).unwrap();
        assert!(used("memtables") >= before + 5_000_000, "{:?}", index.memory_use().unwrap());
        index.flush().unwrap();
        let key = BlobId::of(&5u32.to_le_bytes());
        assert_eq!(index.get(cf::PENDING, key.as_bytes()).unwrap(), Some(vec![7u8; 20]));
        // The scratch table's filter (about 125 KB) and index are in the
        // scratch cache, not in the shared one.
        assert!(used("scratch_cache") > 100_000, "{:?}", index.memory_use().unwrap());
        assert!(used("block_cache") < 100_000, "{:?}", index.memory_use().unwrap());
    }

    /// The filters' size is read from the table properties: about ten
    /// bits a key for the entries flushed, nothing before the first flush.
    #[test]
    fn filter_bytes_are_about_ten_bits_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), false).unwrap();
        assert_eq!(index.filter_bytes().unwrap(), 0);
        let mut batch = WriteBatch::default();
        for n in 0..200_000u32 {
            batch.put_cf(index.cf(cf::BLOBS), BlobId::of(&n.to_le_bytes()).as_bytes(), [7u8; 30]);
        }
        index.write(batch, false).unwrap();
        index.flush().unwrap();
        let bytes = index.filter_bytes().unwrap();
        assert!((200_000..=400_000).contains(&bytes), "{bytes} bytes of filters for 200,000 keys");
        assert_eq!(table_property("# entries=5; filter block size=1234; x=y", "filter block size"), Some(1234));
        assert_eq!(table_property("filter block size=oops", "filter block size"), None);
    }

    /// A sweep's lookups (`blobs_once`) find what `blobs` finds, and leave
    /// the block cache as it was, as does a scan of the family; the same
    /// lookups through `blobs` fill it with the blocks they read.
    #[test]
    fn lookups_made_once_and_scans_are_not_cached() {
        use crate::BlobKind;
        use crate::container::TableEntry;
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), false).unwrap();
        let used = |name: &str| index.memory_use().unwrap().iter().find(|(n, _)| *n == name).unwrap().1;
        let mut ids: Vec<BlobId> = (0..50_000u32).map(|n| BlobId::of(&n.to_le_bytes())).collect();
        ids.sort_unstable();
        let mut batch = WriteBatch::default();
        for (n, id) in ids.iter().enumerate() {
            let record = TableEntry {
                id: *id,
                kind: BlobKind::Data,
                flags: 0,
                offset: n as u64 * 10,
                raw_len: 10,
                stored_len: 10,
                member: 0,
            };
            batch.put_cf(index.cf(cf::BLOBS), id.as_bytes(), IndexEntry::new(ContainerId(1), &record, 1).encode());
        }
        index.write(batch, false).unwrap();
        index.flush().unwrap();
        // Every other id, and some the index does not hold.
        let mut asked: Vec<BlobId> = ids.iter().step_by(2).copied().collect();
        asked.extend((0..1000u32).map(|n| BlobId::of(&(n + 1_000_000).to_le_bytes())));
        asked.sort_unstable();
        let before = used("block_cache");
        let once = index.blobs_once(&asked).unwrap();
        let after_once = used("block_cache");
        assert!(after_once < before + 100_000, "{before} -> {after_once}: {:?}", index.memory_use().unwrap());
        assert_eq!(index.scan(cf::BLOBS, b"").count(), 50_000);
        let after_scan = used("block_cache");
        assert!(after_scan < before + 100_000, "{before} -> {after_scan}: {:?}", index.memory_use().unwrap());
        let cached = index.blobs(&asked).unwrap();
        assert_eq!(once, cached);
        assert_eq!(once.iter().filter(|e| e.is_some()).count(), 25_000);
        // 50,000 entries are over a megabyte of data blocks, each read.
        let after = used("block_cache");
        assert!(after > after_once + 1_000_000, "{after_once} -> {after}: {:?}", index.memory_use().unwrap());
    }

    /// Every writer's open leaves one options file, the newest (RocksDB
    /// keeps two), and the index still opens for writers and readers with
    /// what it holds.
    #[test]
    fn a_writer_keeps_only_the_newest_options_file() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3u8 {
            let index = Index::open(dir.path(), false).unwrap();
            index.put_unsynced(cf::META, &[round], &[round]).unwrap();
            let files = options_files(dir.path());
            assert_eq!(files.len(), 1, "round {round}: {files:?}");
        }
        let reader = Index::open(dir.path(), true).unwrap();
        assert_eq!(reader.get(cf::META, &[2]).unwrap(), Some(vec![2]));
        assert_eq!(options_files(dir.path()).len(), 1);
    }

    /// A writer records the entry layout it writes; an index whose layout
    /// is newer than this cairn's is refused, by writers and readers alike,
    /// with a message that names the fix; an entry in the old layout is
    /// read, and a count added to it writes it back compact.
    #[test]
    fn entry_layouts_are_recorded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(dir.path(), false).unwrap();
            let recorded = index.get(cf::FORMAT, format_key::ENTRIES).unwrap().unwrap();
            assert_eq!(recorded, entry::ENTRIES_FORMAT.to_le_bytes());
            let id = BlobId::of(b"old");
            let old = IndexEntry {
                container: ContainerId(3),
                offset: 4096,
                stored_len: 77,
                raw_len: 100,
                kind: crate::ids::BlobKind::Data,
                flags: 1,
                member: 0,
                refs: 2,
            };
            let legacy = entry::legacy_bytes(&old);
            index.put_unsynced(cf::BLOBS, id.as_bytes(), &legacy).unwrap();
            assert_eq!(index.blob(&id).unwrap(), Some(old));
            let mut batch = WriteBatch::default();
            batch.merge_cf(index.cf(cf::BLOBS), id.as_bytes(), merge::delta(1));
            index.write(batch, false).unwrap();
            index.flush().unwrap();
            index.db.compact_range_cf(index.cf(cf::BLOBS), None::<&[u8]>, None::<&[u8]>);
            let merged = index.get(cf::BLOBS, id.as_bytes()).unwrap().unwrap();
            assert_eq!(merged, IndexEntry { refs: 3, ..old }.encode().to_vec());
            assert!(merged.len() < 20);
            index.put_unsynced(cf::FORMAT, format_key::ENTRIES, &(entry::ENTRIES_FORMAT + 1).to_le_bytes()).unwrap();
            index.sync().unwrap();
        }
        for read_only in [false, true] {
            let error = Index::open(dir.path(), read_only).err().expect("a newer layout is refused").to_string();
            assert!(error.contains("newer than this cairn reads") && error.contains("upgrade cairn"), "{error}");
        }
    }

    /// A reader that opened while a value lived only in the write-ahead
    /// log sees the writer's newer value after the writer flushed it and
    /// wrote nothing more (the delete job's last step, and every writer's
    /// close with a long log).
    #[test]
    fn a_reader_sees_a_value_the_writer_changed_and_then_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Index::open(dir.path(), false).unwrap();
        writer.put_unsynced(cf::OBJECTS, b"key", b"old").unwrap();
        writer.put_unsynced(cf::META, b"other", b"old").unwrap();
        writer.sync().unwrap();
        let reader = Index::open(dir.path(), true).unwrap();
        assert_eq!(reader.get(cf::OBJECTS, b"key").unwrap().as_deref(), Some(&b"old"[..]));
        writer.put_unsynced(cf::OBJECTS, b"key", b"new").unwrap();
        writer.put_unsynced(cf::META, b"other", b"new").unwrap();
        writer.flush().unwrap();
        reader.catch_up().unwrap();
        assert_eq!(reader.get(cf::OBJECTS, b"key").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(reader.get(cf::META, b"other").unwrap().as_deref(), Some(&b"new"[..]));
        // The marker is a deletion: no family shows it.
        for name in cf::ALL {
            assert_eq!(writer.get(name, FLUSHED_KEY).unwrap(), None, "{name}");
            assert!(writer.scan(name, b"\xff").next().is_none(), "{name}");
        }
    }
}
