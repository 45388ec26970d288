//! `cairn attach` and `cairn --remote`: a store made from a remote without
//! downloading its data.
//!
//! The index is rebuilt from the remote's index deltas (taking a delta's
//! entries only for containers the remote lists) and its dataset records.
//! Data containers stay on the remote and are read with ranged GETs when a
//! restore needs them ([`super::RemoteSource`]).
//!
//! A full attach also downloads the metadata containers (trees and content
//! lists, a few percent of the data) and recounts every reference from the
//! dataset trees, the way `cairn check` does: blobs that no dataset reaches
//! are counted as dead bytes rather than entered. The result is an ordinary
//! store that can back up (deduplicating against the remote), forget,
//! collect garbage and push back. A browse attach (`--remote`) skips the
//! recount and enters every blob with one reference: it is for reading
//! only, and lives in a temporary directory. It downloads the metadata
//! containers only for commands that walk whole trees.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::client::{MAX_JSON_OBJECT, MAX_SINGLE_PUT_OBJECT};
use super::push::parallel;
use super::remote_blobs::RemoteBlobs;
use super::{Delta, RemoteClient, RemoteConfig, RemoteSpec, Remotes};
use crate::container::{ContainerKind, PARTIAL_EXTENSION, TableEntry, ensure_shard, sync_dir, verify_container};
use crate::dataset::{DatasetRecord, Progress};
use crate::error::{Error, Result};
use crate::ids::{BlobId, ContainerId, Tid};
use crate::index::entry::{ContainerRecord, ContainerShape, IndexEntry};
use crate::index::{cf, meta};
use crate::refs::children_of;
use crate::store::{OpenMode, Store};

/// How much of the remote an attach takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Download metadata and recount references: a store to keep using.
    Full,
    /// Locations only, every blob at one reference: for reading. With
    /// `metadata`, the metadata containers are downloaded whole too, in
    /// parallel, up front (they are a few percent of the data), so a
    /// command that walks trees (`restore`, `find`, `diff`) does not pay
    /// one request's latency per tree; `ls`, `stat` and `cat` read just
    /// the trees on their path.
    Browse {
        /// Download the metadata containers.
        metadata: bool,
    },
}

/// What an attach found and fetched.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttachReport {
    /// The remote, as a URL.
    pub remote: String,
    /// Dataset records.
    pub datasets: u64,
    /// Containers on the remote.
    pub containers: u64,
    /// Their bytes.
    pub remote_bytes: u64,
    /// Index deltas read.
    pub deltas: u64,
    /// Blobs entered in the index.
    pub blobs: u64,
    /// Metadata containers downloaded (full attach).
    pub metadata_containers: u64,
    /// Bytes downloaded, deltas and metadata containers included.
    pub bytes_downloaded: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The remote's index, as its deltas describe it: its containers (kind,
/// length and number of records), and its blobs, on disk.
struct RemoteIndex {
    containers: BTreeMap<ContainerId, ContainerShape>,
    blobs: RemoteBlobs,
}

impl Store {
    /// Makes a store at `root` from the remote `spec`, registered under
    /// `name` as the store's origin. `root` must not hold a store; if the
    /// attach fails, nothing is left there.
    pub fn attach(
        root: &Path,
        name: &str,
        spec: &RemoteSpec,
        mode: AttachMode,
        progress: &Progress,
    ) -> Result<(Store, AttachReport)> {
        if root.join("config.json").exists() {
            return Err(Error::Usage(format!(
                "{} holds a store already; attach into a new directory (--store DIR)",
                root.display()
            )));
        }
        let existed = root.exists();
        // What the attach makes in a directory that exists; of these, only
        // the ones that are not there yet are removed on failure: `index/`
        // or `containers/` already in the directory are the user's (and
        // make the attach fail), not ours to delete.
        let ours: Vec<&str> = ["config.json", "remotes.json", "lock", "index", "containers"]
            .into_iter()
            .filter(|entry| root.join(entry).symlink_metadata().is_err())
            .collect();
        let result = attach_into(root, name, spec, mode, progress);
        if result.is_err() {
            let cleanup = if existed {
                ours.iter().map(|entry| root.join(entry)).try_for_each(|path| match path.symlink_metadata() {
                    Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(_) => Ok(()),
                })
            } else if root.exists() {
                std::fs::remove_dir_all(root)
            } else {
                Ok(())
            };
            if let Err(error) = cleanup {
                tracing::warn!(%error, path = %root.display(), "could not remove a failed attach");
            }
        }
        result
    }
}

