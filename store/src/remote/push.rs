//! `cairn push`: brings a remote up to date with the store.
//!
//! The remote's own listing says what it has, so a push needs no local
//! record of earlier pushes: it is idempotent, and one interrupted at any
//! moment is finished by the next, which uploads only what is missing.
//! The order of the steps is what keeps the remote usable at every moment
//! (see the module documentation of [`crate::remote`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::client::MAX_JSON_OBJECT;
use super::{Delta, DeltaContainer, RemoteClient, RemoteConfig};
use crate::container::{Footer, read_footer};
use crate::dataset::{DatasetId, Progress};
use crate::error::{Error, Result};
use crate::ids::ContainerId;
use crate::index::cf;
use crate::index::entry::ContainerRecord;
use crate::store::Store;

/// How a push runs.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Uploads in flight at once.
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions { jobs: 4 }
    }
}

/// What a push did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PushReport {
    /// The remote, as a URL.
    pub remote: String,
    /// Containers uploaded now.
    pub containers_uploaded: u64,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Containers the remote had already.
    pub containers_present: u64,
    /// Index deltas uploaded (0 or 1).
    pub deltas_uploaded: u64,
    /// Dataset records uploaded.
    pub datasets_uploaded: u64,
    /// Dataset records deleted from the remote (forgotten here).
    pub datasets_deleted: u64,
    /// Containers deleted from the remote (reclaimed here).
    pub containers_deleted: u64,
    /// Bytes of those.
    pub bytes_deleted: u64,
    /// Index deltas replaced by one that names every container.
    pub deltas_consolidated: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Wall time.
    pub seconds: f64,
}