fn attach_into(
    root: &Path,
    name: &str,
    spec: &RemoteSpec,
    mode: AttachMode,
    progress: &Progress,
) -> Result<(Store, AttachReport)> {
    let started = Instant::now();
    let client = RemoteClient::new(spec)?;
    let location = client.location().clone();
    let mut report = AttachReport { remote: spec.to_string(), ..Default::default() };
    // Where an attach's time goes, for CAIRN_LOG=debug.
    let phase = |what: &str| tracing::debug!(seconds = started.elapsed().as_secs_f64(), "attach: {what}");
    // Two rounds of requests where there were seven, one after another:
    // the bucket's check, the config and the container listing together,
    // then the deltas and the dataset records together (each a listing,
    // then its objects in parallel). The container listing goes first
    // because what is listed after it is at least as new: a push uploads
    // a container's delta before it, and a dataset's record after its
    // containers. Before it goes the writer's claim, for the same reason.
    let (access, config_bytes, listed) = std::thread::scope(|scope| {
        let access = scope.spawn(|| client.check_access());
        let config = scope.spawn(|| client.get(&location.config_key(), MAX_JSON_OBJECT));
        let listed = (|| -> Result<_> {
            let claim = match mode {
                AttachMode::Full => super::writer::newest_claim(&client)?.map(|(_, claim)| claim),
                AttachMode::Browse { .. } => None,
            };
            Ok((claim, list_containers(&client)?))
        })();
        (joined(access), joined(config), listed)
    });
    access?;
    let config_bytes = config_bytes?.ok_or_else(|| Error::Remote {
        what: format!("attaching {spec}"),
        reason: "there is no cairn store there: check the bucket and prefix, or `cairn push` to it first".into(),
    })?;
    let config: RemoteConfig = serde_json::from_slice(&config_bytes).map_err(|e| Error::Remote {
        what: format!("reading {} on {spec}", location.config_key()),
        reason: format!("it does not parse ({e}); is this a cairn remote?"),
    })?;
    report.bytes_downloaded += config_bytes.len() as u64;
    let (claim, listed) = listed?;
    report.containers = listed.len() as u64;
    // Saturating: the sizes are the server's.
    report.remote_bytes = listed.values().fold(0u64, |sum, len| sum.saturating_add(*len));
    // The store is made while the second round is out: it needs only the
    // config (0.03 s of a `--remote` restore's start, on 2 cores).
    let (index, records, store) = std::thread::scope(|scope| {
        let records = scope.spawn(|| read_datasets(&client));
        let store = scope.spawn(|| make_store(root, name, spec, &config));
        (read_deltas(&client, &listed, &mut report), joined(records), joined(store))
    });
    let store = store?;
    let mut index = index?;
    let (records, bytes) = records?;
    report.datasets = records.len() as u64;
    report.bytes_downloaded += bytes;
    phase("index deltas and dataset records read, store made");

    let (blobs, tid) = match mode {
        AttachMode::Full => {
            download_metadata(&store, &client, &index, progress, &mut report)?;
            phase("metadata downloaded");
            recount(&store, &mut index, &records)?;
            let blobs = enter_blobs(&store, &index, true)?;
            (blobs, newest_log_tid(&store, &index)?)
        }
        // Every blob at one reference: the blobs' table is written while
        // the metadata containers download (0.2 s for 150,000 entries,
        // before a `--remote` restore's first file).
        AttachMode::Browse { metadata } => std::thread::scope(|scope| {
            let blobs = scope.spawn(|| enter_blobs(&store, &index, false));
            let downloaded = if metadata {
                download_metadata(&store, &client, &index, progress, &mut report).map(|()| true)
            } else {
                Ok(false)
            };
            let blobs = joined(blobs);
            let tid = if downloaded? { newest_log_tid(&store, &index)? } else { Tid(1) };
            Ok::<_, Error>((blobs?, tid))
        })?,
    };
    report.blobs = blobs.entered;
    write_records(&store, &index, &records, &blobs.live, tid)?;
    phase("index written");
    if mode == AttachMode::Full {
        store.adopt_claim(&client, claim.as_ref())?;
    }
    drop(store);
    let store = Store::open(root, OpenMode::Write)?;
    report.requests = client.requests();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((store, report))
}

/// Makes the store at `root` with the remote's config, its origin the
/// remote `spec` under `name`, and opens it.
fn make_store(root: &Path, name: &str, spec: &RemoteSpec, config: &RemoteConfig) -> Result<Store> {
    let store = Store::create_with(root, config.store.clone())?;
    drop(store);
    let mut remotes = Remotes::default();
    remotes.remotes.insert(name.to_string(), spec.clone());
    remotes.origin = Some(name.to_string());
    remotes.save(root)?;
    crate::fault::crash_point("attach:remotes-saved");
    Store::open(root, OpenMode::Write)
}

/// What a thread spawned in a scope returned (its panic goes on).
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The remote's containers and their lengths.
fn list_containers(client: &RemoteClient) -> Result<BTreeMap<ContainerId, u64>> {
    let location = client.location();
    Ok(client
        .list(&location.containers_prefix())?
        .into_iter()
        .filter_map(|object| location.container_of(&object.key).map(|id| (id, object.size)))
        .collect())
}

/// Reads every delta; keeps the entries of `listed` containers. A blob in
/// several containers (copies left by racing backups, or moved by a
/// compaction whose old container is not deleted yet) is taken from the
/// newest.
fn read_deltas(
    client: &RemoteClient,
    listed: &BTreeMap<ContainerId, u64>,
    report: &mut AttachReport,
) -> Result<RemoteIndex> {
    let location = client.location();
    let keys: Vec<String> = client.list(&location.deltas_prefix())?.into_iter().map(|o| o.key).collect();
    let never = AtomicBool::new(false);
    let blobs = std::sync::Mutex::new(RemoteBlobs::new());
    // Each delta's blobs are entered as it is read (to disk past a point):
    // what is held is the deltas in flight, not every delta.
    let deltas = parallel(8, &keys, &never, |key| {
        let bytes = client
            .get(key, MAX_SINGLE_PUT_OBJECT)?
            .ok_or_else(|| Error::RemoteNotFound { what: format!("reading {key}") })?;
        let delta = Delta::decode(key, &bytes)?;
        let mut named = Vec::new();
        for container in delta.containers {
            if listed.get(&container.id) != Some(&container.len) {
                continue;
            }
            blobs.lock().expect("remote blobs poisoned").add_container(container.id, &container.table)?;
            let shape = ContainerShape::of(container.kind, container.len, &container.table, container.layout);
            named.push((container.id, shape));
        }
        Ok((bytes.len() as u64, named))
    });
    let blobs = blobs.into_inner().expect("remote blobs poisoned");
    let mut index = RemoteIndex { containers: BTreeMap::new(), blobs };
    for delta in deltas {
        let (size, named) = delta?;
        report.deltas += 1;
        report.bytes_downloaded += size;
        index.containers.extend(named);
    }
    let unnamed = listed.keys().filter(|id| !index.containers.contains_key(id)).count();
    if unnamed > 0 {
        tracing::warn!(unnamed, "containers on the remote that no index delta names are left out");
    }
    Ok(index)
}

/// The remote's dataset records, oldest first, and their bytes.
fn read_datasets(client: &RemoteClient) -> Result<(Vec<DatasetRecord>, u64)> {
    let location = client.location();
    let keys: Vec<String> = client
        .list(&location.datasets_prefix())?
        .into_iter()
        .filter(|o| location.dataset_of(&o.key).is_some())
        .map(|o| o.key)
        .collect();
    let never = AtomicBool::new(false);
    let (mut records, mut bytes) = (Vec::new(), 0);
    for result in parallel(8, &keys, &never, |key| {
        // A record deleted since the listing was forgotten: leave it out.
        let Some(bytes) = client.get(key, MAX_JSON_OBJECT)? else { return Ok(None) };
        let record: DatasetRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Remote {
            what: format!("reading {key}"),
            reason: format!("it is not a dataset record ({e})"),
        })?;
        Ok(Some((bytes.len() as u64, record)))
    }) {
        if let Some((size, record)) = result? {
            bytes += size;
            records.push(record);
        }
    }
    records.sort_by_key(|r| r.id);
    Ok((records, bytes))
}