impl Store {
    /// Pushes everything committed to the remote behind `client`: the
    /// index delta naming the containers it lacks, those containers, the
    /// dataset records it lacks; then deletes the dataset records and
    /// containers this store no longer has. `progress` counts containers
    /// and bytes uploaded; `stop` ends the push between uploads (what was
    /// uploaded stays, and the next push goes on from there).
    pub fn push(
        &self,
        client: &RemoteClient,
        options: &PushOptions,
        progress: &Progress,
        stop: &AtomicBool,
    ) -> Result<PushReport> {
        let started = Instant::now();
        let requests_before = client.requests();
        let location = client.location().clone();
        let mut report = PushReport { remote: client.spec().to_string(), ..Default::default() };
        client.check_access()?;
        let tid = self.tid()?;

        let local_containers: BTreeMap<ContainerId, ContainerRecord> = self.containers()?.into_iter().collect();
        let local_datasets = self.datasets()?;
        let remote_containers: BTreeMap<ContainerId, u64> = client
            .list(&location.containers_prefix())?
            .into_iter()
            .filter_map(|object| location.container_of(&object.key).map(|id| (id, object.size)))
            .collect();
        let remote_datasets: BTreeSet<DatasetId> = client
            .list(&location.datasets_prefix())?
            .into_iter()
            .filter_map(|object| location.dataset_of(&object.key))
            .collect();

        // 1. The delta naming what is about to be uploaded, then the uploads.
        let missing: Vec<(ContainerId, ContainerRecord)> = local_containers
            .iter()
            .filter(|(id, record)| remote_containers.get(*id) != Some(&record.stored_bytes))
            .map(|(id, record)| (*id, *record))
            .collect();
        report.containers_present = (local_containers.len() - missing.len()) as u64;
        let new_datasets: Vec<_> = local_datasets.iter().filter(|d| !remote_datasets.contains(&d.id)).collect();
        let kept: BTreeSet<DatasetId> = local_datasets.iter().map(|d| d.id).collect();
        let gone: Vec<String> =
            remote_datasets.iter().filter(|id| !kept.contains(id)).map(|id| location.dataset_key(*id)).collect();
        let reclaimed: Vec<(ContainerId, u64)> = remote_containers
            .iter()
            .filter(|(id, _)| !local_containers.contains_key(*id))
            .map(|(id, size)| (*id, *size))
            .collect();

        // The claim comes before any change (and the listings above may be
        // older than it: any change by another writer needs a claim of its
        // own, which makes this one fail). A push with nothing to do only
        // checks that it could.
        let seq = self.may_push(client)?;
        if missing.is_empty() && new_datasets.is_empty() && gone.is_empty() && reclaimed.is_empty() {
            report.requests = client.requests() - requests_before;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        self.claim_for_push(client, seq, tid)?;
        self.write_remote_config(client)?;

        if !missing.is_empty() {
            let mut delta = Delta::default();
            for (id, record) in &missing {
                let path = self.files().path(*id);
                if !path.exists() {
                    return Err(Error::Remote {
                        what: format!("pushing container {id} to {}", client.spec()),
                        reason: "it is neither in this store nor on that remote; push from the store that holds it, \
                                 or to the remote this store was attached from"
                            .into(),
                    });
                }
                let Footer { table, layout } = read_footer(&path, *id)?;
                delta.containers.push(DeltaContainer {
                    id: *id,
                    kind: record.kind,
                    len: record.stored_bytes,
                    table,
                    layout,
                });
            }
            client.put(&location.delta_key(tid, crate::clock::now_ns_unsigned()), delta.encode())?;
            report.deltas_uploaded = 1;
        }
        progress.total_files.store(missing.len() as u64, Ordering::Relaxed);
        progress.total_bytes.store(missing.iter().map(|(_, r)| r.stored_bytes).sum(), Ordering::Relaxed);
        let uploaded = parallel(options.jobs, &missing, stop, |(id, record)| {
            let key = location.container_key(*id);
            client.put_file(&key, &self.files().path(*id), &|bytes| {
                progress.bytes.fetch_add(bytes, Ordering::Relaxed);
            })?;
            progress.files.fetch_add(1, Ordering::Relaxed);
            Ok((*id, record.stored_bytes))
        });
        let done: Vec<(ContainerId, u64)> = uploaded.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        self.mark_uploaded(done.iter().map(|(id, _)| *id))?;
        report.containers_uploaded = done.len() as u64;
        report.bytes_uploaded = done.iter().map(|(_, bytes)| bytes).sum();
        if let Some(error) = uploaded.into_iter().find_map(|r| r.err()) {
            return Err(error);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }

        // 2. Dataset records, now that every container they use is there.
        for result in parallel(options.jobs, &new_datasets, stop, |record| {
            let json = serde_json::to_vec_pretty(record).expect("dataset records serialize");
            client.put(&location.dataset_key(record.id), json)
        }) {
            result?;
        }
        report.datasets_uploaded = new_datasets.len() as u64;
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }

        // 3. Deletions: datasets forgotten here, then containers this
        // store's index no longer names (no dataset left on the remote
        // needs them). The claim above is what makes "not in this index"
        // mean "forgotten or collected here": this store has seen every
        // commit on the remote, so nothing there is another writer's.
        client.delete(&gone)?;
        report.datasets_deleted = gone.len() as u64;
        let keys: Vec<String> = reclaimed.iter().map(|(id, _)| location.container_key(*id)).collect();
        client.delete(&keys)?;
        report.containers_deleted = reclaimed.len() as u64;
        report.bytes_deleted = reclaimed.iter().map(|(_, size)| size).sum();
        // 4. Index deltas, one per push, replaced by one when they pile up.
        let deltas: Vec<String> = client.list(&location.deltas_prefix())?.into_iter().map(|o| o.key).collect();
        if deltas.len() > super::consolidate::CONSOLIDATE_DELTAS {
            let live = local_containers.iter().map(|(id, record)| (*id, record.stored_bytes)).collect();
            report.deltas_consolidated = super::consolidate::consolidate(client, &deltas, &live, tid)?;
        }
        super::writer::prune_claims(client, seq)?;
        report.requests = client.requests() - requests_before;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Writes the remote's `config` on first push (after the claim); refuses
    /// a remote whose config names another store.
    fn write_remote_config(&self, client: &RemoteClient) -> Result<()> {
        let key = client.location().config_key();
        match client.get(&key, MAX_JSON_OBJECT)? {
            Some(bytes) => {
                let theirs: RemoteConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Remote {
                    what: format!("reading {key} on {}", client.spec()),
                    reason: format!("it is not a cairn remote config ({e}); choose an empty prefix"),
                })?;
                if theirs.store.store_id != self.config().store_id {
                    return Err(Error::Remote {
                        what: format!("pushing to {}", client.spec()),
                        reason: format!(
                            "it holds another store ({}, this one is {}); push to another prefix, \
                             or `cairn attach` it to work with that store",
                            theirs.store.store_id,
                            self.config().store_id
                        ),
                    });
                }
                // The store was upgraded since its first push (`cairn
                // upgrade`): the remote says so too, so that a cairn older
                // than the format refuses to attach it, by name, instead of
                // finding containers it cannot read.
                if theirs.store.format < self.config().format {
                    let config = RemoteConfig { store: self.config().clone() };
                    client.put(&key, serde_json::to_vec_pretty(&config).expect("config serializes"))?;
                }
                Ok(())
            }
            None => {
                let config = RemoteConfig { store: self.config().clone() };
                client.put(&key, serde_json::to_vec_pretty(&config).expect("config serializes"))
            }
        }
    }

    /// Sets the `uploaded` flag of containers, under the commit lock (the
    /// delete job rewrites the same records).
    fn mark_uploaded(&self, ids: impl Iterator<Item = ContainerId>) -> Result<()> {
        let _commit = self.inner.lock_commits();
        let index = self.index();
        let mut batch = rocksdb::WriteBatch::default();
        for id in ids {
            if let Some(mut record) = index.container(id)? {
                record.uploaded = true;
                batch.put_cf(index.cf(cf::CONTAINERS), id.key(), record.encode());
            }
        }
        index.write(batch, false)
    }
}

/// Runs `work` over `items` on `jobs` threads, stopping early (leaving the
/// rest undone) after an error or when `stop` is set. Returns the results
/// of the items done.
pub(crate) fn parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    stop: &AtomicBool,
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    let result = work(item);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().expect("results poisoned").push(result);
                }
            });
        }
    });
    results.into_inner().expect("results poisoned")
}