/// Downloads every metadata container whole, checked against its BLAKE3.
fn download_metadata(
    store: &Store,
    client: &RemoteClient,
    index: &RemoteIndex,
    progress: &Progress,
    report: &mut AttachReport,
) -> Result<()> {
    let metadata: Vec<(ContainerId, u64)> = index
        .containers
        .iter()
        .filter(|(_, shape)| shape.kind == ContainerKind::Metadata)
        .map(|(id, shape)| (*id, shape.len))
        .collect();
    progress.total_files.store(metadata.len() as u64, Ordering::Relaxed);
    progress.total_bytes.store(metadata.iter().fold(0u64, |sum, (_, len)| sum.saturating_add(*len)), Ordering::Relaxed);
    let never = AtomicBool::new(false);
    for result in parallel(8, &metadata, &never, |(id, len)| {
        let key = client.location().container_key(*id);
        // The listing gave its length: a longer body is not this container.
        let bytes =
            client.get(&key, *len)?.ok_or_else(|| Error::RemoteNotFound { what: format!("downloading {key}") })?;
        let path = store.files().path(*id);
        ensure_shard(store.files().dir(), &path)?;
        // An unguessable name, created only if nothing is there: a planted
        // symlink cannot redirect the download. A killed attach leaves it;
        // its extension tells the next writer to remove it.
        let shard = path.parent().expect("container paths have a shard directory");
        let mut temporary = tempfile::Builder::new()
            .prefix(&format!(".{id}."))
            .suffix(&format!(".{PARTIAL_EXTENSION}"))
            .tempfile_in(shard)
            .map_err(|e| Error::io("creating a temporary file in", shard, e))?;
        std::io::Write::write_all(&mut temporary, &bytes)
            .and_then(|()| temporary.as_file().sync_all())
            .map_err(|e| Error::io("writing container", temporary.path(), e))?;
        temporary.persist(&path).map_err(|e| Error::io("writing container", &path, e.error))?;
        verify_container(store.files(), *id)?;
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(*len, Ordering::Relaxed);
        Ok(*len)
    }) {
        report.bytes_downloaded += result?;
        report.metadata_containers += 1;
    }
    for dir in std::fs::read_dir(store.files().dir()).map_err(|e| Error::io("listing", store.files().dir(), e))? {
        sync_dir(&dir.map_err(|e| Error::io("listing", store.files().dir(), e))?.path())?;
    }
    Ok(())
}

/// References from the dataset trees, counted as the invariant defines
/// them: each dataset's root once, and each child of each reachable
/// metadata blob once per mention. The counts go to `index.blobs`, on
/// disk; what is held in memory is the metadata blobs still to expand,
/// depth first (bounded by the trees' depth times their width).
fn recount(store: &Store, index: &mut RemoteIndex, records: &[DatasetRecord]) -> Result<()> {
    let mut expand: Vec<(BlobId, ContainerId, TableEntry)> = Vec::new();
    let roots: Vec<BlobId> = records.iter().map(|record| record.root).collect();
    counted(index, &roots, &mut expand)?;
    while let Some((id, container, entry)) = expand.pop() {
        let bytes = store.files().read_blob(container, &entry)?;
        counted(index, &children_of(entry.kind, id, &bytes)?, &mut expand)?;
    }
    Ok(())
}

/// Counts a reference to each of `ids`, and queues those that are
/// metadata seen for the first time to be expanded.
fn counted(index: &mut RemoteIndex, ids: &[BlobId], expand: &mut Vec<(BlobId, ContainerId, TableEntry)>) -> Result<()> {
    index.blobs.count(ids)?;
    let mut metadata = Vec::new();
    for (id, located) in ids.iter().zip(index.blobs.locate(ids)?) {
        let (container, entry) = located.ok_or_else(|| Error::Remote {
            what: "attaching".into(),
            reason: format!(
                "blob {id} is named by a dataset but by no index delta; the remote is incomplete: push again"
            ),
        })?;
        if entry.kind.is_metadata() {
            metadata.push((*id, container, entry));
        }
    }
    // (A tree that names one child twice expands it once.)
    metadata.sort_unstable_by_key(|(id, ..)| *id);
    metadata.dedup_by_key(|(id, ..)| *id);
    let ids: Vec<BlobId> = metadata.iter().map(|(id, ..)| *id).collect();
    for (first, blob) in index.blobs.first_seen(&ids)?.into_iter().zip(metadata) {
        if first {
            expand.push(blob);
        }
    }
    Ok(())
}

/// The newest tid in the origin's log (in the downloaded metadata
/// containers), or 1. The attached store's own commits come after it, and
/// its log starts afresh with a checkpoint: so its chain is always newer
/// than the origin's records it holds, which is what `repair` goes by.
fn newest_log_tid(store: &Store, index: &RemoteIndex) -> Result<Tid> {
    let mut newest = 1;
    for located in index.blobs.located() {
        let (_, container, entry, _) = located?;
        if entry.kind != crate::ids::BlobKind::Log {
            continue;
        }
        if let crate::log::LogBlob::Record(record) = crate::log::LogBlob::read(store.files(), container, &entry)? {
            newest = newest.max(record.tid);
        }
    }
    Ok(Tid(newest))
}

/// What entering the blobs did: how many, and the live bytes of each
/// container (the rest of its records are dead: blobs nothing reaches, and
/// second copies of blobs entered elsewhere).
struct Entered {
    entered: u64,
    live: HashMap<ContainerId, u64>,
}

/// Enters in the index every blob the recount gave references (with
/// `counted`; else every blob, at one reference), as one sorted table file
/// moved into the index: through batches, every entry went into the
/// write-ahead log and the memtable and was written again by the flush
/// (0.4 s for 150,000 entries, before a `--remote` restore's first file).
/// The blobs come from disk in id order, so nothing here grows with them
/// but the live bytes per container.
fn enter_blobs(store: &Store, index: &RemoteIndex, counted: bool) -> Result<Entered> {
    let mut live: HashMap<ContainerId, u64> = HashMap::new();
    let mut failed = None;
    let entries = index
        .blobs
        .located()
        .map_while(|located| located.map_err(|error| failed = Some(error)).ok())
        .map(|(id, container, entry, count)| (id, container, entry, if counted { count } else { 1 }))
        .filter(|(.., count)| *count > 0)
        .map(|(id, container, entry, count)| {
            let bytes = live.entry(container).or_default();
            *bytes = bytes.saturating_add(entry.accounted_len());
            (*id.as_bytes(), IndexEntry::new(container, &entry, count).encode())
        });
    let entered = store.index().ingest_sorted(cf::BLOBS, entries)?;
    match failed {
        Some(error) => Err(error),
        None => Ok(Entered { entered, live }),
    }
}

/// Enters the containers (with their dead bytes, from `live`) and the
/// datasets in the index, with the counters that follow them.
fn write_records(
    store: &Store,
    index: &RemoteIndex,
    records: &[DatasetRecord],
    live: &HashMap<ContainerId, u64>,
    tid: Tid,
) -> Result<()> {
    let db = store.index();
    let mut batch = rocksdb::WriteBatch::default();
    for (id, shape) in &index.containers {
        let record = ContainerRecord::new(shape, tid, true, live.get(id).copied().unwrap_or(0));
        batch.put_cf(db.cf(cf::CONTAINERS), id.key(), record.encode());
    }
    for record in records {
        batch.put_cf(db.cf(cf::DATASETS), record.id.key(), serde_json::to_vec(record).expect("records serialize"));
    }
    // Checked: ids come from the remote's keys and records, and the last
    // of each leaves no next one.
    let no_next = |what: String| Error::Remote {
        what: "attaching".into(),
        reason: format!("{what} has the largest possible id, so no id follows it; the remote is damaged or crafted"),
    };
    let next_container = match index.containers.keys().next_back() {
        Some(id) => id.0.checked_add(1).ok_or_else(|| no_next(format!("container {id}")))?,
        None => 0,
    };
    let next_dataset = match records.iter().map(|r| r.id).max() {
        Some(id) => id.0.checked_add(1).ok_or_else(|| no_next(format!("dataset {id}")))?,
        None => 1,
    };
    batch.put_cf(db.cf(cf::META), meta::TID, tid.0.to_le_bytes());
    batch.put_cf(db.cf(cf::META), meta::NEXT_CONTAINER, next_container.to_le_bytes());
    batch.put_cf(db.cf(cf::META), meta::NEXT_DATASET, next_dataset.to_le_bytes());
    db.write(batch, true)
}
